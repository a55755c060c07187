PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-uplift setup clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/ceap demo

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

# the benchmarks of bench/README.md, one after the other (long: the batch one reads 10M rows)
bench: setup
	$(BIN)/python bench/batch_pipeline.py
	$(BIN)/python bench/scoring.py
	$(BIN)/python bench/dispatch_email.py
	$(BIN)/python bench/dispatch_webhook.py
	$(BIN)/python bench/serving_api.py --connections 26
	$(BIN)/python bench/realtime.py
	$(BIN)/python bench/attribution.py
	$(MAKE) bench-uplift

# uplift and the bandit on simulated customers with a known response (docs/experiments.md,
# "Proof on a known truth"); about twenty minutes on a loaded 2-core machine
bench-uplift: setup
	$(BIN)/python bench/uplift_coverage.py --pg $(or $(CEAP_TEST_PG),postgresql://postgres@127.0.0.1:5432/test)
	$(BIN)/python bench/bandit_regret.py --plot docs/img/bandit_regret.png
	$(BIN)/python bench/uplift_targeting.py

clean:
	rm -rf .ceap data models

.PHONY: reliability
# kill -9 the dispatcher mid-send and restart it (thousands of messages), provider outages;
# prints the measured numbers
reliability: setup
	CEAP_SLOW=1 $(BIN)/python -m pytest -q -s tests/test_reliability_kill.py tests/test_provider_outage.py
