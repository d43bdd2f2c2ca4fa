"""What every benchmark prints about the machine and the code it measured."""

import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys

import keras
import numpy as np

import keras_seq


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_revision():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "keras_seq"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" (keras_seq/ has uncommitted changes)" if dirty else "")


def load_average():
    # Other processes on the machine skew the timings; this makes them visible.
    return " ".join(f"{load:.2f}" for load in os.getloadavg()) + " (1, 5, 15 min)"


def environment(**extra):
    """Versions, command line, CPUs and load; `extra` items follow keras_seq."""
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    return {
        "command": shlex.join([sys.executable] + sys.argv),
        "python": platform.python_version(),
        "keras backend": keras.backend.backend(),
        "tensorflow": _version("tensorflow"),
        "jax": _version("jax"),
        "keras": keras.__version__,
        "keras_seq": f"{keras_seq.__version__}, git {git_revision()}",
        **extra,
        "numpy": np.__version__,
        "cpus": f"{cpus} ({usable} usable by this process)",
        "load average at start": load_average(),
        "platform": platform.platform(),
    }


def targets_table(rows, measured="measured"):
    """Markdown table of `(target, measured, status)` rows."""
    lines = [f"| target | {measured} | status |", "| --- | --- | --- |"]
    lines += [f"| {t} | {m} | {s} |" for t, m, s in rows]
    return "\n".join(lines)


def finish(targets_markdown, errors, minutes, json_path, payload):
    """The targets table, any errors, the run time; `payload` as JSON."""
    print("\n## Targets (from the issue; reported, not asserted)\n")
    print(targets_markdown)
    if errors:
        print("\n## Errors (variants left out of the tables)\n")
        print("\n".join(f"- {error}" for error in errors))
    print(f"\nTotal time: {minutes:.1f} min; load average at end: {load_average()}")
    if json_path:
        with open(json_path, "w") as file:
            json.dump({**payload, "errors": errors}, file, indent=2)


def max_rss_mb():
    """High-water mark of this process's resident set, in MB."""
    import resource

    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


# A process started straight from a benchmark would report the benchmark's
# high-water mark as its own ru_maxrss (Linux carries the parent's mark
# across vfork + exec), so each child starts through a small launcher.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def run_fresh(script, args, label, errors):
    """Run `script args...` in a fresh process; return the JSON object its
    last stdout line holds, or None (with a line appended to `errors`)."""
    command = [sys.executable, "-c", _LAUNCHER, sys.executable, script, *args]
    result = subprocess.run(command, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        errors.append(f"{label}: exit {result.returncode}: {tail}")
        return None
    return json.loads(lines[-1])
