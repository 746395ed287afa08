# The two commands a newcomer needs: `make quickstart` and `make test` (both run setup first).
.PHONY: setup quickstart test lint bench clean

setup:
	@bash scripts/setup.sh

quickstart: setup
	.venv/bin/ucnb run single-node-quickstart

lint: setup
	.venv/bin/ruff check ucnb tests benchmarks
	.venv/bin/mypy

test: lint
	.venv/bin/pytest -q

bench: setup
	.venv/bin/python benchmarks/quickstart.py

clean: setup
	.venv/bin/ucnb lab clean
