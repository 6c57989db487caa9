"""FlaxParameter: one NNX Variable, read and written in canonical layout."""

from __future__ import annotations

import copy
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from polyparam import errors
from polyparam.backend import Parameter, Shape, State
from polyparam_flax import NAME
from polyparam_flax._convert import device_name, is_abstract, place, to_numpy
from polyparam_flax._flatten import Doubt, flatten_doubt, one_look
from polyparam_flax._gradients import lookup, store
from polyparam_flax._layout import (
    Leaf,
    Step,
    children_of,
    is_a,
    is_block,
    native_path,
    number_dtype,
    number_type,
    put,
    resolve,
    shape_of,
)
from polyparam_flax._sharding import Box, assemble, blocks, is_distributed, placement_text
from polyparam_flax._training import is_trainable, set_trainable

__all__ = ["FlaxParameter"]


class FlaxParameter(Parameter):
    """One Variable of an NNX module, found live: the root module and the steps that lead to it."""

    backend = NAME

    def __init__(self, path: str, leaf: Leaf, *, root: Any, steps: tuple[Step, ...], variable: Any = None) -> None:
        """``variable``: the Variable ``steps`` lead to now, where the caller found it on its way (else found)."""
        variable = resolve(root, steps) if variable is None else variable
        super().__init__(path, role=leaf.role, axes=leaf.axes, trainable=is_trainable(variable),
                         groups=leaf.groups)
        self._leaf, self._root, self._steps = leaf, root, steps

    @property
    def _var(self) -> Any:
        try:
            var = resolve(self._root, self._steps)   # looked up on every call: a tie made later is seen
        except (AttributeError, KeyError, IndexError) as e:
            raise self._gone("holds no such Variable now") from e
        if not is_a(var, nnx.Variable):
            raise self._gone(f"holds a {type(var).__name__} now")
        return var

    def _gone(self, what: str) -> errors.ParameterNotFoundError:
        """The refusal of a parameter whose place in the model changed since its tree was built (a layer
        replaced by another type)."""
        msg = (f"Cannot use parameter {self.path!r}: expected the {self._leaf.name!r} Variable found at "
               f"{native_path(self._steps)!r} when the tree was built, got a model whose place {what} (a layer was "
               "replaced since). Build the tree again: pp.tree(model).")
        return errors.ParameterNotFoundError(msg, path=self.path, expected=native_path(self._steps), got=what)

    def _native_shape(self, var: Any) -> tuple[int, ...]:
        """``var``'s shape, refused where the leaf's layout cannot read it (a layer replaced by another type)."""
        shape = shape_of(var)
        perm = self._leaf.layout.perm
        if perm is not None and len(perm) != len(shape):
            raise self._gone(f"holds a Variable of {len(shape)} axes, where this parameter's layout reads {len(perm)}")
        return shape

    def _value(self) -> Any:
        return self._var.get_raw_value()

    # ---- facts ------------------------------------------------------------------

    def _shape(self) -> Shape:
        return self._leaf.layout.shape(self._native_shape(self._var))

    def _dtype(self) -> Any:
        value = self._value()
        number = number_type(value)
        return number_dtype(number) if number is not None else np.dtype(value.dtype)

    def _device(self) -> str:
        value = self._value()
        return "cpu" if is_abstract(value) else device_name(value)

    def _native(self) -> Any:
        return self._var

    def _native_name(self) -> str:
        return native_path(self._steps)

    def _state(self) -> State:
        return "uninitialized" if is_abstract(self._value()) else "initialized"

    def _trainable(self) -> bool:
        return is_trainable(self._var)

    def _kind(self) -> str:
        return "parameter" if is_a(self._var, nnx.Param) else "buffer"

    def _placement(self) -> str | None:
        return placement_text(self._value(), self._leaf.layout)

    def _layout_doubt(self) -> str | None:
        """A ``Linear`` (or a normalization) whose features may be a feature map flattened in ``__call__``: NNX
        flattens channels last, ``(H, W, C)``, the canonical order is ``(C, H, W)``, and NNX records neither the
        reshape nor the map's size, so the order can be neither converted nor ruled out (see ``_flatten``)."""
        return self._doubt_of(self._why_in_doubt())

    @staticmethod
    def _layout_doubts_many(params: list[Parameter], /) -> list[str | None]:
        """As :meth:`_layout_doubt` of each, with the rule asked once per module (a normalization's four
        vectors, a Linear's bias beside its kernel: the rule walks the module's neighbours)."""
        found: dict[tuple[int, tuple[Step, ...], bool], Doubt | None] = {}
        out: list[str | None] = []
        with one_look():   # and each module's children read once
            for p in params:
                if not isinstance(p, FlaxParameter):
                    out.extend(Parameter._layout_doubts_many([p]))
                    continue
                key = (id(p._root), p._steps[:-1], p._steps[-1:] == (("attr", "kernel"),))
                if key not in found:
                    found[key] = p._why_in_doubt()
                out.append(p._doubt_of(found[key]))
        return out

    def _why_in_doubt(self) -> Doubt | None:
        steps = self._steps
        return flatten_doubt(self._root, steps) if steps and steps[-1][0] == "attr" else None

    def _doubt_of(self, doubt: Doubt | None) -> str | None:
        if doubt is None:
            return None
        why = doubt.why
        fix = ("Pool the map to one value per channel before the Linear, or reorder the values yourself and write "
               "them with tree.load_state." if doubt.flattened else
               "Reorder the values yourself (the map's (C, H, W) order to (H, W, C)) and write them with "
               "tree.load_state.")
        return (f"The features of {type(resolve(self._root, self._steps[:-1])).__name__} variable "
                f"{self.native_name!r} may be a flattened feature map: {why}. NNX flattens channels last, in (H, W, C) "
                "order, where the canonical (PyTorch) order is (C, H, W), and an NNX model's structure does not show "
                f"the reshape. {fix}")

    # ---- values -----------------------------------------------------------------

    def _read(self) -> np.ndarray:
        var = self._var
        self._native_shape(var)
        value = var.get_raw_value()
        number = number_type(value)
        if number is not None:
            return np.asarray(value, dtype=number_dtype(number))
        return self._leaf.layout.to_canonical(to_numpy(value))

    def _write(self, array: np.ndarray, /) -> None:
        var = self._var   # JAX arrays are immutable: the Variable gets a new one
        old = var.get_raw_value()
        number = number_type(old)
        if number is not None:   # a Python number stays one
            var.set_value(number(array.item()))
        else:
            _assign(var, place(self._leaf.layout.to_native(array), old), old)

    def _keep_storage(self) -> Callable[[], None] | None:
        """The array the Variable holds now, as the undo record of a whole write: JAX arrays are immutable and a
        write gives the Variable a new one, so no one can change the old one (no copy, as ``nnx.update`` makes
        none)."""
        var = self._var
        old = var.get_raw_value()
        if is_abstract(old):
            return None

        def put_back() -> None:
            var.set_raw_value(old)

        return put_back

    def _local_blocks(self) -> list[Box] | None:
        """The canonical boxes of the distinct blocks the devices hold (a sharded Variable), else ``None``.

        What a per-block ``initialize`` draws with ``Initializer.fill_slice``, one block at a
        time, before :meth:`_write_blocks` puts each on its devices.
        """
        value = self._value()
        return blocks(value, self._leaf.layout) if not is_abstract(value) and is_distributed(value) else None

    def _write_blocks(self, values: list[tuple[Box, np.ndarray]], /) -> None:
        """Set the Variable to the array whose block at each box of :meth:`_local_blocks` is the value paired with
        it (a replicated block is written to each device that holds it)."""
        var = self._var

        def block(box: Box) -> np.ndarray:
            return next(value for known, value in values if known == box)

        var.set_value(assemble(var.get_raw_value(), self._leaf.layout, block))

    def _declared_initializer(self) -> Any:
        """The initializer the layer was built with for this Variable (``kernel_init``, ``bias_init``,
        ``embedding_init``, ``scale_init``), or ``None``.

        A ``jax.nn.initializers`` function is returned as it is (the core draws the built-in with its
        distribution); any other (a function of your own) runs in JAX on the native shape, with a key
        drawn from polyparam's seeded generator, and comes back in canonical layout.
        """
        kind, attr = self._steps[-1]
        owner = resolve(self._root, self._steps[:-1])
        init = getattr(owner, f"{attr}_init", None) if kind == "attr" and isinstance(owner, nnx.Module) else None
        if init is None or not callable(init):
            return None
        if str(getattr(init, "__module__", "")).startswith("jax"):
            return init
        return self._drawn_by_jax(init)

    def _drawn_by_jax(self, init: Any) -> Any:
        """``fill(shape, dtype, rng)``: ``init(key, native_shape, dtype)`` run in JAX, its value in canonical layout."""
        native_shape = shape_of(self._var)

        def fill(shape: tuple[int, ...], dtype: Any, rng: np.random.Generator) -> np.ndarray:
            key = jax.random.key(int(rng.integers(1 << 31)))
            value = np.asarray(init(key, native_shape, jnp.dtype(dtype)))
            return np.array(self._leaf.layout.to_canonical(value), dtype=dtype)

        return fill

    def _from_native_layout(self, array: np.ndarray, /) -> np.ndarray:
        """A value as Flax stores it (an orbax checkpoint of ``nnx.state``) in canonical layout."""
        return self._leaf.layout.to_canonical(np.asarray(array))

    def _grad(self) -> np.ndarray | None:
        grad = lookup(self._var)
        return None if grad is None else self._leaf.layout.to_canonical(grad)

    def _write_grad(self, array: np.ndarray | None, /) -> None:
        native = None if array is None else np.array(self._leaf.layout.to_native(array), copy=True)
        store(self._root, self._var, native)

    def _identity(self) -> Any:
        return id(self._var)   # one Variable object, one storage

    def _set_trainable(self, value: bool, /) -> None:
        set_trainable(self._var, value)   # metadata of the one Variable: ties follow; polyparam_flax.trainable reads it

    def _cast(self, dtype: np.dtype, /) -> None:
        var = self._var
        value = var.get_raw_value()
        cast = np.dtype(jax.dtypes.canonicalize_dtype(dtype))   # float64 is float32 without jax_enable_x64
        if cast != dtype:
            msg = (f"Cannot cast parameter {self.path!r} to {dtype.name}: expected a dtype JAX holds, got "
                   f"{dtype.name}, which JAX stores as {cast.name} (64-bit types need jax_enable_x64). Enable it with "
                   "jax.config.update('jax_enable_x64', True) before building the model, or cast to a 32/16-bit type.")
            raise errors.UnsupportedModelError(msg, path=self.path, expected="a dtype JAX holds", got=dtype.name)
        if is_abstract(value):
            var.set_raw_value(value.update(dtype=dtype))
        else:   # a Python number becomes a JAX array of the dtype asked for
            var.set_value(jnp.asarray(value, dtype=dtype) if number_type(value) is not None else value.astype(dtype))

    # ---- ties -------------------------------------------------------------------

    def _share(self, anchor: Parameter, /) -> None:
        if not isinstance(anchor, FlaxParameter) or self._leaf.layout != anchor._leaf.layout:
            msg = (f"Cannot tie {self.path!r} to {anchor.path!r}: expected Variables stored in the same layout, got "
                   "layouts that differ (a Linear kernel (in, out) and an Embed table (n, d)). Tie parameters of "
                   "the same layer type.")
            raise errors.TieError(msg, path=self.path, expected="the same layout", got="another layout")
        self._detach()
        put(self._root, self._steps, anchor.native)   # this place now holds the anchor's Variable

    def _tie_refusal(self, anchor: Parameter, /) -> str | None:
        if isinstance(anchor, FlaxParameter) and self._leaf.layout != anchor._leaf.layout:
            return (f"{self.path!r} and {anchor.path!r} are stored in different layouts, so one Variable cannot "
                    "serve both")
        return None

    def _unshare(self) -> None:
        self._detach()
        old = self._var
        value = old.get_raw_value()
        kept = is_abstract(value) or number_type(value) is not None   # nothing to copy
        own = old.replace(value if kept else jnp.array(value, copy=True))
        put(self._root, self._steps, own)

    def _detach(self) -> None:
        """Make every module and container on the way to this Variable appear once in the model, copying the
        shared ones (shallow: their Variables stay the same objects), so a change here reaches only this place."""
        steps = self._steps
        counts = _occurrences(self._root)
        for i in range(len(steps) - 1):
            node = resolve(self._root, steps[:i + 1])
            if counts.get(id(node), 0) > 1:
                put(self._root, steps[:i + 1], _shallow_copy(node))
                counts = _occurrences(self._root)


