"""Gradients through ``polyparam_keras`` on each Keras backend (tensorflow, torch, jax): the cases of
gradient_cases.py, each backend in its own subprocess (Keras picks its backend once, at import). A backend
whose framework this set lacks is not collected (deselected by set, never skipped)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")

CASES = Path(__file__).with_name("gradient_cases.py")
KERAS_BACKENDS = [name for name in ("tensorflow", "torch", "jax") if importlib.util.find_spec(name) is not None]

# the subprocess names the backend Keras picked before it runs the cases
_RUN_CASES = ("import sys, keras, pytest; print('keras backend:', keras.backend.backend(), flush=True); "
              "sys.exit(pytest.main(sys.argv[1:]))")


@pytest.mark.slow
@pytest.mark.parametrize("keras_backend", KERAS_BACKENDS)
def test_gradient_cases_pass_under_the_keras_backend(keras_backend: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    warnings = [arg for spec in request.config.getoption("pythonwarnings") or [] for arg in ("-W", spec)]
    env = dict(os.environ, KERAS_BACKEND=keras_backend)
    command = [sys.executable, "-c", _RUN_CASES, "-q", "-p", "no:cacheprovider", *warnings,
               "--rootdir", str(CASES.parents[2]), f"--basetemp={tmp_path / 'cases'}", str(CASES)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert done.stdout.startswith(f"keras backend: {keras_backend}\n"), done.stdout[:400]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search(r"\d+ (failed|skipped|error)", summary), summary
