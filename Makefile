# Two commands on a fresh Debian machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint bench catalogs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup  ## run the relay and the poller on this machine (SQLite + Maildir)
	$(BIN)/mailbridge demo

test: setup  ## lint, type-check and run the whole test suite (real servers included)
	$(BIN)/ruff check mailbridge tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check mailbridge tests bench
	$(BIN)/mypy

bench: setup  ## print the figures recorded in docs/PERFORMANCE.md
	for b in bench/bench_*.py; do $(BIN)/python -m bench.$$(basename $$b .py) || exit 1; done

catalogs: setup  ## re-extract strings and refresh the gettext catalogs
	$(BIN)/pybabel extract -F babel.cfg -o mailbridge/locale/messages.pot .
	$(BIN)/pybabel update -i mailbridge/locale/messages.pot -d mailbridge/locale --ignore-obsolete
	$(BIN)/python -m mailbridge.relay.i18n

clean:
	rm -rf $(VENV) demo test-artifacts .pytest_cache .mypy_cache .ruff_cache
