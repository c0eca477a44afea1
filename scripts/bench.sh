#!/usr/bin/env bash
# Sets up, builds (release) and runs the benchmarks; arguments go to the runner (see --help).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/setup.sh
scripts/build.sh --release
CONCURRENT_BIN="$CARGO_TARGET_DIR/release/concurrent" cargo run --release -p concurrent-bench -- "$@"
