"""Gluon (mx.init) initializers given to initialize: the same distribution as Gluon's own draw."""

from __future__ import annotations

import numpy as np
import pytest

# polyparam first: it lets MXNet load beside TensorFlow.
# isort: off
import polyparam as pp
import mxnet as mx
from mxnet.gluon import nn
# isort: on

CASES = {
    "Xavier": mx.init.Xavier, "Xavier(gaussian, in, 2)": lambda: mx.init.Xavier("gaussian", "in", 2),
    "MSRAPrelu": mx.init.MSRAPrelu, "Normal(0.02)": lambda: mx.init.Normal(0.02),
    "Uniform(0.3)": lambda: mx.init.Uniform(0.3), "Orthogonal": mx.init.Orthogonal,
    "Constant(0.5)": lambda: mx.init.Constant(0.5),
}
BOUNDED = ("Xavier", "Uniform", "Constant")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("layer", [lambda: nn.Dense(300, in_units=700), lambda: nn.Conv2D(64, 5, in_channels=32)],
                         ids=["dense", "conv"])
def test_same_distribution_as_gluon(name: str, layer) -> None:
    """std and mean (and the range, where bounded) within 5% of Gluon's own draw of the same layer."""
    block = layer()
    block.initialize(CASES[name]())
    native = block.weight.data().asnumpy()
    pp.tree(block).initialize(CASES[name](), seed=0, force_reinit=True)
    ours = block.weight.data().asnumpy()
    assert abs(ours.std() - native.std()) <= 0.05 * native.std() + 1e-12, (ours.std(), native.std())
    assert abs(ours.mean() - native.mean()) <= 0.05 * native.std() + 1e-6
    if name.startswith(BOUNDED) and "gaussian" not in name:
        assert abs(ours.max() - native.max()) <= 0.05 * (native.max() - native.min()) + 1e-6
        assert abs(ours.min() - native.min()) <= 0.05 * (native.max() - native.min()) + 1e-6
    np.testing.assert_array_equal(block.bias.data().asnumpy(), 0)


def test_initializers_without_an_equivalent_are_refused_before_any_write() -> None:
    block = nn.Dense(3, in_units=4)
    block.initialize()
    before = block.weight.data().asnumpy()
    with pytest.raises(pp.errors.InitializerError, match="lstmbias"):
        pp.tree(block).initialize(mx.init.LSTMBias(), force_reinit=True)
    np.testing.assert_array_equal(block.weight.data().asnumpy(), before)
