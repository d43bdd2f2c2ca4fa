"""A labelled zoo of short, real training runs for the monitor's verdicts.

Each case trains a small model as a user would and says what the user sees
(the loss against its baseline) and which verdict the monitor must give.
`tests/callbacks/test_verdict_zoo.py` runs the cases at `scale="test"`;
`benchmarks/verdict_zoo.py` runs them larger and prints the table (and, with
`--old-rules`, shows which cases the earlier rules got wrong).

Labels come from the outcome, not from the rule: "vanishing" cases stay at
their loss baseline (or cannot learn by construction), "ok" cases learn
their task, "exploding" cases diverge or blow up.
"""

import dataclasses
import warnings

import keras
import numpy as np

import keras_seq


@dataclasses.dataclass
class Case:
    name: str
    expected: str  # "vanishing", "ok", "exploding", "non-finite"
    build: object  # scale -> (model, fit kwargs, baseline or None)
    judged: object = None  # which sublayers carry the label (None: all)
    outcome: str = ""  # what the user sees, in words
    every: dict = dataclasses.field(default_factory=lambda: {"test": 1, "full": 5})


@dataclasses.dataclass
class Result:
    case: str
    expected: str
    verdicts: dict  # sublayer -> summary at the last record
    judged: list
    exploding_steps: list
    exploding_warnings: int
    loss_first: float
    loss_last: float
    baseline: object
    report: str
    monitor: object = dataclasses.field(repr=False, default=None)

    @property
    def labels(self):
        """The verdict words of the judged sublayers, plus the run's
        exploding and non-finite verdicts."""
        words = {self.verdicts[name].split(" (")[0] for name in self.judged}
        if self.exploding_steps:
            words.add("exploding")
        if self.monitor.diagnosis().nonfinite is not None:
            words.add("non-finite")
        return words


def _adding(samples, steps, seed=0):
    x, y = keras_seq.data.adding_problem(samples, timesteps=steps, seed=seed)
    return x, y, float(np.var(y))


def _sizes(scale, test, full):
    return test if scale == "test" else full


def simple_rnn_adding(scale):
    steps = 50
    x, y, base = _adding(_sizes(scale, 512, 2048), steps)
    model = keras.Sequential(
        [keras.Input((steps, 2)), keras.layers.SimpleRNN(16), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3, clipnorm=1.0), loss="mse")
    return model, dict(x=x, y=y, epochs=_sizes(scale, 2, 6), batch_size=32), base


