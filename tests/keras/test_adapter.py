"""Keras-specific behaviour beyond the conformance kit: structures, layouts, deferral, ties, gradients."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import polyparam as pp  # noqa: E402 - after the importorskip
import polyparam_keras  # noqa: E402
from polyparam import errors  # noqa: E402
from polyparam.testing import reference_values, snapshot  # noqa: E402

L = keras.layers


def _x(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=shape).astype(np.float32)


# ---- structure and paths ---------------------------------------------------------------


def test_functional_model_mirrors_layers_including_the_input_layer() -> None:
    """tree[i] is model.layers[i] (InputLayer at 0); paths are positions, not auto-numbered names."""
    inputs = keras.Input((6,))
    h = L.Dense(5, activation="relu")(inputs)
    outputs = L.Dense(2)(h)
    model = keras.Model(inputs, outputs)
    tree = pp.tree(model)
    assert len(tree) == len(model.layers) == 3
    for i, layer in enumerate(model.layers):
        assert tree[i].native is layer
    assert tree.paths() == ["1.weight", "1.bias", "2.weight", "2.bias"]
    assert tree["1.weight"].shape == (5, 6)
    assert tree["1.weight"].native_name == model.layers[1].kernel.path
    assert "dense" not in "".join(tree.paths())


class _Net(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = L.Dense(8, activation="relu")
        self.blocks = [L.Dense(8), L.Dense(8)]
        self.head = L.Dense(3)

    def call(self, x):
        x = self.encoder(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_subclassed_model_uses_attribute_names() -> None:
    """Subclassed models: attribute names, lists as nested positions (torch's ModuleList paths)."""
    model = _Net()
    model(_x(2, 4))
    tree = pp.tree(model)
    assert [name for name, _ in tree.children()] == ["encoder", "blocks", "head"]
    assert tree.paths() == ["encoder.weight", "encoder.bias", "blocks.0.weight", "blocks.0.bias",
                            "blocks.1.weight", "blocks.1.bias", "head.weight", "head.bias"]
    assert tree["blocks.1"].native is model.blocks[1]
    assert tree["head.weight"].shape == (3, 8)


def test_nested_sequentials_match_the_chapter_indexing() -> None:
    """The chapter's rgnet.layers[0].layers[1].layers[1].weights[1] is tree[0][1][1]['bias']."""
    def block1(name: str):
        return keras.Sequential([L.Flatten(), L.Dense(4, activation="relu")], name=name)

    def block2():
        net = keras.Sequential()
        for i in range(4):
            net.add(block1(name=f"block-{i}"))
        return net

    rgnet = keras.Sequential([block2(), L.Dense(1)])
    rgnet(_x(2, 4))
    tree = pp.tree(rgnet)
    native = rgnet.layers[0].layers[1].layers[1].weights[1]
    p = tree[0][1][1]["bias"]
    assert p.path == "0.1.1.bias" and p.native is native
    np.testing.assert_array_equal(p.numpy(), native.numpy())


def test_a_single_layer_is_a_tree() -> None:
    layer = L.Dense(3)
    layer.build((None, 2))
    tree = pp.tree(layer)
    assert tree.paths() == ["weight", "bias"]


def test_non_keras_objects_are_refused() -> None:
    with pytest.raises(errors.UnsupportedModelError):
        polyparam_keras.polyparam_get_backend("keras").tree(object())


# ---- layouts -----------------------------------------------------------------------------


def test_conv_batchnorm_and_transposed_layouts() -> None:
    """Conv (*k, in, out) reads as (out, in, *k); ConvTranspose as torch's (in, out, *k); BN names."""
    model = keras.Sequential([keras.Input((9, 9, 3)), L.Conv2D(5, (3, 2)), L.BatchNormalization(),
                              L.Conv2DTranspose(4, 3), L.Flatten(), L.Dense(2)])
    tree = pp.tree(model)
    conv, bn, convt = model.layers[0], model.layers[1], model.layers[2]
    w = tree["0.weight"]
    assert w.shape == (5, 3, 3, 2) and w.axes == ("out", "in", "space", "space")
    np.testing.assert_array_equal(w.numpy(), np.transpose(conv.kernel.numpy(), (3, 2, 0, 1)))
    assert [path for path, _ in tree[1].items()] == ["1.weight", "1.bias", "1.running_mean", "1.running_var"]
    assert tree["1.weight"].native is bn.gamma and tree["1.weight"].role == "scale"
    assert tree["1.running_var"].native is bn.moving_variance and not tree["1.running_var"].trainable
    t = tree["2.weight"]
    assert t.shape == (5, 4, 3, 3) and t.axes == ("in", "out", "space", "space")
    np.testing.assert_array_equal(t.numpy(), np.transpose(convt.kernel.numpy(), (3, 2, 0, 1)))
    value = np.arange(np.prod(w.shape), dtype=np.float32).reshape(w.shape)
    w.set(value)
    np.testing.assert_array_equal(conv.kernel.numpy(), np.transpose(value, (2, 3, 1, 0)))
    tree.initialize(pp.init.Xavier(), seed=2, force_reinit=True)
    for p in tree.select("*.weight", where=lambda p: p.role == "weight"):
        np.testing.assert_array_equal(p.numpy(), reference_values(p, pp.init.Xavier(), 2), err_msg=p.path)
    np.testing.assert_array_equal(tree["1.running_var"].numpy(), 1)


def test_a_state_in_keras_layout_is_refused_not_transposed() -> None:
    """Kernels given as Keras stores them (in, out) fit only after a transpose: refused, nothing changed."""
    model = keras.Sequential([keras.Input((4,)), L.Dense(8), L.Dense(3)])
    tree = pp.tree(model)
    before = snapshot(tree)
    native = dict(zip(tree.paths(), model.get_weights()))
    with pytest.raises(errors.ShapeMismatchError) as info:
        tree.load_state(native)
    assert info.value.path == "0.weight" and info.value.expected == (8, 4) and info.value.got == (4, 8)
    for path, value in before.items():
        np.testing.assert_array_equal(tree[path].numpy(), value)
    conv = keras.Sequential([keras.Input((5, 5, 3)), L.Conv2D(4, 2)])
    ctree = pp.tree(conv)
    with pytest.raises(errors.ShapeMismatchError):
        ctree["0.weight"].set(conv.layers[0].kernel.numpy())


# ---- deferred -------------------------------------------------------------------------------


def test_unbuilt_conv_and_batchnorm_are_deferred_and_get_the_seeded_values() -> None:
    """Recorded initialization equals the one of a built model with the same seed."""
    def layers():
        return [L.Conv2D(4, 3), L.BatchNormalization(), L.Flatten(), L.Dense(2)]

    lazy = keras.Sequential(layers())
    built = keras.Sequential([keras.Input((6, 6, 2))] + layers())
    lt, bt = pp.tree(lazy), pp.tree(built)
    assert lt["0.weight"].shape == (4, None, 3, 3) and lt["1.running_mean"].shape == (None,)
    assert all(p.state == "deferred" for _, p in lt.items())
    report = lt.initialize(pp.init.Xavier(), seed=7)
    assert report.deferred == lt.paths()
    bt.initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    lazy(_x(1, 6, 6, 2))
    assert lt.paths() == bt.paths()
    for path, value in bt.state().items():
        np.testing.assert_array_equal(lt[path].numpy(), value, err_msg=path)


# ---- ties -----------------------------------------------------------------------------------


def _two_equal_layers():
    model = keras.Sequential([keras.Input((6,)), L.Dense(6, activation="tanh"), L.Dense(6, activation="tanh"),
                              L.Dense(1)])
    return model, pp.tree(model)


def test_seeded_initialize_of_large_kernels_reads_back_the_reference_and_keeps_earlier_reads() -> None:
    """Multi-block dense and conv kernels (drawn straight into a native-layout buffer on TensorFlow)
    equal the reference draw; a tensor read before keeps its values where tensors are values (TF,
    JAX) and shows the new ones where they alias the storage (torch)."""
    model = keras.Sequential([keras.Input((8, 8, 300)), L.Conv2D(700, 3), L.Flatten(), L.Dense(1500)])
    tree = pp.tree(model)
    kernels = [model.layers[0].kernel, model.layers[2].kernel]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        read_before = [tf.convert_to_tensor(k.value) for k in kernels]  # shares the buffer until a write
    else:
        read_before = [k.value for k in kernels]                         # torch: the storage itself
    values_before = [keras.ops.convert_to_numpy(t).copy() for t in read_before]
    init = pp.init.Xavier()
    tree.initialize(init, seed=11, force_reinit=True)
    for path in ("0.weight", "2.weight"):
        np.testing.assert_array_equal(tree[path].numpy(), reference_values(tree[path], init, 11), err_msg=path)
    for kernel, read, old in zip(kernels, read_before, values_before):
        expected = keras.ops.convert_to_numpy(kernel) if keras.backend.backend() == "torch" else old
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(read), expected)
    assert model(_x(2, 8, 8, 300)).shape == (2, 1500)


