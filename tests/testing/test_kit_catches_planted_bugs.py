"""The kit's own test: each layout bug planted in a backend makes the kit fail, and say what is wrong.

The bugs are those of the plugin-author trial (each passed the old kit, which checked
shapes and round trips only) and a few more. Each is planted in the PyTorch adapter,
applied the same way on read and write as a real adapter bug is (values read back are
the values written), in a child pytest run of the kit's layout tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

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


def _run_kit(plant: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "testing"), env.get("PYTHONPATH", "")])
    env["POLYPARAM_PROGRESS"] = "0"
    if plant is not None:
        env["POLYPARAM_PLANT"] = plant
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "_planted", "-p", "no:cacheprovider", "-W",
         "ignore::DeprecationWarning", "--tb=line", "-rf", str(ROOT / "tests" / "conformance" / "test_torch.py"),
         "-k", "canonical_values or layout_and_fans or batchnorm"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


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
