# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,ray,optuna]"
	command -v chromium || command -v chromium-browser || (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 || echo "no chromium (apt-get as root adds it): the compare report's browser test skips"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/yolo-pipeline data synth --out datasets/synthetic-defects --images 400 --seed 0 --size 128
	$(BIN)/yolo-pipeline train configs/demo.yaml

# Ends with the 20 slowest tests and its own duration (`make test: 9m 43s`), passed or not; the exit status is
# the checks'.
# Two pytest-xdist workers: much of a test is one Python thread (a command's start, a server's answer), so two
# share the cores better than one; each file's tests stay on one worker (its module fixtures are made once).
# The manual (docs/, mkdocs.yml) is built with --strict after ruff: a broken link or a missing picture fails it
# (not --quiet: with it, mkdocs 1.6 no longer counts the warnings that --strict fails on), into a temporary folder
# removed afterwards: the checks leave nothing in the checkout.
TEST_WORKERS ?= 2
test: $(STAMP)
	@start=$$(date +%s); site=$$(mktemp -d); \
	$(BIN)/ruff check pipeline tests scripts && \
	$(BIN)/ruff format --check pipeline tests scripts && \
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $$site && \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=20; \
	status=$$?; rm -rf $$site; elapsed=$$(($$(date +%s) - start)); \
	echo "make test: $$((elapsed / 60))m $$((elapsed % 60))s"; \
	exit $$status

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests scripts
	$(BIN)/ruff format --check pipeline tests scripts

clean:
	rm -rf runs mlruns mlflow.db datasets/synthetic-defects
