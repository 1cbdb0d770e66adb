# Two entry points, each doing all of its own set-up on a fresh machine:
#   make quickstart   the main job (offline demo: train a reranker, evaluate before/after, use it)
#   make test         the test suite
# The virtualenv is built once in .venv with the CPU build of torch (see README: "Installing").

PYTHON ?= python3
VENV := .venv
TORCH_VERSION ?= 2.13.0
# Set to https://download.pytorch.org/whl/cpu where PyPI would hand you a multi-GB CUDA build of torch.
TORCH_INDEX_URL ?=
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(VENV)/bin/python -m pip install --quiet -e ".[all,dev]"
	touch $@

.PHONY: install quickstart test test-all bench-quality bench-speed
install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(VENV)/bin/rerank-plugins quickstart

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

test-all: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -m "slow or not slow"

bench-quality: $(VENV)/.installed
	$(VENV)/bin/python bench/quality.py --data ../shared/data/scifact --out bench/results/scifact

bench-speed: $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet -e ".[bench]"   # the peers compared, benchmark-only
	$(VENV)/bin/python bench/speed.py
