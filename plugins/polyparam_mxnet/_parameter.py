""":class:`GluonParameter`: a Gluon ``Parameter`` as a polyparam parameter."""

from __future__ import annotations

import re
import warnings
from functools import cached_property
from typing import Any, Callable

import numpy as np

from polyparam import errors
from polyparam import init as ppinit
from polyparam import roles as declarations
from polyparam.backend import Parameter, Shape, State, after_writes, join_path, own_copy
from polyparam_mxnet import NAME
from polyparam_mxnet._convert import (
    as_value,
    autograd,
    format_context,
    from_numpy,
    gluon,
    mx,
    to_canonical,
    to_native,
    to_numpy,
)
from polyparam_mxnet._deferred import TARGET, DeferredFill

__all__ = ["GluonParameter", "blocks", "clear_cached_graphs"]

_STATS = {"running_mean": "running_mean", "running_var": "running_var", "moving_mean": "running_mean",
          "moving_var": "running_var"}
_ROLES = {"bias": "bias", "gamma": "scale", "beta": "shift", **_STATS}
#: A recurrent parameter's structural name: fused layers ``l0_i2h_weight``/``r1_h2h_bias``, cells ``i2h_bias``.
_RECURRENT = re.compile(r"(?:([lr])(\d+)_)?(i2h|h2h|h2r)_(weight|bias)")
#: The value polyparam's role dispatch gives each conventional role: a Gluon ``init`` equal to it is not "own".
_CONVENTIONAL = {"bias": 0.0, "shift": 0.0, "running_mean": 0.0, "scale": 1.0, "running_var": 1.0}
#: The attribute a freeze leaves on a Gluon Parameter: the ``grad_req`` it had (``"write"`` or ``"add"``),
#: which an unfreeze gives back. Kept on the Parameter, so tied uses and new trees share it.
_UNFROZEN_GRAD_REQ = "_polyparam_unfrozen_grad_req"


def _recurrent(block: gluon.Block, attr: str) -> re.Match[str] | None:
    """The parts of a recurrent parameter's name (a fused ``rnn.LSTM``/``GRU``/``RNN`` or a cell), else ``None``."""
    if not isinstance(block, (gluon.rnn.rnn_layer._RNNLayer, gluon.rnn.rnn_cell.HybridRecurrentCell)):
        return None
    return _RECURRENT.fullmatch(attr)


def _role(block: gluon.Block, param: gluon.Parameter, attr: str, ndim: int) -> str:
    """The role Gluon's own facts give: constants and statistics Gluon does not name are "other".

    Recurrent ``i2h_bias``/``h2h_bias`` (``l0_i2h_bias``) are biases, as torch's ``bias_ih_l0``
    and Keras' LSTM ``bias`` are.
    """
    if isinstance(param, gluon.Constant):
        return "other"
    if attr in _STATS:
        return _STATS[attr]
    if not getattr(param, "_differentiable", True):
        return "other"  # a statistic (differentiable=False) of a custom block, whatever its name
    recurrent = _recurrent(block, attr)
    if recurrent is not None and ndim == 1 and recurrent.group(4) == "bias":
        return "bias"
    return _ROLES.get(attr, "weight" if ndim >= 2 else "other")


def _native_shape(param: gluon.Parameter) -> tuple[int, ...]:
    """The Parameter's shape in Gluon's layout: ``param.shape``, else its data's (``()`` when neither is known).

    ``SymbolBlock.imports`` loads data into Parameters whose ``shape`` it leaves ``None``;
    the data is what the graph computes with, so its shape is the parameter's.
    """
    if param._shape is not None:
        return tuple(param._shape)
    if param._data is not None:
        return tuple(param._data[0].shape)
    return ()


