# prefopt — `make demo` runs the tiny online-vs-offline study; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= dev,deepspeed,bitsandbytes

.PHONY: venv demo demo-quick test test-unit lint clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/prefopt demo --out outputs/demo

demo-quick: venv
	$(VENV)/bin/prefopt demo --quick --out outputs/demo-quick

test: venv
	$(PY) -m pytest -q tests

# the fast tier only: pure maths and pure functions (tests/unit), no models, servers or subprocesses
test-unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(VENV)/bin/ruff check prefopt tests benchmarks

clean:
	rm -rf outputs .pytest_cache .ruff_cache
