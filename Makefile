# make repro    : create .venv, install pinned dependencies, run the DVC pipeline, render the report
# make test     : same set-up, then make lint, then the test suite
# make lint     : ruff check and mypy on src/, stages/ and tools/ (configured in pyproject.toml)
# make docs    : same set-up plus the docs extras, then the documentation site (mkdocs build --strict -> site/)
# make dvc.yaml : regenerate dvc.yaml from params.yaml and the stage scripts' imports (make repro does it)
# make fast-dvc : opt in to the DVC params cache for this .venv (tools/dvc_params_cache.py: patches
#                 DVC internals, only on the dvc version of constraints.txt; no-op dvc repro 15 s -> 8 s);
#                 make slow-dvc turns it off, LANDSCAPE_DVC_PARAMS_CACHE=0 for one command
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip installs with --no-compile and each import writes the .pyc of what it loads, once; an
# inherited PYTHONDONTWRITEBYTECODE=1 would instead make every stage and test process compile
# torch, dvc and timm from source again (import 11.5 s instead of 4.8 s, measured on a fresh clone)
export PYTHONDONTWRITEBYTECODE :=
# PyTorch's and NumPy's CPU kernels pinned to AVX2 for every process (import landscape sets them too):
# an AVX-512 machine then reproduces an AVX2 machine's dvc.lock bit for bit (landscape.reproducibility)
export ATEN_CPU_CAPABILITY := avx2
export ONEDNN_MAX_CPU_ISA := AVX2
export NPY_DISABLE_CPU_FEATURES := X86_V4 AVX512_ICL AVX512_SPR

.PHONY: help repro test lint docs setup dvc.yaml fast-dvc slow-dvc profile validate bench clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# --no-compile: no .pyc for the ~17k installed .py files up front (imports compile what they use)
	$(BIN)/pip install --disable-pip-version-check -q --no-compile -r requirements.txt -c constraints.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-compile --no-deps --no-build-isolation -e .
	# no hook by default: the .pth that older set-ups wrote (it imported a module that moved) goes
	rm -f "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_landscape_dvc_params_cache.pth"
	touch $(STAMP)

# DVC parses params.yaml once per stage entry and looks each key up by a walk of the whole tree;
# this opt-in hook parses an unchanged file once per process and looks plain keys up directly
fast-dvc: $(STAMP)
	$(BIN)/python -m tools.dvc_params_cache enable

slow-dvc: $(STAMP)
	$(BIN)/python -m tools.dvc_params_cache disable

# dvc.yaml is generated (landscape.pipeline.dvcfile): one stage per experiment group of params.yaml,
# each entry's code deps from its script's import closure; validation stops when it is stale
dvc.yaml: $(STAMP)
	$(BIN)/python -m landscape.pipeline.dvcfile

validate: dvc.yaml
	$(BIN)/python stages/validate.py

# prerun: independent entries two at a time, each committed to dvc.lock, waves through the report;
# dvc repro then checks that everything is up to date and reruns what failed
repro: validate
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m tools.scheduler
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	@echo "report: reports/index.html"

lint: $(STAMP)
	$(BIN)/ruff check src stages tools
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder

# docs: the docs extras (mkdocs-material, mkdocstrings, MathJax from a wheel) into .venv once, then a
# strict build (a warning, a broken link or a resource fetched from another host stops it); the
# examples in docs/ run in the test suite (tests/test_docs_examples.py)
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -q --no-compile --no-build-isolation -e '.[docs]' -c constraints.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "docs: site/index.html"

profile:
	@test -n "$(PROFILE)" || { echo "error: make profile needs PROFILE=<name>; profiles: $$(ls profiles | sed 's/\.yaml$$//' | tr '\n' ' ')" >&2; exit 2; }
	@test -f profiles/$(PROFILE).yaml || { echo "error: no profile '$(PROFILE)' (profiles/$(PROFILE).yaml); profiles: $$(ls profiles | sed 's/\.yaml$$//' | tr '\n' ' ')" >&2; exit 2; }
	cp profiles/$(PROFILE).yaml params.yaml
	$(MAKE) --no-print-directory dvc.yaml
	@echo "params.yaml is now the '$(PROFILE)' profile (git checkout params.yaml dvc.yaml restores the default)"

bench: $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[bench]' -c constraints.txt
	$(BIN)/python bench/curvature.py
	$(BIN)/python bench/eig_accuracy.py

clean-venv:
	rm -rf $(VENV)

help:
	@sed -n '/^[^#]/q; s/^# //p' Makefile
