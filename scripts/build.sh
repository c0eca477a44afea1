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
# The pages marked `#[lazy]` (frontend/src/app.rs) go into wasm modules of their own, fetched
# when first shown: wasm-split needs the linker's relocations to cut them out, and the main
# module must keep exporting the function table the split modules share.
cargo rustc -p concurrent-frontend --bin concurrent-frontend --target wasm32-unknown-unknown --profile wasm-release \
  -- -C link-arg=--emit-relocs
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
wasm-split-cli --target web --out-name concurrent_frontend \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/concurrent-frontend.wasm" "$OUT/split"
wasm-bindgen --target web --no-typescript --keep-lld-exports --out-name concurrent_frontend \
  --out-dir "$OUT/bundle" "$OUT/split/concurrent_frontend.wasm"
rm "$OUT/split/concurrent_frontend.wasm"
mv "$OUT/split"/* "$OUT/bundle/"
# (wasm-split names locals in a subsection wasm-opt does not read, and says so for each module.)
for wasm in "$OUT"/bundle/*.wasm; do
  wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue "$wasm" -o "$wasm" 2>&1 \
    | { grep -v "unknown name subsection" || true; } >&2
done
# A split module only fits the main module it was cut from, and a tab may fetch one long after
# it loaded: each build's modules live under a directory named after their content, and the
# two entry points (index.html, loader.js) name it.
BUILD=$(cat "$OUT"/bundle/* | sha256sum | cut -c1-16)
rm -rf frontend/dist && mkdir -p frontend/dist/concurrent
mv "$OUT/bundle" "frontend/dist/concurrent/$BUILD"
cp frontend/static/* frontend/dist/concurrent/
sed -i "s|/concurrent/concurrent_frontend.js|/concurrent/$BUILD/concurrent_frontend.js|" \
  frontend/dist/concurrent/index.html frontend/dist/concurrent/loader.js
for entry in index.html loader.js; do grep -q "/concurrent/$BUILD/" "frontend/dist/concurrent/$entry"; done

echo "==> edge API (Cloudflare Worker, edge-api/build)"
(cd edge-api && worker-build --release)
echo "built: $CARGO_TARGET_DIR/$BIN_DIR/concurrent, frontend/dist, edge-api/build"
