"""One of the two worker processes of test_multi_worker.py (TF_CONFIG set by
the test; argv[1]: a directory shared with the test). Runs every case in one
pair of processes and writes `result-<task>.json` there:

1. a `keras_seq.Sequential` (SharedRNN, depth 2) with a `GradientMonitor`
   (every=1, a `log_dir` under this worker's own directory, per-time-step
   rows spilled to Parquet early) fits NumPy arrays with validation data;
   `keras.callbacks.TensorBoard` runs on the chief only, as the README says;
2. the same model and monitor fit a `tf.data` dataset sharded by DATA;
3. task 1 only, while the chief writes its summaries and figures: the same
   training in this process without a strategy (one device, the same global
   batches and initial weights), the reference;
4. a plain `keras.Sequential` fits (expected to fail: keras-team/keras#20585).
"""

import json
import os
import pathlib
import sys
import time

STARTED = time.monotonic()

import tensorflow as tf  # noqa: E402 (after the clock starts)

# Collective ops must be configured at program startup: the strategy comes
# before any other TensorFlow op of the process.
strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_seq  # noqa: E402
from keras_seq.callbacks import records  # noqa: E402

# 14 rows per record (2 sublayers x 7 steps): spill to Parquet parts early.
records.MAX_TIMESTEP_ROWS = 20

BATCH = 8  # global batch: 4 samples per worker


def data():
    rng = np.random.RandomState(0)
    x = rng.randn(40, 7, 3).astype("float32")
    y = rng.randn(40, 2).astype("float32")
    return (x[:32], y[:32]), (x[32:], y[32:])


def build():
    keras.utils.set_random_seed(1)
    model = keras_seq.Sequential(
        [
            keras.Input((7, 3)),
            keras_seq.layers.SharedRNN(6, depth=2, name="rnn"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def sharded(x, y, distributed):
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    if distributed:
        options = tf.data.Options()
        policy = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = policy
        dataset = dataset.with_options(options)
    return dataset


def train(model, log_dir, callbacks, distributed):
    """Both fits; what the test compares."""
    (x, y), validation = data()
    monitor = keras_seq.callbacks.GradientMonitor(every=1, log_dir=log_dir)
    first = model.fit(
        x,
        y,
        batch_size=BATCH,
        shuffle=False,
        validation_data=validation,
        verbose=0,
        callbacks=[monitor, *callbacks],
    )
    second = model.fit(
        sharded(x, y, distributed), verbose=0, callbacks=[monitor, *callbacks]
    )
    return {
        "history": [first.history, second.history],
        "frame": monitor.to_frame().to_dict(orient="list"),
        "timesteps": monitor.timestep_frame()[
            ["step", "fit", "layer", "timestep", "grad_norm"]
        ].to_dict(orient="list"),
    }


def keras_alone():
    """A plain keras.Sequential, which Keras 3.15 cannot fit here."""
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    try:
        model.fit(np.ones((8, 3)), np.ones((8, 1)), batch_size=8, verbose=0)
    except Exception as error:  # reported to the test
        return f"{type(error).__name__}: {str(error)[:300]}"
    return None


def main():
    directory = pathlib.Path(sys.argv[1])
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    own = directory / f"worker{task}"  # this "machine"'s disk
    chief = strategy.extended.should_save_summary
    with strategy.scope():
        model = build()
    start = model.get_weights()  # broadcast from the chief: equal on all
    tensorboard = [keras.callbacks.TensorBoard(str(own / "logs"))] if chief else []
    seconds = {"start": time.monotonic() - STARTED}
    result = {"task": task, "chief": chief, "seconds": seconds}
    result["replicas"] = strategy.num_replicas_in_sync
    result["distributed"] = train(model, str(own / "logs"), tensorboard, True)
    seconds["distributed"] = time.monotonic() - STARTED
    if task == 1:
        reference = build()
        reference.set_weights(start)
        result["reference"] = train(reference, None, [], False)
        seconds["reference"] = time.monotonic() - STARTED
    result["keras_alone"] = keras_alone()
    seconds["keras_alone"] = time.monotonic() - STARTED
    path = directory / f"result-{task}.json"
    path.with_suffix(".tmp").write_text(json.dumps(result))
    path.with_suffix(".tmp").rename(path)


if __name__ == "__main__":
    main()
