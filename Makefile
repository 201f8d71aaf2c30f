# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
STATE  ?= $(if $(LINEAGE_HOME),$(LINEAGE_HOME),$(CURDIR)/.lineage)
UI_HOME := $(if $(DAGSTER_HOME),$(DAGSTER_HOME),$(STATE)/dagster)
PYTEST_ARGS ?=

.PHONY: install demo test ui bench scale lint soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when pyproject.toml changes; the full log stays in .venv/install.log. The demo
# and the tests need every extra (DVC, MLflow, OpenLineage, report, UI, PostgreSQL): `.[all,dev]`.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing lineage_platform and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install --disable-pip-version-check -e '.[all,dev]' > $(VENV)/install.log 2>&1 \
		|| { tail -n 30 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/lineage demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The UI over the instance `lineage` reads: $DAGSTER_HOME when set, else the state folder's.
ui: install
	DAGSTER_HOME=$(UI_HOME) $(BIN)/lineage init >/dev/null
	DAGSTER_HOME=$(UI_HOME) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1

# The example pipeline (assets/) is the project's, not installed: scripts import it from here.
bench: install
	@for f in benchmarks/bench_*.py; do echo "== $$f"; PYTHONPATH=$(CURDIR) $(BIN)/python $$f || exit 1; done

scale: install
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/scale.py

# The long form of the fault and fuzz tests `make test` runs briefly: 20 SIGKILL trials over a
# 5,000-event backlog, then ten minutes of fuzzing every parser of untrusted input.
soak: install
	LINEAGE_FAULT_TRIALS=20 LINEAGE_FAULT_BACKLOG=5000 $(BIN)/python -m pytest -q -s tests/faults
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/fuzz.py --minutes 10

lint: install
	$(BIN)/ruff check lineage_platform assets tests benchmarks deploy
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .lineage .pytest_cache .mypy_cache .ruff_cache
