"""All or nothing when the framework itself refuses a write: a fault at every position of every operation.

The checks polyparam makes before its first write cannot foresee everything: a
framework may refuse a write they allowed, a custom initializer may raise midway, the
user may press Ctrl-C. These tests make the backend's own write step (``_write``) fail
at position k of n, for every k, inside each multi-parameter operation, first writing
garbage to the parameter as a framework failing halfway would, and assert that every
parameter is then bitwise what it was.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Callable, Iterator, cast

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.backend import Case, ModelFactory
from polyparam.testing.base.kit import _Kit

__all__ = ["BaseFaultTests", "failing_writes"]

#: The exceptions injected: one a framework raises, one the user does.
FAULTS = [RuntimeError("the framework refuses this write"), KeyboardInterrupt()]


def _exact(tree: pp.ParameterTree) -> dict[str, bytes]:
    """Every value as raw bytes: equal means bitwise equal (NaNs and signed zeros included)."""
    return {path: np.ascontiguousarray(value).tobytes() for path, value in tree.state(copy=True).items()}


def _refused_unchanged(tree: pp.ParameterTree, operation: Callable[[], Any], fault: BaseException,
                       what: str) -> None:
    """``operation`` raises (``fault`` itself for an interrupt, else ``WriteFailedError``) and changes no value."""
    before = _exact(tree)
    expected = KeyboardInterrupt if isinstance(fault, KeyboardInterrupt) else errors.WriteFailedError
    with pytest.raises(expected):
        operation()
    after = _exact(tree)
    changed = [path for path in before if after[path] != before[path]]
    assert not changed, f"{what} left {changed} changed"


@contextlib.contextmanager
def failing_writes(param_class: type, at: int, fault: BaseException) -> Iterator[list[str]]:
    """Make ``param_class._write`` write garbage then raise ``fault`` on its ``at``-th call (0-based).

    A transfer's native copy (``_native_copier``) counts as a write and fails the same way.
    Yields the paths written so far. Only that one call fails: the writes an undo makes
    afterwards go through.
    """
    originals = {name: param_class.__dict__.get(name) for name in ("_write", "_native_copier")}
    inherited = param_class._write  # type: ignore[attr-defined]
    inherited_copier = param_class._native_copier  # type: ignore[attr-defined]
    seen: list[str] = []

    def _write(self: pp.Parameter, array: np.ndarray, /) -> None:
        seen.append(self.path)
        if len(seen) - 1 == at:
            inherited(self, np.full_like(array, 7))  # a framework that fails halfway leaves a half-written value
            raise fault
        inherited(self, array)

    def _native_copier(self: pp.Parameter, source: pp.Parameter, /) -> Callable[[], Any] | None:
        copy = inherited_copier(self, source)
        if copy is None:
            return None

        def counted() -> Any:
            seen.append(self.path)
            if len(seen) - 1 == at:
                inherited(self, np.full(cast("tuple[int, ...]", self.shape), 7, self.dtype))
                raise fault
            return copy()

        return counted

    param_class._write = _write  # type: ignore[attr-defined]
    param_class._native_copier = _native_copier  # type: ignore[attr-defined]
    try:
        yield seen
    finally:
        for name, original in originals.items():
            if original is None:
                delattr(param_class, name)
            else:
                setattr(param_class, name, original)


class _FailingUniform(pp.init.Uniform):
    """A subclass of a built-in that raises while filling its ``at``-th parameter, after writing half of it."""

    def __init__(self, at: int, fault: BaseException) -> None:
        super().__init__()
        self.at, self.fault, self.calls = at, fault, 0

    def init_weight(self, name: str, arr: np.ndarray) -> None:
        super().init_weight(name, arr)
        self._maybe_fail(arr)

    def init_bias(self, name: str, arr: np.ndarray) -> None:
        arr[...] = 0.25
        self._maybe_fail(arr)

    def _maybe_fail(self, arr: np.ndarray) -> None:
        self.calls += 1
        if self.calls - 1 == self.at:
            arr.reshape(-1)[: max(1, arr.size // 2)] = 9  # half written
            raise self.fault if isinstance(self.fault, KeyboardInterrupt) else ValueError("custom init fails")


class BaseFaultTests(_Kit):
    """A multi-parameter write that fails at any position changes no parameter."""

    def _run(self, tree: pp.ParameterTree, operation: Callable[[], Any], fault: BaseException) -> None:
        param_class = type(tree.parameters()[0])
        n = len(tree.items())
        for at in range(n):
            before = _exact(tree)
            with failing_writes(param_class, at, fault) as seen:
                if isinstance(fault, KeyboardInterrupt):
                    with pytest.raises(KeyboardInterrupt):
                        operation()
                else:
                    with pytest.raises(errors.WriteFailedError) as info:
                        operation()
                    assert info.value.path == seen[at], (at, info.value.path, seen)
                    assert info.value.__cause__ is fault
            after = _exact(tree)
            changed = [path for path in before if after[path] != before[path]]
            assert not changed, f"a write failing at position {at} of {n} left {changed} changed"

    def _other(self, models: ModelFactory) -> pp.ParameterTree:
        """The MLP with other values than the fixture's: the source of loads and transfers."""
        other = pp.tree(models.mlp().model)
        rng = np.random.default_rng(5)
        other.load_state({path: rng.standard_normal(cast("tuple[int, ...]", p.shape)).astype(p.dtype)
                          for path, p in other.items()})
        return other

    @pytest.mark.parametrize("fault", FAULTS, ids=["framework", "interrupt"])
    def test_load_state_fault_at_every_position(self, models: ModelFactory, mlp: tuple[Case, pp.ParameterTree],
                                                fault: BaseException) -> None:
        _, tree = mlp
        state = self._other(models).state(copy=True)
        self._run(tree, lambda: tree.load_state(state), fault)

    @pytest.mark.parametrize("fault", FAULTS, ids=["framework", "interrupt"])
    def test_load_fault_at_every_position(self, models: ModelFactory, mlp: tuple[Case, pp.ParameterTree],
                                          tmp_path: Path, fault: BaseException) -> None:
        _, tree = mlp
        file = tmp_path / "other.safetensors"
        pp.save(self._other(models), file)
        self._run(tree, lambda: pp.load(tree, file), fault)

    @pytest.mark.parametrize("fault", FAULTS, ids=["framework", "interrupt"])
    def test_transfer_fault_at_every_position(self, models: ModelFactory, mlp: tuple[Case, pp.ParameterTree],
                                              fault: BaseException) -> None:
        _, tree = mlp
        other = self._other(models)
        self._run(tree, lambda: pp.transfer(other, tree), fault)

    @pytest.mark.parametrize("fault", FAULTS, ids=["initializer", "interrupt"])
    def test_initialize_fault_at_every_position(self, mlp: tuple[Case, pp.ParameterTree],
                                                fault: BaseException) -> None:
        """A subclass of a built-in that raises midway (after writing part of its array), at every parameter."""
        _, tree = mlp
        n = len(tree.items())
        for at in range(n):
            _refused_unchanged(tree, functools.partial(tree.initialize, _FailingUniform(at, fault), seed=1,
                                                       force_reinit=True),
                               fault, f"an initializer failing at parameter {at} of {n}")

    @pytest.mark.parametrize("fault", FAULTS, ids=["draws", "interrupt"])
    def test_a_built_in_initialize_fault_at_every_position(self, mlp: tuple[Case, pp.ParameterTree],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           fault: BaseException) -> None:
        """A built-in's draws fail midway (half written) at every weight. A built-in writes every element,
        so the backend may give its fill fresh storage and keep the old one as the undo record
        (``_keep_storage`` then ``_staging``): that record must come back too."""
        import polyparam.init.base as base

        _, tree = mlp
        draw = base._fill_streams
        calls: list[int] = []
        at = -1     # the first run counts the draws

        def failing(arr: np.ndarray, *args: Any) -> None:
            calls.append(1)
            if len(calls) - 1 == at:
                arr.reshape(-1)[: max(1, arr.size // 2)] = 9
                raise fault
            draw(arr, *args)

        monkeypatch.setattr(base, "_fill_streams", failing)
        tree.initialize(pp.init.Uniform(), seed=1, force_reinit=True)
        draws, calls[:] = len(calls), []
        assert draws > 1
        for at in range(draws):   # seeds other than the count's: a write that is not undone shows
            _refused_unchanged(tree, functools.partial(tree.initialize, pp.init.Uniform(), seed=100 + at,
                                                       force_reinit=True),
                               fault, f"draws failing at weight {at} of {draws}")
            calls[:] = []
