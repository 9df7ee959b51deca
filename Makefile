# Set-up on a fresh machine needs only Python 3.11+ and a running Docker engine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo demo-grpc test samples lint clean benchmark

# The demo needs only the runtime dependencies; the tests and lint add the dev ones.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

samples: $(VENV)/.installed
	$(PY) -m sample_models.build

# The harness checking the conformant sample, run from reports/ as an author would run it
# from any directory (its own pytest.ini keeps the project's test settings out of it).
demo: $(VENV)/.runtime
	$(PY) -m sample_models.build langid
	mkdir -p reports
	printf '[pytest]\n' > reports/pytest.ini
	cd reports && ../$(PY) -m pytest -p no:cacheprovider -rA \
		--model-image psc-samples/langid:latest \
		--model-data=../sample_models/langid/data \
		--conformance-report=. \
		--junitxml=conformance.junit.xml

# The gRPC variant: its extra, its conformant sample (grpcio's wheels come from PyPI).
demo-grpc: $(VENV)/.runtime
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[grpc]'
	$(PY) -m sample_models.build grpc-langid
	mkdir -p reports/grpc
	printf '[pytest]\n' > reports/grpc/pytest.ini
	cd reports/grpc && ../../$(PY) -m pytest -p no:cacheprovider -rA \
		--model-protocol grpc \
		--model-image psc-samples/grpc-langid:latest \
		--model-data=../../sample_models/grpc_langid/data \
		--conformance-report=. \
		--junitxml=conformance.junit.xml

test: samples
	./tests/install-system-deps.sh
	$(PY) -m pytest $(PYTEST_ARGS)

# testcontainers-python, for the readiness comparison, lives in the benchmark's own venv.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: benchmarks/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements.txt
	touch $@

benchmark: samples $(BENCH_VENV)/.installed
	$(PY) benchmarks/run.py --testcontainers-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check harness sample_models tests benchmarks
	$(PY) -m ruff format --check harness sample_models tests benchmarks
	$(PY) -m mypy harness

clean:
	rm -rf $(VENV) $(BENCH_VENV) build reports
