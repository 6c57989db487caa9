"""The conformance kit on Keras 3, under the Keras backend this process runs (KERAS_BACKEND),
and, in a subprocess, under the other one (tensorflow <-> torch)."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("keras")
from polyparam.testing import ConformanceTests
from polyparam_keras import _backend

OTHER = {"tensorflow": "torch", "torch": "tensorflow"}


class TestKerasConformance(ConformanceTests):
    @pytest.fixture
    def backend(self):
        return _backend


def test_kit_passes_under_the_other_keras_backend() -> None:
    """The same kit, unchanged, in a fresh process on the other Keras backend."""
    import keras

    other = OTHER[keras.backend.backend()]
    pytest.importorskip(other)
    env = dict(os.environ, KERAS_BACKEND=other)
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
                           "-k", "TestKerasConformance"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]   # not the warnings above it: numpy 2's mention "failed"
    assert re.search(r"\d+ passed", summary) and not re.search(r"\d+ failed", summary), summary
