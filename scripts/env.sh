# Sourced by the other scripts: the pinned tools first on PATH, and worker-build kept offline.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/node_modules/.bin:$ROOT/.venv/bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export WASM_BINDGEN_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
# Builds share one target directory across checkouts of this repository on a machine, so a
# fresh clone (CI) only compiles what changed. Override with CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/concurrent/target}"

# Prints a free loopback port, preferring $1 when it is free.
free_port() {
  python3 - "$@" <<'PY'
import socket, sys
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return s.getsockname()[1]
    except OSError:
        return None
    finally:
        s.close()
want = int(sys.argv[1]) if len(sys.argv) > 1 else 0
print((want and free(want)) or free(0))
PY
}
