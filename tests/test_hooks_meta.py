"""The backend hooks are documented once, by tier, in the docstrings of the base classes,
and every hook a backend may override is exercised by the conformance kit."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from polyparam.backend import Parameter, ParameterCollection, ParameterTree
from tests._hook_recorder import hook_names

ROOT = Path(__file__).resolve().parents[1]
BASES = (Parameter, ParameterCollection, ParameterTree)

#: Hooks the kit cannot reach in one process: they act only on tensors sharded across
#: processes, and are exercised on real process groups by tests/distributed.
DISTRIBUTED_ONLY = {"_write_local", "_read_local", "_local_view", "_shard_writer", "_agree_seed", "_process_rank",
                    "_barrier", "_broadcast", "_all_succeeded",
                    "_write_blocks"}   # several JAX devices: tests/flax/test_sharding.py, in a subprocess
#: Hooks for files in a framework's own layout, which the kit cannot write: exercised by the
#: Keras .weights.h5 tests (tests/keras/test_weights_h5.py).
NATIVE_FILES_ONLY = {"_from_native_layout"}


def _documented(cls: type) -> set[str]:
    return set(re.findall(r"`(_[a-z_]+)`", cls.__doc__ or ""))


def _core_steps(cls: type) -> set[str]:
    match = re.search(r"Core steps, not hooks[^:]*:(.*?)(?:\n\s*\n|$)", cls.__doc__ or "", flags=re.S)
    return set(re.findall(r"`(_[a-z_]+)`", match.group(1))) if match else set()


def _must_implement(cls: type) -> set[str]:
    match = re.search(r"Must implement[^:]*:(.*?)(?:May implement|$)", cls.__doc__ or "", flags=re.S | re.I)
    return set(re.findall(r"`(_[a-z_]+)`", match.group(1))) if match else set()


@pytest.mark.parametrize("cls", BASES, ids=lambda c: c.__name__)
def test_every_underscore_method_is_documented_in_its_class(cls: type) -> None:
    own = {name for name, value in vars(cls).items()
           if name.startswith("_") and not name.endswith("_") and callable(value)}
    assert own <= _documented(cls), f"undocumented hooks of {cls.__name__}: {sorted(own - _documented(cls))}"
    assert _documented(cls) <= hook_names(), f"documented but missing: {sorted(_documented(cls) - hook_names())}"


@pytest.mark.parametrize("cls", BASES, ids=lambda c: c.__name__)
def test_abstract_methods_are_the_must_implement_tier(cls: type) -> None:
    assert set(cls.__abstractmethods__) <= _must_implement(cls)


def _adapter_classes() -> list[type]:
    import polyparam.numpy._backend  # noqa: F401 - defines the NumPy adapter's classes

    for module, framework in (("polyparam_torch._backend", "torch"), ("polyparam_keras._backend", "keras"),
                              ("polyparam_mxnet._backend", "mxnet"), ("polyparam_jax._backend", "jax"),
                              ("polyparam_flax._backend", "flax")):
        if importlib.util.find_spec(module.split(".")[0]) and importlib.util.find_spec(framework):
            importlib.import_module(module)
    out = []
    stack: list[type] = [Parameter, ParameterCollection]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if sub.__module__.split(".")[0] != "polyparam" or ".numpy." in sub.__module__:
                out.append(sub)
    return out


def test_adapters_override_hooks_never_core_steps() -> None:
    core_steps = set().union(*(_core_steps(cls) for cls in BASES))
    assert {"_commit", "_check_dtype", "_not_found"} <= core_steps
    adapters = _adapter_classes()
    assert len(adapters) >= 4
    for cls in adapters:
        overridden = core_steps & set(vars(cls))
        assert not overridden, f"{cls.__module__}.{cls.__name__} overrides core steps {sorted(overridden)}"


def test_every_hook_is_exercised_by_the_conformance_kit(tmp_path: Path) -> None:
    """Run the kit on the NumPy reference, PyTorch and Keras with every hook call recorded.

    Between them they implement every optional hook (Keras: ``_staging`` and deferred values).
    """
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    record = tmp_path / "called.txt"
    env = {**os.environ, "POLYPARAM_HOOK_RECORD": str(record), "POLYPARAM_PROGRESS": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "tests._hook_recorder", "-p", "no:cacheprovider",
         "tests/conformance/test_numpy.py", "tests/conformance/test_torch.py",
         "tests/conformance/test_keras.py::TestKerasConformance"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    called = set(record.read_text().split())
    hooks = set().union(*(_documented(cls) - _core_steps(cls) for cls in BASES))
    missing = hooks - called - DISTRIBUTED_ONLY - NATIVE_FILES_ONLY
    assert not missing, f"hooks the conformance kit never calls: {sorted(missing)}"
