"""TorchModels' single layers: the LAYER_SPECS shapes, and a forward that leaves the layer as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polyparam as pp
from polyparam.backend import LAYER_INPUTS, LAYER_SPECS
from polyparam_torch._models import TorchModels


@pytest.mark.parametrize("kind", sorted(LAYER_SPECS))
def test_layer_builds_the_spec_shape_with_a_bias_but_on_the_embedding(kind: str) -> None:
    spec = LAYER_SPECS[kind]
    tree = pp.tree(TorchModels().layer(kind))
    assert tuple(tree["weight"].shape) == spec.shape
    assert tuple(tree["weight"].axes) == spec.axes
    assert ("bias" in dict(tree.items())) == (kind != "embedding")


def test_batchnorm_forward_uses_running_statistics_and_keeps_the_training_mode() -> None:
    models = TorchModels()
    layer = models.layer("batchnorm")
    layer.train()
    with torch.no_grad():
        layer.running_mean.fill_(1.0)
        layer.running_var.fill_(4.0)
    x = np.random.default_rng(0).standard_normal(LAYER_INPUTS["batchnorm"]).astype(np.float32)
    out = models.forward_layer(layer, "batchnorm", x)
    np.testing.assert_allclose(out, (x - 1.0) / np.sqrt(4.0 + 1e-5), rtol=1e-5, atol=1e-6)
    assert layer.training
    np.testing.assert_array_equal(layer.running_mean.numpy(), 1.0)   # no statistics were updated
    assert int(layer.num_batches_tracked) == 0


def test_forward_kinds_are_every_spec_kind_and_the_norms() -> None:
    assert TorchModels().forward_kinds() == {*LAYER_SPECS, "batchnorm", "layernorm"}
