"""Whether this process is the `keras-seq` command (kept free of imports so
that `keras_seq/__init__.py` can ask before it imports Keras)."""

import os
import sys

COMMAND = "keras-seq"


def started_by_command():
    """True when Python was started by the `keras-seq` console script.

    The command answers `list`, `report` and `--help` without TensorFlow and
    imports TensorFlow quietly for the subcommands that need it, so in its
    process `keras_seq` loads its subpackages on first use instead of on
    import. Everywhere else `import keras_seq` loads everything at once.
    """
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    return script in (COMMAND, f"{COMMAND}.exe", f"{COMMAND}-script.py")
