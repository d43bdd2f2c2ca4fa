"""Small built-in datasets: the idiom corpus and next-word pairs from it."""

from keras_seq.data.idioms import (
    NextWordDataset,
    complete,
    load_idioms,
    next_word_dataset,
)

__all__ = ["NextWordDataset", "complete", "load_idioms", "next_word_dataset"]
