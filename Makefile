# Three commands: `make demo`, `make test` and `make editor` (after `make demo`: the interactive
# editor on the demo model); `make test` runs `make lint` (ruff, configured in pyproject.toml)
# first. Each one creates or refreshes the local virtual environment from requirements.txt,
# requirements-editor.txt and (without their dependency pins) requirements-nodeps.txt when
# needed, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements.stamp
REQS   := requirements.txt requirements-editor.txt requirements-nodeps.txt

.PHONY: demo test lint editor venv clean-venv gpu-check

# Rebuilt only when a requirements file changed (or the venv is missing): fast when nothing did.
$(STAMP): $(REQS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-editor.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

venv: $(STAMP)

# ruff with pyproject.toml's small rule set (syntax errors, pyflakes, mutable defaults).
lint: $(STAMP)
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) scripts/demo.py

# On a CUDA machine: build the ops, run every CUDA test, benchmark both upfirdn2d kernels
# (runs/gpu_check/), with .venv's Python if there is one, else python3 (a GPU machine's own torch).
gpu-check:
	scripts/gpu_check.sh

# The newest `make demo` run in the browser editor; EDITOR_ARGS="--port 8000" etc. are passed on.
editor: $(STAMP)
	$(PY) scripts/editor.py --demo $(EDITOR_ARGS)

clean-venv:
	rm -rf $(VENV)
