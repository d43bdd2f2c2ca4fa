"""NaN/Inf soak of `GradientMonitor(on_nan="skip")`.

Trains a small model (exponential input projection, `SharedRNN` of depth 2,
Keras's `SimpleRNN`, float32 head, Adam; batch 8, T=6, 3 features) for
1,000 steps per case, 15% of the batches poisoned in one sample each, the
kinds taking turns: NaN/+-Inf in an input, NaN/+-Inf in a target, or finite
data whose gradient overflows (+-3e4 into the exponential layer, or a 1e21
target whose squared error overflows float32). After every step a callback
checks that every weight and optimizer variable is finite on every replica,
and which changed; the steps the monitor reports as skipped (its
`skipped_steps` count, read after every step, and the `skipped` column of
`to_frame()` on recorded steps) are compared with the poisoned steps. The
model, the poisons and the checks live in
`tests/callbacks/nan_soak_worker.py` (shared with
`tests/callbacks/test_nan_soak.py`, which runs 48 steps per case); its
`problems()` docstring says what "exact match" means in each case.

Cases, each in a fresh child process: `float32` (default strategy, monitor
`every=2`), `mirrored` (`MirroredStrategy` over two logical CPU devices,
`every=2`), `mixed_float16` (a `LossScaleOptimizer` whose scale doubles every
2 finite steps, so clean batches overflow too; `every=1`), and
`mirrored_mixed_float16` (both: a NaN in one replica's share of the batch
must make every replica's LossScaleOptimizer skip).

How long: 1.4 minutes on 2 idle CPU cores (1.9-2.6 with other work on the
machine), most of it the two MirroredStrategy cases.

    .venv/bin/python benchmarks/nan_soak.py [--steps 1000] [--seed 0]
        [--cases float32 mirrored ...] [--json PATH]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from bench_env import environment, finish, targets_table

WORKER = (
    pathlib.Path(__file__).resolve().parent.parent
    / "tests"
    / "callbacks"
    / "nan_soak_worker.py"
)
sys.path.insert(0, str(WORKER.parent))
import nan_soak_worker as worker  # noqa: E402

STEPS = 1000
DEFAULT_CASES = ["float32", "mirrored", "mixed_float16", "mirrored_mixed_float16"]
# Expected to fail until the fix described in the test's xfail reason lands.
KNOWN_FAILURES = set()  # cases expected to fail, marked in the tables


def run_case(case, steps, seed):
    """The worker's result for `case`, run in a fresh process (a crash or a
    hang becomes an `error` result)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, str(WORKER), "--steps", str(steps), "--seed"]
    began = time.perf_counter()
    try:
        done = subprocess.run(
            command + [str(seed), case],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"case": case, "error": "timed out after 900 s"}
    lines = done.stdout.splitlines()
    if done.returncode != 0 or not lines:
        return {"case": case, "error": done.stderr[-2000:]}
    result = json.loads(lines[-1])
    result["process_seconds"] = time.perf_counter() - began
    return result


def soak_table(results):
    lines = [
        "| case | steps | poisoned (input/target/overflow) | skipped: monitor count "
        "/ untouched steps / recorded rows `skipped` | LSO skips (clean overflows) "
        "| exact match | non-finite weights seen | time (s, ms/step) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for result in results:
        if "error" in result:
            lines.append(
                f"| {result['case']} | - | - | - | - | no (fit failed) | - | - |"
            )
            continue
        s = worker.summary(result)
        kinds = "/".join(str(s["kinds"][k]) for k in worker.KINDS)
        skipped = (
            f"{len(s['counted'])} / {len(s['untouched'])} / "
            f"{len(result['frame_skipped'])} of {len(result['recorded'])}"
        )
        lso = (
            f"{len(s['lso_skipped'])} ({len(s['clean_lso_skips'])})"
            if result["loss_scaling"]
            else "-"
        )
        match = "yes" if not worker.problems(result) else "no"
        ms = 1e3 * result["seconds"] / result["steps"]
        lines.append(
            f"| {result['case']} | {result['steps']} | {len(s['poisoned'])} "
            f"({kinds}) | {skipped} | {lso} | {match} | {s['nonfinite']} | "
            f"{result['seconds']:.1f} ({ms:.1f}) |"
        )
    return "\n".join(lines)


def details(results):
    """Problems and warnings per case, as Markdown lines."""
    lines = []
    for result in results:
        found = worker.problems(result)
        if found:
            known = " (known failure)" if result["case"] in KNOWN_FAILURES else ""
            lines.append(f"- {result['case']}{known}: {len(found)} problems, first:")
            lines += [f"  - {p}" for p in found[:4]]
        for message, count in result.get("warnings", {}).items():
            lines.append(f"- {result['case']}: warning x{count}: {message[:200]}")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS, help="steps per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cases", nargs="+", choices=sorted(worker.CASES), default=DEFAULT_CASES
    )
    parser.add_argument("--json", metavar="PATH", help="also save results as JSON")
    args = parser.parse_args()
    if args.steps < 20:
        parser.error(f"--steps must be >= 20, got {args.steps}")
    start = time.time()
    print("# NaN/Inf soak of GradientMonitor(on_nan='skip')\n")
    for key, value in environment().items():
        print(f"- {key}: {value}")
    results = []
    for case in args.cases:
        print(f"\n(running {case}: {args.steps} steps ...)", flush=True)
        results.append(run_case(case, args.steps, args.seed))
    print()
    print(soak_table(results))
    lines = details(results)
    if lines:
        print("\n## Problems and warnings\n")
        print("\n".join(lines))
    targets = targets_table(
        [
            (
                f"{r['case']}: skipped steps == poisoned (LSO: agree), no "
                "non-finite weight or optimizer variable"
                + (" [known failure]" if r["case"] in KNOWN_FAILURES else ""),
                "holds" if not worker.problems(r) else "broken",
                "PASS" if not worker.problems(r) else "MISS",
            )
            for r in results
        ]
    )
    errors = [f"{r['case']}: {r['error'][-300:]}" for r in results if "error" in r]
    for result in results:
        result.pop("per_step", None)  # keep the JSON small
    finish(targets, errors, (time.time() - start) / 60, args.json, {"rows": results})


if __name__ == "__main__":
    main()
