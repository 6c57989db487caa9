"""KerasParameter: one slot of a Keras layer, read and written in canonical layout."""

from __future__ import annotations

import math
import sys
import warnings
from functools import cached_property
from typing import Any, Callable, cast

import keras
import numpy as np

import polyparam as pp
from polyparam import errors, roles
from polyparam.backend import Parameter, Shape, State, byte_bounds, parallel_copy
from polyparam_keras import NAME
from polyparam_keras._convert import (
    assign_native,
    device_type,
    eager,
    engine,
    owned,
    raw,
    read_variable,
    stored_dtype,
    sync_jax_state,
    to_numpy,
    to_numpy_view,
    torch_numpy,
    write_variable,
)
from polyparam_keras._flatten import (
    FlatOrder,
    flatten_order,
    from_canonical_order,
    norm_axes_doubt,
    to_canonical_order,
    unflatten_doubt,
)
from polyparam_keras._layout import (
    NORMALIZATION_STATS,
    Slot,
    axes,
    canonical_shape,
    declared_initializer,
    einsum_axes,
    groups,
    keras_fans,
    perm,
    to_canonical,
    to_native,
    unbuilt_shape,
)
from polyparam_keras._native_keys import h5_keys
from polyparam_keras._ties import clone_into_sequential, hook_build, refresh, swap_variable
from polyparam_keras._variables import FOLLOWERS_ATTR, GRAD_ATTR, ORIGINAL_ATTR, PENDING_ATTR, TIES_ATTR, find_variable

__all__ = ["KerasParameter"]

#: Values from this size up are written through a staging buffer TensorFlow adopts (one transposing
#: copy on every core); smaller ones are assigned directly: one TensorFlow call instead of two.
STAGING_BYTES = 1 << 20

# variables whose first native axis is the Dense layer's input (a flattened map's features, maybe)
_FLAT_INPUT = ("kernel", "lora_kernel_a")


