# The two README commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.augment3d-installed
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: install demo test test-slow clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The main job on the phantom cohort. Until segbench lands (issue 6) this builds the phantom
# cohort, validates and prepares it, trains a tiny GAN (ci recipe), samples from it and
# evaluates it (a tiny GAN makes poor samples: the demo shows the pipeline, not quality).
demo: $(STAMP)
	$(BIN)/augment3d phantom $(DEMO_DIR)/cohort --cases 24 --seed 0 --preview --force
	$(BIN)/augment3d validate $(DEMO_DIR)/cohort
	$(BIN)/augment3d prepare $(DEMO_DIR)/cohort --recipe quick --preview $(DEMO_DIR)/prepared.png
	$(BIN)/augment3d info $(DEMO_DIR)/cohort
	$(BIN)/augment3d train $(DEMO_DIR)/cohort --recipe ci --out $(DEMO_DIR)/run --force
	$(BIN)/augment3d sample $(DEMO_DIR)/run $(DEMO_DIR)/synthetic --n 4 --condition site=SSA --condition grade=HGG --force
	$(BIN)/augment3d evaluate $(DEMO_DIR)/run $(DEMO_DIR)/cohort --out $(DEMO_DIR)/eval --n 8 --force
	@echo "demo finished: cohort $(DEMO_DIR)/cohort (preview.png), prepared grid $(DEMO_DIR)/prepared.png, GAN run $(DEMO_DIR)/run, synthetic cohort $(DEMO_DIR)/synthetic, GAN metrics $(DEMO_DIR)/eval/report.md"

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# exit code 5 means no test is marked slow yet: not a failure
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
