"""Files written whole or not at all.

A process killed while writing a file (SIGKILL, a preemption) leaves either
the old file or the new one under the file's name, never a torn one that a
later command trips on: the writer writes a temporary file beside the
target (same directory, so the rename cannot cross file systems; the same
name ending, so writers that look at it, such as Keras's `.keras` and
`.weights.h5` savers or matplotlib, behave as for the target) and renames it
over the target with `os.replace`, which POSIX makes atomic. A leftover
temporary file (the process died before the rename) is ignored by every
reader, and `remove_partials` clears them.

`durable=True` also `fsync`s the file and its directory, so the new file
survives a power cut or a kernel crash once the call returns; without it
the file survives a killed process (the operating system keeps what was
written), which is what recipes and exports need.
"""

import contextlib
import os
import pathlib

PARTIAL_PREFIX = ".partial-"


def _partial_path(path):
    return path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{path.name}")


def fsync_directory(directory):
    """Make a rename or a new file in `directory` durable (POSIX)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory descriptors
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def replacing(path, durable=False):
    """Yield a temporary path to write the new content of `path` to; on a
    clean exit of the block it replaces `path` in one step, on an error it
    is removed and `path` keeps its old content.

        with replacing(run_dir / "model.keras") as partial:
            model.save(partial)
    """
    path = pathlib.Path(path)
    partial = _partial_path(path)
    try:
        yield partial
        if durable:
            with open(partial, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def write_text(path, text, durable=False):
    """`pathlib.Path.write_text` (UTF-8), whole or not at all."""
    with replacing(path, durable=durable) as partial:
        partial.write_text(text, encoding="utf-8")
    return pathlib.Path(path)


def remove_partials(directory):
    """Delete temporary files that killed writers left in `directory`."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return
    for leftover in directory.glob(f"{PARTIAL_PREFIX}*"):
        with contextlib.suppress(OSError):
            leftover.unlink()
