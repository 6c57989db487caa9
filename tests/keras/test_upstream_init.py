"""Keras 3.15's own initializer tests (``random_initializers_test.py``, ``constant_initializers_test.py``),
each operation done through polyparam, the upstream assertions kept.

Every test runs on two routes: ``builtin`` (polyparam's own initializers, ``pp.init.*``) and
``keras`` (the ``keras.initializers`` object handed to ``tree.initialize``). The values
fill a Keras variable of the upstream shape inside a layer, and are read back in Keras'
layout (``layer.kernel``), so the upstream shapes and axes hold as written. Where a
Keras kernel's layout differs from polyparam's canonical one (a ``Dense`` kernel is
``(in, out)`` in Keras, ``(out, in)`` in polyparam), the tests use a layer whose layout is
the same both ways (``Embedding``, ``EinsumDense``), and a ``test_difference_*`` test pins
what differs on purpose (docs/backends/keras.md, "Differences from Keras").
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Callable

import keras
import numpy as np
import pytest

import polyparam as pp
import polyparam.init.run

K = keras.initializers
ROUTES = ("builtin", "keras")

def value(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))


def dense(n_in: int, n_out: int, **kw: Any) -> keras.layers.Dense:
    """A built Dense layer: its kernel is ``(n_in, n_out)`` in Keras."""
    layer = keras.layers.Dense(n_out, **kw)
    layer.build((None, n_in))
    return layer


def embedding(rows: int, cols: int, **kw: Any) -> keras.layers.Embedding:
    """A built Embedding: its table is ``(rows, cols)`` in Keras and in polyparam alike."""
    layer = keras.layers.Embedding(rows, cols, **kw)
    layer.build((None,))
    return layer


def einsum(equation: str, input_shape: tuple[int | None, ...], output_shape: Any, **kw: Any) -> Any:
    layer = keras.layers.EinsumDense(equation, output_shape=output_shape, **kw)
    layer.build(input_shape)
    return layer


def fill(layer: Any, init: Any, **kw: Any) -> np.ndarray:
    """``init`` through polyparam on ``layer``; its first variable (kernel, table) in Keras' layout."""
    pp.tree(layer).initialize(init, force_reinit=True, **kw)
    return value(layer.weights[0])


def round_trip(init: Any) -> pp.init.Initializer:
    """polyparam's serialization test: the JSON form rebuilds an equal initializer."""
    translated = pp.init.as_initializer(init)
    rebuilt = pp.init.loads(pp.init.dumps(translated))
    assert type(rebuilt) is type(translated)
    a, b = rebuilt.config(), translated.config()     # (Initializer.__eq__ cannot compare array arguments)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return rebuilt


@pytest.fixture(autouse=True)
def _keras_session() -> None:
    """As in any session that handed polyparam a Keras initializer (the translator is loaded)."""
    pp.init.as_initializer(K.Zeros())


# ==== random_initializers_test.py ======================================================================


@pytest.mark.parametrize("route", ROUTES)
def test_random_normal(route: str) -> None:
    keras.utils.set_random_seed(1337)
    shape, mean, stddev = (25, 20), 0.0, 1.0

    def make(seed: Any = None) -> Any:
        return pp.init.Normal(sigma=stddev, mean=mean) if route == "builtin" else K.RandomNormal(mean, stddev, seed)

    layer = dense(*shape)
    values = fill(layer, make(1234), seed=1234)
    assert values.shape == shape
    np.testing.assert_allclose(np.std(values), stddev, atol=1e-1)
    round_trip(make(1234))

    # a fixed seed yields the same results each call
    kw = {"seed": 1337} if route == "builtin" else {}
    init = make(1337)
    np.testing.assert_allclose(fill(layer, init, **kw), fill(layer, init, **kw))
    # a SeedGenerator (builtin: no seed) yields different results each call
    init = make(keras.random.SeedGenerator(1337))
    assert not np.allclose(fill(layer, init), fill(layer, init))
    # an unseeded initializer gets different results after cloning
    init = make(None)
    clone = pp.init.loads(pp.init.dumps(pp.init.as_initializer(init))) if route == "builtin" else \
        K.RandomNormal.from_config(init.get_config())
    assert not np.allclose(fill(layer, init), fill(layer, clone))
    # a seeded one gets the same results after cloning
    init = make(1337)
    clone = pp.init.loads(pp.init.dumps(pp.init.as_initializer(init))) if route == "builtin" else \
        K.RandomNormal.from_config(init.get_config())
    np.testing.assert_allclose(fill(layer, init, **kw), fill(layer, clone, **kw))


