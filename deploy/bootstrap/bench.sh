#!/usr/bin/env bash
# `make bench`: the benchmarks in tests/benchmarks/, on the real services and a real
# browser, one at a time (no parallel tests taking CPU from them); they print their
# figures beside a baseline measured in the same run and rewrite their sections of
# docs/PERFORMANCE.md. The engine's benchmark installs Prefect 3 into its own virtual
# environment under ~/.cache/flowkit-bench the first time (a few minutes, kept).
# Only the engine's figures: make bench ARGS="-k test_engine".
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_test_stack
# The NPU figures are measured under gVisor too (beside runc, not as a target).
ensure_gvisor
cd "$REPO"

"$VENV/bin/python" -m pytest -p no:xdist -m benchmark -s tests/benchmarks "$@"