def _layout(block: gluon.Block, attr: str, ndim: int) -> tuple[tuple[str, ...] | None, tuple[int, ...] | None]:
    """Axis roles of the canonical layout and the native-to-canonical permutation (None = identity)."""
    recurrent = _recurrent(block, attr)
    if recurrent is not None:  # (gates * hidden, in): torch's weight_ih_l0 layout
        return (("out", "in") if ndim == 2 else ("out",) if ndim == 1 else None), None
    if attr != "weight" or ndim < 2:
        return None, None
    if isinstance(block, gluon.nn.Dense):
        return ("out", "in"), None
    if isinstance(block, gluon.nn.Embedding):
        return ("in", "out"), None  # (input_dim, output_dim): one row per token
    kwargs = getattr(block, "_kwargs", None)
    if isinstance(block, gluon.nn.conv_layers._Conv) and isinstance(kwargs, dict):
        space = ("space",) * (ndim - 2)
        transposed = "deconv" in getattr(block, "_op_name", "").lower()
        first = ("in", "out") if transposed else ("out", "in")
        layout = str(kwargs.get("layout", "NC"))
        if layout.startswith("NC"):
            return first + space, None
        # channels last: (out, *k, in) -> (out, in, *k); transposed, MXNet lays its (in, out/groups, *k) out in the
        # layer's layout as it does the data's, (in, *k, out/groups) -> (in, out/groups, *k): the same permutation
        return first + space, (0, ndim - 1) + tuple(range(1, ndim - 1))
    return None, None


#: Handles of the arrays MXNet refused a raw copy into (an MKLDNN layout): a refusal costs
#: about 170 us (MXNet formats a stack trace), so each array is tried once. A handle reused
#: by a later array only sends that one through the copy operator, which takes any array.
_REFUSED_RAW_COPY: set[int] = set()


def _store(replica: Any, native: np.ndarray, source: Any) -> Any:
    """Write ``native`` into one replica: a raw synchronous copy where the array takes it, else
    through the copy operator (:func:`_copy_into`); returns the source array to reuse."""
    if getattr(replica, "stype", "default") == "default":
        handle = replica.handle.value
        if handle not in _REFUSED_RAW_COPY:
            try:
                replica._sync_copyfrom(native)
                return source
            except mx.base.MXNetError:
                if len(_REFUSED_RAW_COPY) > 1 << 16:
                    _REFUSED_RAW_COPY.clear()
                _REFUSED_RAW_COPY.add(handle)
    return _copy_into(replica, native, source)


def _copy_into(replica: Any, native: np.ndarray, source: Any) -> Any:
    """Copy ``native`` into one replica through MXNet's copy operator (paused, waited for); returns the source.

    A row_sparse replica takes a row_sparse source (Gluon's sparse API), so it keeps its storage type.
    """
    if source is None:
        source = from_numpy(native, replica.dtype)
    stype = getattr(replica, "stype", "default")
    with autograd.pause():
        (source if stype == "default" else source.tostype(stype)).copyto(replica)
    replica.wait_to_read()
    return source


def _optimizer_states(trainer: Any, param: gluon.Parameter) -> list[tuple[dict[int, Any], int]]:
    """``(states dict, index)`` of every per-device updater of ``trainer`` that holds states for ``param``."""
    index = getattr(trainer, "_param2idx", {}).get(param.name)
    if index is None:
        return []
    return [(u.states, index) for u in getattr(trainer, "_updaters", None) or [] if index in u.states]


def _cast_state(state: Any, old: str, new: str) -> Any:
    """An optimizer state (an NDArray, ``None`` or a tuple of them) with its ``old``-dtype arrays in ``new``."""
    if isinstance(state, (list, tuple)):
        return type(state)(_cast_state(s, old, new) for s in state)
    if state is not None and hasattr(state, "astype") and np.dtype(state.dtype).name == old:
        with autograd.pause():
            return state.astype(new)
    return state


class _GluonDraw(ppinit.Initializer):
    """A Gluon initializer polyparam has no built-in for, drawn by Gluon itself (MXNet's generator).

    Used for a parameter's own ``init`` only, as Gluon would: ``init._init_weight(desc, arr)``.
    """

    def __init__(self, native: Any, perm: tuple[int, ...] | None = None) -> None:
        self.native = native
        self.perm = perm

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        shape = to_native(arr, self.perm).shape
        out = mx.nd.zeros(shape, ctx=mx.cpu(), dtype=arr.dtype)
        with autograd.pause():
            self.native._init_weight(mx.init.InitDesc(name, {"__init__": self.native}), out)
        arr[...] = to_canonical(to_numpy(out), self.perm)

    def config(self) -> dict[str, Any]:
        return {"native": self.native.dumps()}


def _constant_value(init: ppinit.Initializer) -> float | None:
    """The scalar a Zero, One or scalar Constant fills with; ``None`` for anything else."""
    if isinstance(init, ppinit.Zero):
        return 0.0
    if isinstance(init, ppinit.One):
        return 1.0
    if isinstance(init, ppinit.Constant) and np.ndim(init.value) == 0:
        return float(init.value)
    return None


