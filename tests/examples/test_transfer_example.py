"""examples/transfer.py runs and every framework reproduces PyTorch's outputs."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("keras")
pytest.importorskip("mxnet")   # the example moves values through all four frameworks: the first tested set
pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[2]


def test_transfer_example() -> None:
    """torch -> keras, mxnet and jax (the third-party plugin): same forward outputs."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "transfer.py")], capture_output=True, text=True,
                          timeout=300, check=True)
    assert done.stdout.count("same outputs: True") == 3, done.stdout
