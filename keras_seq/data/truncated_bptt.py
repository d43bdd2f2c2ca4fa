"""Chunked truncated backpropagation through time for stateful layers."""

import math

import keras
import numpy as np

from keras_seq import _validation as validation


class TruncatedBPTT:
    """Long sequences as consecutive chunks of `chunk_length` steps, ordered
    for a stateful recurrent model: truncated backpropagation through time.

    The sequences are split into *groups* of `batch_size`; a group's chunks
    come one after another, so row i of each batch continues row i of the
    previous one. A stateful layer (`keras_seq.layers.SharedRNN(...,
    stateful=True)`, or any Keras RNN with `stateful=True`) carries every
    level's state from chunk to chunk while gradients flow within a chunk
    only; `keras_seq.callbacks.ResetStates` zeroes the states where a group
    begins (and around validation). Memory then depends on `chunk_length`,
    not on the sequence length.

    Sequences of different lengths: pass `lengths` (the rest of each row is
    padding). Rows are grouped by length (fewer padded steps), a group has
    as many chunks as its longest row needs, and steps past a row's end get
    sample weight 0 (the model's output there is ignored by the loss and
    its gradient; with Keras's default `sum_over_batch_size` reduction the
    loss is still divided by every step of the batch, and metrics count the
    weights only as `weighted_metrics`). The last group is filled up to
    `batch_size` with rows of weight 0 (copies of the first row): a stateful
    model needs the same batch size for every batch
    (keras-team/keras#20327).

    Train on `.dataset` with `fit(..., shuffle=False)`: the chunks must
    come in order. On TensorFlow `.dataset` is a `tf.data.Dataset` (Keras
    never reorders one; `shuffle=False` only silences its note that it
    ignores `shuffle`). On JAX it is a `keras.utils.PyDataset` read by one
    thread, without TensorFlow; Keras shuffles the batches of a
    `PyDataset` unless told `shuffle=False`, so reading its batches out of
    order during an epoch raises a `ValueError` saying so (before a wrong
    batch is trained on). Shuffling here (`shuffle=True`) reorders whole
    groups, each epoch, in step with `ResetStates`, which tells this
    object which epoch is starting (before the epoch's first batch is
    read, on both backends).

    `.dataset` yields `(x, y, sample_weight)` with shapes `(batch_size, k,
    ...)`, k = `min(chunk_length, timesteps)` (a short last chunk is padded
    with weight 0); `sample_weight` is `(batch_size, k)`, per step, so the
    model must return sequences (`return_sequences=True`).

    Args:
        x: array `(sequences, timesteps, ...)`: features, or token ids
            `(sequences, timesteps)` for an `Embedding`.
        y: array `(sequences, timesteps, ...)`: a target per time step.
        chunk_length: Integer >= 1, steps per chunk (k). With k >= the
            longest sequence each group is one batch: full BPTT.
        batch_size: Integer >= 1, sequences per batch (the model's static
            batch size).
        lengths: Optional integers `(sequences,)`, each in 1..timesteps.
            Default: every row has `timesteps` valid steps.
        sample_weight: Optional `(sequences,)` or `(sequences, timesteps)`
            weights, multiplied into the padding weights.
        shuffle: Default True: visit the groups in a new random order each
            epoch (chunks keep their order within a group).
        seed: Optional integer seed for the shuffling.

    Example:

    >>> import numpy as np, keras, keras_seq
    >>> x = np.random.rand(8, 1000, 3).astype("float32")
    >>> y = np.cumsum(x[..., :1], axis=1) / 100
    >>> data = keras_seq.data.TruncatedBPTT(x, y, chunk_length=100,
    ...                                     batch_size=4)
    >>> model = keras.Sequential([
    ...     keras.Input((None, 3), batch_size=4),
    ...     keras_seq.layers.SharedRNN(16, return_sequences=True,
    ...                                stateful=True),
    ...     keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> _ = model.fit(data.dataset, shuffle=False, verbose=0,
    ...               callbacks=[keras_seq.callbacks.ResetStates(data)])
    >>> len(data)  # 2 groups x 10 chunks
    20
    """

    def __init__(
        self,
        x,
        y,
        chunk_length,
        batch_size,
        lengths=None,
        sample_weight=None,
        shuffle=True,
        seed=None,
    ):
        validation.check_positive_int("chunk_length", chunk_length)
        validation.check_positive_int("batch_size", batch_size)
        validation.check_bool("shuffle", shuffle)
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(
                "Argument `x` must be an array (sequences, timesteps, ...) "
                "with at least one sequence and one step (token ids "
                "(sequences, timesteps) for an Embedding, or features). "
                f"Received: x with shape {x.shape}"
            )
        if y.ndim < 2 or y.shape[:2] != x.shape[:2]:
            raise ValueError(
                "Argument `y` must hold a target per time step, with shape "
                f"(sequences, timesteps, ...) = {x.shape[:2]} + (...). "
                f"Received: y with shape {y.shape}"
            )
        count, steps = x.shape[:2]
        if lengths is None:
            lengths = np.full(count, steps)
        else:
            lengths = np.asarray(lengths)
            if (
                lengths.shape != (count,)
                or not np.issubdtype(lengths.dtype, np.integer)
                or lengths.min(initial=1) < 1
                or lengths.max(initial=1) > steps
            ):
                raise ValueError(
                    f"Argument `lengths` must be {count} integers in 1.."
                    f"{steps}, one per sequence. Received: lengths with shape "
                    f"{lengths.shape}, dtype {lengths.dtype}"
                    + (
                        f", values {lengths.min()}..{lengths.max()}"
                        if lengths.size and lengths.dtype.kind in "iuf"
                        else ""
                    )
                )
        weights = (np.arange(steps)[None, :] < lengths[:, None]).astype("float32")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, "float32")
            if sample_weight.shape == (count,):
                sample_weight = sample_weight[:, None]
            elif sample_weight.shape != (count, steps):
                raise ValueError(
                    "Argument `sample_weight` must have shape "
                    f"({count},) or ({count}, {steps}). Received: "
                    f"sample_weight with shape {sample_weight.shape}"
                )
            weights = weights * sample_weight
        self.x, self.y, self.weights = x, y, weights
        self.lengths = lengths
        self.chunk_length = chunk_length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        # Without a seed, one drawn from numpy's global generator (which
        # keras.utils.set_random_seed seeds): each epoch's order is fixed.
        self._seed = seed
        if seed is None and shuffle:
            self._seed = np.random.randint(2**31)
        # Groups of rows of similar length; -1 is a filler row (weight 0).
        order = np.argsort(-lengths, kind="stable") if lengths.min() < steps else None
        rows = np.arange(count) if order is None else order
        fill = -len(rows) % batch_size
        rows = np.concatenate([rows, np.full(fill, -1)]).reshape(-1, batch_size)
        self._groups = [
            (group, math.ceil(lengths[group[group >= 0]].max() / chunk_length))
            for group in rows
        ]
        self._length = sum(chunks for _, chunks in self._groups)
        self._epoch = 0
        self.dataset = self._make_dataset()

    def set_epoch(self, epoch):
        """Select the group order of `epoch` for the next pass over
        `dataset` (`ResetStates` calls it as each epoch begins)."""
        self._epoch = int(epoch)

    def chunks(self, epoch=None):
        """`(group, chunk)` for each batch of `epoch` (default: the
        selected one), in the order `dataset` yields them."""
        epoch = self._epoch if epoch is None else epoch
        order = np.arange(len(self._groups))
        if self.shuffle:
            order = np.random.default_rng((self._seed, epoch)).permutation(order)
        return [(g, c) for g in order for c in range(self._groups[g][1])]

    def boundaries(self, epoch=None):
        """Batch indices of `epoch` that begin a group."""
        return frozenset(i for i, (_, c) in enumerate(self.chunks(epoch)) if c == 0)

    @property
    def groups(self):
        """Number of groups (batches of whole sequences)."""
        return len(self._groups)

    def __len__(self):
        """Batches per epoch."""
        return self._length

    def batch(self, group, chunk):
        """The `(x, y, sample_weight)` arrays of one chunk of one group."""
        rows = self._groups[group][0]
        start = chunk * self.chunk_length
        stop = min(start + self.chunk_length, self.x.shape[1])
        real = np.maximum(rows, 0)
        width = min(self.chunk_length, self.x.shape[1])
        x = _padded(self.x[real, start:stop], width)
        y = _padded(self.y[real, start:stop], width)
        w = _padded(self.weights[real, start:stop], width)
        w[rows < 0] = 0.0
        return x, y, w

    def __iter__(self):
        """The selected epoch's batches as numpy arrays, in order."""
        for group, chunk in self.chunks():
            yield self.batch(group, chunk)

    def _make_dataset(self):
        if keras.backend.backend() != "tensorflow":
            return _ChunkDataset(self)
        # Imported here: `ResetStates` (backend-neutral) imports this module
        # to recognise the object, on JAX too.
        import tensorflow as tf

        width = min(self.chunk_length, self.x.shape[1])
        batch = self.batch_size
        signature = (
            tf.TensorSpec((batch, width) + self.x.shape[2:], self.x.dtype),
            tf.TensorSpec((batch, width) + self.y.shape[2:], self.y.dtype),
            tf.TensorSpec((batch, width), tf.float32),
        )
        # The generator runs when an epoch's iterator starts, after
        # ResetStates selected that epoch's order.
        dataset = tf.data.Dataset.from_generator(
            self.__iter__, output_signature=signature
        )
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self)))


