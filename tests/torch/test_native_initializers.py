"""torch.nn.init functions given to initialize: the same distribution as torch's own draw."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

import polyparam as pp

CASES = {
    "xavier_uniform_": nn.init.xavier_uniform_,
    "xavier_normal_(gain=2)": partial(nn.init.xavier_normal_, gain=2.0),
    "kaiming_uniform_": nn.init.kaiming_uniform_,
    "kaiming_normal_(fan_out, relu)": partial(nn.init.kaiming_normal_, mode="fan_out", nonlinearity="relu"),
    "normal_(std=0.02)": partial(nn.init.normal_, std=0.02),
    "trunc_normal_(std=0.1, a=-0.15, b=0.2)": partial(nn.init.trunc_normal_, std=0.1, a=-0.15, b=0.2),
    "uniform_(-0.3, 0.3)": partial(nn.init.uniform_, a=-0.3, b=0.3),
    "orthogonal_": nn.init.orthogonal_,
    "constant_(0.5)": partial(nn.init.constant_, val=0.5),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("layer", [lambda: nn.Linear(700, 300), lambda: nn.Conv2d(32, 64, 5)], ids=["dense", "conv"])
def test_same_distribution_as_torch(name: str, layer) -> None:
    """std and mean (and the range, where bounded) within 5% of torch's own draw on the same layer
    (fan_in != fan_out, so a swapped fan shows)."""
    fn = CASES[name]
    module = layer()
    native = module.weight.detach().clone()
    with torch.no_grad():
        fn(native)
    native = native.numpy()
    pp.tree(module).initialize(fn, seed=0, force_reinit=True)
    ours = module.weight.detach().numpy()
    assert abs(ours.std() - native.std()) <= 0.05 * native.std() + 1e-12, (ours.std(), native.std())
    assert abs(ours.mean() - native.mean()) <= 0.05 * native.std() + 1e-6
    if name.startswith(("xavier_uniform", "kaiming_uniform", "uniform", "trunc", "constant")):   # bounded: same range
        assert abs(ours.max() - native.max()) <= 0.05 * (native.max() - native.min()) + 1e-6
        assert abs(ours.min() - native.min()) <= 0.05 * (native.max() - native.min()) + 1e-6
    np.testing.assert_array_equal(module.bias.detach().numpy(), 0)   # biases keep their conventional value


def test_seeded_values_match_the_builtin_on_any_backend() -> None:
    """A torch function and its polyparam equivalent give the same bits (same seed, same stream)."""
    a, b = nn.Linear(20, 30), nn.Linear(20, 30)
    pp.tree(a).initialize(nn.init.xavier_uniform_, seed=3, force_reinit=True)
    pp.tree(b).initialize(pp.init.Xavier(), seed=3, force_reinit=True)
    np.testing.assert_array_equal(a.weight.detach().numpy(), b.weight.detach().numpy())


@pytest.mark.parametrize("fn", [nn.init.sparse_, partial(nn.init.kaiming_normal_, bogus=1)],
                         ids=["sparse_ without sparsity", "bad argument"])
def test_functions_without_an_equivalent_are_refused_before_any_write(fn) -> None:
    module = nn.Linear(4, 3)
    before = module.weight.detach().clone()
    with pytest.raises(pp.errors.InitializerError, match="torch.nn.init"):
        pp.tree(module).initialize(fn, force_reinit=True)
    assert torch.equal(module.weight.detach(), before)
