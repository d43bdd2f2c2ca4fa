"""The shape every recipe shares, so that `keras-seq list` and `run` and a
reader copying one can rely on it."""

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

import keras_seq
import keras_seq.recipes

RECIPES_DIR = pathlib.Path(keras_seq.recipes.__file__).parent
NAMES = sorted(
    path.stem for path in RECIPES_DIR.glob("*.py") if not path.stem.startswith("_")
)


def test_the_recipes_of_this_issue_are_there():
    assert set(NAMES) == {
        "next_word",
        "adding_problem",
        "vanishing_gradients",
        "exploding_gradients",
        "depth_reduction",
        "timeseries",
        "bidirectional_tagging",
    }
    assert not (RECIPES_DIR / "next_word_idioms.py").exists()


@pytest.mark.parametrize("name", NAMES)
def test_recipe_shape(name):
    tree = ast.parse((RECIPES_DIR / f"{name}.py").read_text())
    doc = ast.get_docstring(tree)
    assert doc, "a module docstring"
    title = doc.splitlines()[0]
    assert title.endswith(".") and len(title) <= 79
    assert re.search(r"^Runtime: \S.* on 2 CPU cores \(--smoke: .+\)\.$", doc, re.M)

    main = next(
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "main"
    )
    assert [a.arg for a in main.args.args] == ["argv"]
    assert isinstance(main.args.defaults[0], ast.Constant)
    assert main.args.defaults[0].value is None
    last = tree.body[-1]
    assert isinstance(last, ast.If)
    assert ast.unparse(last.test) == "__name__ == '__main__'"
    assert ast.unparse(last.body[0]) == "sys.exit(main())"


@pytest.mark.parametrize("name", NAMES)
def test_recipe_imports_only_public_keras_seq(name):
    tree = ast.parse((RECIPES_DIR / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("keras_seq"):
            assert node.module == "keras_seq", ast.unparse(node)
            assert {alias.name for alias in node.names} <= set(keras_seq.__all__)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_seq"):
                    assert alias.name == "keras_seq", ast.unparse(node)
        elif isinstance(node, ast.Attribute) and ast.unparse(node).startswith(
            "keras_seq."
        ):
            assert not node.attr.startswith("_"), ast.unparse(node)


def test_a_recipe_runs_as_a_plain_script(tmp_path):
    # `python recipes/next_word.py`: bad options give one line and code 2.
    result = subprocess.run(
        [sys.executable, str(RECIPES_DIR / "next_word.py"), "--epochs", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "next_word.py: error: argument --epochs: must be an integer >= 1. "
        "Received: 0 (see --help)"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
