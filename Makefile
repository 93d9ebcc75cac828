# framecast: `make demo` sets up and runs the quick comparison; `make test` sets up and runs the tests;
# `make docs` sets up and builds the documentation site into site/ (mkdocs build --strict).
# `make wheel-check` builds the wheel and the sdist and runs framecast from the wheel in a fresh venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A known-good PyTorch, installed before the package (whose metadata only asks for a range).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.framecast-installed
# `make test-min`: the lowest versions pyproject.toml allows, in a venv of their own
VENV_MIN  ?= .venv-min
MIN_STAMP := $(VENV_MIN)/.framecast-installed

.PHONY: setup demo test bench lint docs clean setup-min test-min snapshot wheel-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,maxvit]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/framecast compare --config configs/compare_quick.yaml --out reports/quick

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py

# Rewrite tests/data/shipped_configs_resolved.json after a deliberate change of a default or a config
snapshot: $(STAMP)
	FRAMECAST_WRITE_SNAPSHOT=1 $(BIN)/python -m pytest tests/test_config.py -k shipped -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

# The site's generated pages (docs/gen_pages.py) come from the registry, the config dataclasses and
# benchmarks/results/; --strict: a broken link, anchor or reference fails the build.
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

# The wheel and the sdist as users get them: built, installed into a fresh venv and run from
# outside the checkout (scripts/check_wheel.sh says what it checks)
wheel-check: $(STAMP)
	BUILD_PYTHON=$(BIN)/python PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" scripts/check_wheel.sh

# Every ">=" floor of pyproject.toml (dependencies and all extras) pinned with "==" by
# scripts/min_versions.py, so the pins cannot drift from what the package declares; wheels only,
# as a user on Python 3.11 would get them (pysteps, which publishes none, is built from source).
# A fresh venv each time pyproject.toml changes.
$(MIN_STAMP): pyproject.toml scripts/min_versions.py
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install --quiet --upgrade pip
	$(PYTHON) scripts/min_versions.py > $(VENV_MIN)/requirements-min.txt
	$(VENV_MIN)/bin/python -m pip install --quiet --only-binary=:all: --no-binary=pysteps -r $(VENV_MIN)/requirements-min.txt
	$(VENV_MIN)/bin/python -m pip install --quiet --no-deps -e .
	$(VENV_MIN)/bin/python -m pip check
	touch $(MIN_STAMP)

setup-min: $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(VENV_MIN)/bin/python -m pip list --format=freeze | grep -iE "^($$(cut -d= -f1 $(VENV_MIN)/requirements-min.txt | paste -sd'|'))=="
	$(VENV_MIN)/bin/python -m pytest
	$(VENV_MIN)/bin/ruff check src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(VENV_MIN) reports runs site
