"""Recipes: the package's main jobs as short scripts to run and to copy.

Each module here is one recipe, installed as `keras_seq.recipes.<name>` and
run with `keras-seq run <name>` or `python recipes/<name>.py`; `keras-seq
list` shows them. A recipe is a flat script that imports only the public
`keras_seq` API and has:

- a module docstring: the title on its first line, then what it shows, and
  a line `Runtime: <typical time> on 2 CPU cores (--smoke: <time>).`;
- `main(argv=None) -> int`, built on `keras_seq.runs` (the common options,
  the run directory, saving, the closing figures and reports);
- `if __name__ == "__main__": sys.exit(main())`.

Importing this package imports no recipe (and no TensorFlow).
"""
