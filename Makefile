# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# Both create .venv if missing and install GenLoop into it, with torch pinned to the CPU build 2.13.0
# (constraints.txt keeps pip from ever resolving a multi-GB CUDA build behind our back).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.genloop-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install demo test lint bench screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "error: Python 3.10+ is needed (python3.11 or python3 on PATH)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/genloop demo

test: install
	$(BIN)/python -m pytest -q

# ruff (lint + format) over the tree and mypy over the public API and the engine; .ci/run calls it first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src/genloop/api.py src/genloop/training

# The README's pictures of the studio, taken by the browser tests (headless Chromium) as they drive the page.
screenshots: install
	GENLOOP_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/test_studio_browser.py tests/test_studio_chat_browser.py tests/test_music_studio_browser.py tests/test_studio_edit_browser.py tests/test_studio_runs_browser.py tests/test_studio_gallery_browser.py tests/test_studio_data_browser.py tests/test_studio_t2i_browser.py

bench: install
	$(BIN)/python benchmarks/bench_images.py

clean:
	rm -rf $(VENV) runs .pytest_cache
