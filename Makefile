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

.PHONY: install quickstart quickstart-ko test test-slow test-all bench-quality bench-first-stage bench-speed
install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(VENV)/bin/rerank-plugins quickstart

quickstart-ko: $(VENV)/.installed
	$(VENV)/bin/rerank-plugins quickstart --lang ko --output runs/quickstart-ko

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

test-slow: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -m "slow or ray"

test-all: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -m "slow or ray or not slow"

# Each reproduces a committed results file with the command written at its top (fresh models: runs/ is not reused).
bench-quality: $(VENV)/.installed
	$(VENV)/bin/python bench/quality.py --data ../shared/data/scifact --out bench/results/scifact-hybrid \
		--work runs/bench-quality --depths 30 --cross-epochs 2 --runtime onnx --mine-with hybrid \
		--pipelines b,h,hb --hybrid-weight 0.4

bench-first-stage: $(VENV)/.installed
	$(VENV)/bin/python bench/first_stage.py --data ../shared/data/scifact --analyzers english,generic,auto \
		--out bench/results/first-stage-scifact
	$(VENV)/bin/python bench/first_stage.py --data ../shared/data/korquad-1.0-dev/KorQuAD_v1.0_dev.json \
		--analyzers korean,korean-bigram,korean-morph,generic,auto --all-split all \
		--out bench/results/first-stage-korquad
	$(VENV)/bin/python bench/first_stage_speed.py --data ../shared/data/scifact --out bench/results/first-stage-speed.md

bench-speed: $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet -e ".[bench]"   # the peers compared, benchmark-only
	$(VENV)/bin/python bench/speed.py
