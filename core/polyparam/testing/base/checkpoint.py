"""Checkpoints: save/load round trips, ties through files, all-or-nothing loads, transfer within a backend.

Uses only the reference models (mlp, rgnet, shared), so every backend runs it unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.backend import Case
from polyparam.checkpoint.formats import PolyparamMetadata, fingerprint, open_archive
from polyparam.checkpoint.io import write_tensors
from polyparam.testing.base.kit import _Kit

__all__ = ["FAULTS", "BaseCheckpointTests", "write_faulty"]

FAULTS: dict[str, type[Exception]] = {
    "missing": errors.StateError,
    "unexpected": errors.StateError,
    "shape": errors.ShapeMismatchError,
    "dtype": errors.DTypeMismatchError,
    "corrupt": errors.ChecksumError,
    "tie": errors.TieMismatchError,
}
"""Fault name -> the error `polyparam.load` must raise for it."""


def write_faulty(path: Path, state: dict[str, np.ndarray], fault: str, key: str, *, other: str | None = None) -> None:
    """Write ``state`` as a polyparam checkpoint with ``fault`` placed at ``key``.

    ``other`` is a path of a different shape, used by the ``"tie"`` fault (a tie group
    the model cannot form).
    """
    tensors = {k: np.ascontiguousarray(v) for k, v in state.items()}
    meta = PolyparamMetadata(backend="test")
    checksum = True
    if fault == "missing":
        del tensors[key]
    elif fault == "unexpected":
        tensors[f"{key}_unexpected"] = tensors[key].copy()
    elif fault == "shape":
        tensors[key] = np.zeros(tuple(d + 1 for d in tensors[key].shape), tensors[key].dtype)
    elif fault == "dtype":
        tensors[key] = tensors[key].astype(np.float64)
    elif fault == "corrupt":
        meta.checksums = {k: fingerprint(v) for k, v in tensors.items()}
        damaged = tensors[key].copy()
        damaged.reshape(-1).view(np.uint8)[0] ^= 0x10  # one flipped bit, as a bad sector would
        tensors[key] = damaged
        checksum = False
    elif fault == "tie":
        assert other is not None
        meta.ties = [[key, other]]
        del tensors[other]
    else:
        raise AssertionError(fault)
    write_tensors(path, tensors, meta, checksum=checksum)


def _snapshot(tree: pp.ParameterTree) -> dict[str, bytes]:
    """Bitwise copies of every parameter, by path."""
    return {path: np.array(p.numpy(), copy=True).tobytes() for path, p in tree._occurrences()}


class BaseCheckpointTests(_Kit):
    """pp.save, pp.load and pp.transfer on the backend's models; every refused load changes nothing."""

    @pytest.mark.parametrize("ext", ["safetensors", "npz"])
    def test_checkpoint_round_trip(self, models: Any, tmp_path: Path, ext: str) -> None:
        """save then load into a fresh model restores every value bitwise; the file holds canonical layout."""
        one, two = models.rgnet(), models.rgnet()
        a, b = pp.tree(one.model), pp.tree(two.model)
        a.initialize(pp.init.Xavier(), seed=1, force_reinit=True)
        b.initialize(pp.init.Constant(0.5), force_reinit=True)
        path = tmp_path / f"rg.{ext}"
        pp.save(a, path)
        report = pp.load(b, path)
        assert sorted(report.loaded) == sorted(a.paths())
        for key, value in a.state().items():
            assert b[key].numpy().tobytes() == np.ascontiguousarray(value).tobytes(), key
        with open_archive(path) as archive:
            assert sorted(archive.entries) == sorted(a.paths())
            for key, p in a.items():
                assert archive.entries[key].shape == p.shape
            assert archive.metadata.version == 1 and archive.metadata.layout == "canonical"

    def test_checkpoint_output_equal_after_load(self, models: Any, tmp_path: Path) -> None:
        """The loaded model computes what the saved one did."""
        one, two = models.mlp(), models.mlp()
        pp.tree(one.model).initialize(pp.init.Xavier(), seed=2, force_reinit=True)
        path = tmp_path / "mlp.safetensors"
        pp.save(one.model, path)
        pp.load(two.model, path)
        x = np.random.default_rng(0).uniform(-1, 1, (3, one.in_features)).astype(np.float32)
        np.testing.assert_array_equal(models.forward(one.model, x), models.forward(two.model, x))

    @pytest.mark.parametrize("aliases", ["reference", "materialize"])
    def test_checkpoint_ties_are_stored_once_and_restored(self, shared: tuple[Case, pp.ParameterTree],
                                                          models: Any, tmp_path: Path,
                                                          aliases: Literal["reference", "materialize"]) -> None:
        """One tensor per tie group (plus every key with materialize); loading into an untied model ties it."""
        case, tree = shared
        a, b = case.tied[0]
        path = tmp_path / "shared.safetensors"
        pp.save(tree, path, aliases=aliases)
        with open_archive(path) as archive:
            assert {frozenset(g) for g in archive.metadata.ties} == {frozenset(g.paths) for g in tree.ties()}
            assert (f"{b}.weight" in archive.entries) == (aliases == "materialize")
            assert f"{a}.weight" in archive.entries
        fresh = models.shared()
        target = pp.tree(fresh.model)
        for group in target.ties():
            group.untie()
        assert target.ties() == []
        pp.load(target, path)
        assert {frozenset(g.paths) for g in target.ties()} == {frozenset(g.paths) for g in tree.ties()}
        x = np.random.default_rng(1).uniform(-1, 1, (2, case.in_features)).astype(np.float32)
        np.testing.assert_allclose(models.forward(fresh.model, x), models.forward(case.model, x), rtol=1e-6)
        target[f"{a}.weight"][0, 0] = 123
        assert target[f"{b}.weight"].numpy()[0, 0] == 123

    def test_checkpoint_untied_values_into_tied_model(self, shared: tuple[Case, pp.ParameterTree],
                                                      tmp_path: Path) -> None:
        """A file giving a model-tied group two different tensors is refused; equal ones load."""
        case, tree = shared
        a, b = case.tied[0]
        state = {k: np.array(v, copy=True) for k, v in tree.state().items()}
        state[f"{b}.weight"] = state[f"{a}.weight"].copy()
        state[f"{b}.bias"] = state[f"{a}.bias"].copy()
        path = tmp_path / "untied.safetensors"
        write_tensors(path, state, PolyparamMetadata())
        pp.load(tree, path)
        state[f"{b}.weight"] = state[f"{b}.weight"] + 1
        write_tensors(path, state, PolyparamMetadata())
        before = _snapshot(tree)
        with pytest.raises(errors.TieMismatchError):
            pp.load(tree, path)
        assert _snapshot(tree) == before

    @pytest.mark.parametrize("fault", sorted(FAULTS))
    def test_checkpoint_fault_at_every_position_changes_nothing(self, rgnet: tuple[Case, pp.ParameterTree],
                                                                tmp_path: Path, fault: str) -> None:
        """A fault at each position of an 18-parameter model raises its typed error; zero parameters change."""
        case, tree = rgnet
        tree.initialize(pp.init.Xavier(), seed=3, force_reinit=True)
        good = {k: np.asarray(v) + np.asarray(1, v.dtype) for k, v in tree.state(copy=True).items()}
        before = _snapshot(tree)
        keys = list(good)
        assert len(keys) >= 8
        for i, key in enumerate(keys):
            other = next(k for k in keys if good[k].shape != good[key].shape)
            ext = "npz" if i % 3 == 2 else "safetensors"
            path = tmp_path / f"fault-{fault}-{i}.{ext}"
            write_faulty(path, good, fault, key, other=other)
            with pytest.raises(FAULTS[fault]):
                pp.load(tree, path)
            assert _snapshot(tree) == before, f"{fault} at {key} ({ext}) changed parameters"
        # The same file without the fault loads, so the faults above were what was refused.
        path = tmp_path / "good.safetensors"
        write_tensors(path, good, PolyparamMetadata())
        pp.load(tree, path)
        assert _snapshot(tree) != before

    def test_checkpoint_verify_false_skips_only_the_checksum(self, rgnet: tuple[Case, pp.ParameterTree],
                                                               tmp_path: Path) -> None:
        """``verify=False`` loads a tensor whose checksum no longer matches; every other fault is still refused."""
        case, tree = rgnet
        tree.initialize(pp.init.Xavier(), seed=5, force_reinit=True)
        good = {k: np.asarray(v) + np.asarray(1, v.dtype) for k, v in tree.state(copy=True).items()}
        keys = list(good)
        before = _snapshot(tree)
        for fault in sorted(set(FAULTS) - {"corrupt"}):
            path = tmp_path / f"{fault}.safetensors"
            other = next(k for k in keys if good[k].shape != good[keys[1]].shape)
            write_faulty(path, good, fault, keys[1], other=other)
            with pytest.raises(FAULTS[fault]):
                pp.load(tree, path, verify=False)
            assert _snapshot(tree) == before, fault
        path = tmp_path / "corrupt.safetensors"
        write_faulty(path, good, "corrupt", keys[1])
        with pytest.raises(errors.ChecksumError):
            pp.load(tree, path)
        assert _snapshot(tree) == before
        pp.load(tree, path, verify=False)
        damaged = np.ascontiguousarray(good[keys[1]]).copy()
        damaged.reshape(-1).view(np.uint8)[0] ^= 0x10
        assert tree[keys[1]].numpy().tobytes() == damaged.tobytes()
        assert tree[keys[0]].numpy().tobytes() == np.ascontiguousarray(good[keys[0]]).tobytes()

    def test_checkpoint_strict_false_loads_what_matches(self, mlp: tuple[Case, pp.ParameterTree],
                                                        tmp_path: Path) -> None:
        case, tree = mlp
        state = tree.state(copy=True)
        first = f"{case.layers[0]}.weight"
        kept = {first: state[first] + 1, "extra.weight": np.zeros(3, np.float32)}
        path = tmp_path / "partial.npz"
        write_tensors(path, kept, PolyparamMetadata())
        report = pp.load(tree, path, strict=False)
        assert report.loaded == [first] and report.unexpected == ["extra.weight"]
        assert len(report.missing) == len(state) - 1
        np.testing.assert_array_equal(tree[first].numpy(), kept[first])

    def test_checkpoint_dtype_cast_is_opt_in(self, mlp: tuple[Case, pp.ParameterTree], tmp_path: Path) -> None:
        _, tree = mlp
        state = {k: v.astype(np.float64) for k, v in tree.state(copy=True).items()}
        path = tmp_path / "f64.safetensors"
        write_tensors(path, state, PolyparamMetadata())
        with pytest.raises(errors.DTypeMismatchError):
            pp.load(tree, path)
        pp.load(tree, path, cast=True)
        for key, value in state.items():
            np.testing.assert_array_equal(tree[key].numpy(), value.astype(np.float32))

    def test_checkpoint_transfer_to_itself_kind(self, models: Any, require: Callable[[str], None]) -> None:
        """transfer between two models of this backend moves every value and keeps ties."""
        require("tying")
        one, two = models.shared(), models.shared()
        src, dst = pp.tree(one.model), pp.tree(two.model)
        src.initialize(pp.init.Xavier(), seed=4, force_reinit=True)
        for group in dst.ties():
            group.untie()
        report = pp.transfer(src, dst)
        assert report.ok and report.tied
        x = np.random.default_rng(2).uniform(-1, 1, (2, one.in_features)).astype(np.float32)
        np.testing.assert_array_equal(models.forward(one.model, x), models.forward(two.model, x))
        assert {frozenset(g.paths) for g in dst.ties()} == {frozenset(g.paths) for g in src.ties()}

    def test_checkpoint_transfer_check_runs_both_models(self, models: Any, require: Callable[[str], None]) -> None:
        """transfer(check=x) runs both models (ParameterTree._forward); differing outputs undo every write."""
        require("forward")
        one, two, three = models.mlp(), models.mlp(), models.mlp()
        src = pp.tree(one.model)
        src.initialize(pp.init.Xavier(), seed=4, force_reinit=True)
        x = np.random.default_rng(3).uniform(-1, 1, (3, one.in_features)).astype(np.float32)
        report = pp.transfer(src, two.model, check=x)
        assert report.checked is not None and report.checked <= 1e-6, report
        np.testing.assert_array_equal(models.forward(two.model, x), models.forward(one.model, x))
        before = _snapshot(pp.tree(three.model))
        with pytest.raises(errors.TransferError, match="expected equal outputs"):
            pp.transfer(src, three.model, check=(x, x + 1))
        assert _snapshot(pp.tree(three.model)) == before

    def test_checkpoint_refused_transfer_unmakes_the_ties_it_made(self, models: Any,
                                                                  require: Callable[[str], None]) -> None:
        """A transfer that tied parameters and was then refused (its check failed) leaves them as they were:
        untied, bitwise, each holding what it held (Parameter._reattach, or _unshare and the kept value)."""
        require("tying")
        require("forward")
        one, two = models.shared(), models.shared()
        src, dst = pp.tree(one.model), pp.tree(two.model)
        # Seeded Xavier, not the default init: small default weights can give outputs on x and x + 1 that
        # differ by less than the check's tolerance, and then the transfer is rightly accepted.
        src.initialize(pp.init.Xavier(), seed=4, force_reinit=True)
        for group in dst.ties():
            group.untie()
        before = _snapshot(dst)
        x = np.random.default_rng(4).uniform(-1, 1, (2, one.in_features)).astype(np.float32)
        differ = np.abs(models.forward(one.model, x) - models.forward(one.model, x + 1)).max()
        assert differ > 1e-3, f"the source must compute different outputs on the two check inputs, got {differ}"
        with pytest.raises(errors.TransferError, match="expected equal outputs"):
            pp.transfer(src, dst, check=(x, x + 1))
        assert pp.tree(two.model).ties() == []
        assert _snapshot(pp.tree(two.model)) == before

    def test_checkpoint_transfer_reports_structure_differences(self, models: Any) -> None:
        """Different architectures: TransferError with a report naming the paths; nothing changes."""
        small, big = models.mlp(), models.rgnet()
        src, dst = pp.tree(small.model), pp.tree(big.model)
        before = _snapshot(dst)
        with pytest.raises(errors.TransferError) as info:
            pp.transfer(src, dst)
        report = info.value.report
        assert not report.ok and (report.missing or report.unexpected or report.shapes)
        assert "differ" in str(report)
        assert _snapshot(dst) == before
