"""Depth reduction: rescue a deep recurrent stack whose gradients vanish.

An 8-level sigmoid `SharedRNN` stack on a short-memory task (the target is
the sum of the last three of ten random inputs; one to three sigmoid levels
learn it in a few epochs) gets a tiny fraction of the top level's gradient in
its lower levels and does not learn: its loss stays at the baseline of
always answering the mean. `keras_seq.depth.fit_reducing_depth` trains it
with a GradientMonitor, sees "vanishing through depth", removes the levels
`suggest_depth` picks (kept weights carry over) and trains on. Prints the
diagnosis before, the plan with its reasons, the stage table and the
diagnosis after; TensorBoard logs under `runs/depth_reduction/<timestamp>`.
About a minute on 2 CPU cores.

    python recipes/depth_reduction.py [--epochs 8] [--depth 8] [--seed 0]
    tensorboard --logdir runs/depth_reduction
"""

import argparse
import pathlib
import time

import keras
import numpy as np

import keras_seq

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=8, help="default: 8")
parser.add_argument("--depth", type=int, default=8, help="levels, default: 8")
parser.add_argument("--steps", type=int, default=10, help="T, default: 10")
parser.add_argument("--seed", type=int, default=0, help="default: 0")
parser.add_argument(
    "--log-dir",
    default=None,
    help="default: runs/depth_reduction/<timestamp> in the current directory",
)
args = parser.parse_args()
keras.utils.set_random_seed(args.seed)


def recent_sum(samples, steps, rng):
    """Inputs (samples, steps, 1) uniform in [0, 1); target: the sum of the
    last three."""
    x = rng.rand(samples, steps, 1).astype("float32")
    return x, x[:, -3:, 0].sum(axis=1, keepdims=True)


rng = np.random.RandomState(args.seed)
x, y = recent_sum(2048, args.steps, rng)
x_val, y_val = recent_sum(512, args.steps, rng)
log_dir = pathlib.Path(
    args.log_dir or f"runs/depth_reduction/{time.strftime('%Y%m%d-%H%M%S')}"
)

model = keras_seq.Sequential(
    [
        keras.Input((args.steps, 1)),
        keras_seq.layers.SharedRNN(32, depth=args.depth, activation="sigmoid"),
        keras.layers.Dense(1),
    ],
    name="deep_sigmoid_stack",
)
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")

print(f"Before: a {args.depth}-level sigmoid stack, gradients at initialisation")
plan = keras_seq.depth.suggest_depth(model, x[:256], y[:256])
print(plan.scores[["level", "depth_ratio", "flags", "ablation_cost"]].to_string())
print()

monitor = keras_seq.callbacks.GradientMonitor(log_dir=log_dir, every=5)
final, stages = keras_seq.depth.fit_reducing_depth(
    model,
    x,
    y,
    epochs=args.epochs,
    patience=1,
    monitor=monitor,
    batch_size=32,
    validation_data=(x_val, y_val),
    callbacks=[keras.callbacks.TensorBoard(log_dir)],
    verbose=2,
)

print("\nStages:")
print(stages.drop(columns="explanation").to_string(index=False))
for stage in stages.itertuples():
    if stage.explanation:
        print(f"\nWhy stage {stage.stage} removed {stage.removed}:")
        print(stage.explanation)
print("\nDiagnosis after:")
print(monitor.report())
baseline = float(np.mean((y_val - y.mean()) ** 2))
print(
    f"\nValidation MSE {stages.val_loss.iloc[-1]:.4f} with "
    f"{stages.depth.iloc[-1]} level(s); always answering the mean: {baseline:.4f}."
)
print(f"TensorBoard: tensorboard --logdir {log_dir}")