@pytest.mark.parametrize("route", ROUTES)
def test_random_uniform(route: str) -> None:
    shape, minval, maxval = (5, 5), -1.0, 1.0
    init = pp.init.Uniform(low=minval, high=maxval) if route == "builtin" else K.RandomUniform(minval, maxval, 1234)
    values = fill(embedding(*shape), init, seed=1234)
    assert values.shape == shape
    assert np.min(values) >= minval
    assert np.max(values) < maxval
    round_trip(init)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("minval", "maxval"), [(0.0, 1.0), (0.1, 0.3), (-3.0, -1.0)])
def test_random_uniform_asymmetric(route: str, minval: float, maxval: float) -> None:
    """``RandomUniform(minval, maxval)`` with ``minval != -maxval``: ``pp.init.Uniform(low=, high=)``."""
    init = pp.init.Uniform(low=minval, high=maxval) if route == "builtin" else K.RandomUniform(minval, maxval)
    if route == "keras":
        assert pp.init.as_initializer(init) == pp.init.Uniform(low=minval, high=maxval)
    values = fill(dense(300, 200), init, seed=0)
    assert minval <= values.min() and values.max() < maxval
    np.testing.assert_allclose(values.mean(), (minval + maxval) / 2, atol=0.02 * (maxval - minval))
    np.testing.assert_allclose(values.std(), (maxval - minval) / np.sqrt(12), rtol=0.02)


@pytest.mark.parametrize("route", ROUTES)
def test_variance_scaling(route: str) -> None:
    keras.utils.set_random_seed(1337)
    shape, scale = (25, 20), 2.0
    for mode, fan in (("fan_in", 25), ("fan_out", 20)):
        init = pp.init.VarianceScaling(scale, mode) if route == "builtin" else \
            K.VarianceScaling(scale=scale, seed=1234, mode=mode)
        values = fill(dense(*shape), init, seed=1234)   # Keras' fans of (25, 20): in 25, out 20, as polyparam's
        assert values.shape == shape
        np.testing.assert_allclose(np.std(values), np.sqrt(scale / fan), atol=1e-1)
        round_trip(init)


@pytest.mark.parametrize("route", ROUTES)
def test_orthogonal(route: str) -> None:
    shape, gain = (5, 5), 2.0
    init = pp.init.Orthogonal(gain) if route == "builtin" else K.Orthogonal(gain=gain, seed=1234)
    array = fill(dense(*shape), init, seed=1234)
    assert array.shape == shape
    for column in array.T:                     # columns have gain * unit norm
        assert np.linalg.norm(column) == pytest.approx(gain * 1.0, abs=1e-6)
    for i in range(array.shape[-1]):           # each column is orthonormal to the others
        for j in range(i + 1, array.shape[-1]):
            assert np.dot(array[..., i], array[..., j]) == pytest.approx(0.0, abs=1e-6)
    round_trip(init)
    # the compatible class name
    by_name = pp.init.get("OrthogonalInitializer") if route == "builtin" else \
        pp.init.as_initializer(K.get("OrthogonalInitializer"))
    assert isinstance(by_name, pp.init.Orthogonal)


@pytest.mark.parametrize("route", ROUTES)
def test_get_method(route: str) -> None:
    obj = pp.init.get("glorot_normal") if route == "builtin" else pp.init.as_initializer(K.get("glorot_normal"))
    assert obj
    assert obj == pp.init.VarianceScaling(1.0, "fan_avg", "truncated_normal") or type(obj).__name__ == "GlorotNormal"
    fill(dense(30, 20), "glorot_normal" if route == "builtin" else K.get("glorot_normal"), seed=0)
    # Keras' get(None) is None; polyparam's None is its default initializer (pinned in test_difference_none)
    with pytest.raises(ValueError, match="typo"):
        pp.init.get("typo") if route == "builtin" else pp.tree(dense(2, 2)).initialize("typo", force_reinit=True)


