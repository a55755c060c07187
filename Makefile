PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test typecheck test-api-fuzz test-clock test-clock-ci lint bench bench-serving bench-uplift bench-scale bench-realtime-recovery bench-quix setup clean \
	screenshots bench-dashboard

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# constraints.txt: the versions known to work together (pip never backtracks through releases)
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/ceap demo

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -m "not slow"

# schemathesis against `ceap serve` with every check and phase, 300 examples per operation (CI:
# API_FUZZ_EXAMPLES=150; make test runs a smoke run: 3, no coverage phase); see docs/api.md
API_FUZZ_EXAMPLES ?= 300
test-api-fuzz: setup
	CEAP_API_FUZZ_EXAMPLES=$(API_FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s tests/test_api_schemathesis.py

# the suite under a moved clock (libfaketime; Debian package faketime): a year ahead, then
# from 90 s before the coming New Year's midnight UTC; both runs, then the verdict
CLOCK_TESTS ?= tests
test-clock: setup
	@status=0; \
	PYTHON=$(BIN)/python tests/clock/run +365d -q -m "not slow" $(CLOCK_TESTS) || status=1; \
	PYTHON=$(BIN)/python tests/clock/run new-year -q -m "not slow" $(CLOCK_TESTS) || status=1; \
	exit $$status

# the part of it CI runs after make test: what reads the clock most (expiry, retries,
# Retry-After, quiet hours and caps, event time, callbacks, inbox times)
CLOCK_CI_TESTS := tests/test_dispatcher.py tests/test_policies.py tests/test_realtime.py \
	tests/test_channel_sms_voice.py tests/test_channel_webhooks.py tests/test_api_callbacks.py \
	tests/test_stores.py tests/test_inapp_channel.py tests/test_scheduler.py tests/test_attribution.py \
	tests/test_tracking.py tests/test_bandit.py tests/test_digests.py tests/test_digest_docs.py \
	tests/test_journeys.py tests/test_journeys_flows.py tests/test_journeys_ticker.py
test-clock-ci: setup
	@$(MAKE) --no-print-directory test-clock CLOCK_TESTS="$(CLOCK_CI_TESTS)"

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

# the type check alone (CI runs it after make test; about a minute with no cache)
typecheck: setup
	$(BIN)/mypy src

# the benchmarks of bench/README.md, one after the other (long: the batch one reads 10M rows)
bench: setup
	$(BIN)/python bench/batch_pipeline.py
	$(BIN)/python bench/scoring.py
	$(BIN)/python bench/dispatch_email.py
	$(BIN)/python bench/dispatch_webhook.py
	$(MAKE) bench-serving
	$(BIN)/python bench/realtime.py
	$(BIN)/python bench/attribution.py
	$(MAKE) bench-uplift

# serving API at 2,000 req/s offered per route, open loop, against /healthz (bench/README.md):
# SQLite, then PostgreSQL
bench-serving: setup
	$(BIN)/python bench/serving_api.py --rate 2000 --workers 2 --duration 30
	$(BIN)/python bench/serving_api.py --rate 2000 --workers 2 --duration 30 --pg $(or $(CEAP_TEST_PG),postgresql://postgres@127.0.0.1:5432/test)

# uplift and the bandit on simulated customers with a known response (docs/experiments.md,
# "Proof on a known truth"); about twenty minutes on a loaded 2-core machine
bench-uplift: setup
	$(BIN)/python bench/uplift_coverage.py --pg $(or $(CEAP_TEST_PG),postgresql://postgres@127.0.0.1:5432/test)
	$(BIN)/python bench/bandit_regret.py --plot docs/img/bandit_regret.png
	$(BIN)/python bench/uplift_targeting.py

# memory against rows (1M, 10M, 100M rows of Parquet) and the local engine against Spark
# SIGKILL a worker 10 times during a replay over a group of two (Kafka protocol, PostgreSQL store)
bench-realtime-recovery: setup
	nice $(BIN)/python bench/realtime_recovery.py --pg $(or $(CEAP_TEST_PG),postgresql://postgres@127.0.0.1:5432/test)

# CEAP's worker against Quix Streams on the same windowed count, 1 and 2 partitions (Tansu);
# Quix in its own venv, never in .venv (bench/README.md, "Real-time peer: Quix Streams")
QUIX_VENV := .venv-quix
$(QUIX_VENV)/bin/python:
	$(PY) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install --quiet 'quixstreams==3.28.1'

bench-quix: setup $(QUIX_VENV)/bin/python
	nice $(BIN)/python bench/quix_peer.py --quix-python $(QUIX_VENV)/bin/python

# local[2] at 10M rows (bench/README.md, "Scale"); more than an hour on a 2-core machine
bench-scale: setup
	$(BIN)/python bench/scale.py

# screenshots of the dashboard's main pages (docs/dashboard.md), in Debian's chromium
screenshots: setup
	$(BIN)/python -m tests.ui_screenshots docs/img

# the dashboard's page latency on the demo's data (bench/README.md, "Dashboard")
bench-dashboard: setup
	test -f .ceap/demo.db || $(BIN)/ceap demo
	$(BIN)/python bench/dashboard.py

clean:
	rm -rf .ceap data models

.PHONY: reliability
# kill -9 the dispatcher mid-send and restart it (thousands of messages), provider outages;
# prints the measured numbers
reliability: setup
	CEAP_SLOW=1 $(BIN)/python -m pytest -q -s tests/test_reliability_kill.py tests/test_provider_outage.py
