"""A built-in corpus of English idioms and a next-word dataset built from it.

The corpus is written out below, so nothing is downloaded at run time. Each
idiom gives one training pair per word after the first: the prefix
`"feeling"` predicts `"under"`, `"feeling under"` predicts `"the"` and
`"feeling under the"` predicts `"weather"`.
"""

import collections
import re
import typing

import keras
import numpy as np

from keras_seq import _validation as validation

# Lowercase, words separated by single spaces, apostrophes kept inside words.
# A few prefixes are deliberately shared ("hit the", "a", "the") so that
# some next words are ambiguous, as in real text.
_IDIOMS = (
    "a bird in the hand is worth two in the bush",
    "a blessing in disguise",
    "a dime a dozen",
    "a drop in the bucket",
    "a leopard can't change its spots",
    "a penny for your thoughts",
    "a picture is worth a thousand words",
    "a piece of cake",
    "a storm in a teacup",
    "a taste of your own medicine",
    "a watched pot never boils",
    "actions speak louder than words",
    "add fuel to the fire",
    "add insult to injury",
    "against the clock",
    "all bark and no bite",
    "all ears",
    "all that glitters is not gold",
    "all's well that ends well",
    "an apple a day keeps the doctor away",
    "as right as rain",
    "at the drop of a hat",
    "back to square one",
    "back to the drawing board",
    "barking up the wrong tree",
    "beat around the bush",
    "beauty is in the eye of the beholder",
    "bend over backwards",
    "best thing since sliced bread",
    "better late than never",
    "better safe than sorry",
    "between a rock and a hard place",
    "big fish in a small pond",
    "birds of a feather flock together",
    "bite off more than you can chew",
    "bite the bullet",
    "bite the dust",
    "blood is thicker than water",
    "blow off steam",
    "break a leg",
    "break the ice",
    "burn the midnight oil",
    "burn your bridges",
    "bury the hatchet",
    "by the skin of your teeth",
    "call a spade a spade",
    "call it a day",
    "caught red handed",
    "close but no cigar",
    "come rain or shine",
    "cool as a cucumber",
    "cost an arm and a leg",
    "cross that bridge when you come to it",
    "cry wolf",
    "curiosity killed the cat",
    "cut corners",
    "cut the mustard",
    "cut to the chase",
    "dark horse",
    "don't bite the hand that feeds you",
    "don't count your chickens before they hatch",
    "don't cry over spilt milk",
    "don't give up your day job",
    "don't judge a book by its cover",
    "don't put all your eggs in one basket",
    "down to earth",
    "draw the line",
    "drive someone up the wall",
    "easy does it",
    "every cloud has a silver lining",
    "every dog has its day",
    "face the music",
    "fall on deaf ears",
    "feeling under the weather",
    "fit as a fiddle",
    "fortune favors the bold",
    "from rags to riches",
    "get cold feet",
    "get out of hand",
    "get the ball rolling",
    "get your act together",
    "give it a shot",
    "give someone the benefit of the doubt",
    "give someone the cold shoulder",
    "go down in flames",
    "go the extra mile",
    "go with the flow",
    "good things come to those who wait",
    "great minds think alike",
    "hang in there",
    "haste makes waste",
    "hear it through the grapevine",
    "hit the books",
    "hit the ground running",
    "hit the hay",
    "hit the nail on the head",
    "hit the road",
    "hit the sack",
    "hold your horses",
    "honesty is the best policy",
    "ignorance is bliss",
    "in hot water",
    "in the heat of the moment",
    "in the nick of time",
    "in the same boat",
    "it takes two to tango",
    "it's a small world",
    "it's not rocket science",
    "it's raining cats and dogs",
    "jump on the bandwagon",
    "jump the gun",
    "jump through hoops",
    "keep an eye out",
    "keep your chin up",
    "keep your fingers crossed",
    "kick the bucket",
    "kill two birds with one stone",
    "know the ropes",
    "last but not least",
    "leave no stone unturned",
    "let off steam",
    "let sleeping dogs lie",
    "let the cat out of the bag",
    "like a fish out of water",
    "like two peas in a pod",
    "live and learn",
    "look before you leap",
    "loose cannon",
    "make a long story short",
    "make a mountain out of a molehill",
    "make ends meet",
    "miss the boat",
    "money doesn't grow on trees",
    "no pain no gain",
    "not my cup of tea",
    "off the hook",
    "on cloud nine",
    "on the ball",
    "on the same page",
    "on thin ice",
    "once bitten twice shy",
    "once in a blue moon",
    "out of the blue",
    "out of the frying pan into the fire",
    "over my dead body",
    "over the moon",
    "play devil's advocate",
    "play it by ear",
    "practice makes perfect",
    "pull someone's leg",
    "pull yourself together",
    "put a sock in it",
    "put your foot in your mouth",
    "rain on someone's parade",
    "read between the lines",
    "rome wasn't built in a day",
    "rule of thumb",
    "saved by the bell",
    "see eye to eye",
    "sit on the fence",
    "sleep on it",
    "slow and steady wins the race",
    "so far so good",
    "speak of the devil",
    "spill the beans",
    "start with a clean slate",
    "steal someone's thunder",
    "still waters run deep",
    "strike while the iron is hot",
    "take it with a grain of salt",
    "take the bull by the horns",
    "the apple doesn't fall far from the tree",
    "the ball is in your court",
    "the best of both worlds",
    "the calm before the storm",
    "the devil is in the details",
    "the early bird catches the worm",
    "the elephant in the room",
    "the grass is always greener on the other side",
    "the last straw",
    "the pot calling the kettle black",
    "the proof is in the pudding",
    "the squeaky wheel gets the grease",
    "the tip of the iceberg",
    "the whole nine yards",
    "there's no place like home",
    "through thick and thin",
    "throw caution to the wind",
    "throw in the towel",
    "time flies when you're having fun",
    "to make matters worse",
    "turn a blind eye",
    "two heads are better than one",
    "up in the air",
    "water under the bridge",
    "what goes around comes around",
    "when in rome do as the romans do",
    "when pigs fly",
    "where there's smoke there's fire",
    "wrap your head around it",
    "you can't have your cake and eat it too",
    "you can't teach an old dog new tricks",
    "your guess is as good as mine",
)

