"""Models and inputs the Flax adapter refuses with a typed error instead of misreading them: layers stacked by
``nnx.vmap`` / ``nnx.scan`` (one array per Variable with a layer axis), ``nnx.Dict`` keys holding ``"."``, and
gradients that are not those of the model handed to ``record_gradients``."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

flax = pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402 - after the importorskip
from flax import nnx  # noqa: E402

import polyparam as pp  # noqa: E402
import polyparam_flax  # noqa: E402
from polyparam import errors  # noqa: E402


def _stacked(make: Callable[[nnx.Rngs], Any], layers: int) -> Any:
    """``layers`` copies of ``make(rngs)`` built the NNX way for a layer stack: one module whose Variables have a
    leading layer axis."""

    @nnx.split_rngs(splits=layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def build(rngs: nnx.Rngs) -> Any:
        return make(rngs)

    return build(nnx.Rngs(0))


class Block(nnx.Module):
    """A small transformer-like block: a Linear, then a LayerNorm."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)


# ---- layers stacked with nnx.vmap / nnx.scan --------------------------------------------------------------


def test_a_vmap_stacked_linear_is_refused_naming_its_stack_axis() -> None:
    """A Linear stacked 3 times has kernel (3, 8, 8), not its (8, 8): refused when the tree is built."""
    lin = _stacked(lambda rngs: nnx.Linear(8, 8, rngs=rngs), 3)
    with pytest.raises(errors.UnsupportedModelError) as info:
        pp.tree(lin)
    err = info.value
    assert (err.path, err.expected, err.got) == ("weight", (8, 8), (3, 8, 8))
    assert "3 layers" in str(err) and "nnx.List" in str(err)


def test_a_vmap_stacked_conv_is_refused_instead_of_reading_the_layer_axis_as_space() -> None:
    """A Conv1D stacked 4 times has kernel (4, 3, 16, 16): its layer axis is no spatial axis."""
    conv = _stacked(lambda rngs: nnx.Conv(16, 16, (3,), rngs=rngs), 4)
    with pytest.raises(errors.UnsupportedModelError) as info:
        pp.tree(conv)
    assert (info.value.path, info.value.expected, info.value.got) == ("weight", (3, 16, 16), (4, 3, 16, 16))


@pytest.mark.parametrize(("make", "path", "expected"), [
    (lambda r: nnx.Embed(11, 6, rngs=r), "weight", (11, 6)),
    (lambda r: nnx.LayerNorm(6, rngs=r), "weight", (6,)),
    (lambda r: nnx.RMSNorm(6, rngs=r), "weight", (6,)),
    (lambda r: nnx.GroupNorm(6, num_groups=2, rngs=r), "weight", (6,)),
    (lambda r: nnx.InstanceNorm(6, rngs=r), "weight", (6,)),
    (lambda r: nnx.BatchNorm(6, rngs=r), "weight", (6,)),
    (lambda r: nnx.ConvTranspose(4, 6, (3, 2), rngs=r), "weight", (3, 2, 4, 6)),
    (lambda r: nnx.Conv(4, 6, (3, 2), feature_group_count=2, rngs=r), "weight", (3, 2, 2, 6)),
    (lambda r: nnx.LinearGeneral((4, 3), (2, 5), axis=(-2, -1), rngs=r), "bias", (2, 5)),   # NNX's order
    (lambda r: nnx.LoRA(4, 2, 5, rngs=r), "lora_a", (4, 2)),
    (lambda r: nnx.LoRALinear(4, 5, lora_rank=2, rngs=r), "weight", (4, 5)),
], ids=["embed", "layer_norm", "rms_norm", "group_norm", "instance_norm", "batch_norm", "conv_transpose",
        "conv2d_groups", "linear_general", "lora", "lora_linear"])
def test_every_known_layer_stacked_is_refused_with_its_configured_shape(
        make: Callable[[nnx.Rngs], Any], path: str, expected: tuple[int, ...]) -> None:
    """The shape each layer's configuration implies is compared with its Variable's, whatever the layer."""
    with pytest.raises(errors.UnsupportedModelError) as info:
        pp.tree(_stacked(make, 2))
    assert (info.value.path, info.value.expected, info.value.got) == (path, expected, (2, *expected))


