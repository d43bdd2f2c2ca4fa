"""Run by test_gradient_monitor_distributed.py in a fresh process: two
logical CPU devices must be configured before TensorFlow starts."""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_seq  # noqa: E402


def run(strategy, weights, x, y, nan_batch):
    with strategy.scope():
        model = keras_seq.Sequential(
            [
                keras.Input((7, 3)),
                keras_seq.layers.SharedRNN(
                    5, depth=2, return_sequences=True, name="rnn"
                ),
                keras.layers.SimpleRNN(4, name="simple"),
                keras.layers.Dense(2, name="head"),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    if weights is not None:
        model.set_weights(weights)
    start = model.get_weights()
    monitor = keras_seq.callbacks.GradientMonitor(every=1, on_nan="skip")
    x = x.copy()
    if nan_batch is not None:
        x[nan_batch * 8 + 1, 2, 0] = np.nan
    model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[monitor])
    return start, model, monitor


def applied_under_clipping():
    """What the monitor says was applied, and what the SGD update shows."""
    rng = np.random.RandomState(1)
    x = rng.randn(8, 7, 3).astype("float32")
    y = rng.randn(8, 2).astype("float32") * 5
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {}
    for clip in ({"clipnorm": 0.05}, {"global_clipnorm": 0.05}):
        with mirrored.scope():
            model = keras_seq.Sequential(
                [
                    keras.Input((7, 3)),
                    keras_seq.layers.SharedRNN(5, name="rnn"),
                    keras.layers.Dense(2),
                ]
            )
            model.compile(optimizer=keras.optimizers.SGD(1.0, **clip), loss="mse")
        before = model.get_weights()
        monitor = keras_seq.callbacks.GradientMonitor(every=1)
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[monitor])
        change = [b - a for b, a in zip(before, model.get_weights())]
        contributions = monitor.timestep_frame().contribution.sum()
        result[next(iter(clip))] = {
            "monitor": float(monitor.to_frame().applied_norm.iloc[0]),
            "unclipped": float(monitor.to_frame().global_norm.iloc[0]),
            "actual": float(np.sqrt(sum(np.sum(c**2) for c in change))),
            "contributions": float(contributions),
            "recurrent_kernel": float(np.linalg.norm(change[1])),
        }
    return result


def main():
    if "--clip" in sys.argv:
        json.dump(applied_under_clipping(), sys.stdout)
        return
    rng = np.random.RandomState(0)
    x = rng.randn(24, 7, 3).astype("float32")
    y = rng.randn(24, 2).astype("float32")
    nan_batch = 1 if "--nan" in sys.argv else None
    start, one, one_monitor = run(tf.distribute.get_strategy(), None, x, y, nan_batch)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    _, two, two_monitor = run(mirrored, start, x, y, nan_batch)
    result = {"replicas": mirrored.num_replicas_in_sync}
    for name, model, monitor in (("one", one, one_monitor), ("two", two, two_monitor)):
        result[name] = {
            "frame": monitor.to_frame().to_dict(orient="list"),
            "timesteps": monitor.timestep_frame().to_dict(orient="list"),
            "weights": [w.tolist() for w in model.get_weights()],
            "skipped": monitor.skipped_steps,
            "nonfinite": None
            if monitor.diagnosis().nonfinite is None
            else vars(monitor.diagnosis().nonfinite),
        }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
