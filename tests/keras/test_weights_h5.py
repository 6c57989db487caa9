"""Keras's own ``model.save_weights("x.weights.h5")`` loads through ``pp.load`` into a fresh copy of the
model: each variable found by its key in the file (the adapter runs Keras's own save walk), each value
converted from Keras's layout, outputs bitwise equal; files of another architecture, and the LoRA-merged
kernels Keras stores, are refused before any write."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import h5py  # noqa: E402 - keras saves .weights.h5 with it

import polyparam as pp  # noqa: E402 - after the importorskip
from polyparam import errors  # noqa: E402

L = keras.layers
MODEL: Any = keras.Model


def _pair(make: Callable[[], Any]) -> tuple[Any, Any]:
    """Two copies of one architecture with different random values."""
    keras.utils.set_random_seed(0)
    src = make()
    keras.utils.set_random_seed(1)
    dst = make()
    return src, dst


def _x(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype(np.float32)


def _out(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def _file_keys(file: Path) -> set[str]:
    keys: set[str] = set()
    with h5py.File(file, "r") as h5:
        h5.visititems(lambda name, obj: keys.add(name.replace("/", ".")) if isinstance(obj, h5py.Dataset) else None)
    return keys


def _aliases(model: Any) -> set[str]:
    """Every parameter's keys, tied ones under each of their paths."""
    return {key for _, p in pp.tree(model)._occurrences() for key in p._native_aliases()}


def _round_trip(make: Callable[[], Any], shape: tuple[int, ...], tmp_path: Path) -> tuple[Any, Any, pp.LoadReport]:
    src, dst = _pair(make)
    x = _x(shape)
    assert not np.array_equal(_out(dst, x), _out(src, x))
    file = tmp_path / "m.weights.h5"
    src.save_weights(file)
    assert _aliases(dst) == _file_keys(file)       # every key of the file is one parameter's, and back
    report = pp.load(dst, file)
    np.testing.assert_array_equal(_out(dst, x), _out(src, x))
    for path, p in pp.tree(dst).items():
        np.testing.assert_array_equal(p.numpy(), pp.tree(src)[path].numpy(), err_msg=path)
    return src, dst, report


def _snapshot(model: Any) -> dict[str, np.ndarray]:
    return pp.tree(model).state(copy=True)


def _assert_unchanged(model: Any, before: dict[str, np.ndarray]) -> None:
    after = _snapshot(model)
    assert after.keys() == before.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)


# ---- real models ---------------------------------------------------------------------------


def test_resnet50_loads_bitwise(tmp_path: Path) -> None:
    _, dst, report = _round_trip(
        lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10,
                                            classifier_activation=None), (32, 32, 3), tmp_path)
    assert len(report.loaded) == len(dst.weights) and not report.missing and not report.unexpected


def _efficientnet() -> Any:
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None)
    norm = next(layer for layer in model._flatten_layers() if isinstance(layer, L.Normalization))
    for v in norm.weights:                        # the adapted statistics: data, made to differ by seed
        if v.name in ("mean", "variance"):
            v.assign(keras.random.uniform(v.shape, 0.5, 1.5))
    return model


def test_efficientnet_b0_loads_with_its_0d_count(tmp_path: Path) -> None:
    src, dst, _ = _round_trip(_efficientnet, (32, 32, 3), tmp_path)
    counts = [(path, p) for path, p in pp.tree(dst).items() if p.shape == ()]
    assert counts, "EfficientNet's Normalization has a 0-d count"
    for path, p in counts:
        assert p._native_aliases(), path


