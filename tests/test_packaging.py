"""pyproject.toml: every package ships, the recipes ship as
keras_seq.recipes, and the command is a console script."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = pathlib.Path(__file__).resolve().parent.parent


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_listed():
    # The recipes directory is mapped, so setuptools needs the list written
    # out; a package missing from it would be missing from the wheel.
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "keras_seq").rglob("__init__.py")
    }
    setuptools = pyproject()["tool"]["setuptools"]
    assert set(setuptools["packages"]) == on_disk | {"keras_seq.recipes"}
    assert setuptools["package-dir"] == {"keras_seq.recipes": "recipes"}
    # Data files the package reads at run time ship as package data.
    data_files = {
        path.name for path in (ROOT / "keras_seq").rglob("*") if path.suffix == ".csv"
    }
    assert data_files == {"sunspots.csv"}
    assert setuptools["package-data"] == {"keras_seq.data": ["*.csv"]}


def test_console_script():
    assert pyproject()["project"]["scripts"] == {"keras-seq": "keras_seq.cli:main"}


@pytest.mark.slow
def test_wheel_holds_the_recipes_and_the_command(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q"]
        + ["-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("keras_seq-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    recipes = {p.name for p in (ROOT / "recipes").glob("*.py")}
    assert {f"keras_seq/recipes/{name}" for name in recipes} <= names
    assert "keras_seq/cli.py" in names and "keras_seq/runs.py" in names
    assert "keras_seq/data/sunspots.csv" in names  # package data
    assert "keras-seq = keras_seq.cli:main" in scripts
