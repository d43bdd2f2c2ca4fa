# Two entry points, each doing all set-up on a fresh machine with python3:
#   make demo   train the next-word model on the built-in idiom corpus
#               (.venv/bin/keras-seq run next_word; `keras-seq list`: more)
#   make test   run the whole test suite
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# keras-seq's command also sets 3 itself and keeps TensorFlow's start-up lines
# (which ignore this variable) off the terminal.
export TF_CPP_MIN_LOG_LEVEL ?= 3
export KERAS_BACKEND := tensorflow

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/keras-seq run next_word

test: $(STAMP)
	$(PYTHON) -m pytest -q

bench: $(STAMP)
	$(PYTHON) benchmarks/rnn_speed.py

lint: $(STAMP)
	$(PYTHON) -m pip install --quiet ruff
	$(PYTHON) -m ruff check keras_seq tests recipes benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
