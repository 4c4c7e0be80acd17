# dfa-ray: every target creates .venv when missing and installs the package into it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Ray-starting tests run inside a network namespace that has only the loopback interface, so
# every address Ray binds and dials is 127.0.0.1 (see tests/README.md).
LOOPBACK_NS := scripts/loopback-ns

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The quickstart sweep on a local Ray, then its report.
demo: $(STAMP)
	$(LOOPBACK_NS) --optional $(VENV)/bin/dfa-ray sweep experiments/quickstart.yaml --storage $(CURDIR)/runs
	$(VENV)/bin/dfa-ray report $(CURDIR)/runs/quickstart --out $(CURDIR)/runs/quickstart/report

test: $(STAMP)
	$(LOOPBACK_NS) $(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(LOOPBACK_NS) $(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs
