"""The kit's own test: each layout bug planted in a backend makes the kit fail, and say what is wrong.

The bugs are those of the plugin-author trial (each passed the old kit, which checked
shapes and round trips only) and a few more. Each is planted in the PyTorch adapter, the
example JAX plugin or the Keras adapter (on TensorFlow), applied the same way on read
and write as a real adapter bug is (values read back are the values written), in a child
pytest run of the kit's layout tests with the backend's planting plugin loaded
(``_planted``, ``_planted_jax``, ``_planted_keras``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: bug -> what the kit's failure must name (the layer kind, and words of its diagnosis).
BUGS = {
    "conv_kernel_hw_swapped": ["conv2d", "expected", "got"],
    "conv_transpose_not_flipped": ["conv_transpose2d", "flipped", "expected", "got"],
    "batchnorm_mean_and_var_swapped": ["batchnorm", "running_mean and running_var look swapped"],
    "batchnorm_scale_left_2d": ["batchnorm", "expected", "got"],
    "dense_weight_not_transposed": ["dense", "expected", "got"],
    "embedding_transposed": ["embedding", "expected", "got"],
    "groups_ignored": ["grouped_conv2d", "expected", "got"],
}


#: The example JAX plugin's bugs (planted in its layer declarations by ``_planted_jax``) -> what the failure names.
JAX_BUGS = {
    "dense_weight_not_transposed": ["dense", "'weight'", "expected", "got"],
    "embedding_transposed": ["embedding", "'weight'", "expected", "got"],
    "conv_kernel_hw_swapped": ["conv2d", "grouped_conv2d", "depthwise_conv2d", "'weight'", "expected", "got"],
    "conv3d_spatial_axes_reversed": ["conv3d", "'weight'", "expected", "got"],
    "conv_kernel_flipped": ["conv1d", "conv2d", "conv3d", "flipped", "expected", "got"],
    "conv_transpose_not_flipped": ["conv_transpose2d", "flipped", "expected", "got"],
    "conv_transpose_in_out_swapped": ["conv_transpose2d", "'weight'", "expected", "got"],
    "batchnorm_mean_and_var_swapped": ["batchnorm", "running_mean and running_var look swapped"],
    "groups_ignored": ["grouped_conv2d", "depthwise_conv2d", "groups", "expected", "got"],
}

#: The Keras adapter's bugs (planted in ``polyparam_keras._layout`` by ``_planted_keras``) -> what the failure names.
KERAS_BUGS = {
    "dense_weight_not_transposed": ["dense", "'weight'", "expected", "got"],
    "embedding_transposed": ["embedding", "'weight'", "expected", "got"],
    "conv_kernel_hw_swapped": ["conv2d", "grouped_conv2d", "'weight'", "expected", "got"],
    "conv3d_spatial_axes_reversed": ["conv3d", "'weight'", "expected", "got"],
    "conv_transpose_not_flipped": ["conv_transpose2d", "flipped", "expected", "got"],
    "conv_transpose_in_out_swapped": ["conv_transpose2d", "'weight'", "expected", "got"],
    "depthwise_kernel_hw_swapped": ["depthwise_conv2d", "'weight'", "expected", "got"],
    "depthwise_multiplier_order": ["depthwise_conv2d", "'weight'", "expected", "got"],
    "batchnorm_mean_and_var_swapped": ["batchnorm", "running_mean and running_var look swapped"],
    "groups_ignored": ["grouped_conv2d", "depthwise_conv2d", "groups", "expected", "got"],
}


@dataclass(frozen=True)
class _Backend:
    """How to run the kit on one backend with a bug planted."""

    plugin: str                   # the planting pytest plugin, a module of this folder
    tests: str                    # the backend's kit test file, from the repository root
    select: str                   # the kit tests that check layouts (-k)
    needs: tuple[str, ...]        # modules the run needs (skipped when one is missing)
    env: dict[str, str] = field(default_factory=dict)


LAYOUT_TESTS = "canonical_values or layout_and_fans or batchnorm"
BACKENDS = {
    "torch": _Backend("_planted", "tests/conformance/test_torch.py", LAYOUT_TESTS, ("torch",)),
    "jax": _Backend("_planted_jax", "examples/polyparam_jax/tests/test_conformance.py", LAYOUT_TESTS,
                    ("jax", "polyparam_jax")),
    "keras": _Backend("_planted_keras", "tests/conformance/test_keras.py",
                      f"TestKerasConformance and ({LAYOUT_TESTS})", ("tensorflow", "keras"),
                      {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}),
}
PLANTED = {"jax": JAX_BUGS, "keras": KERAS_BUGS}


def _run_kit(plant: str | None, backend: str = "torch") -> subprocess.CompletedProcess[str]:
    """The kit's layout tests on ``backend`` in a child pytest run, with ``plant`` planted (None: none)."""
    kit = BACKENDS[backend]
    for module in kit.needs:
        pytest.importorskip(module)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "testing"), env.get("PYTHONPATH", "")])
    env["POLYPARAM_PROGRESS"] = "0"
    env.update(kit.env)
    if plant is not None:
        env["POLYPARAM_PLANT"] = plant
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", kit.plugin, "-p", "no:cacheprovider", "-W",
         "ignore::DeprecationWarning", "--tb=line", "-rf", str(ROOT / kit.tests), "-k", kit.select],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _failures(done: subprocess.CompletedProcess[str]) -> str:
    """The lines of a failed child run that say what failed and why."""
    out = done.stdout + done.stderr
    return "\n".join(line for line in out.splitlines() if line.startswith("FAILED") or "Error" in line
                     or "Failed:" in line)


def test_the_kit_passes_without_a_planted_bug() -> None:
    done = _run_kit(None)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_the_kit_fails_on_a_planted_bug_and_names_it(bug: str) -> None:
    done = _run_kit(bug)
    out = done.stdout + done.stderr
    assert done.returncode != 0, f"the kit passed with {bug} planted:\n{out[-3000:]}"
    failures = [line for line in out.splitlines() if line.startswith("FAILED") or "Error" in line
                or "Failed:" in line]
    text = "\n".join(failures)
    missing = [word for word in BUGS[bug] if word not in text]
    assert not missing, f"the kit's failures for {bug} do not say {missing}:\n{text[-4000:]}"


@pytest.mark.parametrize("backend", sorted(PLANTED))
def test_the_kit_passes_on_a_backend_without_a_planted_bug(backend: str) -> None:
    done = _run_kit(None, backend)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


@pytest.mark.parametrize(("backend", "bug"), [pytest.param(backend, bug, id=f"{backend}-{bug}")
                                              for backend, bugs in sorted(PLANTED.items()) for bug in sorted(bugs)])
def test_the_kit_fails_on_a_bug_planted_in_a_backend_and_names_it(backend: str, bug: str) -> None:
    done = _run_kit(bug, backend)
    out = done.stdout + done.stderr
    assert done.returncode != 0, f"the kit passed on {backend} with {bug} planted:\n{out[-3000:]}"
    text = _failures(done)
    missing = [word for word in PLANTED[backend][bug] if word not in text]
    assert not missing, f"the kit's failures for {bug} on {backend} do not say {missing}:\n{text[-4000:]}"