@pytest.mark.parametrize("route", ROUTES)
def test_get_method_with_tensor(route: str) -> None:
    shape = (5, 5)
    for tensor in (keras.random.uniform(shape=shape), np.random.uniform(size=shape).astype("float32")):
        init = pp.init.Constant(value(tensor)) if route == "builtin" else K.get(tensor)
        np.testing.assert_allclose(fill(embedding(*shape), init), value(tensor))
    # a bad shape is refused (the wording is polyparam's on the builtin route: see test_difference_error_wording)
    with pytest.raises((ValueError, pp.errors.PolyparamError), match=r"shape" if route == "builtin" else
                       r"Expected `shape` to be"):
        fill(embedding(10, 10), init)


def test_variance_scaling_invalid_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        pp.init.VarianceScaling(scale=-1.0, mode="fan_in")


def test_variance_scaling_invalid_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        pp.init.VarianceScaling(scale=2.0, mode="invalid_mode")


def test_variance_scaling_invalid_distribution() -> None:
    with pytest.raises(ValueError, match="distribution"):
        pp.init.VarianceScaling(scale=2.0, mode="fan_in", distribution="invalid_dist")


@pytest.mark.parametrize("route", ROUTES)
def test_serialization_with_seed_generator(route: str) -> None:
    builtins = (pp.init.Orthogonal(), pp.init.VarianceScaling(), pp.init.Uniform(low=-0.05, high=0.05),
                pp.init.Normal(0.05))
    natives = (K.Orthogonal, K.VarianceScaling, K.RandomUniform, K.RandomNormal)
    for made in builtins if route == "builtin" else [cls(seed=keras.random.SeedGenerator()) for cls in natives]:
        round_trip(made)


@pytest.mark.parametrize("route", ROUTES)
def test_compute_fans_with_axes(route: str) -> None:
    """Keras computes fans of ``(512, 8, 64)`` by the given axes; polyparam by the kernel's axis roles."""
    query = einsum("abc,cde->abde", (None, 4, 512), (None, 8, 64))     # kernel (512, 8, 64): in, out, out
    output = einsum("abcd,cde->abe", (None, 4, 512, 8), (None, 64))     # kernel (512, 8, 64): in, in, out
    for layer, input_axes, output_axes, fan_in, fan_out in ((query, [0], [1, 2], 512, 512),
                                                            (output, [0, 1], [2], 512 * 8, 64)):
        assert tuple(layer.kernel.shape) == (512, 8, 64)
        if route == "builtin":
            seen: dict[str, int] = {}

            class Fans(pp.init.Initializer):
                def __init__(self, seen: dict[str, int]) -> None:
                    self.seen = seen

                def init_weight(self, name: str, arr: np.ndarray, /) -> None:
                    info = self.param
                    assert info is not None
                    self.seen["fan_in"], self.seen["fan_out"] = info.fan_in, info.fan_out
                    arr[...] = 0

            pp.tree(layer).select("kernel").initialize(Fans(seen), force_reinit=True)
            assert (seen["fan_in"], seen["fan_out"]) == (fan_in, fan_out)
        else:
            for mode, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
                init = K.VarianceScaling(1.0, mode, "untruncated_normal", input_axes=input_axes,
                                         output_axes=output_axes)
                values = fill(layer, init, seed=0)
                np.testing.assert_allclose(values.std(), np.sqrt(1.0 / fan), rtol=0.02)


