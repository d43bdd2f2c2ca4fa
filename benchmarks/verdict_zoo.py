"""The labelled verdict zoo, larger than in the tests, as a table.

Runs every case of `tests/callbacks/verdict_zoo.py` (real short training
runs labelled by what the user sees: the loss against its baseline) with
`GradientMonitor` and prints, per case: the expected verdict, the monitor's
verdicts with their evidence, the loss against the baseline, the exploding
warnings raised during `fit`, and the verdict the rules before issue 14
would have given on the same recorded data (horizon < 10% of T and a
shrinking norm for vanishing; a global norm above 1e3 or 10x the median of
the previous 20 records for exploding): the zoo bites if those differ from
the expected labels.

`--scale full` (default) uses the benchmark sizes (T=30-200, more steps);
`--scale test` the tests' own. How long: 2.3 minutes at full scale on 2 idle CPU
cores (the IMDB-shaped case, recorded at every step, takes 46 s of it).

    .venv/bin/python benchmarks/verdict_zoo.py [--scale full|test]
        [--cases NAME ...] [--json PATH]
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ZOO = pathlib.Path(__file__).resolve().parents[1] / "tests" / "callbacks"
sys.path.insert(0, str(ZOO))

import numpy as np  # noqa: E402
import verdict_zoo  # noqa: E402

from keras_seq import diagnostics  # noqa: E402


def old_verdicts(result):
    """The rules before issue 14, on the same recorded data."""
    words = set()
    diagnosis = result.monitor.diagnosis()
    for name in result.judged:
        d = diagnosis.sublayers[name]
        if d.nonfinite_timestep is not None:
            words.add("non-finite")
            continue
        vanishing = (
            d.timesteps >= 2
            and d.horizon < 0.1 * d.timesteps
            and not diagnostics.decay_factor(d.norms) > 1.0
        )
        words.add("vanishing" if vanishing else "ok")
    norms = result.monitor.to_frame().global_norm.to_numpy()
    alarms = 0
    for i in range(len(norms)):
        last, previous = norms[i], norms[max(0, i - 20) : i]
        previous = previous[np.isfinite(previous)]
        if not np.isfinite(last):
            continue
        if last > 1e3 or (previous.size >= 3 and last > 10 * np.median(previous) > 0):
            alarms += 1
    if alarms:
        words.add(f"exploding ({alarms} alarms)")
    if diagnosis.nonfinite is not None:
        words.add("non-finite")
    return sorted(words)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["full", "test"], default="full")
    parser.add_argument("--cases", nargs="*", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for case in verdict_zoo.CASES:
        if args.cases and case.name not in args.cases:
            continue
        start = time.perf_counter()
        result = verdict_zoo.run(case, scale=args.scale)
        rows.append(
            {
                "case": case.name,
                "what": case.outcome,
                "expected": case.expected,
                "verdicts": result.verdicts,
                "exploding_steps": result.exploding_steps,
                "exploding_warnings": result.exploding_warnings,
                "nonfinite": str(result.monitor.diagnosis().nonfinite),
                "loss": [result.loss_first, result.loss_last],
                "baseline": result.baseline,
                "now": sorted(result.labels),
                "old_rules": old_verdicts(result),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(f"{case.name}: {rows[-1]['now']} ({rows[-1]['seconds']} s)", flush=True)
    print()
    print(
        "| case | expected | verdict (evidence), judged sublayers | loss: first -> "
        "last (baseline) | exploding warnings | old rules |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        case = next(c for c in verdict_zoo.CASES if c.name == row["case"])
        judged = case.judged or list(row["verdicts"])
        verdicts = "; ".join(f"{n}: {row['verdicts'][n]}" for n in judged)
        if row["exploding_steps"]:
            verdicts += f"; exploding at steps {row['exploding_steps'][:6]}"
        if row["expected"] == "non-finite":
            verdicts += f"; {row['nonfinite']}"
        first, last = row["loss"]
        print(
            f"| {row['case']} | {row['expected']} | {verdicts} | {first:.3g} -> "
            f"{last:.3g} ({row['baseline']:.3g}) | {row['exploding_warnings']} | "
            f"{', '.join(row['old_rules'])} |"
        )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
