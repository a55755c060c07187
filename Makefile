PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-api-fuzz lint bench setup clean

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

# schemathesis against `ceap serve` with every check, 300 examples per operation (make test
# runs the same with 15); see docs/api.md
test-api-fuzz: setup
	CEAP_API_FUZZ_EXAMPLES=300 $(BIN)/python -m pytest -q -s tests/test_api_schemathesis.py

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

clean:
	rm -rf .ceap data models

.PHONY: reliability
# kill -9 the dispatcher mid-send and restart it (thousands of messages), provider outages;
# prints the measured numbers
reliability: setup
	CEAP_SLOW=1 $(BIN)/python -m pytest -q -s tests/test_reliability_kill.py tests/test_provider_outage.py
