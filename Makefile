# Set-up on a fresh machine needs only Python 3.11+ and a running Docker engine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test samples lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

samples: $(VENV)/.installed
	$(PY) -m sample_models.build

# The harness checking the conformant sample, run from reports/ as an author would run it
# from any directory.
demo: samples
	mkdir -p reports
	cd reports && ../$(PY) -m pytest -c /dev/null --rootdir=. -p no:cacheprovider -v \
		--model-image psc-samples/langid:latest \
		--model-data=../sample_models/langid/data \
		--conformance-report=. \
		--junitxml=conformance.junit.xml

test: samples
	./tests/install-system-deps.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check harness sample_models tests
	$(PY) -m ruff format --check harness sample_models tests
	$(PY) -m mypy harness

clean:
	rm -rf $(VENV) build reports