@pytest.mark.parametrize("route", ROUTES)
def test_variance_scaling_with_axes(route: str) -> None:
    keras.utils.set_random_seed(1337)
    shape, scale = (32, 4, 16), 2.0
    # with the axes: an EinsumDense kernel whose axis roles are in, out, out (Keras' input_axes=[0], output_axes=[1, 2])
    init = pp.init.VarianceScaling(scale, "fan_in") if route == "builtin" else \
        K.VarianceScaling(scale=scale, seed=1234, mode="fan_in", input_axes=[0], output_axes=[1, 2])
    values = fill(einsum("abc,cde->abde", (None, 10, 32), (None, 4, 16)), init, seed=1234)
    assert values.shape == shape
    np.testing.assert_allclose(np.std(values), np.sqrt(scale / 32), atol=1e-1)
    # without the axes: Keras reads (32, 4, 16) as a conv kernel (k, in, out), as a Conv1D kernel is
    init = pp.init.VarianceScaling(scale, "fan_in") if route == "builtin" else \
        K.VarianceScaling(scale=scale, seed=1234, mode="fan_in")
    conv = keras.layers.Conv1D(16, 32)
    conv.build((None, 40, 4))
    values = fill(conv, init, seed=1234)
    assert values.shape == shape
    np.testing.assert_allclose(np.std(values), np.sqrt(scale / 128), atol=1e-1)


@pytest.mark.parametrize("route", [*ROUTES, "declared"])
def test_mha_query_projection_variance(route: str) -> None:
    keras.utils.set_random_seed(1337)
    num_heads, key_dim, dim = 8, 16, 32
    mha = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, kernel_initializer="lecun_normal")
    mha.build((None, 10, dim), (None, 10, dim))
    init = {"builtin": pp.init.LeCun(), "keras": K.LecunNormal(), "declared": pp.init.Declared()}[route]
    pp.tree(mha).initialize(init, seed=0, force_reinit=True)
    kernel = mha.query_dense.kernel
    assert tuple(kernel.shape) == (dim, num_heads, key_dim)
    np.testing.assert_allclose(np.std(value(kernel)), np.sqrt(1.0 / dim), atol=1e-1)


@pytest.mark.parametrize("route", ROUTES)
def test_variance_scaling_serialization_with_axes(route: str) -> None:
    init = pp.init.get("VarianceScaling", input_axes=[0], output_axes=[1, 2]) if route == "builtin" else \
        K.VarianceScaling(input_axes=[0], output_axes=[1, 2])
    rebuilt = round_trip(init)
    assert rebuilt.config()["input_axes"] == [0] and rebuilt.config()["output_axes"] == [1, 2]


# ==== constant_initializers_test.py ====================================================================


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("name", "expected"), [("zeros", np.zeros), ("ones", np.ones)])
def test_zeros_and_ones_initializer(route: str, name: str, expected: Callable[..., np.ndarray]) -> None:
    shape = (3, 3)
    init = {"zeros": (pp.init.Zero(), K.Zeros()), "ones": (pp.init.One(), K.Ones())}[name][ROUTES.index(route)]
    values = fill(dense(*shape), init)
    assert values.shape == shape
    np.testing.assert_allclose(values, expected(shape=shape))
    round_trip(init)


@pytest.mark.parametrize("route", ROUTES)
def test_constant_initializer(route: str) -> None:
    shape, constant_value = (3, 3), 6.0
    init = pp.init.Constant(constant_value) if route == "builtin" else K.Constant(value=constant_value)
    values = fill(dense(*shape), init)
    assert values.shape == shape
    np.testing.assert_allclose(values, np.full(shape=shape, fill_value=constant_value))
    round_trip(init)


@pytest.mark.parametrize("route", ROUTES)
def test_constant_initializer_array_value(route: str) -> None:
    shape = (3, 3)
    constant_value = np.random.random((3, 3))
    init = pp.init.Constant(constant_value) if route == "builtin" else K.Constant(value=constant_value)
    values = fill(embedding(*shape), init)
    assert values.shape == shape
    np.testing.assert_allclose(values, np.full(shape=shape, fill_value=constant_value), rtol=1e-6)
    round_trip(init)


@pytest.mark.parametrize("route", ROUTES)
def test_identity_initializer(route: str) -> None:
    shape, gain = (3, 3), 2
    init = pp.init.Identity(gain) if route == "builtin" else K.Identity(gain=gain)
    values = fill(dense(*shape), init)
    assert values.shape == shape
    np.testing.assert_allclose(values, np.eye(*shape) * gain)
    round_trip(init)
    # the compatible class name
    by_name = pp.init.get("IdentityInitializer") if route == "builtin" else \
        pp.init.as_initializer(K.get("IdentityInitializer"))
    assert isinstance(by_name, pp.init.Identity)


