#!/usr/bin/env bash
# Sets up, builds, and runs every test: unit and property tests, then integration tests against
# real MLflow, the edge API in workerd, and the agent.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/setup.sh --with-browser
scripts/build.sh
echo "==> tests"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
set +e
cargo test --workspace --exclude concurrent-edge-api --exclude concurrent-frontend --no-fail-fast -- --test-threads 4 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
echo "==> designer component tests (wasm-bindgen-test, headless Chromium)"
CHROMEDRIVER=/usr/bin/chromedriver cargo test -p concurrent-frontend --target wasm32-unknown-unknown 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
set -e
# One closing line over every test binary (cargo prints one "test result" line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntotal: %d passed, %d failed\n", p, f }' "$LOG"
exit "$status"
