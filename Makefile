# Set-up and the two entry points. Everything lives in a local virtual environment (.venv).
# TORCH_SPEC pins the CPU build of PyTorch found on this kind of machine; on a GPU machine use e.g.
#   make test TORCH_SPEC="torch"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	# the fastmri package is a test-only reference; its full dependency chain (torchvision, lightning) is not needed
	$(PY) -m pip install -q --no-deps "fastmri==0.3.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recon demo --out out/demo.png

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
