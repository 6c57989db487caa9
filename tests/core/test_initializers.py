"""The initializer library on the reference backend: streams, built-ins, names, composites."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.init import BLOCK, ParamInfo, generator_for


def info(shape, axes=None, role="weight", path="w", groups=1) -> ParamInfo:
    axes = axes if axes is not None else ("out", "in") + ("space",) * (len(shape) - 2)
    return ParamInfo(path=path, native_name=path, role=role, axes=axes, shape=tuple(shape),
                     dtype=np.dtype(np.float32), groups=groups)


def filled(init: pp.Initializer, shape, seed: int = 0, **kw) -> np.ndarray:
    arr = np.empty(shape, np.float32)
    init.fill(arr, info(shape, **kw), seed=seed)
    return arr


# ---- streams ---------------------------------------------------------------------------


def test_first_block_is_the_parameters_generator() -> None:
    """Block 0 of a uniform draw is the parameter's own generator, scaled."""
    arr = filled(pp.init.Uniform(0.5), (BLOCK + 10,), seed=3, axes=("other",))
    expected = generator_for(3, "w").random(BLOCK, dtype=np.float32) * np.float32(1.0) - np.float32(0.5)
    np.testing.assert_array_equal(arr[:BLOCK], expected)
    assert not np.array_equal(arr[BLOCK:BLOCK + 10], expected[:10])   # block 1 is another stream


def test_each_fill_starts_its_own_stream_after_one_that_left_half_a_word() -> None:
    """The fills reuse one generator per thread and set its state: 7 float32 draws leave half a 64-bit
    word buffered, which must not leak into the next parameter's stream (nor the key's high word be lost)."""
    for path in ("a", "b" * 40):   # any path: a 128-bit key
        filled(pp.init.Uniform(0.5), (7,), seed=11, axes=("other",), path="other")
        arr = filled(pp.init.Uniform(0.5), (7,), seed=11, axes=("other",), path=path)
        expected = generator_for(11, path).random(7, dtype=np.float32) - np.float32(0.5)
        np.testing.assert_array_equal(arr, expected)


@pytest.mark.parametrize("init", [pp.init.Uniform(), pp.init.Normal(0.3), pp.init.TruncatedNormal(0.2)],
                         ids=["uniform", "normal", "truncated"])