def test_tie_after_construction_changes_the_forward_pass_and_compiled_predict() -> None:
    """After pp.tie both layers use one variable, in eager calls and in an already traced predict()."""
    model, tree = _two_equal_layers()
    x = _x(3, 6)
    model.predict(x, verbose=0)
    pp.tie(tree[0], tree[1])
    assert len(model.weights) == 4
    tree["0.weight"].set(np.eye(6, dtype=np.float32))
    tree["0.bias"].set(np.zeros(6, np.float32))
    np.testing.assert_array_equal(tree["1.weight"].numpy(), np.eye(6))
    expected = np.tanh(np.tanh(x)) @ model.layers[2].kernel.numpy() + model.layers[2].bias.numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, rtol=1e-5, atol=1e-6)


def test_tie_survives_save_weights_and_load_weights(tmp_path) -> None:
    model, tree = _two_equal_layers()
    pp.tie(tree[0], tree[1])
    file = str(tmp_path / "tied.weights.h5")
    model.save_weights(file)
    saved = tree.state(copy=True)
    tree.initialize(pp.init.Constant(3), force_reinit=True)
    model.load_weights(file)
    assert {frozenset(g.paths) for g in tree.ties()} == {frozenset({"0.weight", "1.weight"}),
                                                        frozenset({"0.bias", "1.bias"})}
    for path, value in saved.items():
        np.testing.assert_array_equal(tree[path].numpy(), value)
    tree["1.weight"][2, 3] = 9
    assert tree["0.weight"].numpy()[2, 3] == 9
    fresh, fresh_tree = _two_equal_layers()   # a new model tied the same way loads the same file
    pp.tie(fresh_tree[0], fresh_tree[1])
    fresh.load_weights(file)
    for path, value in saved.items():
        np.testing.assert_array_equal(fresh_tree[path].numpy(), value)


