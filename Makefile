# The two README commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.augment3d-installed
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: install demo demo-clean lint test test-slow clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,monai,nnunet]"
	touch $(STAMP)

# The main job: does synthetic data improve segmentation on the scarce site? `augment3d bench
# --recipe quick` builds the phantom recipe's development cohort (124 cases, 55 SSA test cases),
# splits it, renders its synthetic subjects with the generator bundled in the package (trained by
# the phantom recipe on this split), trains three segmentation arms and writes the report (about
# 16 minutes on 2 CPU cores). Running it again continues an interrupted bench; `make demo-clean`
# starts over. (Not --workers: one thread per job would change the figures it reproduces.)
demo: $(STAMP)
	$(BIN)/augment3d bench --recipe quick --out $(DEMO_DIR)/bench
	@echo "demo finished: report $(DEMO_DIR)/bench/report.md (figures beside it; GAN metrics in $(DEMO_DIR)/bench/gan_eval/report.md)"

demo-clean:
	rm -rf $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check augment3d segbench tests benchmarks scripts cli.py
	$(BIN)/ruff format --check augment3d segbench tests benchmarks scripts cli.py
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# exit code 5 means no test is marked slow yet: not a failure
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