def _stft_args() -> np.ndarray:
    time_range = np.arange(256).reshape((-1, 1, 1))
    freq_range = (np.arange(513) / 1024.0).reshape((1, 1, -1))
    return -2 * np.arccos(np.float32(-1)) * time_range * freq_range


def test_stft_initializer_keras_route_is_refused() -> None:
    """No built-in draws an STFT kernel: refused, naming it, before any write (the Declared route runs it)."""
    conv = keras.layers.Conv1D(513, 256, use_bias=False)
    conv.build((None, 1024, 1))
    before = value(conv.kernel)
    with pytest.raises(pp.errors.InitializerError, match="keras.initializers.STFT"):
        pp.tree(conv).initialize(K.STFT("real", None), force_reinit=True)
    np.testing.assert_array_equal(value(conv.kernel), before)


@pytest.mark.parametrize(("side", "window", "scaling", "periodic"),
                         [("real", None, None, False), ("real", "hamming", None, True),
                          ("imag", "tukey", "density", False), ("imag", list(range(1, 257)), "spectrum", True)],
                         ids=["real", "hamming", "tukey-density", "list-spectrum"])
def test_stft_initializer_declared(side: str, window: Any, scaling: str | None, periodic: bool) -> None:
    scipy_signal = pytest.importorskip("scipy.signal")
    conv = keras.layers.Conv1D(513, 256, use_bias=False,
                               kernel_initializer=K.STFT(side, window, scaling, periodic))
    conv.build((None, 1024, 1))
    pp.tree(conv).initialize(pp.init.Declared(), seed=0, force_reinit=True)
    args = _stft_args()
    expected = np.cos(args) if side == "real" else np.sin(args)
    if window is not None:
        win = np.asarray(window) if isinstance(window, list) else scipy_signal.windows.get_window(window, 256, periodic)
        win = win.astype("float32").reshape((-1, 1, 1))
        if scaling == "density":
            win = win / np.sqrt(np.sum(win**2))
        elif scaling == "spectrum":
            win = win / np.sum(win)
        expected = expected * win
    np.testing.assert_allclose(value(conv.kernel), expected, atol=1e-4, rtol=1e-6)


# ==== the translation fixes (issue #20) ==================================================================


def test_identity_gain_is_read() -> None:
    assert pp.init.as_initializer(K.Identity(gain=2)) == pp.init.Identity(2)


def test_constant_array_is_translated() -> None:
    array = np.arange(6.0).reshape(2, 3)
    translated = pp.init.as_initializer(K.Constant(array))
    np.testing.assert_array_equal(translated.config()["value"], array)
    translated = pp.init.as_initializer(K.Constant(keras.ops.ones((2, 3))))
    np.testing.assert_array_equal(translated.config()["value"], np.ones((2, 3)))


def test_variance_scaling_axes_that_disagree_with_the_axis_roles_are_refused_before_any_write() -> None:
    layer = einsum("abc,cde->abde", (None, 10, 32), (None, 4, 16))      # axis roles in, out, out
    before = value(layer.kernel)
    init = K.VarianceScaling(2.0, "fan_in", input_axes=[0, 1], output_axes=[2])   # fan_in 128, not 32
    with pytest.raises(pp.errors.InitializerError, match="input_axes/output_axes"):
        pp.tree(layer).initialize(init, force_reinit=True)
    np.testing.assert_array_equal(value(layer.kernel), before)
    # only the fan that `mode` uses must agree: fan_out 16 vs 64 does not matter for fan_in
    fill(layer, K.VarianceScaling(2.0, "fan_in", input_axes=[0], output_axes=[2]), seed=0)


def test_variance_scaling_with_one_axes_argument_is_as_keras_without_axes() -> None:
    """Keras uses the axes only when both are given; so does polyparam."""
    layer = dense(25, 20)
    a = fill(layer, K.VarianceScaling(2.0, "fan_in", input_axes=[5]), seed=3)
    b = fill(layer, pp.init.VarianceScaling(2.0, "fan_in"), seed=3)
    np.testing.assert_array_equal(a, b)


# ==== Keras seeds ===========================================================================================


