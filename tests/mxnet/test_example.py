"""examples/mxnet_chapter.py runs and shows deferred initialization happening once."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed", allow_module_level=True)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mxnet_chapter.py"


def test_chapter_example_runs() -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    first, second = out.split("first forward:\n")[1].split("second forward:\n")
    assert [line.split()[-2:] for line in first.strip().splitlines()] == [["(256,", "20)"], ["(10,", "256)"]]
    assert not second.split("##")[0].strip()
    assert "after untie: []" in out and "Init dense0_weight (8, 4)" in out
