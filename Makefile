.PHONY: up down test bench lint

# Bring up the whole system on this machine: Python env, PostgreSQL, Redis, Docker
# engine, NPU image, migrations, worker, web, first admin account.
up:
	bash deploy/bootstrap/up.sh

down:
	bash deploy/bootstrap/down.sh

# The full test suite.
test:
	bash deploy/bootstrap/test.sh $(ARGS)

# The benchmarks (tests/benchmarks/): figures against a baseline, into docs/PERFORMANCE.md.
bench:
	bash deploy/bootstrap/bench.sh $(ARGS)

lint:
	.venv/bin/ruff check . && .venv/bin/mypy . && .venv/bin/lint-imports --no-cache
