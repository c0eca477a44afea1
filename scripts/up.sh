#!/usr/bin/env bash
# Runs the whole system on this machine: MLflow, the edge API in workerd, and an agent with the
# local executor. Loads the example template, prints the URL to open, stops on Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

scripts/setup.sh
scripts/build.sh

STATE="$ROOT/.state"
mkdir -p "$STATE/mlflow" "$STATE/wrangler" "$STATE/agent" "$STATE/logs"
umask 077
# The edge refuses bootstrap tokens shorter than 32 characters; older .state tokens are replaced.
if [[ ! -s "$STATE/token" || $(wc -c < "$STATE/token") -lt 33 ]]; then
  python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$STATE/token"
fi
TOKEN=$(cat "$STATE/token")
printf 'CONCURRENT_API_TOKEN=%s\n' "$TOKEN" > "$STATE/edge.env"
umask 022

MLFLOW_PORT=$(free_port "${MLFLOW_PORT:-5000}")
EDGE_PORT=$(free_port "${EDGE_PORT:-8787}")
PIDS=()
stop() {
  trap - INT TERM EXIT
  echo; echo "==> stopping"
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  sleep 2
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; state is kept in .state/ (delete it to start afresh)"
}
trap stop INT TERM EXIT

wait_for() { # url seconds name log
  for _ in $(seq "$2"); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "$3 did not become ready within $2 s; see $4" >&2; tail -20 "$4" >&2; exit 1
}

echo "==> MLflow on http://127.0.0.1:$MLFLOW_PORT (log: .state/logs/mlflow.log)"
# The registry's webhooks (triggers) reach the edge on loopback, over http; their secrets are
# stored encrypted with a key kept across restarts.
[ -s "$STATE/mlflow/webhook.key" ] || python3 -c "import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())" > "$STATE/mlflow/webhook.key"
MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=$(cat "$STATE/mlflow/webhook.key") \
MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true MLFLOW_WEBHOOK_CACHE_TTL=5 \
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server \
  --backend-store-uri "sqlite:///$STATE/mlflow/mlflow.db" \
  --default-artifact-root mlflow-artifacts:/ --serve-artifacts --artifacts-destination "$STATE/mlflow/artifacts" \
  --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 > "$STATE/logs/mlflow.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$MLFLOW_PORT/health" 120 MLflow "$STATE/logs/mlflow.log"

echo "==> edge API in workerd on http://127.0.0.1:$EDGE_PORT (log: .state/logs/edge.log)"
CONCURRENT_PREBUILT=1 wrangler dev --ip 127.0.0.1 --port "$EDGE_PORT" --persist-to "$STATE/wrangler" \
  --show-interactive-dev-session=false --env-file "$STATE/edge.env" --test-scheduled \
  --var "MLFLOW_TRACKING_URI:http://127.0.0.1:$MLFLOW_PORT" > "$STATE/logs/edge.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$EDGE_PORT/healthz" 90 "The edge API" "$STATE/logs/edge.log"

# wrangler dev does not fire cron triggers by itself: fire the Worker's every-minute trigger.
( trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
  while true; do sleep 60 & wait $!; curl -fsS "http://127.0.0.1:$EDGE_PORT/__scheduled?cron=*+*+*+*+*" >/dev/null 2>&1 || true; done ) &
PIDS+=($!)

# The agent holds an agent token of its cluster, never the admin token.
API="http://127.0.0.1:$EDGE_PORT/api/v1"
agent_token_ok() {
  [[ -s "$STATE/agent-token" ]] && curl -fsS -o /dev/null -H "Authorization: Bearer $(cat "$STATE/agent-token")" \
    -d '{"agent":"check","leases":[]}' "$API/agents/local/heartbeat"
}
if ! agent_token_ok; then
  curl -fsS -o /dev/null -X DELETE -H "Authorization: Bearer $TOKEN" "$API/tokens/local-agent" 2>/dev/null || true
  ( umask 077
    curl -fsS -H "Authorization: Bearer $TOKEN" -d '{"name":"local-agent","role":"agent","cluster":"local"}' "$API/tokens" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$STATE/agent-token" )
fi

# Secrets that nodes use in `secretEnv`: {"<secret>": {"<key>": "<value>"}}, read at each
# attempt, so secrets added here apply without a restart. Readable by its owner only.
if [[ ! -e "$STATE/secrets.json" ]]; then
  ( umask 077; echo '{}' > "$STATE/secrets.json" )
fi
AGENT_FLAGS=()
# Without conda on this machine, conda_env projects (mlflow/mlflow-example, say) are built with
# uv from their conda.yaml, as `mlflow run --env-manager uv` would; a node's envManager wins.
if ! command -v conda >/dev/null 2>&1; then
  AGENT_FLAGS+=(--conda-env-manager uv)
fi

echo "==> agent for cluster 'local' (log: .state/logs/agent.log; secrets: .state/secrets.json)"
"$CARGO_TARGET_DIR/debug/concurrent" agent --edge-url "http://127.0.0.1:$EDGE_PORT" --cluster local \
  --token-file "$STATE/agent-token" --mlflow-uri "http://127.0.0.1:$MLFLOW_PORT" --work-dir "$STATE/agent" \
  --project-root "$ROOT" --mlflow-bin "$ROOT/.venv/bin/mlflow" --secrets-file "$STATE/secrets.json" \
  ${AGENT_FLAGS[@]+"${AGENT_FLAGS[@]}"} > "$STATE/logs/agent.log" 2>&1 &
PIDS+=($!)

for example in pipeline:iris-pipeline sweep:iris-sweep; do
  echo "==> loading examples/${example%%:*}/template.json"
  curl -fsS -X PUT -H "Authorization: Bearer $TOKEN" -H "If-Match: *" \
    --data-binary @"examples/${example%%:*}/template.json" "http://127.0.0.1:$EDGE_PORT/api/v1/templates/${example#*:}" >/dev/null
done

cat <<MSG

  Concurrent is running.
    Open:    http://127.0.0.1:$EDGE_PORT/login#token=$TOKEN
             (the MLflow UI, with a "DAGs" tab next to Experiments and Model registry)
    MLflow directly: http://127.0.0.1:$MLFLOW_PORT
    Start the examples (iris-sweep tries three settings and keeps the best; run it twice to see the cache):
      curl -H "Authorization: Bearer \$(cat .state/token)" -d '{"template":"iris-pipeline"}' http://127.0.0.1:$EDGE_PORT/api/v1/runs
      curl -H "Authorization: Bearer \$(cat .state/token)" -d '{"template":"iris-sweep"}' http://127.0.0.1:$EDGE_PORT/api/v1/runs

  Press Ctrl-C to stop.
MSG
STOPPING=""
trap 'STOPPING=1' INT TERM
wait -n "${PIDS[@]}" || true
sleep 0.5
[[ -n "$STOPPING" ]] || echo "a component exited; see .state/logs/" >&2
stop