class _ChunkDataset(keras.utils.PyDataset):
    """`TruncatedBPTT.dataset` where Keras does not run on TensorFlow:
    batch `i` is the `i`-th chunk of the selected epoch's order.

    One thread reads it (`workers=1`, no multiprocessing: Keras then
    calls `__getitem__` in its own loop, after the callbacks'
    `on_epoch_begin`, so `ResetStates` has selected the epoch). Within
    an epoch Keras started, batches must be read in order: Keras
    shuffles a `PyDataset` unless `fit` gets `shuffle=False`."""

    def __init__(self, data):
        super().__init__(workers=1, use_multiprocessing=False)
        self.data = data
        self._order = None  # (epoch, chunks)
        self._next = None  # the batch due next, inside an epoch

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if not 0 <= index < len(self.data):
            raise IndexError(
                f"TruncatedBPTT.dataset has {len(self.data)} batches. "
                f"Received: index={index}"
            )
        if self._next is not None:
            if index != self._next:
                raise ValueError(
                    "TruncatedBPTT.dataset must be read in order: pass "
                    "`shuffle=False` to `fit` (Keras shuffles the batches "
                    "of a keras.utils.PyDataset by default, which would "
                    "tear the chunks of each sequence apart). Received: "
                    f"batch {index} where batch {self._next} comes next"
                )
            self._next += 1
        epoch = self.data._epoch
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.data.chunks(epoch))
        return self.data.batch(*self._order[1][index])

    def on_epoch_begin(self):
        self._next = 0

    def on_epoch_end(self):
        self._next = None


def _padded(values, width):
    """Pad the time axis (1) to `width` with zeros (a short last chunk)."""
    missing = width - values.shape[1]
    if missing == 0:
        return np.array(values)
    pad = [(0, 0), (0, missing)] + [(0, 0)] * (values.ndim - 2)
    return np.pad(values, pad)
