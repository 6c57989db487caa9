"""The conformance kit on Keras 3, under the Keras backend this process runs (KERAS_BACKEND),
and, each in a subprocess, under the other Keras backends (tensorflow, torch, jax) whose framework
is installed; one whose framework the set lacks is not collected (deselected by set, never skipped)."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

keras = pytest.importorskip("keras")
from polyparam.testing import ConformanceTests  # noqa: E402 - after the importorskip
from polyparam_keras import _backend  # noqa: E402

KERAS_BACKENDS = ("tensorflow", "torch", "jax")
OTHERS = [name for name in KERAS_BACKENDS
          if name != keras.backend.backend() and importlib.util.find_spec(name) is not None]

# the subprocess names the backend Keras picked before it runs the kit
_RUN_KIT = ("import sys, keras, pytest; print('keras backend:', keras.backend.backend(), flush=True); "
            "sys.exit(pytest.main(sys.argv[1:]))")


class TestKerasConformance(ConformanceTests):
    @pytest.fixture
    def backend(self):
        return _backend


@pytest.mark.slow
@pytest.mark.parametrize("other", OTHERS)
def test_kit_passes_under_the_other_keras_backend(other: str, request: pytest.FixtureRequest) -> None:
    """The same kit, unchanged, in a fresh process on another Keras backend, with this run's -W filters."""
    warnings = [arg for spec in request.config.getoption("pythonwarnings") or [] for arg in ("-W", spec)]
    env = dict(os.environ, KERAS_BACKEND=other)
    proc = subprocess.run([sys.executable, "-c", _RUN_KIT, __file__, "-q", "-p", "no:cacheprovider", *warnings,
                           "-k", "TestKerasConformance"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.startswith(f"keras backend: {other}\n"), proc.stdout[:400]
    summary = proc.stdout.strip().splitlines()[-1]   # not the warnings above it: numpy 2's mention "failed"
    assert re.search(r"\d+ passed", summary) and not re.search(r"\d+ (failed|skipped|error)", summary), summary
