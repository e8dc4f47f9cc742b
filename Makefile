# The two commands of the README: `make demo` and `make test`.
# Each creates or reuses .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.keras-mega-installed

.PHONY: demo test lint install clean

install: $(STAMP)

# torch first, pinned to the CPU build that pip finds locally: anything that
# pulls torch unpinned would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,convert,jax,tensorflow]"
	touch $@

# On JAX unless KERAS_BACKEND says otherwise (the backend of the README's
# 10-seed table; Keras' own default is TensorFlow). The script sets none.
demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) examples/demo.py

# ruff (configured in pyproject.toml): lint and formatting, before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) lint
	$(PY) scripts/run_tests.py

clean:
	rm -rf $(VENV)