def test_values_do_not_depend_on_threads(init: pp.Initializer) -> None:
    """POLYPARAM_NUM_THREADS=1 and =2 give the same bits for a multi-block parameter."""
    code = textwrap.dedent(f"""
        import hashlib, numpy as np, polyparam as pp
        from polyparam.init import ParamInfo
        arr = np.empty((3 * 2**20 + 7,), np.float32)
        info = ParamInfo("w", "w", "weight", ("other",), arr.shape, arr.dtype)
        pp.init.loads({pp.init.dumps(init)!r}).fill(arr, info, seed=5)
        print(hashlib.sha256(arr.tobytes()).hexdigest())
    """)
    digests = set()
    for threads in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**__import__("os").environ, "POLYPARAM_NUM_THREADS": threads})
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    assert len(digests) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_pieces_of_a_block_drawn_on_several_threads_continue_its_stream(dtype: type,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With several threads a block is split in pieces, each with a generator started where the block's
    stream stands: the values are those of one generator drawing the whole block (float16: through scratch)."""
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", "4")
    shape = (BLOCK + 3 * 2**16 + 5,)
    info_ = ParamInfo("w", "w", "weight", ("other",), shape, np.dtype(dtype))
    split = {}
    for init in (pp.init.Uniform(0.5), pp.init.Normal(0.3)):
        arr = np.empty(shape, dtype)
        init.fill(arr, info_, seed=3)
        split[type(init).__name__] = arr
    draw = np.float64 if dtype == np.float64 else np.float32
    expected = generator_for(3, "w").random(BLOCK, dtype=draw) * draw(1.0) - draw(0.5)
    np.testing.assert_array_equal(split["Uniform"][:BLOCK], expected.astype(dtype))
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", "1")
    for init in (pp.init.Uniform(0.5), pp.init.Normal(0.3)):
        arr = np.empty(shape, dtype)
        init.fill(arr, info_, seed=3)
        np.testing.assert_array_equal(split[type(init).__name__], arr)


def test_values_do_not_depend_on_memory_layout() -> None:
    """A transposed (non-contiguous) target gets the same canonical values."""
    direct = filled(pp.init.Normal(1.0), (64, 48))
    storage = np.empty((48, 64), np.float32)
    pp.init.Normal(1.0).fill(storage.T, info((64, 48)), seed=0)
    np.testing.assert_array_equal(storage.T, direct)


@pytest.mark.parametrize("init", [pp.init.Uniform(0.3), pp.init.Normal(0.3), pp.init.TruncatedNormal(0.2)],
                         ids=["uniform", "normal", "truncated"])
@pytest.mark.parametrize(("shape", "axes", "perm"), [
    ((1300, 1700), ("out", "in"), (1, 0)),                                   # Keras' dense kernel: 3 blocks
    ((70, 33, 21, 19), ("out", "in", "space", "space"), (2, 3, 1, 0)),       # Keras' conv kernel
    ((2 * BLOCK + 5,), ("other",), None),                                     # every other element
], ids=["dense", "conv", "strided-1d"])
def test_strided_targets_get_the_contiguous_values(init: pp.Initializer, shape, axes, perm,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A native-layout buffer seen canonically is drawn in pieces and scattered: same bits."""
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", "2")
    direct = filled(init, shape, axes=axes)
    if perm is None:
        view = np.empty(2 * shape[0], np.float32)[::2]
    else:
        view = np.empty(tuple(shape[i] for i in perm), np.float32).transpose(np.argsort(perm))
    assert not view.flags.c_contiguous
    init.fill(view, info(shape, axes=axes), seed=0)
    np.testing.assert_array_equal(view, direct)
    half = np.empty(shape[::-1], np.float16).T if len(shape) == 2 else np.empty(shape, np.float16)
    init.fill(half, ParamInfo("w", "w", "weight", axes, shape, np.dtype(np.float16)), seed=0)
    np.testing.assert_array_equal(half, direct.astype(np.float16))


def test_strided_targets_need_no_whole_array_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Filling a transposed 16 MiB view allocates a piece per thread, not a copy of the array."""
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", "2")
    storage = np.empty((1024, 4096), np.float32)
    tracemalloc.start()
    pp.init.Uniform().fill(storage.T, info((4096, 1024)), seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < storage.nbytes // 2, peak


def test_half_precision_parameters() -> None:
    arr = np.empty((32, 16), np.float16)
    pp.init.Xavier().fill(arr, ParamInfo("w", "w", "weight", ("out", "in"), (32, 16), np.dtype(np.float16)), seed=1)
    np.testing.assert_array_equal(arr, filled(pp.init.Xavier(), (32, 16), seed=1).astype(np.float16))


def _peak_of(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_is_the_undo_copy_and_far_less_than_a_parameter_more() -> None:
    """Filling in place allocates far less than one parameter (4 MB each here) of scratch. Re-initializing
    also keeps the old values until every fill succeeded (all or nothing): one copy of what is overwritten."""
    model = {str(i): {"weight": np.zeros((1024, 1024), np.float32)} for i in range(6)}
    tree = pp.tree(model)
    for init in (pp.init.Uniform(), pp.init.Normal(), pp.init.Xavier(rnd_type="gaussian")):
        peak = _peak_of(lambda init=init: tree.initialize(init, seed=0, force_reinit=True))
        assert 6 * 4 * 2**20 <= peak < 6 * 4 * 2**20 + 4 * 2**20, (init, peak)


def test_an_undo_limit_refuses_before_the_first_write(monkeypatch: pytest.MonkeyPatch) -> None:
    model = {str(i): {"weight": np.zeros((256, 256), np.float32)} for i in range(3)}
    tree = pp.tree(model)
    monkeypatch.setenv("POLYPARAM_UNDO_LIMIT", "500KB")  # under the 768 KiB the copies need
    with pytest.raises(errors.UndoLimitError) as info:
        tree.initialize(pp.init.Uniform(), seed=0, force_reinit=True)
    assert info.value.got == 3 * 256 * 256 * 4 and info.value.expected == 500_000
    assert all(not model[k]["weight"].any() for k in model)  # nothing written
    monkeypatch.setenv("POLYPARAM_UNDO_LIMIT", "1MiB")
    tree.initialize(pp.init.Uniform(), seed=0, force_reinit=True)
    assert all(model[k]["weight"].any() for k in model)
    monkeypatch.setenv("POLYPARAM_UNDO_LIMIT", "lots")
    with pytest.raises(errors.InvalidArgumentError, match="POLYPARAM_UNDO_LIMIT"):
        tree.initialize(pp.init.Uniform(), seed=0, force_reinit=True)


# ---- built-ins ------------------------------------------------------------------------


def test_truncated_normal_stays_in_range() -> None:
    arr = filled(pp.init.TruncatedNormal(sigma=0.1, mean=1.0), (200, 500))
    assert arr.min() >= 0.8 - 1e-6 and arr.max() <= 1.2 + 1e-6


def test_orthogonal() -> None:
    tall = filled(pp.init.Orthogonal(gain=2.0), (64, 16))
    np.testing.assert_allclose(tall.T @ tall, 4 * np.eye(16), atol=1e-4)
    wide = filled(pp.init.Orthogonal(), (8, 4, 3, 3))   # rows 8, cols 36
    flat = wide.reshape(8, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(8), atol=1e-5)


def test_bilinear_kernel() -> None:
    arr = filled(pp.init.Bilinear(), (2, 1, 4, 4))
    row = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(arr[0, 0], np.outer(row, row))
    np.testing.assert_array_equal(arr[0], arr[1])


def test_dirac_passes_channels_through() -> None:
    arr = filled(pp.init.Dirac(), (4, 4, 3, 3))
    x = np.random.default_rng(0).normal(size=(4, 5, 5)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(x)
    for o in range(4):
        for i in range(4):
            for dy in range(3):
                for dx in range(3):
                    out[o] += arr[o, i, dy, dx] * padded[i, dy:dy + 5, dx:dx + 5]
    np.testing.assert_array_equal(out, x)
    grouped = filled(pp.init.Dirac(groups=2), (4, 2, 3))
    assert grouped.sum() == 4 and grouped[2, 0, 1] == 1 and grouped[3, 1, 1] == 1


def test_identity_and_constant_array() -> None:
    np.testing.assert_array_equal(filled(pp.init.Identity(gain=3), (3, 4)), 3 * np.eye(3, 4))
    np.testing.assert_array_equal(filled(pp.init.Constant(np.arange(4)), (2, 4)), [[0, 1, 2, 3]] * 2)


@pytest.mark.parametrize("nonlinearity, param, gain", [("relu", None, np.sqrt(2)), ("tanh", None, 5 / 3),
                                                       ("leaky_relu", 0.2, np.sqrt(2 / 1.04)), ("linear", None, 1)])
def test_gains_match_torch(nonlinearity, param, gain) -> None:
    assert pp.init.calculate_gain(nonlinearity, param) == pytest.approx(gain)


@pytest.mark.parametrize("init, shape, axes", [
    (pp.init.Xavier(), (8,), ("out",)), (pp.init.He(), (), ()), (pp.init.Orthogonal(), (8,), ("out",)),
    (pp.init.Bilinear(), (4, 4), ("out", "in")), (pp.init.Dirac(), (4, 4), ("out", "in")),
    (pp.init.Identity(), (2, 2, 2), ("out", "in", "space")),
], ids=["xavier-1d", "he-0d", "orthogonal-1d", "bilinear-dense", "dirac-dense", "identity-3d"])
def test_shape_requirements_are_checked_before_writing(init, shape, axes) -> None:
    with pytest.raises(errors.InitializerError) as exc:
        init.check(info(shape, axes=axes, path="net.0.weight"), by_role=False)
    assert exc.value.path == "net.0.weight"


# ---- names and JSON ---------------------------------------------------------------------

EVERY_BUILT_IN = [
    pp.init.Zero(), pp.init.One(), pp.init.Constant(0.5), pp.init.Uniform(0.2), pp.init.Normal(0.3, mean=1.0),
    pp.init.TruncatedNormal(0.1, a=-1.5, b=2.5), pp.init.Xavier("gaussian", "out", 2.0),
    pp.init.He(a=0.1, mode="fan_out", nonlinearity="leaky_relu", distribution="normal"),
    pp.init.MSRAPrelu("in", 0.5), pp.init.LeCun("uniform"), pp.init.VarianceScaling(2.0, "fan_avg", "uniform"),
    pp.init.Orthogonal(1.5), pp.init.Bilinear(), pp.init.Dirac(2), pp.init.Identity(0.5),
    pp.init.Mixed([("*.bias", pp.init.Constant(1)), (__import__("re").compile(r"^0\."), pp.init.Xavier()),
                   ("role:weight", pp.init.Normal(0.2))], default=pp.init.Zero()),
]


@pytest.mark.parametrize("init", EVERY_BUILT_IN, ids=lambda i: type(i).__name__)
def test_json_round_trip(init: pp.Initializer) -> None:
    again = pp.init.loads(pp.init.dumps(init))
    assert type(again) is type(init)
    assert pp.init.dumps(again) == pp.init.dumps(init)
    shape = (6, 4) if isinstance(init, pp.init.Identity) else (6, 4, 3, 3)
    np.testing.assert_array_equal(filled(again, shape, seed=2), filled(init, shape, seed=2))


def test_registry_and_custom_registration() -> None:
    assert isinstance(pp.init.get("glorot"), pp.init.Xavier)
    assert pp.init.get("kaiming", mode="fan_out").mode == "fan_out"
    assert pp.init.get("XAVIER", magnitude=2).magnitude == 2

    @pp.init.register("halves_for_test")
    class Halves(pp.init.Initializer):
        def __init__(self, value: float = 0.5) -> None:
            self.value = value

        def init_weight(self, name, arr):
            arr[...] = self.value

    again = pp.init.loads(pp.init.dumps(Halves(0.25)))
    assert isinstance(again, Halves) and again.value == 0.25
    with pytest.raises(errors.InitializerError):
        pp.init.get("no_such_initializer")
    with pytest.raises(errors.InitializerError):
        pp.init.get("xavier", no_such_argument=1)
    with pytest.raises(errors.InitializerError):
        pp.init.dumps(type("Unregistered", (pp.init.Initializer,), {})())
    with pytest.raises(errors.InitializerError):
        pp.init.loads("not json")


def test_names_are_accepted_by_initialize() -> None:
    tree = pp.tree({"w": np.zeros((3, 3), np.float32)})
    tree.initialize("one", force_reinit=True)
    np.testing.assert_array_equal(tree["w"].numpy(), 1)


# ---- composites ---------------------------------------------------------------------------


def test_mixed_without_a_match_changes_nothing() -> None:
    model = {"a": {"weight": np.ones((2, 2), np.float32)}, "b": {"weight": np.ones((2, 2), np.float32)}}
    tree = pp.tree(model)
    with pytest.raises(errors.InitializerError) as exc:
        tree.initialize(pp.init.Mixed([("a.*", pp.init.Zero())]), force_reinit=True)
    assert exc.value.path == "b.weight"
    np.testing.assert_array_equal(model["a"]["weight"], 1)


def test_mixed_kind_rules_select_by_kind_as_param_groups_does() -> None:
    """``"kind:buffer"`` is a rule of ``pp.param_groups`` and ``select``, which say they speak Mixed's language:
    Mixed read it as a glob, matched nothing and only warned."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    tree = pp.tree(model)
    tree.initialize(pp.init.Mixed([("kind:parameter", pp.init.Constant(0.5)), ("kind:buffer", pp.init.Constant(2))],
                                  default=pp.init.Zero()), force_reinit=True)
    for path, p in tree.items():
        if p.kind == "parameter":
            np.testing.assert_array_equal(p.numpy(), 0.5, err_msg=path)
    np.testing.assert_array_equal(model[1].running_mean.numpy(), 2)
    assert int(model[1].num_batches_tracked) == 0     # role "other": a tree-wide initialize leaves it


def test_mixed_works_with_deferred_initialization() -> None:
    from polyparam import numpy as pnp

    net = pnp.Sequential(pnp.Dense(4), pnp.Dense(2))
    tree = pp.tree(net)
    report = tree.initialize(pp.init.Mixed([("0.*", pp.init.Constant(2)), ("1.*", pp.init.One())]))
    assert report.deferred == ["0.weight", "1.weight"]
    net(np.ones((1, 3)))
    np.testing.assert_array_equal(tree["0.weight"].numpy(), 2)
    np.testing.assert_array_equal(tree["0.bias"].numpy(), 2)      # a matched rule fills whatever the role
    np.testing.assert_array_equal(tree["1.weight"].numpy(), 1)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_load_from_a_file(tmp_path: Path, suffix: str) -> None:
    state = {"layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "layer.bias": np.ones(2, np.float32)}
    path = tmp_path / f"init{suffix}"
    if suffix == ".npz":
        np.savez(path, **state)
    else:
        from safetensors.numpy import save_file

        save_file(state, str(path))
    model = {"layer": {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, np.float32)}}
    pp.tree(model).initialize(pp.init.Load(path), force_reinit=True)
    np.testing.assert_array_equal(model["layer"]["weight"], state["layer.weight"])
    np.testing.assert_array_equal(model["layer"]["bias"], 1)
    assert pp.init.loads(pp.init.dumps(pp.init.Load(path))).source == str(path)


def test_an_initializer_without_a_json_form_still_has_a_repr_and_equals_itself() -> None:
    # a Load of an in-memory state and an unregistered class cannot be dumped; repr and == must not raise
    state = {"layer.weight": np.ones((2, 3), np.float32)}
    load = pp.init.Load(state, "xavier", rename=lambda key: key, strip_prefix="net.")
    text = repr(load)
    assert text.startswith("Load(source=<state of 1 arrays>, default=Xavier(") and "strip_prefix='net.'" in text
    assert load == load and load != pp.init.Load(dict(state)) and load != pp.init.Xavier()
    with pytest.raises(errors.InitializerError, match="in-memory state"):
        pp.init.dumps(load)

    class Unregistered(pp.init.Initializer):
        def __init__(self, value: float) -> None:
            self.value = value

        def init_weight(self, name: str, arr: np.ndarray) -> None:
            arr[...] = self.value

    assert repr(Unregistered(0.5)) == "Unregistered(value=0.5)"
    assert Unregistered(0.5) == Unregistered(0.5) and Unregistered(0.5) != Unregistered(1)


def test_the_report_names_the_seed_so_an_unseeded_run_can_be_repeated() -> None:
    model = {"layer": {"weight": np.zeros((16, 8), np.float32)}}
    tree = pp.tree(model)
    report = tree.initialize(pp.init.Xavier(), force_reinit=True)
    first = model["layer"]["weight"].copy()
    tree.initialize(pp.init.Xavier(), force_reinit=True)
    assert not np.array_equal(model["layer"]["weight"], first)
    again = tree.initialize(pp.init.Xavier(), force_reinit=True, seed=report.seed)
    assert again.seed == report.seed
    np.testing.assert_array_equal(model["layer"]["weight"], first)


# ---- issue 20: asymmetric uniform, sparse, Dirac's dimensions, empty parameters, Declared ----------


def _weight(shape: tuple[int, ...]) -> pp.ParameterTree:
    return pp.tree({"weight": np.zeros(shape, np.float32)})


def test_uniform_takes_asymmetric_bounds_and_round_trips_through_json() -> None:
    tree = _weight((200, 50))
    tree.initialize(pp.init.Uniform(low=2, high=3), seed=0, force_reinit=True)
    w = tree["weight"].numpy()
    assert 2 <= w.min() < 2.01 and 2.99 < w.max() < 3 and abs(w.mean() - 2.5) < 0.01
    again = pp.init.loads(pp.init.dumps(pp.init.Uniform(low=2, high=3)))
    other = _weight((200, 50))
    other.initialize(again, seed=0, force_reinit=True)
    np.testing.assert_array_equal(other["weight"].numpy(), w)


@pytest.mark.parametrize(("kwargs", "words"), [({"low": 1}, "both low and high"),
                                               ({"low": 2, "high": 1}, "low <= high"),
                                               ({"low": "a", "high": 1}, "finite number")])
def test_uniform_bounds_are_checked(kwargs: dict, words: str) -> None:
    with pytest.raises(pp.errors.InitializerError, match=words):
        pp.init.Uniform(**kwargs)


def test_sparse_zeroes_a_fraction_of_every_column_as_torch_does() -> None:
    tree = _weight((40, 30))
    tree.initialize(pp.init.Sparse(0.3, sigma=0.5), seed=1, force_reinit=True)
    w = tree["weight"].numpy()
    assert np.all((w == 0).sum(axis=0) == 12)   # ceil(0.3 * 40)
    assert abs(w[w != 0].std() - 0.5) < 0.05
    again = _weight((40, 30))
    again.initialize(pp.init.Sparse(0.3, sigma=0.5), seed=1, force_reinit=True)
    np.testing.assert_array_equal(again["weight"].numpy(), w)
    with pytest.raises(pp.errors.InitializerError, match="2-D"):
        _weight((4, 3, 3)).initialize(pp.init.Sparse(0.1), force_reinit=True)


@pytest.mark.parametrize("ndim", [2, 6])
def test_dirac_wants_3_to_5_dimensions(ndim: int) -> None:
    p = _weight((2,) * ndim)["weight"]
    with pytest.raises(pp.errors.InitializerError, match="3-D to 5-D"):
        p.initialize(pp.init.Dirac(), force_reinit=True)


def test_initializing_an_empty_parameter_warns() -> None:
    with pytest.warns(pp.errors.PolyparamWarning, match="has no elements"):
        _weight((0, 3)).initialize(pp.init.Xavier(), force_reinit=True)


def test_declared_needs_a_default_where_nothing_is_declared() -> None:
    tree = pp.tree({"weight": np.zeros((3, 4), np.float32), "bias": np.ones(3, np.float32)})
    with pytest.raises(pp.errors.InitializerError, match="expected its framework to declare"):
        tree.initialize(pp.init.Declared(), force_reinit=True)
    tree.initialize(pp.init.Declared(default=pp.init.Xavier()), seed=0, force_reinit=True)
    assert tree["weight"].numpy().std() > 0 and not tree["bias"].numpy().any()   # role dispatch of the default
    assert pp.init.loads(pp.init.dumps(pp.init.Declared(default="xavier"))) == pp.init.Declared(default="xavier")


class _OwnZero(pp.init.Zero):
    pass


@pytest.mark.parametrize(("init", "whole"), [
    (pp.init.Xavier(), True), (pp.init.Orthogonal(), True), (_OwnZero(), False),
    (pp.init.Mixed([("a*", pp.init.One())], pp.init.Normal()), True),
    (pp.init.Mixed([("a*", _OwnZero())], pp.init.Normal()), False),
    (pp.init.Mixed([("a*", pp.init.One())], _OwnZero()), False),
    (pp.init.Load({}, default=pp.init.Uniform()), True), (pp.init.Load({}, default=_OwnZero()), False),
    (pp.init.Declared(), False)], ids=lambda x: type(x).__name__ if isinstance(x, pp.init.Initializer) else str(x))
def test_only_polyparams_own_fills_promise_every_element(init: pp.init.Initializer, whole: bool) -> None:
    """``initialize`` may hand a fill that writes every element fresh storage (the old one kept for undo):
    a subclass defined elsewhere may leave elements as they were, so it never makes that promise."""
    assert init._fills_every_element is whole


def test_a_fill_method_replaced_on_the_class_or_the_instance_drops_the_promise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    init = pp.init.Uniform()
    assert init._fills_every_element
    monkeypatch.setattr(pp.init.Uniform, "init_bias", lambda self, name, arr: None)
    assert not init._fills_every_element
    monkeypatch.undo()
    init.fill = lambda *args, **kwargs: None  # type: ignore[method-assign]
    assert not init._fills_every_element
    assert not pp.init.Mixed([("a*", init)], pp.init.Normal())._fills_every_element
