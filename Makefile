# Two commands on a fresh Debian machine: `make demo` and `make test`.
# Every Python package comes from the hashed lock in requirements/ (see docs/ARCHITECTURE.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.txt
COMPILE = $(BIN)/uv pip compile -q --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock'

.PHONY: setup system demo test lint bench catalogs lock upgrade clean argon2-avx2

$(BIN)/.installed: $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install -qq --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

setup: $(BIN)/.installed  ## the venv, exactly as locked

argon2-avx2: setup  ## optional: the receipt hash built for this CPU's AVX2 (docs/ADMIN.md)
	@bash scripts/argon2-avx2

system:  ## the Debian packages the test suite needs (installs them as root)
	@bash scripts/system-packages

demo: setup  ## run the relay and the poller on this machine (SQLite + Maildir)
	$(BIN)/mailbridge demo

test: system setup  ## lint, type-check and run the whole test suite (real servers included)
	$(BIN)/ruff check mailbridge tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check mailbridge tests bench
	$(BIN)/mypy

bench: setup  ## print the figures recorded in docs/PERFORMANCE.md
	for b in bench/bench_*.py; do $(BIN)/python -m bench.$$(basename $$b .py) || exit 1; done

catalogs: setup  ## re-extract strings and refresh the gettext catalogs
	$(BIN)/pybabel extract -F babel.cfg --no-location --sort-output -o mailbridge/locale/messages.pot .
	$(BIN)/pybabel update -i mailbridge/locale/messages.pot -d mailbridge/locale --ignore-obsolete --no-fuzzy-matching --width 100
	$(BIN)/pybabel compile -d mailbridge/locale

lock: setup  ## re-resolve the lock within pyproject's ranges (keeps versions that still fit)
	$(COMPILE) $(LOCK_FLAGS) --extra dev pyproject.toml requirements/build.in -o $(LOCK)
	$(COMPILE) $(LOCK_FLAGS) pyproject.toml -o requirements/main.txt

upgrade:  ## move the lock to the newest releases within pyproject's ranges, then test
	$(MAKE) lock LOCK_FLAGS=--upgrade
	$(MAKE) test

clean:
	rm -rf $(VENV) demo test-artifacts .pytest_cache .mypy_cache .ruff_cache
