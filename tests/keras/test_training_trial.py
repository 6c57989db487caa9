"""What a trial of the training-loop operations found on Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L  # noqa: N812

import polyparam as pp
from polyparam import errors


def compiled() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    return model


def test_unfreezing_after_the_optimizer_was_built_says_to_recompile() -> None:
    model = compiled()
    tree = pp.tree(model)
    x, y = np.ones((4, 4), np.float32), np.ones((4, 2), np.float32)
    tree.select("0.*").freeze()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, verbose=0)
    with pytest.warns(errors.PolyparamWarning, match=r"call model.compile\(...\) again") as caught:
        tree.select("0.*").unfreeze()
    assert len(caught) == 1 and "2 parameter(s)" in str(caught[0].message)   # one per model, not per variable
    model.compile(optimizer="sgd", loss="mse")
    before = keras.ops.convert_to_numpy(model.layers[0].kernel).copy()
    model.fit(x, y, verbose=0)
    assert not np.array_equal(keras.ops.convert_to_numpy(model.layers[0].kernel), before)
