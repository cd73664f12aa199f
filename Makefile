# agentctl: `make demo` sets up and runs the sample pipeline offline; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CRM    := sample_data/crm.duckdb

.PHONY: setup demo demo-research test test-fast bench docs check-docs clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

$(CRM): $(STAMP) sample_data/make_crm.py $(wildcard sample_data/crm_seed/*.csv) sample_data/accounts.csv
	$(PY) sample_data/make_crm.py $(CRM)

setup: $(STAMP) $(CRM)

demo: setup  ## run the 100-account sample pipeline offline (mock model), through the approval gate
	@$(BIN)/agentctl run pipelines/outbound.yaml sample_data/accounts.csv --mock; \
	  code=$$?; test $$code -eq 0 -o $$code -eq 3 || exit $$code
	$(BIN)/agentctl review last
	$(BIN)/agentctl approve last --where "score.score >= 50" --by demo
	$(BIN)/agentctl reject last --all --by demo --note "score below 50"
	$(BIN)/agentctl resume last
	$(BIN)/agentctl inspect last --rows 12
	@echo "Emails written to ./outbox; run log in ./agentctl.duckdb. Try: $(BIN)/agentctl inspect last --item ACC-042"

demo-research: setup  ## the orchestration sample (orchestrate, route, panel, reduce) offline
	$(BIN)/agentctl run pipelines/account_research.yaml sample_data/accounts.csv --mock
	$(BIN)/agentctl inspect last --item ACC-001 --rows 12
	$(BIN)/agentctl export last --stage report

test: setup  ## the whole test suite
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup  ## performance benchmark (see bench/README.md)
	$(PY) bench/run.py

docs: setup  ## regenerate the CLI/spec/schema reference from the code
	$(PY) -m cogapp -r README.md docs/reference.md

check-docs: setup
	$(PY) -m cogapp --check README.md docs/reference.md

clean:
	rm -rf $(VENV) .pytest_cache agentctl.duckdb agentctl.duckdb.wal $(CRM) outbox