def test_untie_after_tie_restores_own_variables() -> None:
    model, tree = _two_equal_layers()
    own = model.layers[1].kernel
    groups = pp.tie(tree[0], tree[1])
    for group in groups:
        group.untie()
    assert tree.ties() == []
    assert model.layers[1].kernel is own
    np.testing.assert_array_equal(tree["1.weight"].numpy(), tree["0.weight"].numpy())
    tree["1.weight"][0, 0] = 5
    assert tree["0.weight"].numpy()[0, 0] != 5


def test_gradient_of_a_tie_made_after_construction_is_the_sum() -> None:
    model, tree = _two_equal_layers()
    x = _x(4, 6)
    assert tree["0.weight"].grad() is None
    pp.tie(tree[0], tree[1])
    polyparam_keras.backward(model, x)
    tied = np.array(tree["0.weight"].grad(), copy=True)
    np.testing.assert_array_equal(tied, tree["1.weight"].grad())
    for group in tree.ties():
        group.untie()
    polyparam_keras.backward(model, x)
    np.testing.assert_allclose(tied, tree["0.weight"].grad() + tree["1.weight"].grad(), rtol=1e-4, atol=1e-6)


def test_gradients_are_in_canonical_layout_and_match_autodiff() -> None:
    """grad() of a dense weight is the transpose of the native kernel gradient; record_gradients stores yours."""
    model, tree = _two_equal_layers()
    x = _x(2, 6)
    polyparam_keras.backward(model, x)
    g = tree["2.weight"].grad()
    h = np.tanh(np.tanh(x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy())
                @ model.layers[1].kernel.numpy() + model.layers[1].bias.numpy())
    np.testing.assert_allclose(g, h.sum(axis=0, keepdims=True), rtol=1e-5, atol=1e-6)
    grads = [np.full(tuple(v.shape), float(i), np.float32) for i, v in enumerate(model.trainable_variables)]
    polyparam_keras.record_gradients(zip(grads, model.trainable_variables))
    np.testing.assert_array_equal(tree["0.weight"].grad(), grads[0].T)


