"""JAX sharding on 4 host devices: the cases of sharded_cases.py, run in a subprocess (JAX reads XLA_FLAGS once)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flax")

CASES = Path(__file__).with_name("sharded_cases.py")


def test_sharded_flax_parameters_on_four_host_devices(tmp_path: Path) -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-W", "error::DeprecationWarning:polyparam", "--rootdir", str(CASES.parents[2]),
               f"--basetemp={tmp_path / 'cases'}", str(CASES)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
