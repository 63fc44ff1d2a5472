#!/usr/bin/env bash
# `make test`: the full test suite (lint, types, unit, integration and browser tests
# against the real PostgreSQL, Redis, Docker engine, a Celery worker process and
# headless Chromium).
# Extra arguments go to pytest, e.g. `make test ARGS="-k hardening"`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_test_stack
cd "$REPO"

say "ruff"
"$VENV/bin/ruff" check .
say "mypy"
"$VENV/bin/mypy" .
say "import layers (lint-imports)"
"$VENV/bin/lint-imports" --no-cache
say "front end: prettier, tsc, vitest"
(cd "$REPO/web_ui/frontend" && npm run lint --silent && npm test --silent)
say "pytest"
# pytest exits 5 when it collected no test: set -e makes that a failure, as it must be.
"$VENV/bin/python" -m pytest -n "${FLOWKIT_TEST_PROCESSES:-2}" --dist loadfile -m "not exclusive and not benchmark" "$@"
say "pytest: tests that run alone"
# Without arguments these must exist (exit 5 fails); a selection given as arguments
# (-k, a path) may leave none of them, which is fine.
status=0
"$VENV/bin/python" -m pytest -m "exclusive and not benchmark" "$@" || status=$?
if [ "$status" -ne 0 ] && ! { [ "$status" -eq 5 ] && [ "$#" -gt 0 ]; }; then exit "$status"; fi
