# The two commands of README.md. Both do all the set-up they need on a fresh machine.
.PHONY: setup demo test test-unit test-integration bench

setup:
	scripts/setup.sh

# Main job on embedded defaults: the whole pipeline on the built sample video and watchlist.
demo: setup
	.venv/bin/openlfr run

# Every test: the fast unit tier, then the full tier against real servers.
test: setup
	scripts/test.sh

test-unit: setup
	.venv/bin/python -m pytest -m "not integration" tests

test-integration: setup
	.venv/bin/python -m pytest -m integration tests

bench: setup
	.venv/bin/python benchmarks/bench_models.py --out docs/benchmarks-latest.json
