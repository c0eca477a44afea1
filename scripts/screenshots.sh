#!/usr/bin/env bash
# Copies the README's screenshots (1440×900, taken by the browser tests against the real stack)
# from tests/artifacts into docs/. Run after `make test` (or the tests named below).
# Tests: designer_sizes, designer_project, designer_partitions, run_view, pages.
set -euo pipefail
cd "$(dirname "$0")/.."
a=tests/artifacts
cp "$a/designer_sizes/1440x900.png" docs/designer.png
cp "$a/designer_project/project-aware.png" docs/project-aware-inspector.png
cp "$a/designer_partitions/partition-preview.png" docs/partition-preview.png
cp "$a/run_view_log/log-view.png" docs/log.png
cp "$a/run_view_wide/wide-node.png" docs/thousand-instances.png
cp "$a/pages_schedules/new-schedule.png" docs/schedules.png
cp "$a/pages_tokens/tokens.png" docs/tokens.png
echo "docs/ updated"
