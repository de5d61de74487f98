# User-facing commands: `make demo`, `make test` (the full suite, what CI runs) and `make test-fast`
# (everything but the `slow` and `ray` tests). Each creates .venv and installs first. Both test
# targets run on two pytest-xdist workers; every Ray test runs on one of them (tests/conftest.py).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,notebooks,tensorboard]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mirrorhall demo

# PYTEST_ARGS passes options through, e.g. `make test-fast PYTEST_ARGS=--durations=25`.
test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/pytest -q -n 2 -m "not slow and not ray" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info
