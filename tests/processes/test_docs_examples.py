"""Every tutorial example in docs/examples/ runs and prints exactly its ``.out`` file.

The pages include those ``.out`` files, so what a reader sees is what this test
checks. An example without an ``.out`` (or an ``.out`` without its example) fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
OUTPUTS = sorted(EXAMPLES.glob("*.out"))


def test_every_example_has_its_output_and_every_output_its_example() -> None:
    assert SCRIPTS, f"no examples in {EXAMPLES}"
    scripts = {path.stem for path in SCRIPTS}
    outputs = {path.stem for path in OUTPUTS}
    assert sorted(scripts - outputs) == [], "examples without an .out file"
    assert sorted(outputs - scripts) == [], ".out files without an example"


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_example_prints_what_the_page_shows(script: Path) -> None:
    expected = script.with_suffix(".out")
    if not expected.exists():
        pytest.fail(f"{script.name} has no {expected.name}")
    result = subprocess.run(
        [sys.executable, script.name],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == expected.read_text(encoding="utf-8")