class KerasParameter(Parameter):
    """One slot of a Keras layer, found live: the layer through ``locate``, the variable by name."""

    backend = NAME

    def __init__(self, path: str, slot: Slot, *, locate: Callable[[], Any], root: Any,
                 site: tuple[Callable[[], Any], int] | None, layer: Any = None) -> None:
        # Parameter.__init__ is not called on purpose: it stores ``trainable``, which here is
        # read live from Keras (a property); role, axes and groups are set as it sets them.
        # ``layer``: what ``locate()`` gives now, where the caller has it (a tree walk); it is not kept
        layer = locate() if layer is None else layer
        self._path = path
        self.groups = groups(layer, slot)
        self._slot = slot
        self._locate = locate
        self._root = root
        self._site = site      # (parent locator, position in parent.layers) for Sequential children

    @property
    def _layer(self) -> Any:
        return self._locate()

    # ---- layouts ----------------------------------------------------------------

    def _flat_order(self) -> FlatOrder | str | None:
        """For a Dense kernel (or LoRA A) whose input is a flattened feature map: the map's order,
        or why it cannot be known; ``None`` for every other parameter."""
        cached = self.__dict__.get("_flat_cache", False)
        if cached is not False:
            return cast("FlatOrder | str | None", cached)
        layer = self._layer
        slot = self._slot
        if slot.layout != "dense" or slot.var not in _FLAT_INPUT or not isinstance(layer, keras.layers.Dense):
            self.__dict__["_flat_cache"] = None
            return None
        v = self._variable()
        if v is None:
            return None          # not built: the graph may not be there yet, and nothing is read
        before = None
        if self._site is not None:
            parent_locate, position = self._site
            before = list(parent_locate().layers[:position])
        order = flatten_order(layer, self._root, before)
        if isinstance(order, FlatOrder) and math.prod(order.dims) != int(v.shape[0]):
            order = (f"the flattened map {order.dims} before it does not match its input "
                     f"size {int(v.shape[0])}.")
        if layer._inbound_nodes:     # the graph is complete; without it the answer may change (build in progress)
            self.__dict__["_flat_cache"] = order
        return order

    def _canonical(self, native: np.ndarray) -> np.ndarray:
        """A native-layout array of this variable in canonical layout."""
        out = to_canonical(self._slot.layout, native)
        order = self._flat_order()
        return to_canonical_order(order, out) if isinstance(order, FlatOrder) else out

    def _native_layout(self, array: np.ndarray, native_shape: tuple[int, ...]) -> np.ndarray:
        """The inverse of :meth:`_canonical`."""
        order = self._flat_order()
        if isinstance(order, FlatOrder):
            array = from_canonical_order(order, array)
        return to_native(self._slot.layout, array, native_shape)

    def _native_aliases(self) -> tuple[str, ...]:
        """Its keys in a ``.weights.h5`` that ``save_weights`` of the root model writes (``layers.dense.vars.0``).

        None for a value Keras does not store as it is: a LoRA layer's kernel (saved merged with
        its factors) and the factors (not saved); see :mod:`polyparam_keras._native_keys`.
        """
        v = self._variable()
        return () if v is None else h5_keys(self._root, self._layer, v)

    def _from_native_layout(self, array: np.ndarray, /) -> np.ndarray:
        """A value as Keras stores it (its variable's layout, as ``.weights.h5`` holds it) in canonical layout.

        The same conversion as a read, so ``p._from_native_layout(<the variable's value>)``
        equals ``p.numpy()``. A value of another shape comes back permuted only (never
        reshaped), so the core reports the mismatch against the canonical shape.
        """
        v = self._variable()
        if v is None:
            msg = (f"Cannot load parameter {self.path!r} from a file in Keras's layout: expected a built layer, got "
                   f"layer {self._layer.name!r} not built yet, so its storage layout is unknown. Call the model on "
                   "one batch (or build it), then load.")
            raise errors.DeferredInitializationError(msg, path=self.path, expected="built", got="deferred")
        value = np.asarray(array)
        native_shape = tuple(int(d) for d in v.shape)
        if value.shape == native_shape:
            return self._canonical(value)
        order = perm(self._slot.layout, value.ndim)
        if order is not None and (value.ndim != len(native_shape) or self._slot.layout == "depthwise"):
            order = None         # only a plain transpose maps another shape to a surely different shape
        out = value if order is None else value.transpose(order)
        if out.shape == tuple(self.shape):
            msg = (f"Cannot load parameter {self.path!r} from a file in Keras's layout: expected Keras shape "
                   f"{native_shape}, got {value.shape}, which only reshapes into the canonical shape {out.shape}. "
                   "Load a file of this model's architecture.")
            raise errors.ShapeMismatchError(msg, path=self.path, expected=native_shape, got=value.shape)
        return out

    def _layout_doubt(self) -> str | None:
        order = self._flat_order()
        if isinstance(order, str):
            return f"The input of Dense kernel {self.native_name!r} may be a flattened feature map: {order}"
        layer = self._layer
        if isinstance(layer, keras.layers.Dense) and self._slot.var in ("kernel", "bias"):
            why = unflatten_doubt(layer, self._root)
            if why is not None:
                return f"The outputs of Dense {self._slot.var} {self.native_name!r} may be a feature map: {why}."
        if isinstance(layer, keras.layers.LayerNormalization) and self._slot.var in ("gamma", "beta"):
            v = self._variable()
            why = norm_axes_doubt(layer, self._root) if v is not None and len(v.shape) >= 2 else None
            if why is not None:
                return f"The values of {self._slot.var} {self.native_name!r} may be in another order: {why}."
        return None

    def _declared(self, ndim: int | None = None) -> tuple[str | None, tuple[str, ...] | None]:
        """What ``pp.roles`` declares for this variable (by its Keras name, else by the path's leaf)."""
        layer = self._layer
        try:
            found = roles.lookup(layer, self._slot.var, ndim=ndim)
            if found == (None, None) and self._slot.leaf != self._slot.var:
                found = roles.lookup(layer, self._slot.leaf, ndim=ndim)
        except errors.InvalidArgumentError as exc:
            msg = f"Cannot read the axes of parameter {self.path!r}: {exc}"
            raise errors.InvalidArgumentError(msg, path=self.path, expected=exc.expected, got=exc.got) from None
        return found

    @cached_property
    def role(self) -> str:  # type: ignore[override]
        """Declared with ``pp.roles``, else the slot's; an integer (quantized) variable is ``"other"``.

        A float initializer must never be cast into an int8 kernel: with role ``"other"`` and
        kind ``"buffer"`` a tree-wide initialize leaves it as it is.
        """
        declared = self._declared()[0]
        if declared is not None:
            return declared
        v = self._variable()
        if v is not None and np.dtype(stored_dtype(v)).kind in "biu":
            return "other"
        return self._slot.role

    @property
    def _axes(self) -> tuple[str, ...] | None:  # type: ignore[override]
        """Declared with ``pp.roles``, else the slot's, else those of its layout."""
        ndim = len(self._shape())
        declared = self._declared(ndim)[1]
        if declared is not None:
            return declared
        return self._slot.axis_roles if self._slot.axis_roles is not None else axes(self._slot.layout, ndim)

    def _trainable(self) -> bool:
        """Whether Keras trains it: it is in the root's ``trainable_weights``.

        That is the variable's own ``trainable`` (which ``layer.trainable = ...`` sets on the
        layer's variables and its sublayers') while the root layer or model is trainable.
        Before the build: not for statistics, nor in a frozen layer.
        """
        v = self._variable()
        if v is None:
            own = self._slot.role not in ("running_mean", "running_var") and bool(self._layer.trainable)
        else:
            own = bool(v.trainable)
        return own and bool(self._layer.trainable) and bool(getattr(self._root, "trainable", True))

    def _set_trainable(self, value: bool, /) -> None:
        """``Variable.trainable``; a compiled model's step functions are dropped so they see it.

        Unfreezing a variable whose layer (or an enclosing model) is frozen is refused:
        Keras would still leave it out of ``trainable_weights``.
        """
        KerasParameter._set_trainable_many([self], value)

    @staticmethod
    def _set_trainable_many(params: list[Parameter], value: bool, /) -> None:
        """Each variable's ``trainable``, then each model's step functions dropped once (not once per variable:
        that walk of every layer made freezing n variables O(n^2))."""
        roots: dict[int, Any] = {}
        flipped: list[tuple[KerasParameter, Any]] = []
        try:
            for p in cast("list[KerasParameter]", params):
                if bool(p._trainable()) != value:
                    flipped.append((p, p._flip_trainable(value)))
                    roots.setdefault(id(p._root), p._root)
        finally:
            for root in roots.values():
                refresh(root)
        if not value:
            for root in roots.values():
                _warn_built_optimizer(root, f"{len(flipped)} parameter(s) frozen")
            return
        for root in roots.values():
            optimizer = getattr(root, "optimizer", None)
            known = getattr(optimizer, "_trainable_variables", None)
            if not getattr(optimizer, "built", False) or known is None:
                continue
            known_ids = {id(x) for x in known}
            unknown = [p.path for p, v in flipped if p._root is root and id(v) not in known_ids]
            if unknown:   # one warning per model, not one per variable (a backbone has hundreds)
                shown = ", ".join(repr(q) for q in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3
                                                                   else "")
                warnings.warn(f"{len(unknown)} parameter(s) trainable again ({shown}), but the model's optimizer was "
                              "built for the variables trainable before and cannot update them: call "
                              "model.compile(...) again (a new optimizer) before the next fit.",
                              errors.PolyparamWarning, stacklevel=5)

    def _flip_trainable(self, value: bool) -> Any:
        """Set ``Variable.trainable`` (checked: a built layer, and no frozen layer above an unfrozen variable)."""
        v = self._variable()
        if v is None:
            msg = (f"Cannot set trainable of parameter {self.path!r}: expected a built layer, got an unbuilt one. "
                   "Build the model first, or set layer.trainable.")
            raise errors.DeferredInitializationError(msg, path=self.path, expected="a built layer", got="unbuilt")
        old = bool(v.trainable)
        v.trainable = value
        if value and not self._trainable():
            v.trainable = old
            msg = (f"Cannot make parameter {self.path!r} trainable: expected its layer and the enclosing models to "
                   "be trainable, got a frozen one. Unfreeze the layer (layer.trainable = True) or select it whole.")
            raise errors.UsageError(msg, path=self.path, expected="a trainable layer", got="a frozen layer")
        return v

    def _variable(self) -> Any | None:
        return self._variable_in(self._layer)

    def _variable_in(self, layer: Any) -> Any | None:
        """:meth:`_variable`, with ``layer`` (what ``self._layer`` gives now) given."""
        if not layer.built:
            return None
        # find_variable compares the name of each of the layer's variables (a property each): the
        # one found is kept while the layer holds the same lists of variables with it in its place
        trainable, other = layer._trainable_variables, layer._non_trainable_variables
        cached = self.__dict__.get("_variable_cache")
        if cached is not None:
            c_layer, c_trainable, c_other, count, index, v = cached
            if (c_layer is layer and c_trainable is trainable and c_other is other
                    and len(trainable) + len(other) == count):
                found = trainable[index] if index < len(trainable) else other[index - len(trainable)]
                if found is v:
                    return v
        v = find_variable(layer, self._slot.var)
        if v is not None:
            both = list(trainable) + list(other)
            self._remember_variable(layer, both, next(i for i, u in enumerate(both) if u is v))
        return v

    def _remember_variable(self, layer: Any, variables: list[Any], index: int) -> None:
        """Keep ``variables[index]`` (of ``layer``'s own variables, :func:`own_variables`) as this slot's variable
        while the layer holds the same lists with it in its place (:meth:`_variable_in` checks)."""
        self.__dict__["_variable_cache"] = (layer, layer._trainable_variables, layer._non_trainable_variables,
                                            len(variables), index, variables[index])

    # ---- hooks a backend implements ----------------------------------------------

    def _facts(self, v: Any) -> tuple[tuple[int, ...], tuple[int, ...], Any]:
        """``v``'s native shape, canonical shape and dtype, read from Keras once per variable object.

        A Keras variable keeps the shape and dtype it was made with (its assign refuses
        another shape), and a write reads them several times (checks, undo, write): each
        read goes through TensorFlow's ``TensorShape``, about 3 us.
        """
        cached = self.__dict__.get("_facts_cache")
        if cached is not None and cached[0] is v:
            return cached[1]
        native = tuple(int(d) for d in v.shape)
        facts = (native, canonical_shape(self._slot.layout, native), stored_dtype(v))
        self.__dict__["_facts_cache"] = (v, facts)
        return facts

    def _shape(self) -> Shape:
        v = self._variable()
        if v is None:
            return unbuilt_shape(self._layer, self._slot)
        return self._facts(v)[1]

    def _dtype(self) -> Any:
        v = self._variable()
        return self._facts(v)[2] if v is not None else self._layer.variable_dtype

    def _device(self) -> str:
        v = self._variable()
        if v is None or v._value is None:
            return "cpu"
        tensor = raw(v)
        if engine() == "torch":
            return str(tensor.device)
        device = str(getattr(tensor, "device", "") or "")
        kind, _, index = device.rpartition("device:")[2].partition(":")
        if kind.upper() == "GPU":
            return f"cuda:{index or 0}"
        return "cpu"

    def _native(self) -> Any:
        return self._variable()

    def _native_name(self) -> str:
        v = self._variable()
        return v.path if v is not None else f"{self._layer.name}/{self._slot.var}"

    def _kind(self) -> str:
        """Statistics (BatchNormalization's moving ones, Normalization's adapted ones) and variables
        created non-trainable are buffers; freezing a layer later does not change a kind."""
        layer = self._layer
        if self._slot.role in ("running_mean", "running_var") or (
                isinstance(layer, keras.layers.Normalization) and self._slot.var in NORMALIZATION_STATS):
            return "buffer"
        v = self._variable()
        if v is not None and any(v is u for u in layer._non_trainable_variables):
            return "buffer"     # created non-trainable (a quantized kernel, its scale): no optimizer updates it
        return "parameter"

    def _state(self) -> State:
        v = self._variable()
        if v is None:
            return "deferred"
        if v._value is None:
            sync_jax_state(self._root)   # fit on JAX holds the values outside the variables
            if v._value is None and getattr(v, "_initializer", None) is None:   # emptied, not deferred
                raise self._emptied()
        return "uninitialized" if v._value is None else "initialized"

    def _emptied(self) -> errors.UnsupportedModelError:
        """The refusal of a variable Keras on JAX emptied: the model that holds it runs ``fit`` (or ``evaluate``,
        ``predict``) and keeps the values outside its variables, and this tree's root is not that model."""
        msg = (f"Cannot use parameter {self.path!r}: expected a Keras variable holding its value, got one Keras on "
               "JAX emptied: while a model runs fit, evaluate or predict it holds the values outside its variables "
               "(and a failed fit leaves them so), and this tree is of a layer or model inside it. Make the tree "
               "from the model that runs (pp.tree(self.model) in a callback), or use this one after fit returns.")
        return errors.UnsupportedModelError(msg, path=self.path, expected="a variable holding its value",
                                            got="a variable emptied by a running fit")

    def _read(self) -> np.ndarray:
        return self._canonical(to_numpy(raw(self._variable())))

    def _read_view(self) -> np.ndarray:
        return self._canonical(to_numpy_view(raw(self._variable())))

    def _write(self, array: np.ndarray, /) -> None:
        v = self._variable()
        assert v is not None, "the core writes initialized or uninitialized parameters, never deferred ones"
        native_shape = self._facts(v)[0]
        if v._value is None:
            v._initialize(owned(self._native_layout(array, native_shape)))
            return
        staging = self._staging() if array.nbytes >= STAGING_BYTES else None
        if staging is not None:
            # TensorFlow: one (transposing) copy, on every core, into a buffer the variable then
            # takes; converting the array to a tensor would copy it once more
            view, adopt = staging
            parallel_copy(view, array)
            del view
            adopt()
            return
        assign_native(v, self._native_layout(array, native_shape))

    def _grad(self) -> np.ndarray | None:
        v = self._variable()
        grad = None if v is None else getattr(v, GRAD_ATTR, None)
        if grad is None:
            return None
        return self._canonical(grad)

    def _write_grad(self, array: np.ndarray | None, /) -> None:
        """Store a canonical-layout gradient where :func:`polyparam_keras.backward` keeps it (native layout)."""
        v = self._variable()
        if v is None:
            msg = (f"Cannot write the gradient of parameter {self.path!r}: expected a built layer, got layer "
                   f"{self._layer.name!r} not built yet. Run polyparam_keras.backward(model, x) first.")
            raise errors.DeferredInitializationError(msg, path=self.path, expected="built", got="deferred")
        if array is None:
            object.__setattr__(v, GRAD_ATTR, None)
            return
        native_shape = tuple(int(d) for d in v.shape)
        native = self._native_layout(np.asarray(array), native_shape)
        object.__setattr__(v, GRAD_ATTR, np.array(native, dtype=np.dtype(stored_dtype(v)), order="C", copy=True))

    def _cast(self, dtype: np.dtype, /) -> None:
        """Refused: a Keras variable keeps the dtype it was built with (its dtype policy)."""
        msg = (f"Cannot cast parameter {self.path!r} to {dtype.name}: expected a backend that changes a variable's "
               f"dtype in place, got keras, whose variables keep the dtype they were built with. Build the model "
               f"in {dtype.name} (dtype={dtype.name!r} on its layers, or keras.config.set_dtype_policy"
               f"({dtype.name!r}) before building it) and pp.transfer(model, new_model) the values.")
        raise errors.UnsupportedModelError(msg, path=self.path, expected="in-place casts", got=f"keras {dtype.name}")

    def _identity(self) -> Any:
        return self._identity_in(self._layer)

    def _identity_in(self, layer: Any) -> Any:
        """:meth:`_identity`, with ``layer`` (what ``self._layer`` gives now) given: a tree walk has it."""
        pending = layer.__dict__.get(TIES_ATTR, {}).get(self._slot.leaf)
        if pending is not None:
            return pending._identity()
        v = self._variable_in(layer)
        if v is not None:
            return ("variable", id(v))
        return ("slot", id(layer), self._slot.leaf)

    # ---- hooks overridden for speed ---------------------------------------------

    def _read_copy(self) -> np.ndarray:
        if engine() == "tensorflow":
            return self._read()     # a TensorFlow read is already a copy (.numpy() copies)
        return super()._read_copy()

    def _keep_storage(self) -> Callable[[], None] | None:
        """TensorFlow on the CPU: keep the tensor a read returns as the undo record, with no copy (JAX: the array,
        see :meth:`_keep_jax_array`).

        A read shares the variable's buffer, and TensorFlow's assign never writes a buffer
        someone else holds (it writes a new one, or takes the one given), so the read
        tensor keeps the old value for as long as the journal holds it.
        """
        if engine() == "jax":
            return self._keep_jax_array()
        variable = self._cpu_tf_variable()
        if variable is None:
            return None      # (on a device: the journal's copy goes to host memory, a kept tensor would not)
        old = read_variable(variable)

        def put_back() -> None:
            with eager():
                variable.assign(old)

        return put_back

    def _keep_jax_array(self) -> Callable[[], None] | None:
        """JAX: the array the variable holds now, as the undo record. JAX arrays are immutable and ``assign``
        gives the variable a new one, so the old one keeps its value with no copy, as on Flax."""
        v = self._variable()
        old = None if v is None else v._value
        if v is None or old is None or not hasattr(old, "addressable_shards"):   # unbuilt, or not a jax.Array
            return None
        variable = v

        def put_back() -> None:
            variable._direct_assign(old)   # as the write: past any StatelessScope (see assign_native)

        return put_back

    def _writable_view(self) -> np.ndarray | None:
        """On torch, a canonical view of a CPU variable's storage, the write counted as torch counts an in-place
        one (the autograd version counter), as Keras' own ``assign`` (``copy_``) does; ``None`` elsewhere."""
        view = self._torch_view()
        if view is not None:
            import torch

            torch.autograd.graph.increment_version(raw(self._variable()))
        return view

    def _memory_span(self) -> tuple[int, int, bool] | None:
        if engine() != "torch":
            return None         # tf.Variable and JAX arrays: not written through NumPy
        v = self._variable()
        if v is None or v._value is None:
            return None
        t = raw(v)
        if t.device.type != "cpu":
            return None
        if not t.is_contiguous():
            view = self._torch_view()     # (a question, not a write: the version counter stays)
            return None if view is None else (*byte_bounds(view), bool(view.flags.c_contiguous))
        # read off the tensor, without NumPy views (2-3 us against 8: load_state and transfer ask every
        # variable): the bytes a write overwrites, and whether the canonical value is them in order
        start = t.data_ptr()
        return start, start + t.numel() * t.element_size(), self._canonical_in_native_order(tuple(t.shape))

    def _canonical_in_native_order(self, native_shape: tuple[int, ...]) -> bool:
        """Whether the canonical value's elements, in C order, are the native ones in C order: no axis of
        more than one element moves, and no flattened map is reordered."""
        order = perm(self._slot.layout, len(native_shape))
        if order is None:
            return True
        if isinstance(self._flat_order(), FlatOrder):
            return False
        moved = [axis for axis in order if native_shape[axis] != 1]
        return moved == sorted(moved)

    def _torch_view(self) -> np.ndarray | None:
        if engine() != "torch":
            return None         # tf.Variable storage cannot be written through NumPy
        v = self._variable()
        if v is None or v._value is None or raw(v).device.type != "cpu":
            return None
        native = torch_numpy(raw(v).detach())
        view = self._canonical(native)
        return view if np.shares_memory(view, native) else None

    def _cpu_tf_variable(self) -> Any | None:
        """The built ``tf.Variable`` behind this parameter when Keras runs on TensorFlow on the CPU, else ``None``."""
        if engine() != "tensorflow":
            return None
        v = self._variable()
        if v is None or v._value is None:
            return None
        tensor = raw(v)
        return tensor if device_type(tensor.device) == "CPU" else None

    def _staging(self) -> tuple[np.ndarray, Callable[[], None]] | None:
        tensor = self._cpu_tf_variable()
        if tensor is None:
            return None
        import tensorflow as tf

        # an uninitialized tensor from TensorFlow's own allocator (its pool: no fresh pages,
        # and no buffer left stranded there when the variable lets its old one go)
        with eager(), tf.device(tensor.device):
            buffer = tf.raw_ops.Empty(shape=self._facts(self._variable())[0], dtype=tensor.dtype, init=False)
        as_numpy = getattr(buffer, "_numpy", None)   # EagerTensor._numpy: a view of the memory on CPU
        if as_numpy is None:
            return None
        native = as_numpy()
        view = self._canonical(native)
        if not (native.flags.writeable and np.shares_memory(view, native)):
            return None

        def adopt() -> None:
            # once every NumPy view is gone, the tensor is the buffer's only owner and the
            # assign takes the buffer instead of copying it (it copies if a view lives on)
            write_variable(tensor, buffer)

        return view, adopt

    # ---- what Keras declares -------------------------------------------------------

    def _declared_initializer(self) -> Any:
        """The layer's initializer for this variable (``kernel_initializer``, ``gamma_initializer``, ...), or None.

        As Keras draws it on its own layout: a ``VarianceScaling`` (Glorot, He, LeCun) with
        Keras' fans of the native shape (its ``input_axes``/``output_axes`` included), a
        ``Constant`` array in canonical layout, an LSTM bias with ``unit_forget_bias``'s
        ones; an initializer polyparam has no built-in for (``STFT``, a custom one) runs in
        Keras on the native shape. Everything else is the Keras object, which the core
        translates.
        """
        layer = self._layer
        init = declared_initializer(layer, self._slot.var)
        v = self._variable()
        if init is None or v is None:
            return init
        native_shape = tuple(int(d) for d in v.shape)
        if (self._slot.var == "bias" and getattr(layer, "unit_forget_bias", False)
                and isinstance(layer, keras.layers.LSTMCell)):
            return self._forget_bias(init, int(layer.units))
        if isinstance(init, keras.initializers.VarianceScaling):
            return _variance_scaling(init, native_shape, layer)
        if isinstance(init, keras.initializers.Constant) and np.ndim(init.value):
            value = np.broadcast_to(keras.ops.convert_to_numpy(init.value), native_shape)
            return pp.init.Constant(np.array(self._canonical(value)))
        try:
            pp.init.as_initializer(init)
        except errors.InitializerError:
            return self._drawn_by_keras(init, native_shape)
        return init

    def _forget_bias(self, init: Any, units: int) -> Callable[..., np.ndarray]:
        """LSTM's ``unit_forget_bias``: the declared bias for the input gate, ones for the forget gate, then it."""
        bias = pp.init.as_initializer(init)

        def fill(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            return np.concatenate([bias((units,), dtype), np.ones((units,), dtype), bias((units * 2,), dtype)])

        return fill

    def _drawn_by_keras(self, init: Any, native_shape: tuple[int, ...]) -> Callable[..., np.ndarray]:
        """A callable that runs ``init`` itself on the native shape (Keras' random stream) and gives it canonical."""

        def fill(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            value = keras.ops.convert_to_numpy(init(native_shape, dtype=np.dtype(dtype).name))
            return np.array(self._canonical(np.asarray(value)), dtype=dtype)

        return fill

    # ---- deferred initialization ------------------------------------------------

    def _defer(self, fill: Callable[[], None], /) -> None:
        layer = self._layer
        hook_build(layer)
        layer.__dict__.setdefault(PENDING_ATTR, {})[self._slot.leaf] = fill

    # ---- ties -------------------------------------------------------------------

    def _tie_refusal(self, anchor: Parameter, /) -> str | None:
        if not isinstance(anchor, KerasParameter):
            return f"expected a keras parameter, got {type(anchor).__name__}."
        mine, theirs = self._slot.layout, anchor._slot.layout
        ndim = len(self.shape)
        if perm(mine, ndim) != perm(theirs, ndim) or (mine == "depthwise") != (theirs == "depthwise"):
            return (f"expected the same native layout, got {mine!r} and {theirs!r}: Keras stores them transposed "
                    "to each other and one variable has one layout. Tie layers of the same kind, or pass "
                    "ties='ignore' to pp.transfer and keep equal values instead.")
        return None

    def _share(self, anchor: Parameter, /) -> None:
        if not isinstance(anchor, KerasParameter):
            msg = (f"Cannot tie {self.path!r} to {anchor.path!r}: expected a keras parameter, "
                   f"got {type(anchor).__name__}.")
            raise errors.TieError(msg, path=self.path, expected="KerasParameter", got=type(anchor).__name__)
        mine, theirs = self._variable(), anchor._variable()
        layer = self._layer
        if mine is None and theirs is None:      # both deferred: tie when Keras builds them
            layer.__dict__.setdefault(TIES_ATTR, {})[self._slot.leaf] = anchor
            followers = anchor._layer.__dict__.setdefault(FOLLOWERS_ATTR, [])
            if not any(f is layer for f in followers):
                followers.append(layer)
            hook_build(layer)
            hook_build(anchor._layer)
            return
        if mine is None or theirs is None:
            msg = (f"Cannot tie {self.path!r} to {anchor.path!r}: expected both built or both deferred, got one "
                   "layer Keras has not built yet. Call the model on one batch first, then tie.")
            raise errors.TieError(msg, path=self.path, expected="built", got="deferred")
        originals = layer.__dict__.setdefault(ORIGINAL_ATTR, {})
        originals.setdefault(self._slot.leaf, mine)
        swap_variable(layer, mine, theirs)
        refresh(self._root)
        _warn_built_optimizer(self._root, f"{self.path!r} tied to {anchor.path!r}")

    def _unshare(self) -> None:
        layer = self._layer
        if layer.__dict__.get(TIES_ATTR, {}).pop(self._slot.leaf, None) is not None:
            return                               # a tie still waiting for the build: forget it
        shared = self._variable()
        originals = layer.__dict__.get(ORIGINAL_ATTR, {})
        own = originals.pop(self._slot.leaf, None)
        if own is not None and shared is not None:
            assign_native(own, to_numpy(raw(shared)))
            swap_variable(layer, shared, own)
            refresh(self._root)
            _warn_built_optimizer(self._root, f"{self.path!r} untied")
            return
        if self._site is not None:
            parent_locate, position = self._site
            clone_into_sequential(parent_locate(), position)
            refresh(self._root)
            _warn_built_optimizer(self._root, f"{self.path!r} untied")
            return
        msg = (f"Cannot untie {self.path!r}: expected a layer tied by polyparam or reused in a Sequential, got a "
               f"layer reused inside a {type(self._root).__name__} graph, where both uses are one layer object. "
               "Build two layers and tie them with pp.tie instead.")
        raise errors.TieError(msg, path=self.path, expected="untieable", got=type(self._root).__name__)


def _warn_built_optimizer(root: Any, what: str) -> None:
    """On JAX, warn that ``what`` (a freeze, a tie, an untie) changed the variables ``root``'s optimizer was built
    for: Keras' stateless optimizer step takes exactly those, so the next fit fails part-way and leaves the model's
    variables emptied. The warning names the first caller outside polyparam."""
    if engine() != "jax" or not getattr(getattr(root, "optimizer", None), "built", False):
        return
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and str(frame.f_globals.get("__name__", "")).startswith("polyparam"):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"{what} after the model's optimizer was built: on the JAX backend Keras' fit then fails "
                  "('optimizer_variables must be ... 1:1') and leaves the model's variables empty. Call "
                  "model.compile(...) again (a new optimizer) before the next fit.",
                  errors.PolyparamWarning, stacklevel=level)


def _variance_scaling(init: Any, native_shape: tuple[int, ...], layer: Any) -> Any:
    """Keras' VarianceScaling with its own fans of the native shape, as the built-in with that spread.

    An ``EinsumDense`` kernel without axes gets those its build gives it: the kernel axes
    the output has are ``output_axes``, the others ``input_axes``.
    """
    input_axes, output_axes = init.input_axes, init.output_axes
    if (input_axes is None or output_axes is None) and isinstance(layer, keras.layers.EinsumDense):
        roles = einsum_axes(layer.equation, len(native_shape))
        if roles is not None:
            input_axes = [i for i, r in enumerate(roles) if r == "in"]
            output_axes = [i for i, r in enumerate(roles) if r != "in"]
    fan_in, fan_out = keras_fans(native_shape, input_axes, output_axes)
    n = {"fan_in": fan_in, "fan_out": fan_out}.get(init.mode, (fan_in + fan_out) / 2.0)
    variance = init.scale / max(1.0, n)
    if init.distribution == "uniform":
        return pp.init.Uniform(math.sqrt(3.0 * variance))
    if init.distribution == "untruncated_normal":
        return pp.init.Normal(sigma=math.sqrt(variance))
    return pp.init.TruncatedNormal(sigma=math.sqrt(variance) / 0.87962566103423978)
