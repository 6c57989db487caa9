"""Real Keras models, built from config with random weights: the tree holds exactly what Keras holds,
and a seeded init, a save/load, Keras' own checkpoint and a transfer keep them faithful.

Per model: (1) scalars, trainable scalars and variable paths equal Keras' own; (2) a tree-wide
seeded Xavier init changes the weights, sets biases/shifts to 0 and scales to 1, leaves buffers of
unknown role alone, and is bitwise repeatable; (3) ``pp.save`` then ``pp.load`` into a fresh,
differently seeded copy gives bitwise equal outputs; (4) ``model.save_weights`` loads through
``pp.load`` with bitwise equal outputs, each value converted from Keras's layout as a read converts
it; (5) ``pp.transfer`` gives bitwise equal outputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import polyparam as pp  # noqa: E402 - after the importorskip
from polyparam import errors  # noqa: E402

L = keras.layers
APPS = keras.applications


def _adapted_small() -> Any:
    """A small CNN with a LoRA Dense after a Flatten and an int8-quantized Dense head."""
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.BatchNormalization(), L.Flatten(),
                              L.Dense(16), L.Dense(10)])
    model.layers[3].enable_lora(4)
    model.layers[3].lora_kernel_b.assign(keras.random.normal(model.layers[3].lora_kernel_b.shape))
    model.layers[4].quantize("int8")
    return model


def _adapted_small_without_lora() -> Any:
    """:func:`_adapted_small` before ``enable_lora``: what its ``.weights.h5`` (merged kernel) loads into."""
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.BatchNormalization(), L.Flatten(),
                              L.Dense(16), L.Dense(10)])
    model.layers[4].quantize("int8")
    return model


def _app(cls: Callable[..., Any], **kwargs: Any) -> Callable[[], Any]:
    """A keras.applications model at its smallest input, 10 classes, logits out."""
    return lambda: cls(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None, **kwargs)


MODELS: dict[str, tuple[Callable[[], Any], tuple[int, ...]]] = {
    "ResNet50": (_app(APPS.ResNet50), (32, 32, 3)),
    "MobileNetV2": (_app(APPS.MobileNetV2, alpha=0.35), (32, 32, 3)),
    "EfficientNetB0": (_app(APPS.EfficientNetB0), (32, 32, 3)),    # Normalization with a 0-d count
    "DenseNet121": (_app(APPS.DenseNet121), (32, 32, 3)),
    "small LoRA + int8": (_adapted_small, (8, 8, 3)),
}
NAMES = list(MODELS)
WITHOUT_LORA = {"small LoRA + int8": _adapted_small_without_lora}


def _build(name: str, seed: int) -> Any:
    keras.utils.set_random_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # "InputLayer does not have a quantize method"
        model = MODELS[name][0]()
    normalization = [layer for layer in model._flatten_layers() if isinstance(layer, L.Normalization)]
    for layer in normalization:                  # EfficientNet's adapted statistics: data, made to differ by seed
        mean = next(v for v in layer.weights if v.name == "mean")
        mean.assign(keras.random.uniform(mean.shape, seed=seed))
    return model


def _input(name: str) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (2, *MODELS[name][1])).astype(np.float32)


def _out(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


@pytest.fixture(scope="module")
def sources() -> dict[str, Any]:
    return {}


@pytest.fixture
def src(request: pytest.FixtureRequest, sources: dict[str, Any]) -> Any:
    name = request.node.callspec.params["name"]
    if name not in sources:
        sources[name] = _build(name, 0)
    return sources[name]


def _size(v: Any) -> int:
    return int(np.prod(tuple(v.shape), dtype=np.int64))


@pytest.mark.parametrize("name", NAMES)
def test_count_trainable_and_names(name: str, src: Any) -> None:
    tree = pp.tree(src)
    params = tree.parameters()
    assert sum(p.size or 0 for p in params) == sum(_size(v) for v in src.weights) == src.count_params()
    assert sum(p.size or 0 for p in params if p.trainable) == sum(_size(v) for v in src.trainable_weights)
    names = [p.native_name for p in params]
    assert len(names) == len(set(names))
    assert set(names) == {v.path for v in src.weights}


@pytest.mark.parametrize("name", NAMES)
def test_seeded_tree_wide_init(name: str) -> None:
    model = _build(name, 0)
    tree = pp.tree(model)
    before = tree.state(copy=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.PolyparamWarning)    # buffers of unknown role left as they are
        tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    first = tree.state(copy=True)
    for path, p in tree.items():
        value = first[path]
        if p.role == "other" and p.kind != "parameter":
            np.testing.assert_array_equal(value, before[path], err_msg=path)
        elif p.role in ("bias", "shift", "running_mean"):
            assert not value.any(), path
        elif p.role in ("scale", "running_var"):
            assert (value == 1).all(), path
        elif p.role == "weight":
            assert not np.array_equal(value, before[path]), path
    again = _build(name, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.PolyparamWarning)
        pp.tree(again).initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    second = pp.tree(again).state(copy=True)
    for path, value in first.items():
        p = tree[path]
        if not (p.role == "other" and p.kind != "parameter"):
            np.testing.assert_array_equal(second[path], value, err_msg=path)
    assert np.isfinite(_out(model, _input(name))).all()


@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_into_a_fresh_copy(name: str, src: Any, tmp_path: Path) -> None:
    x = _input(name)
    dst = _build(name, 1)
    assert not np.array_equal(_out(dst, x), _out(src, x))
    pp.save(src, tmp_path / "m.safetensors")
    pp.load(dst, tmp_path / "m.safetensors")
    np.testing.assert_array_equal(_out(dst, x), _out(src, x))


@pytest.mark.parametrize("name", NAMES)
def test_keras_own_checkpoint_loads(name: str, src: Any, tmp_path: Path) -> None:
    x = _input(name)
    src.save_weights(tmp_path / "m.weights.h5")
    dst = _build(name, 1)
    if name in WITHOUT_LORA:
        # Keras stores a LoRA layer's kernel merged with its factors, and not the factors: never loaded into a
        # LoRA model (refused before any write), loaded in full into the model without LoRA
        before = pp.tree(dst).state(copy=True)
        with pytest.raises(errors.StateError, match="lora_kernel_a"):
            pp.load(dst, tmp_path / "m.weights.h5")
        for path, value in pp.tree(dst).state(copy=True).items():
            np.testing.assert_array_equal(value, before[path], err_msg=path)
        keras.utils.set_random_seed(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dst = WITHOUT_LORA[name]()
    report = pp.load(dst, tmp_path / "m.weights.h5")
    assert not report.missing and not report.unexpected
    np.testing.assert_array_equal(_out(dst, x), _out(src, x))


@pytest.mark.parametrize("name", NAMES)
def test_keras_layout_converts_as_a_read_does(name: str, src: Any) -> None:
    for path, p in pp.tree(src).items():
        converted = p._from_native_layout(np.asarray(keras.ops.convert_to_numpy(p.native)))
        assert converted.shape == p.shape and converted.dtype == p.dtype, path
        np.testing.assert_array_equal(converted, p.numpy(), err_msg=path)


@pytest.mark.parametrize("name", NAMES)
def test_transfer_into_a_fresh_copy(name: str, src: Any) -> None:
    x = _input(name)
    dst = _build(name, 2)
    pp.transfer(src, dst)
    np.testing.assert_array_equal(_out(dst, x), _out(src, x))
