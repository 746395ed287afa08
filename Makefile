# The two commands a newcomer needs: `make quickstart` and `make test` (both run setup first);
# `make lab` opens the lane notebooks in JupyterLab to step through one.
.PHONY: setup quickstart lab test lint bench clean

setup:
	@bash scripts/setup.sh

quickstart: setup
	.venv/bin/ucnb run single-node-quickstart

# JupyterLab with the `ucnb` kernel on loopback; prints the URL and token (and, as root, how to
# reach it through an SSH tunnel). E.g. `make lab JUPYTER_ARGS="--port 0"` for a free port.
lab: setup
	.venv/bin/ucnb jupyter $(JUPYTER_ARGS)

lint: setup
	.venv/bin/ruff check ucnb tests benchmarks
	.venv/bin/mypy

# The test layers, fastest first (tests/e2e includes the browser tests: JupyterLab in headless
# chromium, tests/e2e/test_jupyterlab.py); make stops at the first layer that fails (pytest's exit 5, no
# tests collected, fails it too). setup installed every tool a unit test needs: none may skip.
# vm and e2e run TEST_JOBS tests side by side (pytest-xdist; each run has its own lab, subnet and
# names), the tests of one shared run on one worker, long ones first (tests/conftest.py): one
# worker per core (at cores+1 a 2-core TCG host ran at load 10 and timing checks failed); each
# prints its 20 slowest tests. unit runs TEST_JOBS side by side too (each test has its own work
# root; a missing tool still fails it under UCNB_TEST_REQUIRE_TOOLS=1, in every worker).
TEST_JOBS ?= $(shell nproc)
PARALLEL = -n $(TEST_JOBS) --dist loadgroup --no-loadscope-reorder --durations=20
test: lint
	UCNB_TEST_REQUIRE_TOOLS=1 .venv/bin/pytest -q tests/unit -n $(TEST_JOBS)
	.venv/bin/pytest -q tests/vm $(PARALLEL)
	.venv/bin/pytest -q tests/e2e $(PARALLEL)

bench: setup
	.venv/bin/python benchmarks/quickstart.py

clean: setup
	.venv/bin/ucnb lab clean