class _Reuse(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.first = L.Dense(4)
        self.second = self.first

    def call(self, x):
        return self.second(self.first(x))


def test_a_layer_under_two_attributes_is_a_tie_that_cannot_be_untied() -> None:
    """One layer object under two names is detected; untie is refused (one object), nothing changes."""
    model = _Reuse()
    model(_x(1, 4))
    tree = pp.tree(model)
    weight, bias = tree.ties()
    assert weight.paths == ["first.weight", "second.weight"]
    with pytest.raises(errors.TieError) as info:
        weight.untie()
    assert info.value.path == "second.weight"
    assert len(tree.ties()) == 2


def test_a_functional_graph_lists_a_reused_layer_once() -> None:
    """Keras' Functional.layers holds a layer called twice once, so the tree does too."""
    shared = L.Dense(4)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, shared(shared(inputs)))
    tree = pp.tree(model)
    assert tree.paths() == ["1.weight", "1.bias"] and tree.ties() == []


def test_a_tie_made_before_build_is_applied_at_build_with_the_recorded_initialization() -> None:
    """Deferred layers can be tied: the tie shows at once, holds after build, and one init fills the group."""
    model = keras.Sequential([L.Dense(6, activation="tanh"), L.Dense(6, activation="tanh"), L.Dense(1)])
    tree = pp.tree(model)
    groups = pp.tie(tree[0], tree[1])
    assert {frozenset(g.paths) for g in tree.ties()} == {frozenset({"0.weight", "1.weight"}),
                                                        frozenset({"0.bias", "1.bias"})}
    report = tree.initialize(pp.init.Constant(0.5), seed=0)
    assert "1.weight" not in report.deferred and "0.weight" in report.deferred
    model(_x(2, 6))
    assert model.layers[0].kernel is model.layers[1].kernel
    np.testing.assert_array_equal(tree["1.weight"].numpy(), 0.5)
    assert len(model.trainable_weights) == 4
    for group in groups:
        group.untie()
    assert tree.ties() == []
    np.testing.assert_array_equal(tree["1.weight"].numpy(), 0.5)


def test_a_tie_before_build_between_layers_of_different_input_size_fails_at_build() -> None:
    model = keras.Sequential([L.Dense(6), L.Dense(6)])
    tree = pp.tree(model)
    pp.tie(tree[0], tree[1])
    with pytest.raises(errors.TieError):
        model(_x(2, 4))


def test_tying_a_built_layer_to_a_deferred_one_is_refused() -> None:
    built = keras.Sequential([keras.Input((4,)), L.Dense(4)])
    lazy = keras.Sequential([L.Dense(4)])
    with pytest.raises(errors.TieError):
        pp.tie(pp.tree(built)[0], pp.tree(lazy)[0])


