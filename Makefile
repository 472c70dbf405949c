# Every target builds .venv on first use, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,mpi]'
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/disttrain train examples/digits.toml

test: $(STAMP)
	$(VENV)/bin/ruff check disttrain workers launch tests bench
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check disttrain workers launch tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
