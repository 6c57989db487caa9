"""Workers run by test_dtensor.py in spawned gloo process groups (one call per rank)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import polyparam as pp


class MyInit(pp.init.Initializer):  # the chapter's custom initializer: needs the full-draw fallback
    def init_weight(self, name: str, arr: np.ndarray) -> None:
        arr[:] = self.rng.uniform(-10, 10, arr.shape)
        arr *= np.abs(arr) >= 5


INITS = {
    "xavier": pp.init.Xavier(),
    "normal": pp.init.Normal(sigma=0.5),
    "truncated": pp.init.TruncatedNormal(sigma=1.0, a=-0.5, b=0.5),
    "he_out": pp.init.He(mode="fan_out"),
    "lecun": pp.init.LeCun(),
    "orthogonal": pp.init.Orthogonal(),
    "custom": MyInit(),
    "mixed": pp.init.Mixed([("*.bias", pp.init.Constant(0.1))], default=pp.init.Uniform()),
}


def small() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.LayerNorm(3))


def shared() -> nn.Module:
    tied = nn.Linear(8, 8)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), tied, nn.ReLU(), tied, nn.ReLU(), nn.Linear(8, 3))


def untied() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def reference(build, init, seed: int) -> dict[str, np.ndarray]:
    model = build()
    tree = pp.tree(model)
    tree.initialize(init, seed=seed, force_reinit=True)
    return tree.state(copy=True)


def distribute(model: nn.Module, mesh, placements) -> nn.Module:
    """Replace every parameter by a DTensor with ``placements(tensor)`` (ties kept)."""
    made: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, t in list(module._parameters.items()):
            if t is None:
                continue
            if id(t) not in made:
                made[id(t)] = nn.Parameter(distribute_tensor(t.detach(), mesh, placements(t)))
            module._parameters[name] = made[id(t)]
    return model


def assert_state(tree, expected: dict[str, np.ndarray], what: str) -> None:
    got = tree.state(copy=True)  # gathers: a collective on every rank
    assert got.keys() == expected.keys(), (what, sorted(got), sorted(expected))
    for path, value in expected.items():
        assert got[path].dtype == value.dtype, (what, path)
        assert np.array_equal(got[path], value), (what, path, got[path], value)


def init_and_access(rank: int, world: int) -> None:
    mesh = init_device_mesh("cpu", (world,))
    # small blocks make every shard boundary cut blocks (values depend on BLOCK: both sides use it)
    default_block = pp.init.streams.BLOCK
    pp.init.streams.BLOCK = 8
    try:
        for name, init in INITS.items():
            expected = reference(small, init, seed=11)
            model = small()
            fully_shard(model, mesh=mesh)
            tree = pp.tree(model)
            tree.initialize(init, seed=11, force_reinit=True)
            assert_state(tree, expected, f"fsdp2 {name}")
            for placements in ([Replicate()], [Shard(0)], [Shard(1)]):
                model = distribute(small(), mesh, lambda t, pl=placements: pl if isinstance(pl[0], Replicate)
                                   or t.ndim > pl[0].dim else [Shard(0)])
                tree = pp.tree(model)
                tree.initialize(init, seed=11, force_reinit=True)
                assert_state(tree, expected, f"{placements} {name}")
        if world == 4:  # a 2-D mesh: boxes cut on two axes, and replicated boxes
            mesh2 = init_device_mesh("cpu", (2, 2))
            for placements in ([Shard(0), Shard(1)], [Replicate(), Shard(1)], [Shard(1), Replicate()]):
                expected = reference(small, INITS["normal"], seed=5)
                model = distribute(small(), mesh2,
                                   lambda t, pl=placements: pl if t.ndim == 2 else [Shard(0), Replicate()])
                tree = pp.tree(model)
                tree.initialize(INITS["normal"], seed=5, force_reinit=True)
                assert_state(tree, expected, f"2-D {placements}")
    finally:
        pp.init.streams.BLOCK = default_block

    # more than one real block (2**20 elements), sharded rows
    expected = reference(lambda: nn.Linear(1100, 1000), pp.init.Xavier(), seed=3)
    big = nn.Linear(1100, 1000)
    fully_shard(big, mesh=mesh)
    pp.tree(big).initialize(pp.init.Xavier(), seed=3, force_reinit=True)
    assert_state(pp.tree(big), expected, "two blocks")

    # access: global shapes, local shards, placements in the table
    model = small()
    fully_shard(model, mesh=mesh)
    tree = pp.tree(model)
    tree.initialize(pp.init.Xavier(), seed=1, force_reinit=True)
    p = tree["0.weight"]
    assert p.shape == (7, 5) and p.dtype == np.float32 and p.device == "cpu"
    assert p.placements == (Shard(0),)
    full = p.numpy()
    box = p._local_box()
    assert np.array_equal(p.local(), full[box]) and p.local().shape == tuple(model[0].weight.to_local().shape)
    text = str(tree)
    assert "placement" in text and f"Shard(0) mesh ({world},)" in text, text
    # writes: a global value, each rank keeps its box
    value = np.arange(35, dtype=np.float32).reshape(7, 5)
    p.set(value)
    assert np.array_equal(p.numpy(), value)
    p[0, 0] = -1.0
    assert p.numpy()[0, 0] == -1.0 and p.numpy()[6, 4] == 34
    state = tree.state(copy=True)
    state["2.bias"] = np.array([1, 2, 3], np.float32)
    tree.load_state(state)
    assert np.array_equal(tree["2.bias"].numpy(), [1, 2, 3])
    # gradients are gathered; FSDP2 averages over ranks, every rank saw the same batch
    plain = small()
    pp.tree(plain).load_state(tree.state(copy=True))
    x = torch.linspace(-1, 1, 10).reshape(2, 5)
    model(x).square().sum().backward()
    plain(x).square().sum().backward()
    np.testing.assert_allclose(tree["0.weight"].grad(), plain[0].weight.grad.numpy(), rtol=1e-5, atol=1e-6)

    # without a seed, the ranks agree on one: shards form one draw, replicas stay equal
    for name, placements in (("shard", lambda t: [Shard(0)]), ("replicate", lambda t: [Replicate()])):
        model = distribute(small(), mesh, placements)
        tree = pp.tree(model)
        report = tree.initialize(pp.init.Normal(0.5), force_reinit=True)
        assert report.seed is not None
        replicas = [None] * world
        torch.distributed.all_gather_object(replicas, (report.seed, tree["0.weight"].local().tolist()))
        assert len({seed for seed, _ in replicas}) == 1, (name, replicas)
        if name == "replicate":
            assert all(local == replicas[0][1] for _, local in replicas), name
        assert_state(tree, reference(small, pp.init.Normal(0.5), seed=report.seed), f"unseeded {name}")

    # meta-device construction, then polyparam initialization
    expected = reference(small, pp.init.He(), seed=9)
    with torch.device("meta"):
        lazy = small()
    fully_shard(lazy, mesh=mesh)
    tree = pp.tree(lazy)
    assert tree["0.weight"].state == "uninitialized"
    report = tree.initialize(pp.init.He(), seed=9)
    assert "0.weight" in report.deferred
    tree.materialize("cpu")
    assert_state(tree, expected, "meta + materialize")
    plain = small()
    pp.tree(plain).load_state(expected)
    with torch.no_grad():
        np.testing.assert_allclose(lazy(x).detach().numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-6)


def _fsdp_shared(world: int, seed: int) -> pp.ParameterTree:
    """The shared-layer model under FSDP2 on ``world`` ranks, Xavier-initialized with ``seed``."""
    model = shared()
    fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    tree = pp.tree(model)
    tree.initialize(pp.init.Xavier(), seed=seed, force_reinit=True)
    return tree


def save(rank: int, world: int, directory: str, seed: int) -> None:
    tree = _fsdp_shared(world, seed)
    pp.save(tree, directory, sharded=True)
    from safetensors import safe_open

    mine = os.path.join(directory, f"rank-{rank:05d}-of-{world:05d}.safetensors")
    with safe_open(mine, framework="np") as f:
        # safe_open is no dict (it has keys() only); no rank holds a whole sharded weight
        for key in f.keys():  # noqa: SIM118
            if world > 1 and key.endswith("weight"):
                assert f.get_slice(key).get_shape()[0] < tree[key].shape[0], key


def load(rank: int, world: int, directory: str, seed: int, placement: str) -> None:
    mesh = init_device_mesh("cpu", (world,))
    expected = reference(shared, pp.init.Xavier(), seed=seed)
    model = shared()
    if placement == "fsdp":
        fully_shard(model, mesh=mesh)
    else:
        distribute(model, mesh, lambda t: [Shard(t.ndim - 1)])
    tree = pp.tree(model)
    tree.initialize(pp.init.Normal(), seed=seed + 1, force_reinit=True)
    report = pp.load(tree, directory)
    assert sorted(report.loaded) == sorted(expected)
    assert_state(tree, expected, f"load {placement} on {world}")
    assert [g.paths for g in tree.ties()] == [["2.weight", "4.weight"], ["2.bias", "4.bias"]]


def save_with_one_rank_failing(rank: int, world: int, directory: str, seed: int) -> None:
    """Rank 1's write fails: every rank raises (none waits for it), and load refuses the mixed directory."""
    import pytest

    import polyparam.checkpoint.sharded as sharded

    tree = _fsdp_shared(world, seed)
    if rank == 1:
        def full_disk(*args: object, **kwargs: object) -> str:
            raise OSError(28, "No space left on device")

        sharded.write_shard_file = full_disk
        with pytest.raises(OSError, match="No space left"):
            pp.save(tree, directory, sharded=True)
    else:
        with pytest.raises(pp.errors.CheckpointError, match="failure on another process"):
            pp.save(tree, directory, sharded=True)
    with pytest.raises(pp.errors.MetadataError, match="files of one save"):
        pp.load(tree, directory)