def test_flatten_then_dense_keeps_the_channel_order(tmp_path: Path) -> None:
    def make() -> Any:
        return keras.Sequential([keras.Input((5, 4, 3)), L.Conv2D(6, 2), L.Flatten(), L.Dense(7), L.Dense(4)])

    src, dst, _ = _round_trip(make, (5, 4, 3), tmp_path)
    with h5py.File(tmp_path / "m.weights.h5", "r") as h5:
        stored = np.asarray(h5["layers/dense/vars/0"])          # Keras: (H * W * C, out), channels last
    canonical = stored.T.reshape(7, 4, 3, 6).transpose(0, 3, 1, 2).reshape(7, -1)   # torch: (out, C * H * W)
    np.testing.assert_array_equal(pp.tree(dst)["2.weight"].numpy(), canonical)


def test_a_layer_used_twice_loads_once(tmp_path: Path) -> None:
    def make() -> Any:
        inputs = keras.Input((4,))
        shared = L.Dense(4, activation="tanh")
        return keras.Model(inputs, L.Dense(2)(shared(shared(inputs))))

    _round_trip(make, (4,), tmp_path)


def test_a_layer_reused_in_a_sequential_loads(tmp_path: Path) -> None:
    def make() -> Any:
        shared = L.Dense(4, activation="tanh")
        return keras.Sequential([keras.Input((4,)), shared, shared, L.Dense(2)])

    _, dst, _ = _round_trip(make, (4,), tmp_path)
    assert [g.paths for g in pp.tree(dst).ties()]


def test_layers_tied_by_polyparam_load_from_both_keys(tmp_path: Path) -> None:
    def make() -> Any:
        model = keras.Sequential([keras.Input((4,)), L.Dense(4), L.Dense(4), L.Dense(2)])
        pp.tie(pp.tree(model)["0"], pp.tree(model)["1"])
        return model

    _, dst, _ = _round_trip(make, (4,), tmp_path)
    tree = pp.tree(dst)
    assert tree["0.weight"]._native_aliases() == ("layers.dense.vars.0",)
    assert tree["1.weight"]._native_aliases() == ("layers.dense_1.vars.0",)


def test_subclassed_and_nested_models_load(tmp_path: Path) -> None:
    class Block(MODEL):
        def __init__(self) -> None:
            super().__init__()
            self.conv = L.Conv2DTranspose(3, 2)
            self.depthwise = L.DepthwiseConv2D(3, depth_multiplier=2)
            self.norm = L.BatchNormalization()
            self.heads = [L.Dense(3), L.EinsumDense("ab,bc->ac", output_shape=5, bias_axes="c")]

        def call(self, x: Any) -> Any:
            x = self.norm(self.depthwise(self.conv(x)))
            x = keras.ops.mean(x, axis=(1, 2))
            return self.heads[1](self.heads[0](x))

    def make() -> Any:
        inputs = keras.Input((6, 6, 2))
        inner = keras.Sequential([L.Conv1D(4, 3), L.GlobalAveragePooling1D()])
        tokens = keras.Input((5,), dtype="int32")
        embedded = inner(L.LSTM(3, return_sequences=True)(L.Embedding(11, 4)(tokens)))
        return keras.Model([inputs, tokens], L.Concatenate()([Block()(inputs), embedded]))

    src, dst = _pair(make)
    x = [_x((6, 6, 2)), np.arange(10, dtype=np.int32).reshape(2, 5)]
    file = tmp_path / "m.weights.h5"
    src.save_weights(file)
    assert _aliases(dst) == _file_keys(file)
    pp.load(dst, file)
    np.testing.assert_array_equal(_out(dst, x), _out(src, x))   # type: ignore[arg-type]


# ---- the layout conversion is a read's ------------------------------------------------------


def test_from_native_layout_of_a_variable_is_its_read() -> None:
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 2), L.DepthwiseConv2D(2, depth_multiplier=2),
                              L.Conv2DTranspose(4, 2), L.SeparableConv2D(3, 2), L.BatchNormalization(),
                              L.Flatten(), L.Dense(5)])
    for path, p in pp.tree(model).items():
        native = np.asarray(keras.ops.convert_to_numpy(p.native))
        converted = p._from_native_layout(native)
        assert converted.dtype == p.dtype and converted.shape == p.shape, path
        np.testing.assert_array_equal(converted, p.numpy(), err_msg=path)