@pytest.mark.parametrize("make", [K.RandomNormal, K.RandomUniform, K.TruncatedNormal, K.GlorotUniform,
                                  K.HeNormal, K.Orthogonal], ids=lambda c: c.__name__)
def test_an_int_seed_gives_the_same_values_on_every_call(make: Any) -> None:
    layer = dense(30, 20)
    init = make(seed=1337)
    first = fill(layer, init)
    np.testing.assert_array_equal(first, fill(layer, init))
    np.testing.assert_array_equal(first, fill(layer, make(seed=1337)))       # and from a new object
    np.testing.assert_array_equal(first, fill(layer, pp.init.as_initializer(init), seed=1337))
    assert not np.array_equal(first, fill(layer, make(seed=1338)))
    assert not np.array_equal(first, fill(layer, init, seed=0))              # an explicit seed= wins


def test_the_seed_is_reported() -> None:
    report = pp.tree(dense(3, 2)).initialize(K.RandomNormal(seed=7), force_reinit=True)
    assert report.seed == 7


def test_an_unseeded_keras_initializer_repeats_as_in_keras() -> None:
    """Keras draws an unseeded initializer's seed once, at construction: each call repeats it."""
    layer = dense(30, 20)
    init = K.GlorotUniform()
    np.testing.assert_array_equal(fill(layer, init), fill(layer, init))
    native = K.GlorotUniform()
    np.testing.assert_array_equal(value(native((4, 4))), value(native((4, 4))))


def test_a_seed_generator_differs_on_every_call_and_repeats_from_the_same_state() -> None:
    layer = dense(30, 20)
    runs = []
    for _ in range(2):
        init = K.RandomNormal(seed=keras.random.SeedGenerator(1337))
        runs.append([fill(layer, init) for _ in range(3)])
    assert not np.array_equal(runs[0][0], runs[0][1]) and not np.array_equal(runs[0][1], runs[0][2])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


# ==== Keras' string identifiers =============================================================================

NAMES = {"glorot_normal": (1.0, "fan_avg", "truncated_normal"), "glorot_uniform": (1.0, "fan_avg", "uniform"),
         "he_normal": (2.0, "fan_in", "truncated_normal"), "he_uniform": (2.0, "fan_in", "uniform"),
         "lecun_normal": (1.0, "fan_in", "truncated_normal"), "lecun_uniform": (1.0, "fan_in", "uniform"),
         "variance_scaling": (1.0, "fan_in", "truncated_normal")}
CLASS_NAMES = {"GlorotNormal": "glorot_normal", "GlorotUniform": "glorot_uniform", "HeNormal": "he_normal",
               "HeUniform": "he_uniform", "LecunNormal": "lecun_normal", "LecunUniform": "lecun_uniform",
               "VarianceScaling": "variance_scaling"}


@pytest.mark.parametrize("name", [*NAMES, *CLASS_NAMES])
def test_keras_variance_scaling_names(name: str) -> None:
    """Every name draws what Keras' object of that name draws (the same built-in, the same values)."""
    layer = dense(40, 30)
    ours = fill(layer, name, seed=5)
    scale, mode, distribution = NAMES[CLASS_NAMES.get(name, name)]
    np.testing.assert_array_equal(ours, fill(layer, pp.init.VarianceScaling(scale, mode, distribution), seed=5))
    np.testing.assert_array_equal(ours, fill(layer, K.get(name), seed=5))
    assert pp.init.loads(pp.init.dumps(pp.init.get(name))) == pp.init.get(name)


@pytest.mark.parametrize(("name", "native"), [
    ("orthogonal", K.Orthogonal), ("Orthogonal", K.Orthogonal), ("OrthogonalInitializer", K.Orthogonal),
    ("identity", K.Identity), ("Identity", K.Identity), ("IdentityInitializer", K.Identity),
    ("zeros", K.Zeros), ("Zeros", K.Zeros), ("ones", K.Ones), ("Ones", K.Ones), ("zero", K.Zeros), ("one", K.Ones),
    ("random_normal", K.RandomNormal), ("RandomNormal", K.RandomNormal),
    ("random_uniform", K.RandomUniform), ("RandomUniform", K.RandomUniform),
    ("truncated_normal", K.TruncatedNormal), ("TruncatedNormal", K.TruncatedNormal),
])
def test_keras_names(name: str, native: Any) -> None:
    layer = dense(40, 30)
    ours = fill(layer, name, seed=5)
    np.testing.assert_array_equal(ours, fill(layer, native(), seed=5))
    assert pp.init.get(name) == pp.init.get(name.lower())


