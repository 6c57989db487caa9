"""The command line: the tour shows the chapter's facts; plugins lists backends."""

import subprocess
import sys

import pytest

from polyparam._cli import main


def test_tour_on_numpy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tour", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    for fact in ("Init dense", "[[42. 42. 42. 42. 42. 42. 42. 42.]]", "[1. 1. 1. 1.] 0.0", "0.1.0.bias",
                 "(256, ?)", "deferred 2", "TieGroup(['1.weight', '2.weight'])", "[ True  True  True  True",
                 "42.  "):
        assert fact in out, fact
    # the deferred initializer prints at the first forward only
    first, second = out.split("## The first forward pass runs the initializer")[1].split("## The second one does not")
    assert first.count("Init dense") == 2 and "Init dense" not in second.split("##")[0]


def test_tour_with_an_unknown_backend_fails_clearly() -> None:
    done = subprocess.run([sys.executable, "-m", "polyparam", "tour", "--backend", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "No backend named 'nope'" in done.stderr
