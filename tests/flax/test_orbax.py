"""Orbax checkpoints of Flax NNX models: OrbaxArchive reads them through orbax, pp.load converts their layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")
ocp = pytest.importorskip("orbax.checkpoint")
import jax.numpy as jnp  # noqa: E402 - after the importorskip
from flax import nnx  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402
from polyparam.checkpoint.formats.orbax import OrbaxArchive, find_item, is_orbax_checkpoint  # noqa: E402


class Net(nnx.Module):
    def __init__(self, seed: int) -> None:
        rngs = nnx.Rngs(seed)
        self.layers = nnx.List([nnx.Linear(4, 6, rngs=rngs), nnx.Linear(6, 3, rngs=rngs)])
        self.conv = nnx.Conv(3, 5, (3, 2), rngs=rngs)
        self.norm = nnx.BatchNorm(5, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)   # its RNG key and counter are no parameters


def _saved(tmp_path: Path, seed: int = 0) -> tuple[Net, Path]:
    net = Net(seed)
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(1.0), seed=seed, force_reinit=True)
    tree["norm.running_var"].set(np.linspace(0.5, 2, 5, dtype=np.float32))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", nnx.state(net))
    checkpointer.wait_until_finished()
    checkpointer.close()
    return net, tmp_path / "ckpt"


def test_the_archive_lists_nnx_names_in_flax_layout_without_rng_state(tmp_path: Path) -> None:
    net, directory = _saved(tmp_path)
    tree = pp.tree(net)
    with OrbaxArchive(str(directory)) as archive:
        assert archive.format == "orbax" and archive.metadata.layout == "flax" and archive.metadata.backend == "flax"
        counters = ["drop.rngs.count", "drop.rngs.key"]   # an RNG stream: bookkeeping buffers, passed over by loads
        assert sorted(archive.entries) == sorted([p.native_name for _, p in tree.items()] + counters)
        assert archive.metadata.buffers == counters
        assert archive.entries["layers.0.kernel"].shape == (4, 6)   # native (in, out)
        assert archive.entries["conv.kernel"].shape == (3, 2, 3, 5)
        kernel = archive.read("layers.0.kernel")
        np.testing.assert_array_equal(kernel, np.asarray(net.layers[0].kernel[...]))
        assert not kernel.flags.writeable
        np.testing.assert_array_equal(archive.read("norm.var"), np.linspace(0.5, 2, 5, dtype=np.float32))
        with pytest.raises(errors.MetadataError, match="drop.rng"):
            archive.read("drop.rng")


def test_a_step_directory_with_one_item_is_found_and_other_directories_are_not(tmp_path: Path) -> None:
    _, directory = _saved(tmp_path)
    step = tmp_path / "7"
    step.mkdir()
    shutil.copytree(directory, step / "default")
    (step / "_CHECKPOINT_METADATA").write_text("{}")
    assert find_item(str(step)) == str(step / "default") and find_item(str(directory)) == str(directory)
    assert not is_orbax_checkpoint(tmp_path) and not is_orbax_checkpoint(tmp_path / "missing")
    with pytest.raises(errors.UnsupportedFormatError, match="_METADATA"):
        OrbaxArchive(str(tmp_path))


def test_pp_load_of_an_orbax_checkpoint_converts_the_flax_layout(tmp_path: Path) -> None:
    source, directory = _saved(tmp_path)
    target = Net(1)
    report = pp.load(pp.tree(target), directory)
    assert sorted(report.loaded) == sorted(pp.tree(source).state())
    assert sorted(report.ignored_buffers) == ["drop.rngs.count", "drop.rngs.key"]
    for path, value in pp.tree(source).state().items():
        np.testing.assert_array_equal(pp.tree(target)[path].numpy(), value, err_msg=path)
    x = jnp.ones((2, 4))
    np.testing.assert_array_equal(np.asarray(target.layers[0](x)), np.asarray(source.layers[0](x)))


def test_loading_an_orbax_checkpoint_into_torch_is_refused_unchanged(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    _, directory = _saved(tmp_path)
    model = torch.nn.Linear(4, 6)
    before = pp.tree(model).state(copy=True)
    with pytest.raises(errors.MetadataError, match="flax"):
        pp.load(pp.tree(model), directory)
    for path, value in pp.tree(model).state().items():
        np.testing.assert_array_equal(value, before[path])


def test_a_checkpoint_missing_its_array_store_raises_a_typed_error(tmp_path: Path) -> None:
    _, directory = _saved(tmp_path)
    for store in ("d", "manifest.ocdbt", "ocdbt.process_0"):
        target = directory / store
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    with pytest.raises(errors.CheckpointFormatError, match="layers.0.kernel"), OrbaxArchive(str(directory)) as archive:
        archive.read("layers.0.kernel")
