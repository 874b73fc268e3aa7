# Two commands a newcomer needs: `make tutorial` and `make test`.
# Both create or update the pinned environment in .venv first (from requirements.txt).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= tiny
NB_TIMEOUT ?= 1800
PYTEST_WORKERS ?= 2
EXECUTED := outputs/executed
# Notebook kernels draw figures inline (so executed copies show them); unit tests switch to Agg in
# tests/conftest.py. No library progress bars: a static page shows a finished widget bar as "0%| 0/1"
# (the HF_* switches cover transformers, huggingface_hub and datasets; TQDM_DISABLE console bars).
RUN_ENV := HF_HUB_OFFLINE=1 PSYCHE_PROFILE=$(PROFILE) MPLBACKEND=module://matplotlib_inline.backend_inline \
	HF_HUB_DISABLE_PROGRESS_BARS=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1

.PHONY: env tutorial book test unit lab benchmarks clean

env: $(STAMP)

## GPU machines: the pinned stack plus vLLM (requirements-gpu.txt), then the preflight check.
.PHONY: env-gpu
env-gpu: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-gpu.txt
	$(BIN)/python -m psyche_utils.doctor --profile $(if $(filter tiny,$(PROFILE)),qlora,$(PROFILE)) || true

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

## Run every numbered notebook once, in order; executed copies and timings.json go to outputs/executed/,
## figures to outputs/figures/.
tutorial: env
	$(RUN_ENV) $(BIN)/python -m psyche_utils.book execute --timeout $(NB_TIMEOUT) --output-dir $(EXECUTED)

## The browsable executed edition: static HTML pages with figures and an index, in outputs/book/.
book: tutorial
	$(RUN_ENV) $(BIN)/python -m psyche_utils.book render --executed-dir $(EXECUTED) --output-dir outputs/book

## Unit tests in parallel; every numbered notebook once (timed); the solutions notebooks under nbmake, in parallel
## (each writes its exercise runs under its own outputs/exercises/ folder);
## checks on the executed copies (no warnings, figures inline, pages render in Chromium); the sentinel check.
test: env
	@started=$$(date +%s); \
	$(RUN_ENV) $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not executed" tests && \
	$(RUN_ENV) $(BIN)/python -m psyche_utils.book execute --timeout $(NB_TIMEOUT) --output-dir $(EXECUTED) && \
	$(RUN_ENV) $(BIN)/pytest -n $(PYTEST_WORKERS) --nbmake --nbmake-timeout=$(NB_TIMEOUT) notebooks/solutions && \
	$(RUN_ENV) PSYCHE_EXECUTED_REQUIRED=1 $(BIN)/pytest tests/test_executed_notebooks.py && \
	$(RUN_ENV) $(BIN)/python -m psyche_utils.notebook check-sentinels --profile $(PROFILE) --since $$started

unit: env
	$(RUN_ENV) $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not executed" tests

lab: env
	$(BIN)/jupyter lab notebooks

benchmarks: env
	for script in benchmarks/*.py; do $(RUN_ENV) $(BIN)/python $$script || exit 1; done

clean:
	rm -rf outputs
