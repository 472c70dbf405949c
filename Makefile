# Every target builds .venv on first use, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-deploy lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,mpi,watch,data]'
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/disttrain train examples/digits.toml

# tests/deploy needs a Docker engine: only test-deploy runs it.
test: $(STAMP)
	$(VENV)/bin/ruff check disttrain workers launch tests bench
	$(PY) -m pytest -q --ignore=tests/deploy --durations=30

# The image and the compose stack on a real Docker engine (docker/test-deploy.sh installs
# docker.io, starts dockerd and builds a base image when needed; root, about 5-8 minutes).
test-deploy: $(STAMP)
	docker/test-deploy.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check disttrain workers launch tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
