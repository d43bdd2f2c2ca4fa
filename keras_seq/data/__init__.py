"""Small built-in datasets: the idiom corpus and next-word pairs from it,
the adding problem, and the yearly sunspot numbers; `TruncatedBPTT`, long
sequences in chunks for truncated backpropagation through time."""

from keras_seq.data.adding_problem import adding_problem
from keras_seq.data.idioms import (
    NextWordDataset,
    complete,
    load_idioms,
    next_word_dataset,
    next_words,
)
from keras_seq.data.sunspots import load_sunspots
from keras_seq.data.truncated_bptt import TruncatedBPTT

__all__ = [
    "NextWordDataset",
    "TruncatedBPTT",
    "adding_problem",
    "complete",
    "load_idioms",
    "load_sunspots",
    "next_word_dataset",
    "next_words",
]