def _occurrences(root: Any) -> dict[int, int]:
    """How many places of the model hold each module and container (by ``id``)."""
    counts: dict[int, int] = {}

    def walk(node: Any) -> None:
        counts[id(node)] = counts.get(id(node), 0) + 1
        if counts[id(node)] > 1:
            return   # its insides are counted once: they are reached through it
        for _, _, child in children_of(node):
            walk(child)

    walk(root)
    return counts


def _shallow_copy(node: Any) -> Any:
    """A new module or container holding the same children and Variables as ``node``."""
    if isinstance(node, (list, tuple, dict)):
        return type(node)(node.items() if isinstance(node, dict) else node)
    if not is_block(node):
        return node
    clone = copy.copy(node)
    for name in ("_pytree__state", "_object__state"):
        if name in vars(node):
            object.__setattr__(clone, name, copy.copy(vars(node)[name]))
    if isinstance(node, nnx.List):
        clone = type(node)(list(node))
    elif isinstance(node, nnx.Dict):
        clone = type(node)(dict(node.items()))
    return clone


_SET_VALUE = nnx.Variable.set_value


def _assign(var: Any, value: Any, old: Any) -> None:
    """``var.set_value(value)``. Where that does nothing more than take the new array (``set_value`` not
    overridden, no ``on_set_value`` hook, a plain array held, as ``old`` is, not an array reference) the array is
    set as NNX's own ``nnx.update`` sets it: ``set_value``'s tree copy, hook look-up and array-reference check
    cost about 8 us a Variable."""
    if (type(var).set_value is _SET_VALUE and type(old) is type(value)
            and "on_set_value" not in var._var_metadata):
        var.set_raw_value(value)
    else:
        var.set_value(value)