def test_another_shape_never_reshapes_into_the_canonical_one() -> None:
    model = keras.Sequential([keras.Input((4, 4, 2)), L.DepthwiseConv2D(3, depth_multiplier=4), L.Flatten(),
                              L.Dense(3)])
    tree = pp.tree(model)
    depthwise = tree["0.weight"]                           # Keras (3, 3, 2, 4), canonical (8, 1, 3, 3)
    assert depthwise._from_native_layout(np.zeros((3, 3, 4, 2), np.float32)).shape == (3, 3, 4, 2)  # never reshaped
    with pytest.raises(errors.ShapeMismatchError):
        depthwise._from_native_layout(np.zeros((8, 1, 3, 3), np.float32))   # already canonical: not Keras's layout
    dense = tree["2.weight"]                               # Keras (8, 3), canonical (3, 8)
    assert dense._from_native_layout(np.zeros((3, 8), np.float32)).shape == (8, 3)   # no match: the core refuses


# ---- refusals before any write -------------------------------------------------------------


def test_a_file_of_another_architecture_is_refused_before_any_write(tmp_path: Path) -> None:
    other = keras.Sequential([keras.Input((4,)), L.Dense(3), L.LayerNormalization(), L.Dense(2)])
    other.save_weights(tmp_path / "other.weights.h5")
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    before = _snapshot(model)
    with pytest.raises(errors.StateError, match="layer_normalization"):
        pp.load(model, tmp_path / "other.weights.h5")
    _assert_unchanged(model, before)


def test_other_widths_are_refused_or_skipped(tmp_path: Path) -> None:
    keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(5)]).save_weights(tmp_path / "five.weights.h5")
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    before = _snapshot(model)
    with pytest.raises(errors.ShapeMismatchError):
        pp.load(model, tmp_path / "five.weights.h5")
    _assert_unchanged(model, before)
    with pytest.warns(errors.PolyparamWarning, match="2 values skipped"):
        report = pp.load(model, tmp_path / "five.weights.h5", skip_mismatch=True)    # a new head: the body loads
    assert sorted(path for path, _, _ in report.skipped) == ["1.bias", "1.weight"]
    assert sorted(report.loaded) == ["0.bias", "0.weight"]


def test_an_unbuilt_model_is_refused(tmp_path: Path) -> None:
    keras.Sequential([keras.Input((4,)), L.Dense(3)]).save_weights(tmp_path / "m.weights.h5")
    with pytest.raises(errors.StateError):
        pp.load(keras.Sequential([L.Dense(3)]), tmp_path / "m.weights.h5")


def test_a_compiled_models_optimizer_state_is_passed_over(tmp_path: Path) -> None:
    """The file of a compiled model also holds its optimizer's variables: not the model's, so a load passes
    them over (listed in report.ignored_buffers) instead of refusing the file."""
    def make() -> Any:
        model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
        model.compile("adam", "mse")
        model.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0)
        return model

    src, dst = _pair(make)
    src.save_weights(tmp_path / "m.weights.h5")
    report = pp.load(dst, tmp_path / "m.weights.h5")
    assert len(report.ignored_buffers) == 10 and all(k.startswith("optimizer.") for k in report.ignored_buffers)
    assert report.unexpected == []
    x = _x((4,))
    np.testing.assert_array_equal(_out(dst, x), _out(src, x))


# ---- LoRA: Keras stores the merged kernel, not the kernel and its factors ---------------------


def _lora(enable: bool = True, quantize: bool = False) -> Any:
    model = keras.Sequential([keras.Input((6,)), L.Dense(5), L.Dense(3)])
    if quantize:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.quantize("int8")
    if enable:
        model.layers[0].enable_lora(2)
        model.layers[0].lora_kernel_b.assign(keras.random.normal(model.layers[0].lora_kernel_b.shape))
    return model


