"""Depth reduction: rescue a deep recurrent stack whose gradients vanish.

An 8-level sigmoid `SharedRNN` stack on a short-memory task (the target is
the sum of the last three of ten random inputs; one to three sigmoid levels
learn it in a few epochs) gets a tiny fraction of the top level's gradient in
its lower levels and does not learn: its loss stays at the baseline of
always answering the mean. `keras_seq.depth.fit_reducing_depth` trains it
with a GradientMonitor, sees "vanishing through depth", removes the levels
`suggest_depth` picks (kept weights carry over) and trains on. Prints the
diagnosis before, the plan with its reasons, the stage table and the
diagnosis after, and saves the reduced model.

Runtime: ~40 s on 2 CPU cores (--smoke: ~10 s).

    keras-seq run depth_reduction [--epochs 8] [--depth 8] [--seed 0]
    python recipes/depth_reduction.py [same options]
"""

import sys

import keras
import numpy as np

import keras_seq
from keras_seq import runs

NAME = "depth_reduction"


def recent_sum(samples, timesteps, rng):
    """Inputs `(samples, timesteps, 1)` uniform in [0, 1); target: the sum
    of the last three."""
    x = rng.rand(samples, timesteps, 1).astype("float32")
    return x, x[:, -3:, 0].sum(axis=1, keepdims=True)


def main(argv=None):
    parser = runs.argument_parser(
        NAME, __doc__, epochs=8, batch_size=32, smoke_epochs=2
    )
    parser.add_argument(
        "--depth",
        type=runs.positive_int,
        default=8,
        metavar="N",
        help="recurrent levels at the start (default: 8)",
    )
    parser.add_argument(
        "--timesteps",
        type=runs.positive_int,
        default=10,
        metavar="T",
        help="sequence length (default: 10)",
    )
    args = parser.parse_args(argv)
    if args.timesteps < 3:
        parser.error(
            "--timesteps must be >= 3 (the target sums the last three inputs). "
            f"Received: {args.timesteps}"
        )
    samples, units = 2048, 32
    if args.smoke:
        args.depth, samples, units = min(args.depth, 4), 256, 8
    run = runs.start(NAME, args)

    rng = np.random.RandomState(args.seed)
    x, y = recent_sum(samples, args.timesteps, rng)
    x_val, y_val = recent_sum(samples // 4, args.timesteps, rng)

    model = keras_seq.Sequential(
        [
            keras.Input((args.timesteps, 1)),
            keras_seq.layers.SharedRNN(
                units, depth=args.depth, activation="sigmoid", name="rnn"
            ),
            keras.layers.Dense(1),
        ],
        name="deep_sigmoid_stack",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")

    print(f"\nBefore: {args.depth} sigmoid levels, gradients at initialisation")
    plan = keras_seq.depth.suggest_depth(model, x[:256], y[:256])
    print(plan.scores[["level", "depth_ratio", "flags", "ablation_cost"]].to_string())
    print()

    monitor = keras_seq.callbacks.GradientMonitor(log_dir=run.dir, every=5)
    final, stages = keras_seq.depth.fit_reducing_depth(
        model,
        x,
        y,
        epochs=args.epochs,
        patience=1,
        monitor=monitor,
        batch_size=args.batch_size,
        validation_data=(x_val, y_val),
        callbacks=[runs.tensorboard(run.dir)],
        verbose=2,
    )
    run.save(final, monitor)

    for stage in stages.itertuples():
        if stage.explanation:
            print(f"\nWhy stage {stage.stage} removed {stage.removed}:")
            print(stage.explanation)
    baseline = float(np.mean((y_val - y.mean()) ** 2))
    run.finish(
        {
            "levels_before": args.depth,
            "levels_after": int(stages.depth.iloc[-1]),
            "val_mse_first_stage": float(stages.val_loss.iloc[0]),
            "val_mse_final": float(stages.val_loss.iloc[-1]),
            "val_mse_answering_the_mean": baseline,
        },
        tables={"Stages": stages.drop(columns="explanation")},
        notes=[
            "val_mse_first_stage: at the end of the first stage, before any "
            "level was removed; answering the mean: the MSE of always "
            "predicting the training targets' mean."
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
