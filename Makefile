# srkit: `make run` (the demo on embedded defaults) and `make test` each do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# torch/torchvision pinned to the builds this project is tested with; override on other platforms,
# e.g. `make test TORCH="torch==2.9.1 torchvision==0.24.1"` on aarch64.
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.srkit-installed

.PHONY: setup browser run test lint typecheck unit clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The system Chromium the browser test drives (installed from the distribution when missing and allowed).
browser:
	scripts/ensure_browser.sh

setup: $(STAMP) browser

run: setup
	$(BIN)/srkit demo --out runs/demo

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
