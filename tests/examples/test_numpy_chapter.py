"""examples/numpy_chapter.py runs with no framework and shows the chapter's facts."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "numpy_chapter.py"


def test_numpy_chapter() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "[[42. 42. 42. 42. 42. 42. 42. 42.]]" in out
    assert "TieGroup(['1.weight', '2.weight'])" in out
    deferred = out.split("## Deferred initialization")[1].split("## Tied parameters")[0]
    assert deferred.count("Init dense") == 2 and "deferred 2" in deferred