def test_a_vmapped_block_inside_a_bigger_model_is_refused_at_its_path() -> None:
    """A model holding a vmap-built stack of blocks next to ordinary layers: the stack is named by its path."""

    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.embed = nnx.Embed(10, 4, rngs=rngs)
            self.blocks = _stacked(Block, 5)
            self.head = nnx.Linear(4, 2, rngs=rngs)

    with pytest.raises(errors.UnsupportedModelError) as info:
        pp.tree(Model(nnx.Rngs(0)))
    assert (info.value.path, info.value.expected, info.value.got) == ("blocks.linear.weight", (4, 4), (5, 4, 4))
    assert "5 layers" in str(info.value)


def test_a_scan_built_stack_is_refused() -> None:
    """``nnx.scan`` with the module as a scanned output builds the same stack as ``nnx.vmap``."""

    @nnx.split_rngs(splits=3)
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def build(carry: None, rngs: nnx.Rngs) -> tuple[None, Block]:
        return carry, Block(rngs)

    _, blocks = build(None, nnx.Rngs(0))
    with pytest.raises(errors.UnsupportedModelError) as info:
        pp.tree(blocks)
    assert (info.value.path, info.value.got) == ("linear.weight", (3, 4, 4))


def test_a_stack_made_after_the_tree_is_refused_at_the_first_fact() -> None:
    """A tree built before a stacked layer was put in refuses it when it is read, not with a bare ValueError."""

    class Model(nnx.Module):
        def __init__(self) -> None:
            self.layers = nnx.List([nnx.Linear(8, 8, rngs=nnx.Rngs(0))])

    model = Model()
    tree = pp.tree(model)
    model.layers[0] = _stacked(lambda rngs: nnx.Linear(8, 8, rngs=rngs), 3)
    with pytest.raises(errors.UnsupportedModelError) as info:
        tree.state()
    assert info.value.path == "layers.0.weight"


def test_the_unstacked_layers_the_refusal_suggests_and_a_resized_table_are_accepted() -> None:
    """Layers in an ``nnx.List`` read as before; a table resized in place (same axes, other sizes) is no stack."""
    layers = nnx.List([nnx.Linear(8, 8, rngs=nnx.Rngs(i)) for i in range(3)])
    tree = pp.tree(layers)
    assert tree.count() == 3 * (64 + 8) and tree["2.weight"].shape == (8, 8)
    embed = nnx.Embed(11, 6, rngs=nnx.Rngs(0))
    embed.embedding = nnx.Param(jnp.zeros((13, 6)))
    assert pp.tree(embed)["weight"].shape == (13, 6)


# ---- nnx.Dict keys with "." --------------------------------------------------------------------------------


def test_dict_keys_with_a_dot_are_refused_rather_than_giving_one_path_twice() -> None:
    """``{"a.b": ..., "a": {"b": ...}}`` would list ``heads.a.b.weight`` twice, and state() keep one of them."""

    class M(nnx.Module):
        def __init__(self) -> None:
            self.heads = nnx.Dict({"a.b": nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
                                   "a": nnx.Dict({"b": nnx.Linear(2, 4, rngs=nnx.Rngs(1))})})

    with pytest.raises(errors.UnsupportedModelError) as info:
        pp.tree(M())
    assert (info.value.path, info.value.got) == ("heads", "a.b")
    assert "Dict" in str(info.value) and "without" in str(info.value)


def test_a_dotted_dict_key_is_refused_even_without_a_collision() -> None:
    """``heads.cls.token.weight`` could not be indexed: ``tree["heads.cls"]`` finds no block."""

    class M(nnx.Module):
        def __init__(self) -> None:
            self.heads = nnx.Dict({"cls.token": nnx.Linear(2, 3, rngs=nnx.Rngs(0))})

    with pytest.raises(errors.UnsupportedModelError) as info:
        pp.tree(M())
    assert (info.value.path, info.value.got) == ("heads", "cls.token")


def test_dict_keys_without_a_dot_still_name_paths() -> None:
    """Ordinary keys are path segments, as before."""
    heads = nnx.Dict({"cls_token": nnx.Linear(2, 3, rngs=nnx.Rngs(0))})
    assert pp.tree(heads).paths() == ["cls_token.weight", "cls_token.bias"]