_PADDING_TOKEN = ""
_OOV_TOKEN = "[UNK]"
_PADDINGS = ("pre", "post")
# A word is a run of letters or digits, possibly joined by apostrophes
# ("don't", "all's"); everything else separates words.
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


class NextWordDataset(typing.NamedTuple):
    """Next-word pairs returned by `keras_seq.data.next_word_dataset`.

    A named tuple, so `x, y, vocabulary = next_word_dataset()` works.

    Attributes:
        x: int32 array `(num_pairs, max_len)` of padded prefix token ids;
            0 is padding.
        y: int32 array `(num_pairs,)`, the id of the word after each prefix.
        vocabulary: list of strings; `vocabulary[i]` is the word with id
            `i`, `vocabulary[0] == ""` (padding) and
            `vocabulary[1] == "[UNK]"` (out of vocabulary).
    """

    x: np.ndarray
    y: np.ndarray
    vocabulary: list

    @property
    def max_len(self):
        """Number of token ids in each row of `x`."""
        return int(self.x.shape[1])


def load_idioms():
    """Returns the built-in corpus of English idioms.

    About two hundred common idioms, lowercase, words separated by single
    spaces. The corpus ships with keras-seq; nothing is downloaded.

    Returns:
        A new list of strings, in alphabetical order.

    Example:

    >>> import keras_seq.data
    >>> "once in a blue moon" in keras_seq.data.load_idioms()
    True
    """
    return list(_IDIOMS)