def wide() -> nn.Module:
    """Five 1024 x 1024 layers (4 MiB each): big enough that holding one full tensor shows in the memory."""
    return nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(5)])


def _anon_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")


def load_hub(rank: int, world: int, directory: str, verify: bool, out: str) -> None:
    """Load a Hub sharded checkpoint into an FSDP2 model: each rank reads only its rows; measure its memory."""
    import threading
    import time

    mesh = init_device_mesh("cpu", (world,))
    model = wide()
    fully_shard(model, mesh=mesh)
    tree = pp.tree(model)
    tree.initialize(pp.init.Normal(), seed=5, force_reinit=True)
    base, peak, stop = _anon_rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _anon_rss())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    report = pp.load(tree, directory, verify=verify)
    stop.set()
    sampler.join()
    growth = max(peak[0], _anon_rss()) - base
    assert len(report.loaded) == 10
    from safetensors.numpy import load_file

    expected: dict[str, np.ndarray] = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            expected.update(load_file(os.path.join(directory, name)))
    for path, p in tree.items():
        local = p.local()
        local_np = local.detach().numpy() if hasattr(local, "detach") else np.asarray(local)
        rows = expected[path].shape[0] // world if expected[path].ndim else 0
        want = expected[path][rank * rows:(rank + 1) * rows] if expected[path].ndim else expected[path]
        assert np.array_equal(local_np, want), (path, rank)
    with open(f"{out}.{rank}", "w") as fh:
        fh.write(str(growth))
