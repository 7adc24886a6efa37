# Two commands do all the set-up on a fresh machine:
#   make demo   - installs into .venv and runs `statsworker demo` (embedded, no server)
#   make test   - installs into .venv and runs the test suite (needs Redis and PostgreSQL)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-quick lint install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "installing statsworker and its pinned dependencies into $(VENV) (about half a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

demo: install
	$(BIN)/statsworker demo

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check events stats worker api_stub tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/run.py

bench-quick: install
	$(BIN)/python bench/run.py --quick
