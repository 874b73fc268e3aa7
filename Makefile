# Two commands a newcomer needs: `make tutorial` and `make test`.
# Both create or update the pinned environment in .venv first (from requirements.txt).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= tiny
NB_TIMEOUT ?= 1800
RUN_ENV := HF_HUB_OFFLINE=1 PSYCHE_PROFILE=$(PROFILE) MPLBACKEND=Agg

.PHONY: env tutorial test unit notebooks solutions lab benchmarks clean

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

## Run every numbered notebook top to bottom; executed copies go to outputs/executed/, figures to outputs/figures/.
tutorial: env
	$(RUN_ENV) $(BIN)/jupyter nbconvert --to notebook --execute \
		--ExecutePreprocessor.timeout=$(NB_TIMEOUT) --output-dir outputs/executed notebooks/[0-9]*.ipynb

## Unit tests, then every notebook and every solutions notebook under nbmake, then the sentinel check.
test: env
	@started=$$(date +%s); \
	$(RUN_ENV) $(BIN)/pytest tests && \
	$(RUN_ENV) $(BIN)/pytest --nbmake --nbmake-timeout=$(NB_TIMEOUT) notebooks/[0-9]*.ipynb notebooks/solutions && \
	$(RUN_ENV) $(BIN)/python -m psyche_utils.notebook check-sentinels --profile $(PROFILE) --since $$started

unit: env
	$(RUN_ENV) $(BIN)/pytest tests

lab: env
	$(BIN)/jupyter lab notebooks

benchmarks: env
	for script in benchmarks/*.py; do $(RUN_ENV) $(BIN)/python $$script || exit 1; done

clean:
	rm -rf outputs