def next_word_dataset(texts=None, max_len=None, padding="pre"):
    """Builds next-word prediction pairs from every prefix of every text.

    Each text of `n` words gives `n - 1` pairs: its first `k` words (for
    `k = 1 .. n - 1`) as input and word `k + 1` as target. Texts are
    lowercased and split into words (letters and digits, with inner
    apostrophes kept, as in "don't") and mapped to ids, most frequent first
    (the order a `keras.layers.StringLookup` adapted on all the words gives,
    built in Python so that it runs without TensorFlow). Prefixes are
    padded with 0, so a model can start with
    `keras.layers.Embedding(len(vocabulary), ..., mask_zero=True)`.

    Args:
        texts: Optional list of strings (default None: the built-in idioms
            of `load_idioms()`). Texts of one word give no pairs but add
            their word to the vocabulary.
        max_len: Optional integer >= 1 (default None: the longest prefix),
            the number of token ids in each row of `x`. Longer prefixes keep
            their last `max_len` words, those nearest the target.
        padding: `"pre"` (default) puts the padding before the words,
            `"post"` after them.

    Returns:
        A `NextWordDataset` named tuple `(x, y, vocabulary)`: `x` is an int32
        array `(num_pairs, max_len)`, `y` an int32 array `(num_pairs,)` and
        `vocabulary` a list of strings with `vocabulary[0] == ""` (padding)
        and `vocabulary[1] == "[UNK]"`.

    Raises:
        TypeError: if `texts` is a single string or holds non-strings, or
            `max_len` is not an integer.
        ValueError: if no text has two or more words, `max_len` < 1 or
            `padding` is not `"pre"` or `"post"`.

    Example:

    >>> import keras_seq.data
    >>> x, y, vocabulary = keras_seq.data.next_word_dataset(
    ...     ["feeling under the weather"])
    >>> x.shape, y.shape
    ((3, 3), (3,))
    >>> [vocabulary[i] for i in x[-1]], vocabulary[y[-1]]
    (['feeling', 'under', 'the'], 'weather')
    """
    texts = load_idioms() if texts is None else _check_texts(texts)
    if max_len is not None:
        validation.check_positive_int("max_len", max_len)
    validation.check_choice("padding", padding, _PADDINGS)

    word_lists = [_split_words(text) for text in texts]
    if not any(len(words) >= 2 for words in word_lists):
        raise ValueError(
            "Argument `texts` must contain at least one text of two or more "
            "words, to give at least one next-word pair. "
            f"Received: texts={_short_repr(texts)}"
        )

    vocabulary = _vocabulary(word for words in word_lists for word in words)
    word_id = {word: i for i, word in enumerate(vocabulary)}

    prefixes, targets = [], []
    for words in word_lists:
        if len(words) < 2:
            continue
        ids = [word_id[word] for word in words]
        for k in range(1, len(ids)):
            prefixes.append(ids[:k])
            targets.append(ids[k])
    if max_len is None:
        max_len = max(len(prefix) for prefix in prefixes)
    x = keras.utils.pad_sequences(
        prefixes,
        maxlen=max_len,
        dtype="int32",
        padding=padding,
        truncating="pre",
        value=0,
    )
    y = np.asarray(targets, dtype="int32")
    return NextWordDataset(x=x, y=y, vocabulary=vocabulary)


