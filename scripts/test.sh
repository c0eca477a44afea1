#!/usr/bin/env bash
# Sets up, builds, and runs every test: unit and property tests, then integration tests against
# real MLflow, the edge API in workerd, and the agent.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/setup.sh --with-browser
scripts/build.sh
echo "==> tests"
cargo test --workspace --exclude concurrent-edge-api --exclude concurrent-frontend -- --test-threads 4
