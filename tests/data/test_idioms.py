import keras
import numpy as np
import pytest

import keras_seq
import keras_seq.data
from keras_seq.data import complete, load_idioms, next_word_dataset, next_words


def decode(ids, vocabulary):
    return [vocabulary[i] for i in ids if i != 0]


def rows_of(dataset, idiom):
    """The (prefix words, target word) pairs of `dataset` that start `idiom`."""
    words = idiom.split()
    pairs = []
    for row, target in zip(dataset.x, dataset.y, strict=True):
        prefix = decode(row, dataset.vocabulary)
        if prefix == words[: len(prefix)] and len(prefix) < len(words):
            pairs.append((" ".join(prefix), dataset.vocabulary[target]))
    return pairs


@pytest.fixture(scope="module")
def dataset():
    return next_word_dataset()


@pytest.fixture(scope="module")
def tiny_model():
    # Untrained: only the shapes and the decoding of `complete` are tested.
    vocabulary = next_word_dataset(["feeling under the weather"]).vocabulary
    return vocabulary, keras_seq.Sequential(
        [
            keras.Input(shape=(None,), dtype="int32"),
            keras.layers.Embedding(len(vocabulary), 4, mask_zero=True),
            keras_seq.layers.SharedRNN(4),
            keras.layers.Dense(len(vocabulary), activation="softmax"),
        ]
    )


def test_all_matches_public_names():
    assert sorted(keras_seq.data.__all__) == sorted(
        [
            "NextWordDataset",
            "TruncatedBPTT",
            "adding_problem",
            "complete",
            "load_idioms",
            "load_sunspots",
            "next_word_dataset",
            "next_words",
        ]
    )
    for name in keras_seq.data.__all__:
        assert hasattr(keras_seq.data, name)


def test_corpus_is_nontrivial_lowercase_and_unique():
    idioms = load_idioms()
    assert 150 <= len(idioms) <= 250
    assert len(set(idioms)) == len(idioms)
    for idiom in idioms:
        assert idiom == idiom.lower() == " ".join(idiom.split())
        assert len(idiom.split()) >= 2
    for idiom in ("feeling under the weather", "break the ice", "once in a blue moon"):
        assert idiom in idioms


def test_load_idioms_returns_a_fresh_list():
    idioms = load_idioms()
    idioms.clear()
    assert load_idioms()


def test_dataset_shapes_and_dtypes(dataset):
    x, y, vocabulary = dataset
    num_pairs = sum(len(idiom.split()) - 1 for idiom in load_idioms())
    longest = max(len(idiom.split()) for idiom in load_idioms())
    assert x.shape == (num_pairs, longest - 1) == (num_pairs, dataset.max_len)
    assert y.shape == (num_pairs,)
    assert x.dtype == np.int32 and y.dtype == np.int32
    assert 0 <= x.min() and x.max() < len(vocabulary)
    assert 2 <= y.min() and y.max() < len(vocabulary)


def test_vocabulary_starts_with_padding_and_oov(dataset):
    vocabulary = dataset.vocabulary
    assert vocabulary[:2] == ["", "[UNK]"]
    assert all(type(word) is str for word in vocabulary)
    assert len(set(vocabulary)) == len(vocabulary)
    assert {"feeling", "weather", "don't"} <= set(vocabulary)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="StringLookup needs TensorFlow"
)
@pytest.mark.parametrize(
    "texts",
    [None, ["b a c a b d", "zeta alpha zeta beta alpha gamma don't café cafe"]],
)
def test_vocabulary_and_ids_are_string_lookups(texts):
    # The reference: Keras's StringLookup adapted on every word, as this
    # function used before it was written in Python (ties included).
    x, y, vocabulary = next_word_dataset(texts)
    words = [
        w
        for t in (texts or load_idioms())
        for w in keras_seq.data.idioms._split_words(t)
    ]
    lookup = keras.layers.StringLookup(mask_token="", oov_token="[UNK]")
    lookup.adapt(words)
    assert vocabulary == [str(w) for w in lookup.get_vocabulary()]
    first = (texts or load_idioms())[0]
    ids = np.asarray(lookup(keras_seq.data.idioms._split_words(first))).tolist()
    assert x[len(ids) - 2, -(len(ids) - 1) :].tolist() == ids[:-1]
    assert y[len(ids) - 2] == ids[-1]


def test_prefixes_and_targets_of_one_idiom(dataset):
    assert rows_of(dataset, "feeling under the weather") == [
        ("feeling", "under"),
        ("feeling under", "the"),
        ("feeling under the", "weather"),
    ]


def test_pre_padding_puts_zeros_before_the_words(dataset):
    vocabulary = dataset.vocabulary
    feeling = vocabulary.index("feeling")
    (row,) = [r for r in dataset.x if r[-1] == feeling]
    assert row[:-1].tolist() == [0] * (dataset.max_len - 1)


def test_post_padding_and_truncation_keep_words_nearest_the_target():
    x, y, vocabulary = next_word_dataset(
        ["feeling under the weather"], max_len=2, padding="post"
    )
    assert [decode(row, vocabulary) for row in x] == [
        ["feeling"],
        ["feeling", "under"],
        ["under", "the"],
    ]
    assert x[0].tolist() == [vocabulary.index("feeling"), 0]
    assert [vocabulary[i] for i in y] == ["under", "the", "weather"]