class TwoBlocksNet(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.a = L.Dense(4, activation="tanh")
        self.b = L.Dense(4, activation="tanh")
        self.head = L.Dense(1)

    def call(self, x):
        return self.head(self.b(self.a(x)))


def test_fit_keeps_working_across_tie_and_untie_of_a_compiled_model() -> None:
    """A model already compiled and trained can be tied, trained as tied, untied and trained again."""
    model = TwoBlocksNet()
    x, y = _x(16, 4), _x(16, 1)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    tree = pp.tree(model)
    pp.tie(tree["a"], tree["b"])
    before = tree.state(copy=True)
    model.fit(x, y, epochs=2, verbose=0)
    assert len(model.trainable_variables) == 4
    assert not np.array_equal(tree["a.weight"].numpy(), before["a.weight"])
    np.testing.assert_array_equal(tree["a.weight"].numpy(), tree["b.weight"].numpy())
    for group in tree.ties():
        group.untie()
    model.fit(x, y, epochs=1, verbose=0)
    assert len(model.trainable_variables) == 6
    assert not np.array_equal(tree["a.weight"].numpy(), tree["b.weight"].numpy())


# ---- plugin hygiene -------------------------------------------------------------------------


def test_importing_the_plugin_does_not_import_keras() -> None:
    code = ("import sys, polyparam, polyparam_keras, numpy as np; polyparam.list_backends(); "
            "polyparam.backend_for({'w': np.zeros(2)});"
            "print(any(m in sys.modules for m in ('keras', 'tensorflow', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_keras_plugin_claims_keras_layers_before_the_torch_plugin() -> None:
    """Under KERAS_BACKEND=torch a Keras layer is a torch.nn.Module too; it must still be a keras tree."""
    code = ("import keras, polyparam as pp; m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]);"
            "print(keras.backend.backend(), pp.backend_for(m), pp.tree(m).backend)")
    env = dict(os.environ, KERAS_BACKEND="torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["torch", "keras", "keras"]


def test_on_torch_a_write_through_a_view_between_forward_and_backward_is_refused_by_autograd() -> None:
    """Keras on torch: an item write or an in-place initialize moves the tensor's version counter, as Keras'
    own assign (copy_) does; a backward through the graph that saved the old kernel refuses, instead of
    using the new values silently. A failed check (a load_state refused) moves nothing."""
    code = textwrap.dedent("""
        import keras, numpy as np, torch, polyparam as pp
        m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
        x = torch.ones(2, 8, requires_grad=True)
        tree = pp.tree(m)
        for write in ("item", "initialize", "refused load"):
            out = m(x).sum()
            if write == "item":
                tree["1.weight"][0, 0] = 5.0
            elif write == "initialize":
                tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
            else:
                try:
                    tree.load_state({"1.weight": np.zeros((3, 3), np.float32)}, strict=False)
                except pp.errors.ShapeMismatchError:
                    pass
            try:
                out.backward()
                print(write, "ran")
            except RuntimeError as exc:
                print(write, "refused" if "inplace" in str(exc) else exc)
    """)
    env = dict(os.environ, KERAS_BACKEND="torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-4:-1] == ["item refused", "initialize refused", "refused load ran"]


def test_on_jax_a_failed_load_puts_back_the_arrays_it_replaced_not_copies() -> None:
    """Keras on JAX: a variable holds an immutable JAX array and ``assign`` gives it a new one, so a load keeps the
    old arrays as its undo record (no copy) and a failure puts those very arrays back."""
    pytest.importorskip("jax")
    code = textwrap.dedent("""
        import keras, numpy as np, polyparam as pp
        from polyparam import errors
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
        tree = pp.tree(m)
        before = {path: p.native._value for path, p in tree.items()}
        state = {path: np.full(p.shape, 3, p.dtype) for path, p in tree.items()}
        last = list(state)[-1]
        cls = type(tree[last])
        original = cls._write
        def write(self, array):
            if self.path == last:
                raise RuntimeError("refused")
            original(self, array)
        cls._write = write
        try:
            tree.load_state(state)
        except errors.WriteFailedError:
            pass
        cls._write = original
        print(keras.backend.backend(), all(p.native._value is before[path] for path, p in tree.items()))
    """)
    env = dict(os.environ, KERAS_BACKEND="jax")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["jax", "True"]


def test_these_tests_pass_under_the_other_keras_backend() -> None:
    """This directory, in a fresh process on the other Keras backend (tensorflow <-> torch)."""
    other = {"tensorflow": "torch", "torch": "tensorflow"}[keras.backend.backend()]
    pytest.importorskip(other)
    env = dict(os.environ, KERAS_BACKEND=other)
    only_tensorflow = ["-m", "not keras_tensorflow"] if other != "tensorflow" else []   # deselected, not skipped
    proc = subprocess.run([sys.executable, "-m", "pytest", os.path.dirname(__file__), "-q", "-p", "no:cacheprovider",
                           "-k", "not test_these_tests_pass_under_the_other_keras_backend", *only_tensorflow],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]   # not the warnings above it: numpy 2's mention "failed"
    assert re.search(r"\d+ passed", summary) and not re.search(r"\d+ failed", summary), summary


def test_tying_an_embedding_to_a_dense_head_is_refused() -> None:
    """One Keras variable has one layout: Embedding (V, D) and a Dense kernel (D, V) cannot share it."""
    model = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(11, 6), L.Dense(11, use_bias=False)])
    tree = pp.tree(model)
    with pytest.raises(pp.errors.TieError, match="same native layout") as info:
        pp.tie(tree["0.weight"], tree["1.weight"])
    assert info.value.path == "1.weight"
    assert tree.ties() == []
    assert model(np.zeros((2, 5), "int32")).shape == (2, 5, 11)


@pytest.mark.keras_tensorflow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function is TensorFlow's")
def test_a_load_called_while_tensorflow_traces_a_function_writes_once_eagerly_not_into_the_graph() -> None:
    """Writes and undo reads leave the trace (``init_scope``): the values change when the trace runs, the graph
    holds no assign that would write them again on every call."""
    import tensorflow as tf

    small = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    big = keras.Sequential([keras.Input((4,)), L.Dense(512), L.Dense(1024)])   # (512, 1024) kernel: staged write
    for model in (small, big):
        tree = pp.tree(model)
        state = {path: np.full(p.shape, 0.5, p.dtype) for path, p in tree.items()}

        def load_then_add(x: tf.Tensor, tree: pp.ParameterTree = tree, state: dict = state) -> tf.Tensor:
            tree.load_state(state)
            return x + 1.0

        traced = tf.function(lambda x, fn=load_then_add: fn(x))   # the tree and values stay Python objects
        traced(tf.constant(1.0))
        assert all(np.all(p.numpy() == 0.5) for _, p in tree.items())
        tree.load_state({path: np.full(p.shape, 0.25, p.dtype) for path, p in tree.items()})
        traced(tf.constant(2.0))    # the same trace again: no assign of 0.5 in its graph
        assert all(np.all(p.numpy() == 0.25) for _, p in tree.items())
        ops = {op.type for op in traced.get_concrete_function(tf.constant(1.0)).graph.get_operations()}
        assert not ops & {"AssignVariableOp", "ReadVariableOp"}, ops


@pytest.mark.keras_tensorflow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_a_tf_distribute_variable_is_loaded_through_its_own_methods_and_a_failed_load_restores_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain variables are read and written with one TensorFlow op each; a MirroredVariable (one copy per device)
    must go through its own read_value/assign, which keep the copies equal."""
    import tensorflow as tf

    from polyparam_keras._parameter import KerasParameter

    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    assert type(model.layers[0].kernel._value).__name__ == "MirroredVariable"
    tree = pp.tree(model)
    before = tree.state(copy=True)
    write, calls = KerasParameter._write, []

    def refuse_third(self: KerasParameter, array: np.ndarray) -> None:
        calls.append(self.path)
        if len(calls) == 3:
            raise RuntimeError("the framework refuses a write halfway")
        write(self, array)

    monkeypatch.setattr(KerasParameter, "_write", refuse_third)
    with pytest.raises(RuntimeError, match="halfway"):
        tree.load_state({path: np.full(p.shape, 0.5, p.dtype) for path, p in tree.items()})
    monkeypatch.undo()
    assert all(np.array_equal(tree.state()[k], v) for k, v in before.items())
    tree.load_state({path: np.full(p.shape, 0.5, p.dtype) for path, p in tree.items()})
    assert all(np.all(v.numpy() == 0.5) for v in model.weights)


def test_a_load_run_inside_a_mixed_precision_layer_call_writes_float32_variables_exactly() -> None:
    """Under mixed_float16 a running layer's variables report float16 (Keras' autocast); they store float32, and
    a load there, or a Parameter read there and used later, must not round through float16."""
    target = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    tree = pp.tree(target)
    bias = dict(tree.items())["0.bias"]
    value = np.float32(1 + 2 ** -20)   # not a float16
    seen: list[str] = []

    class Loader(L.Layer):
        def call(self, x: object) -> object:
            seen.append(bias.dtype.name)
            tree.load_state({path: np.full(p.shape, value, np.float32) for path, p in tree.items()})
            return x

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.Sequential([keras.Input((4,)), Loader()])(np.ones((1, 4), np.float32))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert set(seen) == {"float32"}   # (Keras calls the layer twice: building, then running)
    assert all(np.all(w == value) for w in target.get_weights())
    bias.set(np.full(3, value * 2, np.float32))
    assert bias.dtype == np.float32 and np.all(target.layers[0].bias.numpy() == value * 2)


@pytest.mark.parametrize("units", [4, 600])   # under 1 MiB and over
def test_load_state_of_a_model_sharing_layers_swaps_them(units: int) -> None:
    """Under Keras on torch ``state()`` returns views of the storage: a load into a model that holds
    the same layers in another order reads every value before the first write changes it."""
    first, second = keras.layers.Dense(units), keras.layers.Dense(units)
    src = keras.Sequential([keras.Input((units,)), first, second])
    dst = keras.Sequential([keras.Input((units,)), second, first])
    a, b = [w.copy() for w in first.get_weights()], [w.copy() for w in second.get_weights()]
    pp.tree(dst).load_state(pp.tree(src).state())
    assert all(np.array_equal(x, y) for x, y in zip(second.get_weights(), a))
    assert all(np.array_equal(x, y) for x, y in zip(first.get_weights(), b))


def test_on_torch_a_value_over_a_kernels_own_bytes_in_another_order_is_copied_before_the_write() -> None:
    """Keras on torch: a value that is a kernel's own storage read in C order as the canonical shape (same
    bytes, other element order) loads as a copy of it would, not onto itself half-overwritten; a vector's
    own storage loads onto itself."""
    code = textwrap.dedent("""
        import keras, numpy as np, polyparam as pp
        from polyparam_keras._convert import raw
        m = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3), keras.layers.DepthwiseConv2D(3),
                              keras.layers.Flatten(), keras.layers.Dense(5)])
        tree = pp.tree(m)
        tree.initialize(pp.init.Uniform(), seed=1, force_reinit=True)
        for path in ("0.weight", "1.weight", "3.weight", "3.bias"):
            p = tree[path]
            native = raw(m.layers[int(path[0])].weights[0 if path.endswith("weight") else 1]).detach().numpy()
            value = native.reshape(p.shape)                 # the same bytes, in native order
            expected = np.array(value, copy=True)
            tree.load_state({path: value}, strict=False)
            print(path, np.array_equal(p.numpy(), expected))
    """)
    env = dict(os.environ, KERAS_BACKEND="torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-5:-1] == ["0.weight True", "1.weight True", "3.weight True", "3.bias True"]


def test_bfloat16_variables_read_and_write_as_ml_dtypes_arrays() -> None:
    """NumPy has no bfloat16: values are ml_dtypes.bfloat16 arrays, on every Keras backend (on torch
    ``tensor.numpy()`` refuses bfloat16, so the read views the bits)."""
    import ml_dtypes

    layer = keras.layers.Dense(4, dtype="bfloat16")
    model = keras.Sequential([keras.Input((3,)), layer])
    tree = pp.tree(model)
    assert {v.dtype for v in tree.state().values()} == {np.dtype(ml_dtypes.bfloat16)}
    values = {path: (np.arange(p.size, dtype=np.float32).reshape(p.shape) / 8).astype(ml_dtypes.bfloat16)
              for path, p in tree.items()}
    tree.load_state(values)
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float32)
    np.testing.assert_array_equal(kernel.T, values["0.weight"].astype(np.float32))
    np.testing.assert_array_equal(tree.state()["0.bias"].astype(np.float32), values["0.bias"].astype(np.float32))


@pytest.mark.keras_tensorflow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's reads copy; the others' are views")
def test_a_save_writes_the_values_it_read_while_assigns_and_optimizer_steps_go_on(tmp_path, monkeypatch) -> None:
    """``pp.save`` reads each variable without TensorFlow's copy (the read tensor's own buffer, read-only, kept as
    a transposed view); TensorFlow writes a variable whose buffer a tensor holds into a new buffer, so assigns
    and optimizer steps made while the file is written leave the file with the values of the read."""
    import tensorflow as tf
    from safetensors.numpy import load_file

    from polyparam.checkpoint.formats import safetensors

    model = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(4, 3), L.Flatten(), L.Dense(5)])
    tree = pp.tree(model)
    before = tree.state(copy=True)
    view = tree["0.weight"]._read_view()
    assert not view.flags.writeable
    np.testing.assert_array_equal(view, before["0.weight"])
    real, changed = safetensors.write_snapshot, []

    def write_while_training(fh, value):
        if not changed:   # after every read, before the first byte is written
            changed.append(True)
            for v in model.weights:
                v.assign(v + 1.0)
            keras.optimizers.SGD(0.5).apply_gradients([(tf.ones_like(v), v) for v in model.trainable_weights])
        return real(fh, value)

    monkeypatch.setattr(safetensors, "write_snapshot", write_while_training)
    pp.save(tree, tmp_path / "m.safetensors")
    assert changed
    np.testing.assert_array_equal(view, before["0.weight"])
    saved = load_file(tmp_path / "m.safetensors")
    assert saved.keys() == before.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(saved[path], value, err_msg=path)
    assert np.all(tree["2.bias"].numpy() == before["2.bias"] + 0.5)   # (+1, then -0.5 * 1): the model moved on
