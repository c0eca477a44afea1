#!/usr/bin/env bash
# Sets up, builds (release) and runs the benchmarks; arguments go to the runner (see --help).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/setup.sh --with-browser  # the designer figures use headless Chromium
# The scale figures use a production-shaped MLflow: PostgreSQL (Debian's package) and its driver.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing PostgreSQL (Debian's postgresql package) for the scale benchmark…"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q postgresql-15 >/dev/null; else sudo apt-get install -y -q postgresql-15 >/dev/null; fi
fi
.venv/bin/python -c "import psycopg2" 2>/dev/null || .venv/bin/pip install --quiet --disable-pip-version-check "psycopg2-binary==2.9.11"
scripts/build.sh --release
CONCURRENT_BIN="$CARGO_TARGET_DIR/agent/concurrent" cargo run --release -p concurrent-bench -- "$@"