@pytest.mark.parametrize("quantize", [False, True], ids=["float", "int8"])
def test_a_lora_models_file_loads_into_the_model_without_lora(quantize: bool, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    src = _lora(quantize=quantize)
    keras.utils.set_random_seed(1)
    dst = _lora(enable=False, quantize=quantize)
    src.save_weights(tmp_path / "m.weights.h5")
    report = pp.load(dst, tmp_path / "m.weights.h5")        # the merged kernel into the plain one
    assert not report.missing and not report.unexpected
    x = _x((6,))
    np.testing.assert_allclose(_out(dst, x), _out(src, x), rtol=1e-5, atol=1e-6 if not quantize else 1e-2)
    if not quantize:
        np.testing.assert_array_equal(_out(dst, x), _out(src, x))


def test_a_lora_models_file_never_loads_the_merged_kernel_into_a_lora_model(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    src = _lora()
    keras.utils.set_random_seed(1)
    dst = _lora()
    tree = pp.tree(dst)
    for leaf in ("weight", "lora_kernel_a", "lora_kernel_b"):
        assert tree[f"0.{leaf}"]._native_aliases() == (), leaf     # Keras stores none of them as they are
    src.save_weights(tmp_path / "m.weights.h5")
    before = _snapshot(dst)
    for allow_missing in (None, True):
        with pytest.raises(errors.StateError, match=r"layers\.dense\.vars\.0"):
            pp.load(dst, tmp_path / "m.weights.h5", allow_missing=allow_missing)    # the merged kernel: unexpected
        _assert_unchanged(dst, before)
    with pytest.warns(errors.PolyparamWarning, match="kept their values"):
        report = pp.load(dst, tmp_path / "m.weights.h5", strict=False)
    assert sorted(report.missing) == ["0.lora_kernel_a", "0.lora_kernel_b", "0.weight"]
    assert report.unexpected == ["layers.dense.vars.0"]
    after = _snapshot(dst)
    for path in report.missing:                                    # left as they were, not merged values
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    np.testing.assert_array_equal(after["0.bias"], pp.tree(src)["0.bias"].numpy())


# ---- one walk per model --------------------------------------------------------------------


def test_one_walk_per_model_and_a_new_walk_after_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    from polyparam_keras import _native_keys

    walks: list[int] = []
    walk = _native_keys._walk

    def counted(root: Any, signature: tuple[int, ...]) -> Any:
        walks.append(len(signature))
        return walk(root, signature)

    monkeypatch.setattr(_native_keys, "_walk", counted)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(3), L.Dense(2)])
    assert len({key for p in pp.tree(model).parameters() for key in p._native_aliases()}) == 6
    assert walks == [6]
    model.layers[0].enable_lora(2)                 # new variables; the kernel is now saved merged
    assert pp.tree(model)["0.weight"]._native_aliases() == ()
    assert walks == [6, 8]


# ---- the other Keras backend ---------------------------------------------------------------

TORCH_ROUND_TRIP = """
    import numpy as np, keras, polyparam as pp
    assert keras.backend.backend() == "torch"
    def make(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 2), keras.layers.BatchNormalization(),
                                 keras.layers.Flatten(), keras.layers.Dense(4)])
    src, dst = make(0), make(1)
    src.save_weights(FILE)
    report = pp.load(dst, FILE)
    x = np.random.default_rng(0).uniform(0, 1, (2, 6, 6, 2)).astype("float32")
    out = lambda m: keras.ops.convert_to_numpy(m(x, training=False))
    assert np.array_equal(out(src), out(dst)), "outputs differ"
    print("loaded", len(report.loaded))
"""


def test_keras_on_torch_round_trips(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environ.update(KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    code = f"FILE = {str(tmp_path / 'm.weights.h5')!r}\n" + textwrap.dedent(TORCH_ROUND_TRIP)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environ)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded 8" in proc.stdout