def complete(model, vocabulary, prompt, num_words=1, max_len=None, padding="pre"):
    """Greedily predicts the words that follow a prompt.

    The prompt is split into words as in `next_word_dataset`, mapped to ids
    with `vocabulary` (unknown words become `"[UNK]"`), and the model's most
    probable next word is appended, `num_words` times. Padding and
    `"[UNK]"` are never predicted.

    Args:
        model: A `keras.Model` mapping `(batch, timesteps)` token ids to
            `(batch, len(vocabulary))` next-word probabilities (or logits).
        vocabulary: The list of words the model was trained with, as
            returned by `next_word_dataset`: `vocabulary[0] == ""`,
            `vocabulary[1] == "[UNK]"`.
        prompt: String of one or more words.
        num_words: Integer >= 1 (default 1), how many words to predict.
        max_len: Optional integer >= 1 (default None: the prompt's own
            length). If set, the model sees the last `max_len` words, padded
            to `max_len`, as in training.
        padding: `"pre"` (default) or `"post"`, used with `max_len`.

    Returns:
        The predicted words, joined by single spaces.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if `prompt` has no words, `vocabulary` does not start
            with `""` and `"[UNK]"`, `num_words` or `max_len` < 1, `padding`
            is not `"pre"` or `"post"`, or the model does not predict one
            value per vocabulary word.

    Example:

    >>> import keras, keras_seq, keras_seq.data
    >>> x, y, vocabulary = keras_seq.data.next_word_dataset()
    >>> model = keras_seq.Sequential([
    ...     keras.layers.Embedding(len(vocabulary), 8, mask_zero=True),
    ...     keras_seq.layers.SharedRNN(16),
    ...     keras.layers.Dense(len(vocabulary), activation="softmax"),
    ... ])
    >>> word = keras_seq.data.complete(model, vocabulary, "break the")
    >>> word in vocabulary
    True
    """
    ids = _prompt_ids(
        model, vocabulary, prompt, "num_words", num_words, max_len, padding
    )
    predicted = []
    for _ in range(num_words):
        next_id = int(np.argmax(_next_scores(model, vocabulary, ids, max_len, padding)))
        predicted.append(vocabulary[next_id])
        ids.append(next_id)
    return " ".join(predicted)


def next_words(model, vocabulary, prompt, k=5, max_len=None, padding="pre"):
    """The `k` most probable words to follow a prompt, with their scores.

    The prompt is read as in `complete`; the model's output for it is
    ranked, best first. Padding and `"[UNK]"` are never listed.

    Args:
        model: A `keras.Model` mapping `(batch, timesteps)` token ids to
            `(batch, len(vocabulary))` next-word probabilities (or logits).
        vocabulary: The list of words the model was trained with, as
            returned by `next_word_dataset`: `vocabulary[0] == ""`,
            `vocabulary[1] == "[UNK]"`.
        prompt: String of one or more words.
        k: Integer >= 1 (default 5), how many words to list.
        max_len: Optional integer >= 1 (default None: the prompt's own
            length). If set, the model sees the last `max_len` words, padded
            to `max_len`, as in training.
        padding: `"pre"` (default) or `"post"`, used with `max_len`.

    Returns:
        A list of at most `k` `(word, score)` pairs, best first: `score` is
        the model's output for `word` (a probability for a softmax output).

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if `prompt` has no words, `vocabulary` does not start
            with `""` and `"[UNK]"`, `k` or `max_len` < 1, `padding` is not
            `"pre"` or `"post"`, or the model does not predict one value per
            vocabulary word.

    Example:

    >>> import keras, keras_seq, keras_seq.data
    >>> x, y, vocabulary = keras_seq.data.next_word_dataset()
    >>> model = keras_seq.Sequential([
    ...     keras.layers.Embedding(len(vocabulary), 8, mask_zero=True),
    ...     keras_seq.layers.SharedRNN(16),
    ...     keras.layers.Dense(len(vocabulary), activation="softmax"),
    ... ])
    >>> ranked = keras_seq.data.next_words(model, vocabulary, "break the", k=3)
    >>> len(ranked), ranked[0][1] >= ranked[-1][1]
    (3, True)
    """
    ids = _prompt_ids(model, vocabulary, prompt, "k", k, max_len, padding)
    scores = _next_scores(model, vocabulary, ids, max_len, padding)
    best = np.argsort(-scores, kind="stable")[:k]
    return [(vocabulary[i], float(scores[i])) for i in best if np.isfinite(scores[i])]


