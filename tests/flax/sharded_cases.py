"""Sharded Flax NNX parameters on 4 host devices. Run by test_sharding.py in a subprocess whose environment sets
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (JAX reads it before its first array); not collected alone."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flax")
import jax  # noqa: E402 - after the importorskip
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam.init.run import _info  # noqa: E402

DEVICES = 4


def _partitioned(init: Any, spec: tuple[Any, ...], sharded: bool) -> Any:
    return nnx.with_partitioning(init, spec) if sharded else init


class Net(nnx.Module):
    """A dense layer sharded on its outputs, a conv on its output channels, an embedding table on its rows."""

    def __init__(self, rngs: nnx.Rngs, *, sharded: bool = True) -> None:
        lecun, zeros = nnx.initializers.lecun_normal(), nnx.initializers.zeros_init()
        self.dense = nnx.Linear(6, 8, kernel_init=_partitioned(lecun, (None, "model"), sharded),
                                bias_init=_partitioned(zeros, ("model",), sharded), rngs=rngs)
        self.conv = nnx.Conv(3, 4, (3, 3), kernel_init=_partitioned(lecun, (None, None, None, "model"), sharded),
                             rngs=rngs)
        self.embed = nnx.Embed(12, 5, embedding_init=_partitioned(nnx.initializers.normal(), ("model", None),
                                                                  sharded), rngs=rngs)


def _sharded(seed: int = 0) -> Net:
    with jax.set_mesh(jax.make_mesh((DEVICES,), ("model",))):
        return Net(nnx.Rngs(seed))


def _spec(array: Any) -> Any:
    return array.sharding.spec if isinstance(array.sharding, NamedSharding) else None


def _specs(net: Net) -> dict[str, Any]:
    return {"kernel": _spec(net.dense.kernel[...]), "bias": _spec(net.dense.bias[...]),
            "conv": _spec(net.conv.kernel[...]), "embed": _spec(net.embed.embedding[...])}


def test_the_host_has_four_devices() -> None:
    assert jax.device_count() == DEVICES, os.environ.get("XLA_FLAGS")


def test_sharded_parameters_show_global_shapes_and_placements_in_canonical_axes() -> None:
    net = _sharded()
    tree = pp.tree(net)
    assert len(net.dense.kernel[...].addressable_shards) == DEVICES
    assert net.dense.kernel[...].addressable_shards[0].data.shape == (6, 2)
    assert tree["dense.weight"].shape == (8, 6)   # global, canonical (out, in)
    assert tree["dense.weight"]._placement() == "P('model', None) mesh (model=4)"
    assert tree["dense.bias"]._placement() == "P('model') mesh (model=4)"
    assert tree["conv.weight"].shape == (4, 3, 3, 3)
    assert tree["conv.weight"]._placement() == "P('model', None, None, None) mesh (model=4)"
    assert tree["embed.weight"]._placement() == "P('model', None) mesh (model=4)"
    assert tree["conv.bias"]._placement() == "P(None) mesh (model=4)"   # replicated on the mesh's devices
    assert "placement" in str(tree) and "P('model', None) mesh (model=4)" in str(tree)
    assert pp.tree(Net(nnx.Rngs(0), sharded=False))["dense.weight"]._placement() is None


def test_a_seeded_initialize_equals_the_unsharded_values_and_keeps_the_shardings() -> None:
    net, plain = _sharded(), Net(nnx.Rngs(1), sharded=False)
    specs = _specs(net)
    pp.tree(plain).initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    written: list[str] = []
    tree = pp.tree(net)
    cls = type(next(p for _, p in tree.items()))
    real, real_write = cls._write_blocks, cls._write

    def write_blocks(self: Any, values: Any) -> None:
        written.append(self.path)
        real(self, values)

    def write(self: Any, array: Any) -> None:
        pytest.fail(f"{self.path} was written whole")

    cls._write_blocks, cls._write = write_blocks, write   # initialize hands each parameter its blocks only
    try:
        tree.initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    finally:
        cls._write_blocks, cls._write = real, real_write
    assert sorted(written) == sorted(path for path, _ in tree.items())
    got, expected = pp.tree(net).state(), pp.tree(plain).state()
    for path, value in expected.items():
        np.testing.assert_array_equal(got[path], value, err_msg=path)
    assert _specs(net) == specs


def test_each_device_block_drawn_alone_equals_that_block_of_the_whole_draw() -> None:
    """The blocks the devices hold, drawn one by one with Initializer.fill_slice and put on their devices, give
    the unsharded draw: replicas once, a block never built from the whole array."""
    net, plain = _sharded(), Net(nnx.Rngs(1), sharded=False)
    whole = pp.tree(plain)
    whole.initialize(pp.init.Xavier(), seed=11, force_reinit=True)
    for path, p in pp.tree(net).items():
        boxes = p._local_blocks()
        assert boxes is not None and len(boxes) == (1 if path == "conv.bias" else DEVICES), path   # replicas once
        info = _info(p)
        values = []
        for box in boxes:
            block = np.empty(tuple(s.stop - s.start for s in box), p.dtype)
            pp.init.Xavier().fill_slice(block, info, box, seed=11, by_role=True)   # what initialize(seed=11) does
            values.append((box, block))
        p._write_blocks(values)
        expected = whole[path].numpy()
        for box, block in values:
            np.testing.assert_array_equal(block, expected[box], err_msg=path)
        np.testing.assert_array_equal(p.numpy(), expected, err_msg=path)
        assert p._local_blocks() == boxes
    assert _specs(net) == {"kernel": P(None, "model"), "bias": P("model"), "conv": P(None, None, None, "model"),
                           "embed": P("model", None)}


def test_set_puts_each_block_on_its_device() -> None:
    net = _sharded()
    tree = pp.tree(net)
    value = np.arange(48, dtype=np.float32).reshape(8, 6)
    tree["dense.weight"].set(value)
    kernel = net.dense.kernel[...]
    assert _spec(kernel) == P(None, "model")
    for shard in kernel.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), value.T[shard.index])
    np.testing.assert_array_equal(tree["dense.weight"].numpy(), value)


def test_sharded_save_writes_the_shard_format_and_load_restores_into_another_sharded_model(tmp_path: Path) -> None:
    src, dst = _sharded(0), _sharded(5)
    pp.tree(src).initialize(pp.init.Normal(1.0), seed=3, force_reinit=True)
    pp.save(pp.tree(src), tmp_path / "ckpt", sharded=True)
    assert sorted(f.name for f in (tmp_path / "ckpt").iterdir()) == ["rank-00000-of-00001.safetensors"]
    from polyparam.checkpoint.sharded import ShardIndex

    with ShardIndex(tmp_path / "ckpt") as index:
        assert index.backend == "flax" and index.shapes["dense.weight"] == (8, 6)
    pp.load(pp.tree(dst), tmp_path / "ckpt")
    for path, value in pp.tree(src).state().items():
        np.testing.assert_array_equal(pp.tree(dst)[path].numpy(), value, err_msg=path)
    assert _specs(dst) == _specs(src)


def test_a_shard_directory_of_two_processes_loads_into_four_devices(tmp_path: Path) -> None:
    """Two pieces per parameter, split on another axis than the devices' (as FSDP2 on 2 ranks writes dim 0)."""
    from polyparam.checkpoint.sharded import Piece, write_shard_file

    plain = Net(nnx.Rngs(2), sharded=False)
    pp.tree(plain).initialize(pp.init.Normal(1.0), seed=9, force_reinit=True)
    state = pp.tree(plain).state()
    for rank in range(2):
        pieces = []
        for path, value in state.items():
            half = -(-value.shape[0] // 2)
            box = slice(rank * half, min((rank + 1) * half, value.shape[0]))
            pieces.append(Piece(path, value.shape, (box.start,) + (0,) * (value.ndim - 1), value[box]))
        write_shard_file(tmp_path, rank, 2, pieces, ties=[], backend="torch", save_id=1)
    net = _sharded(4)
    pp.load(pp.tree(net), tmp_path)
    for path, value in state.items():
        np.testing.assert_array_equal(pp.tree(net)[path].numpy(), value, err_msg=path)
    assert _spec(net.dense.kernel[...]) == P(None, "model")
    y = net.dense(jnp.ones((2, 6)))
    np.testing.assert_allclose(np.asarray(y), np.ones((2, 6)) @ state["dense.weight"].T + state["dense.bias"],
                               rtol=1e-5)


def test_a_jax_sharded_save_loads_into_torch_fsdp2_on_two_ranks_and_back(tmp_path: Path) -> None:
    """JAX (4 devices, one process) -> torch FSDP2 (2 gloo ranks, dim-0 shards) -> JAX: the same shard format."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
    from _dist_launch import launch

    from tests.flax import fsdp_workers

    assert torch.distributed.is_available()
    src = _sharded(0)
    pp.tree(src).initialize(pp.init.Normal(1.0), seed=13, force_reinit=True)
    pp.save(pp.tree(src), tmp_path / "jax", sharded=True)
    expected = pp.tree(src).state(copy=True)
    np.savez(tmp_path / "expected.npz", **expected)
    launch(fsdp_workers.load_and_compare, 2, str(tmp_path / "jax"), str(tmp_path / "expected.npz"), timeout=180)

    launch(fsdp_workers.initialize_and_save, 2, str(tmp_path / "torch"), 17, timeout=180)
    assert sorted(f.name for f in (tmp_path / "torch").iterdir()) == ["rank-00000-of-00002.safetensors",
                                                                      "rank-00001-of-00002.safetensors"]
    net = _sharded(1)
    pp.load(pp.tree(net), tmp_path / "torch")
    reference = pp.tree(fsdp_workers.Net())
    reference.initialize(pp.init.Normal(1.0), seed=17, force_reinit=True)   # the draw FSDP2's shards made
    for path, value in reference.state().items():
        np.testing.assert_array_equal(pp.tree(net)[path].numpy(), value, err_msg=path)
    assert _specs(net) == _specs(src)


def test_transfer_from_torch_into_a_sharded_model_keeps_each_sharding() -> None:
    pytest.importorskip("torch")
    from tests.flax import fsdp_workers

    source = fsdp_workers.Net()
    net = _sharded(6)
    specs = _specs(net)
    report = pp.transfer(source, net)
    assert report.ok
    for path, value in pp.tree(source).state().items():
        np.testing.assert_array_equal(pp.tree(net)[path].numpy(), value, err_msg=path)
    assert _specs(net) == specs