# ---- record_gradients ----------------------------------------------------------------------------------------


class Model(nnx.Module):
    def __init__(self) -> None:
        self.enc = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
        self.head = nnx.Linear(4, 1, rngs=nnx.Rngs(1))

    def __call__(self, x: Any) -> Any:
        return self.head(self.enc(x))


def _loss(model: Model, x: Any) -> Any:
    return (model(x) ** 2).sum()


def test_gradients_of_a_submodule_given_for_the_root_are_refused_and_nothing_is_stored() -> None:
    """``nnx.grad(...)(m.head)`` names ``kernel`` and ``bias``, which ``m`` does not have: refused, all or
    nothing, the gradients recorded before stay."""
    m, x = Model(), jnp.ones((2, 4))
    tree = pp.tree(m)
    polyparam_flax.record_gradients(m, nnx.grad(_loss)(m, x))
    before = tree.grad_norm()
    assert before > 0
    head_grads = nnx.grad(lambda h: (h(m.enc(x)) ** 2).sum())(m.head)
    with pytest.raises(errors.ParameterNotFoundError) as info:
        polyparam_flax.record_gradients(m, head_grads)
    assert info.value.path == "bias" and "nnx.grad" in str(info.value)
    assert tree.grad_norm() == before


def test_a_gradient_of_the_wrong_shape_is_refused() -> None:
    """The gradients of another model with the same paths but other shapes are no gradients of this one."""
    m, other, x = Model(), Model(), jnp.ones((2, 4))
    other.enc = nnx.Linear(4, 3, rngs=nnx.Rngs(2))
    other.head = nnx.Linear(3, 1, rngs=nnx.Rngs(3))
    with pytest.raises(errors.ShapeMismatchError) as info:
        polyparam_flax.record_gradients(m, nnx.grad(_loss)(other, x))
    assert (info.value.path, info.value.expected, info.value.got) == ("enc.bias", (4,), (3,))
    assert pp.tree(m).grad_norm() == 0.0


def test_a_pure_dict_of_gradients_is_refused_with_a_typed_error() -> None:
    """``nnx.to_pure_dict(grads)`` is not the ``nnx.State`` that ``nnx.grad`` returns."""
    m, x = Model(), jnp.ones((2, 4))
    with pytest.raises(errors.InvalidArgumentError) as info:
        polyparam_flax.record_gradients(m, nnx.to_pure_dict(nnx.grad(_loss)(m, x)))
    assert (info.value.argument, info.value.got) == ("grads", "dict")


def test_gradients_of_the_trainable_params_only_are_recorded() -> None:
    """A frozen Param has no gradient in ``nnx.grad``'s State: the others are recorded, it keeps none."""
    m, x = Model(), jnp.ones((2, 4))
    tree = pp.tree(m)
    tree["enc.weight"].trainable = False
    grads = nnx.grad(_loss, argnums=nnx.DiffState(0, polyparam_flax.trainable))(m, x)
    polyparam_flax.record_gradients(m, grads)
    assert tree["enc.weight"].grad() is None
    np.testing.assert_allclose(tree["head.bias"].grad(), np.asarray(grads["head"]["bias"][...]))


def test_a_full_gradient_state_records_nothing_for_a_frozen_param() -> None:
    """``nnx.grad(loss)(model)`` differentiates every Param, frozen ones too: their gradients are not recorded (as
    torch stores none for ``requires_grad=False``), so ``grad_norm`` and ``clip_grads`` count what trains, as the
    optimizer built with ``wrt=polyparam_flax.trainable`` sees it."""
    m, x = Model(), jnp.ones((2, 4))
    tree = pp.tree(m)
    tree["enc.weight"].trainable = False
    grads = nnx.grad(_loss)(m, x)   # every Param's gradient, the frozen one's too
    polyparam_flax.record_gradients(m, grads)
    assert tree["enc.weight"].grad() is None
    trained = [np.asarray(grads["enc"]["bias"][...]), np.asarray(grads["head"]["kernel"][...]),
               np.asarray(grads["head"]["bias"][...])]
    expected = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in trained)))
    assert tree.grad_norm() == pytest.approx(expected, rel=1e-6)


