"""Every ```python block of README.md runs as written.

Each block runs on its own (a fresh namespace, nothing from the blocks
before it) in a temporary working directory, so the files it writes
(runs/, logs/, backup/) land there. The README shows normal sizes; the test
shrinks them with the substitutions in `TINY`, each of which must still
match somewhere (so a renamed argument cannot silently make the test slow).

A python block that is not meant to run is preceded by an HTML comment
`<!-- no-run: why -->`; `bash`/`text` blocks are never run. At most
`MAX_SKIPPED` python blocks may be skipped, pending ones included.
"""

import pathlib
import re

import keras
import pytest

README = pathlib.Path(__file__).parents[1] / "README.md"
MAX_SKIPPED = 2

# README size -> test size: (pattern, replacement).
TINY = [
    (r"adding_problem\(\d+,", "adding_problem(32,"),  # samples: one batch
    (r"sequences=\d+", "sequences=32"),  # the truncated-BPTT walks
    (r"timesteps=2000", "timesteps=100"),  # one chunk
    (r"epochs=\d+", "epochs=1"),
]

# Blocks that fail today and are another section's to fix, by their first
# line: they must fail (a strict xfail says when the entry can go).
PENDING = {}

_BLOCK = re.compile(
    r"^(?P<marker><!--\s*no-run\b[^>]*-->\s*\n)?"
    r"```(?P<lang>[^\n`]*)\n(?P<code>.*?)^```",
    re.M | re.S,
)


def python_blocks():
    """(line, code, no_run) of every ```python block."""
    text = README.read_text(encoding="utf-8")
    return [
        (
            text.count("\n", 0, match.start("code")) + 1,
            match.group("code"),
            match.group("marker") is not None,
        )
        for match in _BLOCK.finditer(text)
        if match.group("lang").strip() == "python"
    ]


def tiny(code):
    for pattern, replacement in TINY:
        code = re.sub(pattern, replacement, code)
    return code


def cases():
    params = []
    for line, code, no_run in python_blocks():
        marks = []
        first = code.strip().splitlines()[0] if code.strip() else ""
        if no_run:
            marks.append(pytest.mark.skip(reason="marked <!-- no-run -->"))
        elif first in PENDING:
            marks.append(pytest.mark.xfail(reason=PENDING[first], strict=True))
        params.append(pytest.param(code, id=f"README.md:{line}", marks=marks))
    return params


def test_blocks_are_found_and_few_are_skipped():
    blocks = python_blocks()
    assert len(blocks) >= 6
    skipped = [line for line, code, no_run in blocks if no_run]
    pending = [
        line
        for line, code, no_run in blocks
        if not no_run and code.strip().splitlines()[0] in PENDING
    ]
    assert len(skipped) + len(pending) <= MAX_SKIPPED, (skipped, pending)
    text = "".join(code for _, code, no_run in blocks if not no_run)
    for pattern, _ in TINY:
        assert re.search(pattern, text), f"TINY's {pattern!r} matches no block"


@pytest.mark.parametrize("code", cases())
def test_python_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    try:
        exec(compile(tiny(code), "README.md", "exec"), namespace)
    finally:
        keras.utils.clear_session()
