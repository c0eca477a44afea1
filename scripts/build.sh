#!/usr/bin/env bash
# Builds everything the system runs: the `concurrent` binary, the designer bundle, the Worker.
# Usage: scripts/build.sh [--release]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
PROFILE=dev; BIN_DIR=debug
# --release: the agent as shipped (Cargo.toml's `agent` profile: small, with LTO).
[[ "${1:-}" == "--release" ]] && { PROFILE=agent; BIN_DIR=agent; }

echo "==> concurrent (agent and step runner), profile $PROFILE"
cargo build -p concurrent-dispatcher --profile "$PROFILE"

echo "==> designer bundle (frontend/dist)"
cargo build -p concurrent-frontend --target wasm32-unknown-unknown --profile wasm-release
rm -rf frontend/dist && mkdir -p frontend/dist/concurrent
wasm-bindgen --target web --no-typescript --out-name concurrent_frontend --out-dir frontend/dist/concurrent \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/concurrent-frontend.wasm"
wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  frontend/dist/concurrent/concurrent_frontend_bg.wasm -o frontend/dist/concurrent/concurrent_frontend_bg.wasm
cp frontend/static/* frontend/dist/concurrent/

echo "==> edge API (Cloudflare Worker, edge-api/build)"
(cd edge-api && worker-build --release)
echo "built: $CARGO_TARGET_DIR/$BIN_DIR/concurrent, frontend/dist, edge-api/build"