class Unlisted(nnx.Module):
    """State ``nnx.state`` saves that no parameter can hold: a Variable holding a dict, an array held as data."""

    def __init__(self, kind: str) -> None:
        self.w = nnx.Param(jnp.ones(2))
        if kind == "dict":
            self.table = nnx.Param({"a": jnp.ones(2)})
        elif kind == "data":
            self.shift = nnx.data(jnp.ones(2))
        elif kind == "data number":
            self.scale = nnx.data(2.0)
        elif kind == "huge int":
            self.count = nnx.Variable(2**70)
        elif kind == "pytree":
            self.metric = nnx.metrics.Average()   # an nnx.Pytree, not a Module, holding Variables
        else:
            self.items = nnx.data([jnp.ones(2)])


class UnlistedPlain(nnx.Module, pytree=False):
    """A module NNX does not treat as a pytree: its array attributes are state without nnx.data."""

    def __init__(self) -> None:
        self.w = nnx.Param(jnp.ones(2))
        self.steps = 3   # a number is not state here
        self.table = jnp.ones(2)


def test_an_array_attribute_of_a_pytree_false_module_is_refused_not_dropped() -> None:
    model = UnlistedPlain()
    assert sorted(".".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(model))) == ["table", "w"]
    with pytest.raises(errors.UnsupportedModelError, match="nnx.Variable") as info:
        pp.tree(model)
    assert info.value.path == "table"


@pytest.mark.parametrize(("kind", "path"), [("dict", "table"), ("data", "shift"), ("data number", "scale"),
                                            ("data list", "items.0"), ("pytree", "metric"),
                                            ("huge int", "count")])
def test_state_nnx_saves_but_no_parameter_can_hold_is_refused_not_dropped(kind: str, path: str) -> None:
    model = Unlisted(kind)
    assert len(nnx.to_flat_state(nnx.state(model))) >= 2   # NNX saves it
    with pytest.raises(errors.UnsupportedModelError, match="nnx.Variable|one array per Variable|nnx.Module") as info:
        pp.tree(model)
    assert info.value.path == path


def test_an_optimizer_given_for_the_model_is_refused_by_name() -> None:
    import optax

    model = Model()
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    with pytest.raises(errors.UnsupportedModelError, match="not a Module") as info:
        pp.tree(optimizer)
    assert info.value.got == "Optimizer"


def test_a_parameter_taken_before_its_layer_was_replaced_says_so() -> None:
    """A handle keeps its place and layout: a Linear replaced by an Embed (no ``kernel``) or a Conv (a kernel of
    four axes) is refused with a typed error naming the path, not read through the Linear's layout."""
    for replacement in (nnx.Embed(4, 4, rngs=nnx.Rngs(1)), nnx.Conv(4, 4, (2, 2), rngs=nnx.Rngs(1))):
        model = Model()
        weight = pp.tree(model)["enc.weight"]
        model.enc = replacement
        with pytest.raises(errors.ParameterNotFoundError, match="pp.tree") as info:
            weight.numpy()
        assert info.value.path == "enc.weight"
        assert pp.tree(model)["enc.weight"].shape in {(4, 4), (4, 4, 2, 2)}   # a new tree reads the new layer


def test_a_variable_or_module_an_nnx_sequential_holds_beside_its_layers_is_refused_by_name() -> None:
    """nnx.state saves a Param set on the Sequential itself; the walk read only its layers, so every save, load
    and transfer left it out silently."""
    for extra in (lambda r: nnx.Param(jnp.ones(3)), lambda r: nnx.Linear(2, 2, rngs=r)):
        rngs = nnx.Rngs(0)
        seq = nnx.Sequential(nnx.Linear(2, 2, rngs=rngs), nnx.relu)
        seq.extra = extra(rngs)
        with pytest.raises(errors.UnsupportedModelError, match="beside its layers") as info:
            pp.tree(seq)
        assert info.value.path == "extra"
    plain = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.relu)
    assert list(pp.tree(plain).state()) == ["0.weight", "0.bias"]