def test_keras_names_in_a_fresh_process() -> None:
    """Without any Keras object handed to polyparam first."""
    code = "import polyparam as pp; print(pp.init.get('he_normal'), pp.init.get('OrthogonalInitializer'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# ==== pp.init.Declared: what the Keras layer declares ========================================================


def test_declared_gives_keras_statistics() -> None:
    model = keras.Sequential([
        keras.Input((64,)), keras.layers.Dense(300), keras.layers.BatchNormalization(),
        keras.layers.Dense(200, kernel_initializer="he_normal", bias_initializer=K.Constant(0.5)),
        keras.layers.LayerNormalization(), keras.layers.Reshape((10, 20)),
        keras.layers.Conv1D(50, 3, kernel_initializer=K.RandomUniform(0.0, 1.0)),
    ])
    tree = pp.tree(model)
    report = tree.initialize(pp.init.Declared(), seed=0, force_reinit=True)
    assert len(report.initialized) == len(tree.paths())
    d1, bn, d2, ln, _, conv = model.layers
    bound = np.sqrt(6 / (64 + 300))                               # glorot_uniform of the (64, 300) kernel
    k = value(d1.kernel)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.99 * bound
    np.testing.assert_allclose(k.std(), bound / np.sqrt(3), rtol=0.03)
    np.testing.assert_array_equal(value(d1.bias), 0)
    np.testing.assert_array_equal(value(bn.gamma), 1)
    np.testing.assert_array_equal(value(bn.beta), 0)
    np.testing.assert_array_equal(value(bn.moving_mean), 0)
    np.testing.assert_array_equal(value(bn.moving_variance), 1)
    native = value(d2.kernel_initializer((300, 200)))             # Keras' own draw, for its statistics
    np.testing.assert_allclose(value(d2.kernel).std(), native.std(), rtol=0.05)
    assert np.abs(value(d2.kernel)).max() <= 2 * np.sqrt(2 / 300) / 0.87962566103423978 + 1e-6
    np.testing.assert_array_equal(value(d2.bias), 0.5)
    np.testing.assert_array_equal(value(ln.gamma), 1)
    c = value(conv.kernel)
    assert c.min() >= 0 and c.max() < 1 and abs(c.mean() - 0.5) < 0.02
    again = pp.tree(model).state()
    tree.initialize(pp.init.Declared(), seed=0, force_reinit=True)
    for path, array in pp.tree(model).state().items():            # seeded: the same values again
        np.testing.assert_array_equal(array, again[path])


def test_declared_constant_array_keeps_keras_layout() -> None:
    array = np.arange(12.0).reshape(4, 3)                          # a Dense(3) kernel as Keras holds it: (in, out)
    layer = dense(4, 3, kernel_initializer=K.Constant(array))
    pp.tree(layer).initialize(pp.init.Declared(), force_reinit=True)
    np.testing.assert_array_equal(value(layer.kernel), array)


def test_declared_uses_keras_fans_with_axes() -> None:
    """An EinsumDense kernel: Keras' build gives the initializer the equation's axes, and so does Declared."""
    layer = einsum("abc,cde->abde", (None, 10, 512), (None, 8, 64),
                   kernel_initializer=K.VarianceScaling(1.0, "fan_out", "untruncated_normal"))
    pp.tree(layer).initialize(pp.init.Declared(), seed=0, force_reinit=True)
    np.testing.assert_allclose(value(layer.kernel).std(), np.sqrt(1 / 512), rtol=0.02)