def sigmoid_stack(scale):
    steps = 30
    x, y, base = _adding(_sizes(scale, 256, 1024), steps)
    model = keras.Sequential(
        [
            keras.Input((steps, 2)),
            keras_seq.layers.SharedRNN(16, depth=4, activation="sigmoid"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model, dict(x=x, y=y, epochs=_sizes(scale, 2, 4), batch_size=32), base


def readme_example(scale):
    steps = 50
    x, y, base = _adding(_sizes(scale, 512, 2048), steps)
    model = keras.Sequential(
        [
            keras.Input((steps, 2)),
            keras_seq.layers.SharedRNN(_sizes(scale, 32, 64), depth=2, name="rnn"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3, clipnorm=1.0), loss="mse")
    return model, dict(x=x, y=y, epochs=_sizes(scale, 1, 3), batch_size=32), base


def _linear(gain, steps, scale, optimizer):
    x, y, base = _adding(_sizes(scale, 256, 1024), steps)
    model = keras.Sequential(
        [
            keras.Input((steps, 2)),
            keras.layers.SimpleRNN(
                16,
                activation="linear",
                recurrent_initializer=keras.initializers.Orthogonal(gain=gain),
            ),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model, dict(x=x, y=y, epochs=1, batch_size=32), base


def linear_radius_05(scale):
    return _linear(0.5, 50, scale, keras.optimizers.SGD(1e-3))


def linear_radius_12(scale):
    # Clipping keeps the weights finite: the growth through time is the news.
    return _linear(1.2, 30, scale, keras.optimizers.SGD(1e-6, clipnorm=1.0))


def lstm_adding(scale):
    steps = _sizes(scale, 10, 30)
    x, y, base = _adding(_sizes(scale, 2048, 4096), steps)
    model = keras.Sequential(
        [keras.Input((steps, 2)), keras.layers.LSTM(32), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model, dict(x=x, y=y, epochs=_sizes(scale, 3, 8), batch_size=32), base


def irnn_adding(scale):
    steps = _sizes(scale, 20, 50)
    x, y, base = _adding(_sizes(scale, 2048, 4096), steps)
    model = keras.Sequential(
        [
            keras.Input((steps, 2)),
            keras_seq.layers.SharedRNN(
                32,
                activation="relu",
                recurrent_initializer=keras_seq.initializers.Identity(),
            ),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3, clipnorm=1.0), loss="mse")
    return model, dict(x=x, y=y, epochs=_sizes(scale, 4, 8), batch_size=32), base


def _reviews(samples, steps, vocabulary, seed=0, pad="pre", marked=0.1):
    """Token ids shaped like keras-io's IMDB: reviews of 10..steps words,
    zero-padded to `steps` (in front, as `pad_sequences` does); a fraction
    `marked` of each review's words (at least one) carry its sentiment."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, steps + 1, samples)
    y = rng.integers(0, 2, samples).astype("float32")
    x = np.zeros((samples, steps), "int32")
    for i, length in enumerate(lengths):
        words = rng.integers(3, vocabulary, length)
        where = rng.choice(length, max(1, int(length * marked)), replace=False)
        words[where] = 1 if y[i] else 2
        if pad == "pre":
            x[i, steps - length :] = words
        else:
            x[i, :length] = words
    return x, y


def imdb_bilstm(scale):
    steps, vocabulary = 200, _sizes(scale, 500, 2000)
    x, y = _reviews(_sizes(scale, 64, 1024), steps, vocabulary)
    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocabulary, _sizes(scale, 16, 128))(inputs)
    units = _sizes(scale, 8, 64)
    h = keras.layers.Bidirectional(keras.layers.LSTM(units, return_sequences=True))(h)
    h = keras.layers.Bidirectional(keras.layers.LSTM(units))(h)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model, dict(x=x, y=y, epochs=2, batch_size=32), float(np.log(2))


def gru_mask_zero(scale):
    # Count the marked words among 5..20 (post-padded): every valid step
    # matters, so a GRU that learns it carries the gradient to the start.
    steps, samples = 20, _sizes(scale, 1024, 2048)
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, steps + 1, samples)
    x = np.zeros((samples, steps), "int32")
    for i, length in enumerate(lengths):
        x[i, :length] = rng.integers(1, 4, length)  # 1 is the marked word
    y = (x == 1).sum(axis=1).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((steps,), dtype="int32"),
            keras.layers.Embedding(4, 8, mask_zero=True),
            keras.layers.GRU(16),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    kwargs = dict(x=x, y=y, epochs=_sizes(scale, 3, 6), batch_size=32)
    return model, kwargs, float(np.var(y))


def stateful_chunks(scale):
    total, chunk, batch = 100, 10, 16
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * _sizes(scale, 2, 4), total, 1)).astype("float32")
    y = np.roll(x, 3, axis=1)  # the input three steps earlier, at every step
    y[:, :3] = 0.0
    chunks = keras_seq.data.TruncatedBPTT(
        x, y, chunk_length=chunk, batch_size=batch, shuffle=False
    )
    model = keras.Sequential(
        [
            keras.Input((chunk, 1), batch_size=batch),
            keras_seq.layers.SharedRNN(16, return_sequences=True, stateful=True),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    kwargs = dict(
        x=chunks.dataset,
        epochs=_sizes(scale, 3, 6),
        shuffle=False,
        callbacks=[keras_seq.callbacks.ResetStates(chunks)],
    )
    return model, kwargs, float(np.var(y))


def sgd_diverging(scale):
    steps = 20
    x, y, base = _adding(_sizes(scale, 256, 1024), steps)
    model = keras.Sequential(
        [keras.Input((steps, 2)), keras.layers.SimpleRNN(16), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    return model, dict(x=x, y=y, epochs=2, batch_size=32), base


def nonfinite_input(scale):
    steps = 12
    x, y, base = _adding(128, steps)
    x[70, 7, 0] = np.nan  # batch 2 (of 32), time step 7
    model = keras.Sequential(
        [
            keras.Input((steps, 2)),
            keras_seq.layers.SharedRNN(8, depth=2, name="rnn"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model, dict(x=x, y=y, epochs=1, batch_size=32, shuffle=False), base


CASES = [
    Case(
        "simple_rnn_adding",
        "vanishing",
        simple_rnn_adding,
        None,
        "tanh SimpleRNN, adding problem T=50: loss stays at the baseline",
    ),
    Case(
        "sigmoid_stack",
        "vanishing",
        sigmoid_stack,
        None,
        "SharedRNN(depth=4, sigmoid), adding T=30",
    ),
    Case(
        "readme_example",
        "vanishing",
        readme_example,
        ["rnn/level_1"],
        "the README's first example: SharedRNN(depth=2), adding T=50; top level",
    ),
    Case(
        "linear_radius_0.5",
        "vanishing",
        linear_radius_05,
        None,
        "linear SimpleRNN, recurrent spectral radius 0.5, T=50",
    ),
    Case(
        "lstm_adding",
        "ok",
        lstm_adding,
        None,
        "LSTM learns the adding problem",
        {"test": 16, "full": 16},
    ),
    Case(
        "irnn_adding",
        "ok",
        irnn_adding,
        None,
        "IRNN (relu, identity) learns the adding problem",
        {"test": 16, "full": 16},
    ),
    Case(
        "imdb_bilstm",
        "ok-lower",
        imdb_bilstm,
        None,
        "keras-io IMDB shape: 2 x Bidirectional LSTM on pre-padded token ids, "
        "T=200, Adam, no clipping; learns",
        {"test": 1, "full": 1},
    ),
    Case(
        "gru_mask_zero",
        "ok",
        gru_mask_zero,
        None,
        "Embedding(mask_zero=True) + GRU on post-padded token ids: counts "
        "the marked words; learns",
    ),
    Case(
        "stateful_chunks",
        "ok",
        stateful_chunks,
        None,
        "stateful SharedRNN on TruncatedBPTT chunks of 10; learns a 3-step delay",
    ),
    Case(
        "linear_radius_1.2",
        "exploding",
        linear_radius_12,
        None,
        "linear SimpleRNN, recurrent spectral radius 1.2, T=30",
    ),
    Case(
        "sgd_diverging",
        "exploding",
        sgd_diverging,
        None,
        "tanh SimpleRNN with SGD(1.0): the loss diverges",
    ),
    Case(
        "nonfinite_input",
        "non-finite",
        nonfinite_input,
        None,
        "a NaN in one input (batch 2, time step 7), on_nan='skip'",
    ),
]


def run(case, scale="test", every=None, monitor_kwargs=None):
    """Train `case` with a `GradientMonitor` and return a `Result`."""
    keras.utils.set_random_seed(0)
    model, kwargs, baseline = case.build(scale)
    callbacks = list(kwargs.pop("callbacks", []))
    settings = dict(every=every or case.every.get(scale, 1))
    if case.expected == "non-finite":
        settings["on_nan"] = "skip"
    settings.update(monitor_kwargs or {})
    monitor = keras_seq.callbacks.GradientMonitor(**settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(verbose=0, callbacks=callbacks + [monitor], **kwargs)
    losses = history.history["loss"]
    diagnosis = monitor.diagnosis()
    verdicts = {name: d.summary for name, d in diagnosis.sublayers.items()}
    judged = case.judged or list(verdicts)
    return Result(
        case=case.name,
        expected=case.expected,
        verdicts=verdicts,
        judged=judged,
        exploding_steps=diagnosis.exploding_steps,
        exploding_warnings=sum("Exploding" in str(w.message) for w in caught),
        loss_first=float(losses[0]),
        loss_last=float(losses[-1]),
        baseline=baseline,
        report=monitor.report(),
        monitor=monitor,
    )
