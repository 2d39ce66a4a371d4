# Two commands: `make demo` and `make test`. Each one creates or refreshes the local
# virtual environment from requirements.txt when needed, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements.stamp

.PHONY: demo test venv clean-venv

# Rebuilt only when requirements.txt changed (or the venv is missing): fast when nothing did.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) scripts/demo.py

clean-venv:
	rm -rf $(VENV)