def test_declared_lstm_forget_bias() -> None:
    lstm = keras.layers.LSTM(8)
    lstm.build((None, 5, 4))
    pp.tree(lstm).initialize(pp.init.Declared(), seed=0, force_reinit=True)
    expected = np.concatenate([np.zeros(8), np.ones(8), np.zeros(16)])
    np.testing.assert_array_equal(value(lstm.cell.bias), expected)
    q = value(lstm.cell.recurrent_kernel)                           # orthogonal (8, 32): orthonormal rows
    np.testing.assert_allclose(q @ q.T, np.eye(8), atol=1e-5)


def test_declared_embedding_default() -> None:
    layer = embedding(1000, 64)                                    # Keras' default: RandomUniform(-0.05, 0.05)
    table = fill(layer, pp.init.Declared(), seed=0)
    assert np.abs(table).max() <= 0.05 and np.abs(table).max() > 0.049


# ==== Differences from Keras (docs/backends/keras.md) ========================================================


def test_difference_constant_array_is_canonical_layout() -> None:
    """A Keras ``Constant(array)`` handed to initialize is read in polyparam's canonical layout: for a Dense
    kernel that is ``(out, in)``, the transpose of Keras' own. (``Declared()`` keeps Keras' layout.)"""
    array = np.arange(12.0).reshape(3, 4)                          # (out, in)
    layer = dense(4, 3, use_bias=False)
    np.testing.assert_array_equal(fill(layer, K.Constant(array)), array.T)
    with pytest.raises(pp.errors.InitializerError):
        fill(layer, K.Constant(array.T))                           # Keras' (in, out) does not fit (out, in)
    np.testing.assert_array_equal(fill(layer, K.get(array)), array.T)   # keras.initializers.get(array) too


def test_difference_fans_from_axis_roles() -> None:
    """polyparam's fans come from axis roles, Keras' from positions: an EinsumDense kernel ``(32, 4, 16)``
    (roles in, out, out) has fan_in 32 in polyparam, 128 (a conv reading) in Keras without input_axes."""
    layer = einsum("abc,cde->abde", (None, 10, 32), (None, 4, 16))
    values = fill(layer, K.VarianceScaling(2.0, "fan_in", "untruncated_normal"), seed=0)
    np.testing.assert_allclose(values.std(), np.sqrt(2.0 / 32), rtol=0.03)
    native = value(K.VarianceScaling(2.0, "fan_in", "untruncated_normal")((32, 4, 16)))
    np.testing.assert_allclose(native.std(), np.sqrt(2.0 / 128), rtol=0.03)


def test_difference_none() -> None:
    """Keras' ``initializers.get(None)`` is None; polyparam's ``initialize(None)`` is its default, Uniform(0.07)."""
    assert K.get(None) is None
    assert pp.init.as_initializer(None) == pp.init.Uniform(0.07)
    with pytest.raises(pp.errors.InitializerError):
        pp.init.get(None)  # type: ignore[arg-type]


def test_difference_gluon_names_win() -> None:
    """``"uniform"``/``"normal"`` keep polyparam's (Gluon's) meaning; Keras' aliases of those names differ."""
    assert pp.init.get("uniform") == pp.init.Uniform(0.07)
    assert pp.init.get("normal") == pp.init.Normal(0.01)
    assert pp.init.get("random_uniform") == pp.init.get("RandomUniform")
    with pytest.raises(pp.errors.InitializerError):
        pp.init.get("constant")   # Keras' Constant() defaults to 0.0; polyparam's needs a value


def test_difference_error_wording() -> None:
    """Argument errors are polyparam's InitializerError (a ValueError) in polyparam's words."""
    with pytest.raises(ValueError, match=r"expected a finite number >= 0"):
        pp.init.VarianceScaling(scale=-1.0)
    with pytest.raises(ValueError, match=r"broadcasts to"):
        fill(embedding(10, 10), pp.init.Constant(np.ones((5, 5))))
    assert pp.init.VarianceScaling(scale=0.0).scale == 0.0      # Keras refuses scale 0 ("must be positive")


def test_difference_serialization_drops_the_keras_seed() -> None:
    """``pp.init.dumps`` of a translated initializer keeps the distribution, not the Keras seed."""
    text = pp.init.dumps(pp.init.as_initializer(K.RandomNormal(0.0, 1.0, seed=1337)))
    assert "1337" not in text and pp.init.loads(text) == pp.init.Normal(1.0)