def test_custom_texts_are_split_into_lowercase_words():
    x, y, vocabulary = next_word_dataset(["Don't  CRY, over spilt milk!", "alone"])
    assert "alone" in vocabulary  # one-word texts add words but no pairs
    assert [decode(row, vocabulary) for row in x][-1] == [
        "don't",
        "cry",
        "over",
        "spilt",
    ]
    assert vocabulary[y[-1]] == "milk"
    assert len(y) == 4


def test_complete_returns_vocabulary_words(tiny_model):
    vocabulary, model = tiny_model
    words = complete(model, vocabulary, "Feeling under", num_words=3)
    assert len(words.split()) == 3
    assert set(words.split()) <= set(vocabulary[2:])
    padded = complete(model, vocabulary, "unknown words here", max_len=2)
    assert padded in vocabulary[2:]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"texts": "break the ice"}, TypeError, "`texts` must be a list of strings"),
        ({"texts": ["ok fine", 3]}, TypeError, r"Received: texts\[1\]=3"),
        ({"texts": 5}, TypeError, "Received: texts=5"),
        ({"texts": ["one", ""]}, ValueError, "two or more words"),
        ({"texts": []}, ValueError, r"Received: texts=\[\]"),
        ({"max_len": 0}, ValueError, "`max_len` must be an integer >= 1. Received: "),
        ({"max_len": 2.5}, TypeError, "`max_len` must be an integer >= 1"),
        ({"max_len": True}, TypeError, "Received: max_len=True"),
        ({"padding": "left"}, ValueError, r"`padding` must be one of \['post', "),
    ],
)
def test_next_word_dataset_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        next_word_dataset(**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"model": "model"}, TypeError, "`model` must be a `keras.Model`"),
        ({"vocabulary": "abc"}, TypeError, "`vocabulary` must be a list"),
        ({"vocabulary": ["a", "b", "c"]}, ValueError, 'padding token ""'),
        ({"vocabulary": ["", "[UNK]", 7]}, TypeError, r"vocabulary\[2\]=7"),
        ({"vocabulary": ["", "[UNK]", "a", "[UNK]"]}, ValueError, "already at 1"),
        ({"prompt": ["break"]}, TypeError, "`prompt` must be a string"),
        ({"prompt": " ,! "}, ValueError, "`prompt` must contain at least one word"),
        ({"num_words": 0}, ValueError, "`num_words` must be an integer >= 1"),
        ({"max_len": -1}, ValueError, "Received: max_len=-1"),
        ({"padding": None}, ValueError, "Received: padding=None"),
    ],
)
def test_complete_rejects_bad_arguments(tiny_model, kwargs, error, match):
    vocabulary, model = tiny_model
    arguments = {"model": model, "vocabulary": vocabulary, "prompt": "break the"}
    with pytest.raises(error, match=match):
        complete(**{**arguments, **kwargs})


def test_complete_rejects_a_vocabulary_the_model_was_not_built_for(tiny_model):
    vocabulary, model = tiny_model
    with pytest.raises(ValueError, match="one score per vocabulary word"):
        complete(model, vocabulary + ["extra"], "break the")


def test_next_words_ranks_the_models_scores_best_first(tiny_model):
    vocabulary, model = tiny_model
    ranked = next_words(model, vocabulary, "Feeling under", k=10)
    # Four words besides padding and "[UNK]", which are never listed.
    assert len(ranked) == 4
    assert {word for word, _ in ranked} == set(vocabulary[2:])
    ids = [[vocabulary.index("feeling"), vocabulary.index("under")]]
    expected = keras.ops.convert_to_numpy(model(np.array(ids)))[0]
    for word, score in ranked:
        np.testing.assert_allclose(score, expected[vocabulary.index(word)], 1e-6)
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)
    assert next_words(model, vocabulary, "Feeling under", k=2) == ranked[:2]
    best = next_words(model, vocabulary, "feeling under", k=1)[0][0]
    assert best == complete(model, vocabulary, "feeling under")


def test_next_words_pads_the_last_max_len_words_as_asked(tiny_model):
    vocabulary, model = tiny_model
    for padding in ("pre", "post"):
        ids = keras.utils.pad_sequences(
            [[vocabulary.index("the")]], maxlen=3, padding=padding
        )
        expected = keras.ops.convert_to_numpy(model(ids))[0]
        ((word, score),) = next_words(
            model, vocabulary, "under the", k=1, max_len=1, padding=padding
        )
        assert word == vocabulary[2 + int(np.argmax(expected[2:]))]
        np.testing.assert_allclose(score, expected[vocabulary.index(word)], 1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"k": 0}, ValueError, "`k` must be an integer >= 1. Received: k=0"),
        ({"k": "3"}, TypeError, "`k` must be an integer >= 1"),
        ({"prompt": " ,! "}, ValueError, "`prompt` must contain at least one word"),
        ({"vocabulary": ["a", "b", "c"]}, ValueError, 'padding token ""'),
    ],
)
def test_next_words_rejects_bad_arguments(tiny_model, kwargs, error, match):
    vocabulary, model = tiny_model
    arguments = {"model": model, "vocabulary": vocabulary, "prompt": "break the"}
    with pytest.raises(error, match=match):
        next_words(**{**arguments, **kwargs})
    with pytest.raises(ValueError, match="one score per vocabulary word"):
        next_words(model, vocabulary + ["extra"], "break the")
