# Two commands that work on a fresh machine (they create or reuse .venv and install pinned versions):
#   make demo   - the main job: an end-to-end unlearning run on an embedded default (no Hub, no GPU)
#   make test   - the test suite (offline, CPU)
#   make lint / make docs - ruff, and the documentation site built with --strict (both run in .ci/run)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned: the CPU build 2.13.0 lies on this project's machines; an unpinned torch
# would pull a multi-GB CUDA build. On a GPU machine, set TORCH_SPEC to the build you want.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# The suite runs in TEST_JOBS pytest-xdist workers, one test file per worker at a time (a module's shared launches
# run once), one torch thread each (tests/conftest.py). TEST_JOBS=0 runs it in this process.
TEST_JOBS ?= 2

.PHONY: demo test test-fast lint docs install clean-venv

$(STAMP): requirements.txt setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) recipes/unlearn.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "not slow and not multiprocess and not gpu and not demo" $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The documentation site (docs/ + the API reference from the docstrings); --strict fails on broken links or pages.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

clean-venv:
	rm -rf $(VENV)
