"""pp.transfer between torch and Flax NNX for the tied-embedding-head model: equal outputs, the tie kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("flax")
torch = pytest.importorskip("torch")
import jax.numpy as jnp  # noqa: E402 - after the importorskip
from flax import nnx  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402

V, D, T = 11, 6, 5   # vocabulary, embedding width, tokens
IDS = np.random.default_rng(7).integers(0, V, (2, T)).astype(np.int32)


class TiedHead(nnx.Module):
    """The output head that reads the embedding table itself: ``logits = x @ table.T`` (``Embed.attend``'s formula).

    It holds the embedding's Variable, so ``1.weight`` is ``0.weight`` (a tie), laid out as
    torch's ``Linear(D, V).weight`` (V, D).
    """

    def __init__(self, embed: nnx.Embed) -> None:
        self.weight = embed.embedding

    def __call__(self, x: Any) -> Any:
        return x @ self.weight[...].T


def _flax_tied() -> nnx.Sequential:
    embed = nnx.Embed(V, D, rngs=nnx.Rngs(0))
    return nnx.Sequential(embed, TiedHead(embed))


def _torch_tied() -> Any:
    net = torch.nn.Sequential(torch.nn.Embedding(V, D), torch.nn.Linear(D, V, bias=False))
    net[1].weight = net[0].weight
    return net.eval()


def _torch_out(net: Any) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(IDS.astype(np.int64))).numpy()


def _flax_out(net: Any) -> np.ndarray:
    return np.asarray(net(jnp.asarray(IDS)))


def _randomize(model: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _, p in pp.tree(model).items():
        p.set(rng.uniform(-1, 1, p.shape).astype(p.dtype))


def _ties(model: Any) -> list[list[str]]:
    return [sorted(g.paths) for g in pp.tree(model).ties()]


def test_the_flax_head_that_holds_the_embedding_variable_is_a_tie_in_torchs_layout() -> None:
    net = _flax_tied()
    tree = pp.tree(net)
    assert _ties(net) == [["0.weight", "1.weight"]]
    assert tree["1.weight"].shape == (V, D) and tree["1.weight"].native is net.layers[0].embedding


@pytest.mark.parametrize("direction", ["torch-to-flax", "flax-to-torch"])
def test_transfer_tied_embedding_head_keeps_outputs_and_restores_the_tie(direction: str) -> None:
    torch_net, flax_net = _torch_tied(), _flax_tied()
    src, dst = (torch_net, flax_net) if direction == "torch-to-flax" else (flax_net, torch_net)
    _randomize(src, seed=3)
    for group in pp.tree(dst).ties():   # untied destination: the transfer must tie it again
        group.untie()
    assert _ties(dst) == []
    report = pp.transfer(src, dst)
    assert report.ok and report.moved
    np.testing.assert_allclose(_flax_out(flax_net), _torch_out(torch_net), atol=1e-5, rtol=1e-5)
    assert _ties(dst) == [["0.weight", "1.weight"]]


def test_flax_dense_head_cannot_share_the_embedding_variable_so_the_tie_is_refused_unchanged() -> None:
    """An ``nnx.Linear`` head stores its kernel (D, V), the table is (V, D): one Variable cannot be both."""
    torch_net = _torch_tied()
    _randomize(torch_net, seed=4)
    rngs = nnx.Rngs(0)
    flax_net = nnx.Sequential(nnx.Embed(V, D, rngs=rngs), nnx.Linear(D, V, use_bias=False, rngs=rngs))
    before = pp.tree(flax_net).state(copy=True)
    with pytest.raises(errors.TieMismatchError):
        pp.transfer(torch_net, flax_net)
    for path, value in pp.tree(flax_net).state().items():
        np.testing.assert_array_equal(value, before[path])
    report = pp.transfer(torch_net, flax_net, ties="ignore")
    assert report.ok
    np.testing.assert_allclose(_flax_out(flax_net), _torch_out(torch_net), atol=1e-5, rtol=1e-5)


def test_instance_norm_reads_as_torchs_and_transfers_from_it() -> None:
    """nnx.InstanceNorm's scale and bias are the canonical weight and bias (roles scale, shift), as every other
    normalization's: a transfer from torch's InstanceNorm2d(affine=True) gives its outputs (it was refused, its
    leaves named 'scale' with role 'other')."""
    src = torch.nn.Sequential(torch.nn.InstanceNorm2d(4, affine=True))
    with torch.no_grad():
        src[0].weight.uniform_(0.5, 2.0)
        src[0].bias.uniform_(-1.0, 1.0)
    dst = nnx.Sequential(nnx.InstanceNorm(4, epsilon=1e-5, rngs=nnx.Rngs(0)))   # torch's epsilon
    assert {path: p.role for path, p in pp.tree(dst).items()} == {"0.weight": "scale", "0.bias": "shift"}
    pp.transfer(src, dst)
    x = np.random.default_rng(0).normal(size=(2, 4, 5, 5)).astype(np.float32)
    expected = src(torch.from_numpy(x)).detach().numpy()
    got = np.asarray(dst(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5)
