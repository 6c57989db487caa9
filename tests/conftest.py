"""Suite-wide settings.

In CI (``CI=true``) every backend of the tested set is installed, so a skipped test
hides a failure: skips there, at run time or at collection, are turned into failures.

Two sets are tested (see the Makefile): the first (numpy 1.23, with MXNet) and the
current one (numpy 2, with Flax, without MXNet). Tests of a framework the running set
lacks are deselected by set, before collection, and the run says so; they are never
skipped.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512 features. Without
# them its CPU Conv2D refuses channels-first (NCHW) input, so Keras models built with
# data_format="channels_first", which the suite transfers and runs, would not run on the
# other CPUs. Asked for here, before any test imports TensorFlow (subprocesses inherit it);
# a run that sets the variable keeps its choice.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

#: Frameworks only one set installs, and the tests that need them (by path and by id).
SET_ONLY = {"mxnet": "mxnet", "flax": "flax"}
ABSENT = sorted(name for name, module in SET_ONLY.items() if importlib.util.find_spec(module) is None)


def _imports_at_top(path: Path, module: str) -> bool:
    """Whether a test module imports ``module`` (or importorskips it) at module level."""
    if path.suffix != ".py" or not path.is_file():
        return False
    starts = (f"import {module}", f"from {module}", f'{module} = pytest.importorskip("{module}")',
              f'pytest.importorskip("{module}")')
    return any(line.startswith(starts) for line in path.read_text(encoding="utf-8").splitlines())


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Test folders and modules of a framework this set does not install are not collected."""
    parts = collection_path.parts
    stem = collection_path.stem
    if any(name in parts or stem == f"test_{name}" or _imports_at_top(collection_path, SET_ONLY[name])
           for name in ABSENT):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect parametrized cases of such a framework (``[cnn-torch-to-mxnet]``), and say so."""
    chosen, dropped = [], []
    for item in items:
        (dropped if any(name in item.nodeid.split("::", 1)[-1] for name in ABSENT) else chosen).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = chosen


def pytest_report_header(config: pytest.Config) -> str:
    return f"tested set: {'without ' + ', '.join(ABSENT) if ABSENT else 'every framework'} (deselected by set)"


def _fail_skip(report: pytest.TestReport | pytest.CollectReport, what: str) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"{what} skipped in CI, where every backend is installed: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report, f"test {item.nodeid}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        _fail_skip(report, f"module {collector.nodeid}")
