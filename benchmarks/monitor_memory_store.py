"""Memory of per-time-step gradient records: `TimestepStore` vs a plain list.

What it measures: a long monitored run's per-time-step arrays, 10,000
recorded steps x 2 recurrent sublayers x T=100 time steps (2 million
long-format rows), appended one record (three float32 arrays of length T:
`grad_norm`, `contribution`, `valid_fraction`) at a time, either

- to `keras_seq.callbacks.timestep_store.TimestepStore(max_rows=200_000)`,
  which spills to Parquet parts in a temporary directory, or
- to a plain list of `(step, layer, arrays...)` tuples, as
  `GradientMonitor` keeps them before the store.

For each, in fresh processes (one per variant and measurement, so peaks do
not mix): the wall time of the appends, the peak and the final amount of
memory traced by `tracemalloc` (Python objects and numpy buffers, not
Arrow's own allocator), the growth of the resident set over the appends
(peak: VmHWM, reset before the appends through /proc/self/clear_refs;
final: VmRSS; Linux only), and the time to build the long pandas frame
afterwards (`frame()`, or the monitor's `pd.concat` of one frame per
record). Times of the tracemalloc run are not reported (tracing slows
allocation).

How to run (about 15 seconds on 2 idle CPU cores, most of it importing
TensorFlow in the four child processes):

    .venv/bin/python benchmarks/monitor_memory_store.py [--steps 10000]
        [--timesteps 100]
"""

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

LAYERS = ("rnn/level_0", "rnn/level_1")
COLUMNS = ("grad_norm", "contribution", "valid_fraction")
MAX_ROWS = 200_000
VARIANTS = {
    "store": f"TimestepStore(max_rows={MAX_ROWS:_})",
    "list": "list of arrays (GradientMonitor before the store)",
}


def _status_kb(field):
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    """Set VmHWM to the current RSS (Linux >= 4.0); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        return False
    return True


def _records(steps, timesteps):
    rng = np.random.default_rng(0)
    for step in range(steps):
        for layer in LAYERS:
            yield (
                step,
                layer,
                (
                    rng.random(timesteps, dtype=np.float32),
                    rng.random(timesteps, dtype=np.float32),
                    np.ones(timesteps, np.float32),
                ),
            )


def _fill(variant, steps, timesteps):
    if variant == "store":
        from keras_seq.callbacks.timestep_store import TimestepStore

        store = TimestepStore(COLUMNS, max_rows=MAX_ROWS)
        for step, layer, arrays in _records(steps, timesteps):
            store.append(step, layer, dict(zip(COLUMNS, arrays)), fit=0)
        return store
    timesteps_list = []
    for step, layer, arrays in _records(steps, timesteps):
        timesteps_list.append((step, layer, *arrays))
    return timesteps_list


def _frame(variant, kept):
    if variant == "store":
        return kept.frame()
    # GradientMonitor.timestep_frame() before the store.
    frames = [
        pd.DataFrame(
            {
                "step": step,
                "layer": layer,
                "timestep": np.arange(len(norms)),
                "grad_norm": norms,
                "contribution": contribution,
                "valid_fraction": valid,
            }
        )
        for step, layer, norms, contribution, valid in kept
    ]
    return pd.concat(frames, ignore_index=True)


def child(variant, mode, steps, timesteps):
    """One measurement in this process; prints one JSON line."""
    if variant == "store":
        import keras_seq.callbacks.timestep_store  # noqa: F401  (import first)
    result = {}
    if mode == "traced":
        tracemalloc.start()
        kept = _fill(variant, steps, timesteps)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result.update(traced_peak=peak, traced_final=current)
    else:
        start_rss = _status_kb("VmRSS")
        reset = _reset_peak_rss()
        started = time.perf_counter()
        kept = _fill(variant, steps, timesteps)
        result["seconds"] = time.perf_counter() - started
        result["rss_final"] = (_status_kb("VmRSS") - start_rss) * 1024
        # Without the reset VmHWM may still hold the import's peak.
        result["rss_peak"] = (_status_kb("VmHWM") - start_rss) * 1024 if reset else None
        started = time.perf_counter()
        frame = _frame(variant, kept)
        result["frame_seconds"] = time.perf_counter() - started
        result["frame_rows"] = len(frame)
    if variant == "store":
        result["parts"] = len(list(kept.directory.glob("part-*.parquet")))
        kept.close()
    print(json.dumps(result))


def _run_child(variant, mode, steps, timesteps):
    command = [sys.executable, os.path.abspath(__file__), "--child", variant, mode]
    command += ["--steps", str(steps), "--timesteps", str(timesteps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mb(value):
    return "n/a" if value is None else f"{value / 1e6:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="recorded steps")
    parser.add_argument("--timesteps", type=int, default=100, help="T")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "MODE"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.steps, args.timesteps)
        return

    rows = args.steps * len(LAYERS) * args.timesteps
    began = time.perf_counter()
    print("# Per-time-step records: TimestepStore vs a list\n")
    print(
        f"{args.steps:,} recorded steps x {len(LAYERS)} sublayers x "
        f"T={args.timesteps} = {rows:,} rows; 3 float32 columns "
        f"({rows * 3 * 4 / 1e6:.0f} MB of values). Python "
        f"{sys.version.split()[0]}, pandas {pd.__version__}, numpy "
        f"{np.__version__}, load average {os.getloadavg()[0]:.2f}.\n"
    )
    results = {}
    for variant in VARIANTS:
        results[variant] = {
            **_run_child(variant, "rss", args.steps, args.timesteps),
            **_run_child(variant, "traced", args.steps, args.timesteps),
        }
    print(
        "| storage | append time (s) | traced peak (MB) | traced at end (MB) "
        "| RSS growth, peak (MB) | RSS growth, at end (MB) | frame() (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for variant, label in VARIANTS.items():
        r = results[variant]
        if variant == "store":
            label += f", {r['parts']} Parquet parts"
        print(
            f"| {label} | {r['seconds']:.2f} | {_mb(r['traced_peak'])} "
            f"| {_mb(r['traced_final'])} | {_mb(r['rss_peak'])} "
            f"| {_mb(r['rss_final'])} | {r['frame_seconds']:.2f} |"
        )
    print(
        "\nRSS growth is measured from just before the appends; the frame's "
        f"own memory ({rows:,} rows) is not included. "
        f"Total time: {time.perf_counter() - began:.0f} s."
    )


if __name__ == "__main__":
    main()
