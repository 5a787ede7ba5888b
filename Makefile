# Albireo — the two commands a new user needs are `make demo` and `make test`.
# Everything else (a virtualenv, Python packages, Kafka/Cassandra/Elasticsearch from
# Maven Central) is installed by these targets on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: chaos demo serve-demo test test-unit test-integration services services-down services-status bench bench-full bench-e2e lint install clean portal-assets

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[servers,catalogs,filters,bench,test]"
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

## The main job with no server at all: real ZTF + Rubin samples → SQLite store, file streams.
demo: $(STAMP)
	$(VENV)/bin/albireo demo

## The portal and API over the demo's store: http://127.0.0.1:8080
serve-demo: $(STAMP)
	$(VENV)/bin/albireo serve --workdir albireo-demo

## Every test: unit, contract and integration on real local Kafka, Cassandra, Elasticsearch.
test: $(STAMP) services
	$(PY) -m ruff check --no-cache .
	ALBIREO_REQUIRE_SHARED=1 $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

## Tests that need no server; on a clone without ../shared/data the ones that read it are left out (and counted).
test-unit: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -m "not integration" $(PYTEST_ARGS)

services: $(STAMP)
	$(VENV)/bin/albireo services up

services-down: $(STAMP)
	$(VENV)/bin/albireo services down

services-status: $(STAMP)
	$(VENV)/bin/albireo services status

## Aladin Lite for the event pages' interactive sky view (npm registry; without it: the static sky map only).
portal-assets: $(STAMP)
	$(PY) -m broker.ops.portal_assets

## Benchmarks (bounded): each prints our figure, a baseline measured in the same run, and the ratio.
bench: $(STAMP) services
	$(PY) bench/bench_crossmatch.py --quick
	$(PY) -m bench.bench_storage --quick
	$(PY) -m bench.bench_pipeline
	$(PY) -m bench.bench_filters
	$(PY) -m bench.bench_filter_transport
	test -f albireo-demo/albireo.sqlite || $(VENV)/bin/albireo demo
	$(PY) bench/bench_api.py --workdir albireo-demo
	$(PY) -m bench.bench_multimessenger
	$(PY) -m bench.bench_scans

## Long fault runs: the exactly-once failure matrix (every point, raise and crash), the fault tests at full size, 10^5 fuzz cases.
chaos: $(STAMP) services
	ALBIREO_CHAOS=1 ALBIREO_REQUIRE_SHARED=1 $(PY) -m pytest -p no:cacheprovider -m integration tests/integration/test_exactly_once.py tests/integration/test_faults.py $(PYTEST_ARGS)
	ALBIREO_CHAOS=1 ALBIREO_REQUIRE_SHARED=1 $(PY) -m pytest -p no:cacheprovider -s tests/unit/test_fuzz_ingest.py $(PYTEST_ARGS)

## The whole stack on the real servers: 200,000 alerts, 1 and 2 workers, latency and a 40,000-alert burst.
bench-e2e: $(STAMP) services
	$(PY) -m bench.bench_e2e

## The long versions (10^8-row catalogs, 10^6 indexed loci): tens of minutes.
bench-full: $(STAMP) services
	$(PY) bench/bench_crossmatch.py --full
	$(PY) -m bench.bench_storage

lint: $(STAMP)
	$(PY) -m ruff check --no-cache .

clean:
	rm -rf albireo-demo .pytest_cache build *.egg-info