def _channels_last(root: gluon.Block) -> gluon.Block | None:
    """The first block of ``root`` that makes or reads a channel-last map (a convolution or pooling whose
    ``layout`` does not start ``"NC"``), or ``None``."""
    for _, block in blocks(root):
        kwargs = getattr(block, "_kwargs", None)
        layout = kwargs.get("layout") if isinstance(kwargs, dict) else None
        if isinstance(layout, str) and len(layout) >= 3 and not layout.startswith("NC"):
            return block
    return None


def blocks(root: gluon.Block, prefix: str = "") -> list[tuple[str, gluon.Block]]:
    """Every block under ``root`` (``root`` included) with its structural path, in Gluon's order."""
    out = [(prefix, root)]
    for name, child in root._children.items():
        out.extend(blocks(child, join_path(prefix, name)))
    return out


def clear_cached_graphs(root: gluon.Block) -> None:
    """Drop the cached graphs of the hybridized blocks under ``root``, which hold Parameter objects."""
    for _, block in blocks(root):
        if isinstance(block, gluon.HybridBlock) and not isinstance(block, gluon.SymbolBlock):
            block._clear_cached_op()


class GluonParameter(Parameter):
    """A Gluon ``Parameter``, found live through its owning block (``block._reg_params``).

    ``role`` and ``axes`` come first from :mod:`polyparam.roles` (a declaration for the
    owning block's type and the parameter's structural name, e.g. ``weight``), then from
    the block's type and the name. ``trainable`` is read live from ``grad_req``.
    """

    backend = NAME

    def __init__(self, path: str, owner: gluon.Block, attr: str, root: gluon.Block) -> None:
        # Parameter.__init__ is not called on purpose: it stores ``trainable``, which here is
        # read live from Gluon (a property); role and axes are read on first use.
        param = owner._reg_params[attr]
        layout, perm = _layout(owner, attr, len(_native_shape(param)))
        groups = 1
        if attr == "weight" and isinstance(owner, gluon.nn.conv_layers._Conv):
            groups = int(getattr(owner, "_kwargs", {}).get("num_group", 1))
        self._path, self.groups = path, groups
        self._owner, self._attr, self._root, self._perm, self._layout_axes = owner, attr, root, perm, layout

    # ---- facts read from Gluon -----------------------------------------------------

    @cached_property
    def role(self) -> str:  # type: ignore[override]
        """The declared role (:func:`polyparam.roles.register`), else the one the block's type and name give."""
        declared, _ = declarations.lookup(self._owner, self._attr)
        if declared is not None:
            return declared
        return _role(self._owner, self._param, self._attr, len(self._native_shape()))

    @property
    def _axes(self) -> tuple[str, ...] | None:  # type: ignore[override]
        """Declared axis roles, else the block's (``None``: the role's defaults)."""
        param = self._param
        known = param._shape is not None or param._data is not None
        _, declared = declarations.lookup(self._owner, self._attr, ndim=len(_native_shape(param)) if known else None)
        return declared if declared is not None else self._layout_axes

    def _trainable(self) -> bool:
        """Whether a Trainer updates it: ``grad_req`` is not ``"null"`` (constants and statistics never)."""
        return str(self._param.grad_req) != "null"

    def _set_trainable(self, value: bool, /) -> None:
        """Gluon's own switch: ``grad_req`` ``"null"``, or back to what it was (a shared parameter is one object).

        A freeze remembers the ``grad_req`` it replaces (``"add"`` accumulates gradients) on the
        Gluon Parameter, and an unfreeze gives it back; a parameter polyparam did not freeze
        (``grad_req="null"`` set natively) becomes ``"write"``, Gluon's default.
        """
        param = self._param
        if not value:
            setattr(param, _UNFROZEN_GRAD_REQ, str(param.grad_req))
            param.grad_req = "null"
            return
        remembered = getattr(param, _UNFROZEN_GRAD_REQ, None)
        param.grad_req = remembered if remembered in ("write", "add") else "write"
        if remembered is not None:
            delattr(param, _UNFROZEN_GRAD_REQ)

    def _kind(self) -> str:
        """``constant`` for a Gluon ``Constant``, ``buffer`` for a statistic (``differentiable=False``)."""
        param = self._param
        if isinstance(param, gluon.Constant):
            return "constant"
        return "parameter" if getattr(param, "_differentiable", True) else "buffer"

    # ---- hooks: facts ------------------------------------------------------------

    def _shape(self) -> Shape:
        param = self._param
        if param._shape is None and param._data is None:
            return (None,)  # not even the rank is known (a SymbolBlock imported without its params file)
        shape = tuple(None if d in (0, -1) else int(d) for d in self._native_shape())
        return shape if self._perm is None else tuple(shape[i] for i in self._perm)

    def _dtype(self) -> Any:
        return np.dtype(self._param.dtype)

    def _device(self) -> str:
        return ",".join(format_context(c) for c in self._contexts())

    def _native(self) -> gluon.Parameter:
        return self._param

    def _native_name(self) -> str:
        return str(self._param.name)

    def _layout_doubt(self) -> str | None:
        """A ``Dense(flatten=True)`` weight in a model that holds channel-last maps (a convolution or pooling
        with ``layout="NHWC"``): Gluon flattens such a map ``(H, W, C)`` where torch flattens ``(C, H, W)``, and a
        Gluon model shows no graph to tell whether this Dense reads one."""
        return self._flatten_doubt(_channels_last(self._root)) if self._reads_flat() else None

    @staticmethod
    def _layout_doubts_many(params: list[Parameter], /) -> list[str | None]:
        """As :meth:`_layout_doubt`, with each model's blocks looked at once."""
        found: dict[int, gluon.Block | None] = {}
        out: list[str | None] = []
        for p in params:
            if not isinstance(p, GluonParameter):
                out.extend(Parameter._layout_doubts_many([p]))
                continue
            if not p._reads_flat():
                out.append(None)
                continue
            if id(p._root) not in found:
                found[id(p._root)] = _channels_last(p._root)
            out.append(p._flatten_doubt(found[id(p._root)]))
        return out

    def _reads_flat(self) -> bool:
        """Whether this is the weight of a ``Dense`` that flattens its input (``flatten=True``, the default)."""
        return self._attr == "weight" and isinstance(self._owner, gluon.nn.Dense) and bool(self._owner._flatten)

    def _flatten_doubt(self, last: gluon.Block | None) -> str | None:
        if last is None:
            return None
        return (f"The input of Dense weight {self.native_name!r} may be a flattened feature map: the model holds "
                f"channel-last maps ({type(last).__name__} {last.name!r}, layout {last._kwargs['layout']!r}), which "
                "Gluon flattens in (H, W, C) order where the canonical (PyTorch) order is (C, H, W), and a Gluon "
                "model's structure does not show whether this Dense reads one. Build the model channels first "
                "(layout='NCHW'), or reorder those values yourself and write them with tree.load_state.")

    def _state(self) -> State:
        param = self._param
        if param._data is not None:
            return "initialized"
        if param._shape is None or any(d in (0, -1) for d in param._shape):
            return "deferred"
        return "uninitialized"

    # ---- hooks: declared initializers ---------------------------------------------

    def _own_initializer(self) -> ppinit.Initializer | None:
        """Gluon's rule: the Parameter's own ``init`` wins over a tree-wide initializer.

        ``Dense(weight_initializer=..., bias_initializer="ones")``, PReLU's ``Constant(0.25)``,
        ``Parameter(init=...)``. ``None`` (the tree-wide initializer fills it) when there is no
        ``init``, for a ``Constant`` (never re-initialized), and when ``init`` is the value
        polyparam's role dispatch gives anyway (a bias's ``"zeros"``, BatchNorm's
        ``"ones"``), so rules that name such parameters (``Mixed``) still reach them.
        """
        param = self._param
        if isinstance(param, gluon.Constant) or param.init is None:
            return None
        own = self._translated(param.init)
        conventional = _CONVENTIONAL.get(self.role)
        if conventional is not None and _constant_value(own) == conventional:
            return None
        return own

    def _declared_initializer(self) -> ppinit.Initializer:
        """What ``net.initialize()`` gives this parameter: its ``init``, else Gluon's default ``Uniform(0.07)``.

        Gluon fills a parameter without ``init`` with its default's ``_init_weight``, whatever
        its name; a ``Constant`` declares its value.
        """
        param = self._param
        if isinstance(param, gluon.Constant):
            return ppinit.Constant(to_canonical(to_numpy(param.value), self._perm))
        if param.init is None:
            return ppinit.Uniform(0.07)
        return self._translated(param.init)

    # ---- values -----------------------------------------------------------------

    def coerce(self, value: Any, /, *, action: str = "set") -> np.ndarray:
        """The core's check, an MXNet array (``mx.nd``/``mx.np``) taken as its NumPy copy, as ``set_data`` takes it.

        ``set``, ``load_state`` and ``load_vector`` come through here. A parameter whose
        rank is unknown (no shape and no data: a ``SymbolBlock`` imported without its params
        file) is refused: Gluon fills it on the first forward pass.
        """
        param = self._param
        if param._shape is None and param._data is None:
            got = np.shape(as_value(value))
            msg = (f"Cannot {action} parameter {self.path!r}: expected a parameter whose shape Gluon knows, got "
                   f"{param.name!r} with no shape and no data (a value of shape {got} cannot be checked). Load its "
                   "params file (SymbolBlock.imports(symbol, inputs, param_file)) or run one forward pass first.")
            raise errors.DeferredInitializationError(msg, path=self.path, expected="known shape", got=None)
        return super().coerce(as_value(value), action=action)

    def __setitem__(self, key: Any, value: Any) -> None:
        """Item writes (``p[0, :] = value``), ``value`` an MXNet array too."""
        super().__setitem__(key, as_value(value))

    # ---- hooks: values -----------------------------------------------------------

    def _read(self) -> np.ndarray:
        return to_canonical(to_numpy(self._param._data[0]), self._perm)

    def _write(self, array: np.ndarray, /) -> None:
        native = to_native(array, self._perm)
        target = TARGET.get(None)
        param = self._param
        if param._data is None and target is not None:
            if getattr(target, "stype", "default") == "default":
                target._sync_copyfrom(native)  # Gluon is materializing: fill its fresh array
            else:
                _copy_into(target, native, None)
            return
        if param._data is None:
            self._materialize(native)
            return
        self._before_write()
        # A raw synchronous copy into each replica: one memcpy, not recorded by autograd, and
        # optimizers keep their NDArray objects. MXNet refuses it up front (before copying
        # anything) once a CPU forward pass has put a convolution weight in the MKLDNN
        # layout; that replica then gets what Parameter.set_data does (``arr[:] = NDArray``):
        # the copy operator, which reorders, paused so it is not recorded inside
        # autograd.record(), and waited for so a failure surfaces here. A row_sparse
        # replica (``stype="row_sparse"``) takes a row_sparse copy, so it stays row_sparse.
        source = None
        for replica in param._data:
            source = _store(replica, native, source)

    def _before_write(self) -> None:
        """As ``Parameter.set_data``: a kvstore that holds the weights must be re-synced.

        Dropping it also drops the optimizer state it holds (``update_on_kvstore``), which no
        undo can bring back, so it waits until the whole write has succeeded (``after_writes``).
        """
        param = self._param
        trainer = param._trainer
        if trainer is not None and getattr(trainer, "_kv_initialized", False) and \
                getattr(trainer, "_update_on_kvstore", False) and param not in trainer._params_to_init:
            after_writes(("gluon kvstore", id(trainer)), trainer._reset_kvstore)

    def _native_copier(self, source: Parameter, /) -> Callable[[], Callable[[], None] | None] | None:
        """``NDArray.copyto`` from a Gluon parameter of the same dtype and layout, as ``set_data(p.data())``.

        No NumPy copy on either side, and no reorder where both arrays are in MKLDNN's
        layout: MXNet's copy operator copies between them as they are. Paused, so
        ``autograd.record()`` does not record it. The copy runs on MXNet's engine while the
        next values are prepared; the returned wait, which the transfer calls after its last
        write, surfaces a failure while the transfer can still undo.
        """
        if type(source) is not type(self) or TARGET.get(None) is not None:
            return None
        if source._perm != self._perm:
            return None
        have, want = source._param._data, self._param._data
        if have is None or want is None:
            return None
        value = have[0]
        if value.dtype != want[0].dtype or value.shape != want[0].shape or any(
                getattr(a, "stype", "default") != "default" for a in (value, *want)):
            return None
        replicas = list(want)

        def wait() -> None:
            for replica in replicas:
                replica.wait_to_read()

        def copy() -> Callable[[], None]:
            self._before_write()
            with autograd.pause():
                for replica in replicas:
                    value.copyto(replica)
            return wait

        return copy

    def _grad(self) -> np.ndarray | None:
        param = self._param
        if param._grad is None or param.grad_req == "null":
            return None
        grads = [to_numpy(g) for g in param._grad]
        total = grads[0] if len(grads) == 1 else np.sum(grads, axis=0)
        fresh = any(getattr(d, "_fresh_grad", False) for d in param._data)
        if not fresh and not total.any():
            return None  # Gluon zero-fills gradient buffers: no backward pass has written them
        return to_canonical(total, self._perm)

    def _write_grad(self, array: np.ndarray | None, /) -> None:
        """Write into Gluon's gradient buffers (``param.list_grad()``), in place, as ``zero_grad`` does.

        ``None`` zero-fills them, as Gluon's ``Parameter.zero_grad`` does (Gluon keeps the
        buffers). With replicas on several contexts the first takes ``array`` and the others
        zeros, so their sum (what a ``Trainer``'s all-reduce applies) is ``array``; clipping
        scales each replica instead (:meth:`_clip_grads_many`).
        """
        param = self._param
        if param._grad is None:
            if array is None:
                return
            msg = (f"Cannot write the gradient of parameter {self.path!r}: expected a Gluon parameter with gradient "
                   f"buffers, got grad_req={param.grad_req!r}"
                   f"{'' if param._data is not None else ' and no data'}. Unfreeze and initialize it first.")
            raise errors.StateError(msg, path=self.path, expected="gradient buffers", got=param.grad_req)
        zeros = None
        for i, replica in enumerate(param._grad):
            if array is None or i > 0:
                if zeros is None:
                    zeros = np.zeros(tuple(replica.shape), np.dtype(replica.dtype))
                native = zeros
            else:
                native = to_native(np.asarray(array, np.dtype(replica.dtype)), self._perm)
            _store(replica, native, None)

    @staticmethod
    def _clip_grads_many(params: list[Parameter], max_norm: float, norm_type: float, /) -> float:
        """``clip_grads``: every replica's gradient buffer multiplied by the one factor, in place.

        The norm is that of the sum over replicas (:meth:`_grad`); the factor is torch's
        ``max_norm / (norm + 1e-6)``, applied when below 1 or NaN. Scaling each replica
        (never zeroing one) is right before a ``Trainer``'s all-reduce (the sum scales) and
        after ``trainer.allreduce_grads()`` (each replica holds the sum), so replicas that
        ``trainer.update`` then updates one by one stay equal. All or none: if a write
        refuses, the buffers written are put back before the error propagates.
        """
        norm = float(Parameter._grad_norm_many(params, norm_type))
        factor = max_norm / (norm + 1e-6)
        if factor >= 1.0:   # NaN scales too, as torch's clamp keeps it
            return norm
        done: list[tuple[Any, np.ndarray]] = []
        try:
            for p in params:
                param = p._native()
                if p._state() != "initialized" or param._grad is None or param.grad_req == "null":
                    continue
                for replica in param._grad:
                    old = to_numpy(replica)
                    _store(replica, np.multiply(old, old.dtype.type(factor), dtype=old.dtype), None)
                    done.append((replica, old))
        except BaseException:
            for replica, old in reversed(done):
                try:
                    _store(replica, old, None)
                except Exception:  # noqa: BLE001 - restoring the others matters more than this one
                    continue
            raise
        return norm

    def _cast(self, dtype: np.dtype, /) -> None:
        """Gluon's own ``Parameter.cast``: the Parameter object (what a ``Trainer`` and ties hold) stays.

        Gluon replaces its data and gradient arrays; a kvstore that holds the weights is
        re-synced, a Trainer's optimizer states (momentum) follow the weight's dtype, and the
        cached graphs are cleared, as ``HybridBlock.cast`` does. float16, float32 and float64
        only (MXNet 1.9 has no NumPy bfloat16). A BatchNorm's parameters stay float32 when
        cast to float16, as ``BatchNorm.cast`` keeps them.
        """
        name = np.dtype(dtype).name
        if name not in ("float16", "float32", "float64"):
            msg = (f"Cannot cast parameter {self.path!r} to {name}: expected float16, float32 or float64 (the "
                   f"floating dtypes MXNet {mx.__version__} holds as NumPy arrays), got {name}. Cast to float16.")
            raise errors.UnsupportedModelError(msg, path=self.path, expected="float16, float32 or float64", got=name)
        owner, param = self._owner, self._param
        if name == "float16" and isinstance(owner, gluon.nn.basic_layers._BatchNorm):
            name = "float32"
        old = np.dtype(param.dtype).name
        trainer = param._trainer
        states = _optimizer_states(trainer, param)
        optimizer = getattr(trainer, "_optimizer", None)
        if states and getattr(optimizer, "multi_precision", False) and "float16" in (old, name):
            msg = (f"Cannot cast parameter {self.path!r} to {name}: expected a gluon.Trainer without optimizer "
                   f"states for it, got multi_precision states made for {old} (a float32 master copy exists only "
                   "for float16 weights). Cast first, then create the Trainer.")
            raise errors.UnsupportedModelError(msg, path=self.path, expected="no optimizer states", got=old)
        param.cast(name)
        for states_of, index in states:  # momentum and the like follow the weight, as the update needs
            states_of[index] = _cast_state(states_of[index], old, name)
        if trainer is not None and getattr(trainer, "_kv_initialized", False) and \
                getattr(trainer, "_update_on_kvstore", False):
            # once the whole cast has succeeded: one that fails part-way casts back and keeps the kvstore's state
            after_writes(("gluon kvstore", id(trainer)), trainer._reset_kvstore)
        if isinstance(owner, gluon.rnn.rnn_layer._RNNLayer) and all(
                np.dtype(p.dtype) == np.dtype(name) for p in owner._reg_params.values()):
            owner._dtype = name  # the dtype of the states begin_state makes, as _RNNLayer.cast sets it
        clear_cached_graphs(self._root)

    def _identity(self) -> Any:
        return id(self._param)

    def _native_aliases(self) -> tuple[str, ...]:
        """The keys Gluon's ``save_parameters`` writes for this parameter where they are not its path.

        A fused ``rnn.LSTM``/``GRU``/``RNN`` saves its parameters under the keys of the cells it
        unfuses into (its ``_collect_params_with_prefix``): ``2._unfused.0.i2h_weight`` for path
        ``2.l0_i2h_weight``, ``lstm._unfused.0.l_cell.i2h_weight`` when bidirectional. Asked of
        the owning block itself, so any block that overrides that method is covered.
        """
        owner, param = self._owner, self._param
        if type(owner)._collect_params_with_prefix is gluon.Block._collect_params_with_prefix:
            return ()
        prefix = self._path.rpartition(".")[0]
        try:
            keys = owner._collect_params_with_prefix(prefix)
        except Exception:  # noqa: BLE001 - Gluon's own method fails (an RNN of 10+ layers): it writes no such file
            return ()
        children = tuple(join_path(prefix, name) + "." for name in owner._children)
        return tuple(k for k, v in keys.items() if v is param and k != self._path and not k.startswith(children))

    def _read_copy(self) -> np.ndarray:
        return self._read()         # asnumpy() always copies

    def _read_view(self) -> np.ndarray:
        return own_copy(self._read())   # a save writes it without copying it again

    # ---- hooks: deferred initialization ------------------------------------------

    def _accepts_deferred_value(self) -> bool:
        return self._param._shape is not None

    def _write_deferred(self, array: np.ndarray, /) -> None:
        self._materialize(to_native(array, self._perm))

    def _defer(self, fill: Callable[[], None], /) -> None:
        param = self._param
        if not param._allow_deferred_init:
            msg = (f"Cannot defer initialization of parameter {self.path!r}: expected a Gluon parameter created "
                   f"with allow_deferred_init=True, got {param.name!r} with unknown shape {param._shape}. "
                   "Give the layer its input size (in_units, in_channels).")
            raise errors.DeferredInitializationError(msg, path=self.path, expected="allow_deferred_init",
                                                     got=param._shape)
        contexts = self._contexts()
        hook = DeferredFill(fill)
        param._data = param._grad = None
        param._deferred_init = (hook, contexts, hook, None)

    # ---- hooks: ties -------------------------------------------------------------

    def _share(self, anchor: Parameter, /) -> None:
        self._replace(anchor._native())

    def _unshare(self) -> None:
        uses = [path for path, block in blocks(self._root) if block is self._owner]
        if len(uses) > 1:
            msg = (f"Cannot untie parameter {self.path!r}: expected its block to appear once, got one Gluon "
                   f"block used at {uses}. Use separate blocks (params=...) to be able to untie them.")
            raise errors.TieError(msg, path=self.path, expected="one use", got=uses)
        old = self._param
        taken = {p.name for p in self._root.collect_params().values()}
        name = f"{self._owner.prefix}{self._attr}"
        n = 0
        while name in taken:
            n += 1
            name = f"{self._owner.prefix}{self._attr}_untied{n}"
        if isinstance(old, gluon.Constant):
            new: gluon.Parameter = gluon.Constant(name, old.value)
        else:
            new = gluon.Parameter(name, grad_req=old.grad_req, shape=old._shape, dtype=old.dtype,
                                  lr_mult=old.lr_mult, wd_mult=old.wd_mult, init=old.init,
                                  allow_deferred_init=old._allow_deferred_init, differentiable=old._differentiable,
                                  stype=old._stype, grad_stype=old._grad_stype)
        if hasattr(old, _UNFROZEN_GRAD_REQ):  # frozen by polyparam: an unfreeze gives the copy what it had
            setattr(new, _UNFROZEN_GRAD_REQ, getattr(old, _UNFROZEN_GRAD_REQ))
        if old._data is not None:
            with autograd.pause():
                new._init_impl(old._data[0].copy(), list(old._ctx_list))
        elif old._deferred_init:
            new._deferred_init = old._deferred_init
        self._replace(new)

    # ---- Gluon helpers (not hooks) -----------------------------------------------

    @property
    def _param(self) -> gluon.Parameter:
        """The Gluon Parameter the owning block holds now (ties replace it)."""
        return self._owner._reg_params[self._attr]

    def _translated(self, init: Any) -> ppinit.Initializer:
        """A Gluon ``init`` (name or ``mx.init`` object) as a polyparam initializer.

        One polyparam has no built-in for (``LSTMBias``, a user's ``@mx.init.register`` class)
        is drawn by Gluon itself, as ``net.initialize`` would.
        """
        native = mx.init.create(init) if isinstance(init, str) else init
        try:
            return ppinit.as_initializer(native)
        except errors.InitializerError:
            return _GluonDraw(native, self._perm)

    def _native_shape(self) -> tuple[int, ...]:
        return _native_shape(self._param)

    def _contexts(self) -> list[mx.Context]:
        param = self._param
        if param._data is not None:
            return list(param._ctx_list)
        if param._deferred_init:
            return list(param._deferred_init[1])
        if getattr(param, "_ctx_list", None):
            return list(param._ctx_list)  # set by tree.to() before any initialization
        return [mx.context.current_context()]

    def _materialize(self, native: np.ndarray) -> None:
        """Give a parameter without data its shape and value, on its contexts."""
        param = self._param
        contexts = self._contexts()
        param._shape = tuple(native.shape)
        param._deferred_init = ()
        data = from_numpy(native, param.dtype)
        if param._stype != "default":
            data = data.tostype(param._stype)  # Gluon keeps row_sparse weights in row_sparse storage
        with autograd.pause():
            param._init_impl(data, contexts)

    def _replace(self, new: gluon.Parameter) -> None:
        """Put ``new`` where this parameter's Gluon Parameter is, everywhere Gluon looks."""
        owner, old = self._owner, self._param
        if getattr(old, "_trainer", None) is not None and new is not old:
            warnings.warn(f"Parameter {self.path!r} ({old.name}) is held by a gluon.Trainer, which keeps updating "
                          f"that object, not {new.name!r} that now takes its place. Create the Trainer after "
                          "tying or untying.", errors.StaleOptimizerWarning, stacklevel=5)
        owner._reg_params[self._attr] = new
        # Block.__setattr__ refuses to re-assign a Parameter attribute (Gluon 1.9); the
        # registry was updated just above, so set the plain attribute directly.
        object.__setattr__(owner, self._attr, new)
        entries = owner._params._params
        if any(v is old for v in entries.values()):
            items = [(new.name, new) if v is old else (k, v) for k, v in entries.items()]
            entries.clear()
            entries.update(items)
        else:
            entries[new.name] = new
        clear_cached_graphs(self._root)
