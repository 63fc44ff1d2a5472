#!/usr/bin/env bash
# `make test`: the full test suite (lint, types, unit and integration tests against
# the real PostgreSQL, Redis, Docker engine and a Celery worker process).
# Extra arguments go to pytest, e.g. `make test ARGS="-k hardening"`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_python_env dev
ensure_postgres
ensure_redis
ensure_docker
cd "$REPO"
export DJANGO_SETTINGS_MODULE=tests.settings PYTHONPATH=$REPO
ensure_npu_image
ensure_npu_egress_policy

say "ruff"
"$VENV/bin/ruff" check .
say "mypy"
"$VENV/bin/mypy" .
say "pytest"
# pytest exits 5 when it collected no test: set -e makes that a failure, as it must be.
"$VENV/bin/python" -m pytest -n "${FLOWKIT_TEST_PROCESSES:-2}" --dist loadfile "$@"
