# Two entry points, each doing all set-up on a fresh machine with python3:
#   make demo   train the next-word model on the built-in idiom corpus
#               (.venv/bin/keras-seq run next_word; `keras-seq list`: more)
#   make test   run the whole test suite: under TensorFlow (.venv), then the
#               backend-neutral part under JAX (.venv-jax, no TensorFlow)
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JAX_VENV ?= .venv-jax
JAX_STAMP := $(JAX_VENV)/.installed
# keras-seq's command also sets 3 itself and keeps TensorFlow's start-up lines
# (which ignore this variable) off the terminal.
export TF_CPP_MIN_LOG_LEVEL ?= 3
export KERAS_BACKEND := tensorflow

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[tensorflow,test]"
	touch $(STAMP)

$(JAX_STAMP): pyproject.toml
	python3 -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(JAX_VENV)/bin/python -m pip install --quiet -e ".[jax,test]"
	touch $(JAX_STAMP)

demo: $(STAMP)
	$(VENV)/bin/keras-seq run next_word

# Two pytest workers (pytest-xdist), one test file each at a time (module
# fixtures run once): 10.9 instead of 21.0 min on 2 cores.
test: $(STAMP) $(JAX_STAMP)
	$(PYTHON) -m pytest -q -n 2 --dist loadfile
	KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PYTHON) benchmarks/rnn_speed.py

lint: $(STAMP)
	$(PYTHON) -m pip install --quiet ruff
	$(PYTHON) -m ruff check keras_seq tests recipes benchmarks

clean:
	rm -rf $(VENV) $(JAX_VENV) runs .pytest_cache
