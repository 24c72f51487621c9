"""Every Python example in the README and the docs runs as written, in a fresh directory."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import HANG_GUARD_S, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield pytest.param(match.group(1), id=f"{doc.relative_to(ROOT)}:{line}")


def test_the_docs_have_python_examples():
    assert len(list(python_blocks())) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("code", python_blocks())
def test_a_python_example_runs_as_written(code, tmp_path):
    (tmp_path / "example.py").write_text(code)
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:]