def _prompt_ids(model, vocabulary, prompt, count_name, count, max_len, padding):
    """Checks the arguments of `complete` and `next_words` (`count` is
    `num_words` or `k`) and returns the prompt's token ids."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a `keras.Model` (for example a "
            "`keras_seq.Sequential`). "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    _check_vocabulary(vocabulary)
    if not isinstance(prompt, str):
        raise TypeError(
            "Argument `prompt` must be a string. "
            f"Received: prompt={prompt!r} (of type {type(prompt).__name__})"
        )
    validation.check_positive_int(count_name, count)
    if max_len is not None:
        validation.check_positive_int("max_len", max_len)
    validation.check_choice("padding", padding, _PADDINGS)
    words = _split_words(prompt)
    if not words:
        raise ValueError(
            "Argument `prompt` must contain at least one word. "
            f"Received: prompt={prompt!r}"
        )
    word_id = {word: i for i, word in enumerate(vocabulary) if i >= 2}
    return [word_id.get(word, 1) for word in words]  # 1: "[UNK]"


def _next_scores(model, vocabulary, ids, max_len, padding):
    """The model's scores for the word after `ids`, one per vocabulary word,
    with padding and "[UNK]" at -inf."""
    context = ids if max_len is None else ids[-max_len:]
    x = keras.utils.pad_sequences(
        [context],
        maxlen=max_len or len(context),
        dtype="int32",
        padding=padding,
    )
    scores = np.array(keras.ops.convert_to_numpy(model.predict_on_batch(x)))
    if scores.shape != (1, len(vocabulary)):
        raise ValueError(
            f"The model must output one score per vocabulary word, shape "
            f"(1, {len(vocabulary)}) for one prompt, but it output shape "
            f"{scores.shape}. Pass the `vocabulary` of the dataset the "
            "model was built for."
        )
    scores = scores[0]
    scores[:2] = -np.inf  # never predict padding or "[UNK]"
    return scores


def _vocabulary(words):
    """`["", "[UNK]"]` then the distinct `words`, most frequent first and
    ties in reverse byte order: what `keras.layers.StringLookup(mask_token="",
    oov_token="[UNK]").adapt(words)` gives (its `np.lexsort` of counts and
    tokens, reversed), without TensorFlow."""
    counts = collections.Counter(words)
    ranked = sorted(counts, key=lambda w: (counts[w], w.encode()), reverse=True)
    return [_PADDING_TOKEN, _OOV_TOKEN, *ranked]


def _split_words(text):
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _check_texts(texts):
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            "Argument `texts` must be a list of strings, not a single string "
            f"(wrap it in a list). Received: texts={_short_repr(texts)}"
        )
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(
            "Argument `texts` must be a list of strings or None. "
            f"Received: texts={texts!r} (of type {type(texts).__name__})"
        ) from None
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                "Argument `texts` must be a list of strings. "
                f"Received: texts[{i}]={text!r} (of type {type(text).__name__})"
            )
    return texts


def _check_vocabulary(vocabulary):
    if isinstance(vocabulary, str) or not isinstance(vocabulary, (list, tuple)):
        raise TypeError(
            "Argument `vocabulary` must be a list of strings, as returned by "
            "`keras_seq.data.next_word_dataset`. "
            f"Received: vocabulary={_short_repr(vocabulary)} "
            f"(of type {type(vocabulary).__name__})"
        )
    if list(vocabulary[:2]) != [_PADDING_TOKEN, _OOV_TOKEN] or len(vocabulary) < 3:
        raise ValueError(
            'Argument `vocabulary` must start with the padding token "" and '
            'the out-of-vocabulary token "[UNK]", followed by at least one '
            "word, as returned by `keras_seq.data.next_word_dataset`. "
            f"Received: vocabulary={_short_repr(vocabulary)}"
        )
    seen = {}
    for i, word in enumerate(vocabulary):
        if not isinstance(word, str):
            raise TypeError(
                "Argument `vocabulary` must be a list of strings. "
                f"Received: vocabulary[{i}]={word!r} "
                f"(of type {type(word).__name__})"
            )
        if word in seen:
            raise ValueError(
                "Argument `vocabulary` must list each word once (the padding "
                'token "" and "[UNK]" only at 0 and 1). Received: '
                f"vocabulary[{i}]={word!r}, already at {seen[word]}"
            )
        seen[word] = i


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
