"""TorchParameter: one ``nn.Parameter`` or persistent buffer of a module, and how its role and axes are read."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from functools import cached_property
from typing import Any, Callable, NamedTuple, cast

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import (  # type: ignore[attr-defined]  # the mixin is missing from torch's stubs
    UninitializedBuffer,
    UninitializedParameter,
    UninitializedTensorMixin,
)
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from polyparam import errors, roles
from polyparam.backend import Parameter, Shape, State, default_axes
from polyparam.init import Constant, Initializer, Normal, One, Uniform, Zero
from polyparam_torch import NAME, _dtensor
from polyparam_torch._convert import MOVABLE_BYTES, PLAIN, np2torch, np_dtype, torch2np, torch_dtype
from polyparam_torch._deferred import Pending, forget, lazy_shape, pending, record, settle, settle_tensor
from polyparam_torch._dtensor import is_dtensor

__all__ = ["ATTENTION_ROLES", "DECLARED_LAYERS", "KNOWN_LAYERS", "NORMS", "Layer", "TorchParameter", "axes_of",
           "declare_layers", "declared_axes", "declared_initializer", "layer_of", "role_of", "shallow_clone"]

#: Modules whose ``weight``/``bias`` are a scale and a shift.
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
#: ``nn.MultiheadAttention``'s attributes by role (``bias_k``/``bias_v`` are the learned extra key/value).
ATTENTION_ROLES = {"in_proj_weight": "weight", "q_proj_weight": "weight", "k_proj_weight": "weight",
                   "v_proj_weight": "weight", "in_proj_bias": "bias", "bias_k": "bias", "bias_v": "bias"}
#: Modules of torch whose parameters the name fallback must not guess (PReLU's 1-D slope is no scale).
KNOWN_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag,
                nn.modules.rnn.RNNBase, nn.modules.rnn.RNNCellBase, nn.MultiheadAttention, nn.PReLU)
#: Layers of other libraries whose layout their type does not show, declared (by qualified name, nothing
#: imported) when the backend loads: Hugging Face GPT-2's ``Conv1D`` stores a dense weight ``(in, out)``
#: (defined in ``transformers.modeling_utils`` by older transformers).
DECLARED_LAYERS: dict[str, dict[str, tuple[str, ...]]] = {
    "transformers.pytorch_utils.Conv1D": {"weight": ("in", "out")},
    "transformers.modeling_utils.Conv1D": {"weight": ("in", "out")},
}


#: Values from this size up are written with torch's parallel ``copy_``; smaller ones with one
#: ``np.copyto`` (waking torch's worker threads for a small copy can cost milliseconds on a busy machine).
PARALLEL_COPY_BYTES = 1 << 20
#: Device types whose tensors torch's ``_foreach_*`` kernels take (others: one op per tensor).
FOREACH_DEVICES = ("cpu", "cuda")


def _use_count(t: torch.Tensor) -> int | None:
    """How many references torch holds to ``t``'s storage (tensors and views), if it says. A Python storage
    object (``t.untyped_storage()``) does not count, nor does a raw ``data_ptr()``: what a program keeps of
    those refers to the old storage once it is moved (see :func:`owns_storage`)."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    return None if count is None else int(count(t.untyped_storage()._cdata))


_ALONE: list[int | None] = []   # the use count of a tensor no one else refers to, measured once


def owns_storage(t: torch.Tensor) -> bool:
    """Whether ``t`` alone holds its storage: no view, no other tensor or NumPy array on it, and all of it.

    Then moving the storage aside (``t.data = new``) changes nothing anyone else sees.
    Refused for what others could still reach: memory torch did not allocate
    (``from_numpy``, ``frombuffer``, DLPack imports: not resizable), a tensor object held
    elsewhere too (a DLPack export, a traced graph), shared or pinned memory, views,
    conjugate or negative bits, inference tensors, tensor subclasses (DTensor).
    """
    if type(t) not in (nn.Parameter, torch.Tensor) or t.device.type != "cpu" or t.layout != torch.strided:
        return False
    if t._base is not None or t.is_conj() or t.is_neg() or t.is_inference():
        return False
    storage = t.untyped_storage()
    if (t.storage_offset() != 0 or storage.nbytes() != t.numel() * t.element_size() or t.is_shared()
            or not storage.resizable() or t._use_count() != 1):
        return False
    if not _ALONE:
        _ALONE.append(_use_count(torch.empty(1)))
    used = _use_count(t)
    return used is not None and used == _ALONE[0] and not t.is_pinned()


def _fill(t: torch.Tensor, array: np.ndarray) -> None:
    """Copy a canonical ``array`` into the CPU tensor ``t`` (same shape), bumping its version counter."""
    if array.dtype.kind in "fiub" and array.dtype.isbuiltin and min(array.strides, default=0) >= 0 and (
            array.nbytes >= PARALLEL_COPY_BYTES or t.is_conj() or t.is_neg() or t.is_inference()):
        # torch's copy_ is parallel: about twice np.copyto here, from 1 MB to 64 MB
        with torch.no_grad():
            t.detach().copy_(_from_numpy(array))   # bumps the version counter, as copy_ does
    else:   # small values (waking torch's threads costs more than the copy), bfloat16 (ml_dtypes)
        # or negatively strided arrays: through NumPy
        np.copyto(torch2np(t.detach()), array, casting="unsafe")
        torch.autograd.graph.increment_version(t)


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` of a copy source: a read-only array (a mapped checkpoint) is only read,
    so torch's "not writable" warning does not apply."""
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(array)


def declare_layers() -> None:
    """Declare :data:`DECLARED_LAYERS` with ``pp.roles``, leaving any declaration the user made first."""
    known = roles.declared()
    for name, axes in DECLARED_LAYERS.items():
        if name not in known:
            roles.register(name, axes=axes)


declare_layers()


def declared_axes(module: nn.Module, attr: str, ndim: int, path: str) -> tuple[str, ...] | None:
    """The axes declared with ``pp.roles`` for ``module.<attr>``, checked against ``ndim``; ``None`` if none are.

    Raises:
        InvalidArgumentError: The declared axes do not have ``ndim`` words; names ``path``.
    """
    try:
        return roles.lookup(module, attr, ndim=ndim)[1]
    except errors.InvalidArgumentError as exc:
        msg = f"Cannot read the axes of parameter {path!r}: {exc}"
        raise errors.InvalidArgumentError(msg, path=path, expected=exc.expected, got=exc.got) from None


def _set_magnitude(g: torch.Tensor, v: torch.Tensor, dim: int) -> None:
    """Weight norm's ``g = ‖v‖`` (``torch.norm_except_dim``, as ``weight_norm`` sets it), where ``g`` holds ones."""
    with torch.no_grad():
        if bool((g == 1).all()):
            g.copy_(torch.norm_except_dim(v, 2, dim))


class Layer(NamedTuple):
    """What a tensor stands for in its layer: the layer module, the layer's tensor name, and which part.

    ``part`` is ``""`` for a plain tensor, ``"original"`` for a reparametrized tensor
    (``spectral_norm``), ``"g"``/``"v"`` for weight norm's magnitude and direction;
    ``dim`` is weight norm's kept axis (``None`` elsewhere).
    """

    module: nn.Module
    attr: str
    part: str = ""
    dim: int | None = None


def layer_of(module: nn.Module, attr: str, host: Callable[[], tuple[nn.Module, str]]) -> Layer:
    """The layer that ``module.<attr>`` belongs to, seeing through parametrizations and weight/spectral norm hooks.

    ``host`` gives ``(layer module, tensor name)`` of a ``ParametrizationList`` owner
    (``layer.parametrizations.<name>``); it is called only for one.
    """
    if isinstance(module, parametrize.ParametrizationList):
        layer, name = host()
        first = module[0] if len(module) else None
        if type(first).__name__ == "_WeightNorm" and attr in ("original0", "original1"):  # (g, v)
            return Layer(layer, name, "g" if attr == "original0" else "v", getattr(first, "dim", None))
        if attr == "original":   # one original (spectral_norm, orthogonal, custom): the layer's tensor
            return Layer(layer, name, "original")
        return Layer(module, attr)   # several originals of an unknown parametrization: by name
    for hook in module._forward_pre_hooks.values():
        hooked = getattr(hook, "name", None)
        if isinstance(hook, WeightNorm) and attr in (f"{hooked}_g", f"{hooked}_v"):
            return Layer(module, str(hooked), attr[-1], hook.dim)
        if isinstance(hook, SpectralNorm) and attr == f"{hooked}_orig":
            return Layer(module, str(hooked), "original")
    return Layer(module, attr)


def _scale_shaped(attr: str, tensor: torch.Tensor) -> bool:
    """A layer or custom-norm scale: 1-D ``gamma``, ``weight``, ``scale``, ``layer_scale``, or a (C, 1, ..) one."""
    if tensor.ndim == 1:
        return attr in ("gamma", "weight", "scale", "layer_scale")
    return tensor.ndim > 1 and attr in ("gamma", "layer_scale") and all(d == 1 for d in tensor.shape[1:])


def role_of(module: nn.Module, attr: str, tensor: torch.Tensor, *, is_buffer: bool = False, part: str = "") -> str:
    """The role of ``module.<attr>``, from the module's type and attribute, with the name as the fallback.

    Running statistics; any other buffer is ``other`` (a mask, position ids, spectral norm's
    vectors); weight norm's magnitude is a scale; norm scale/shift; attention weights and
    biases; ``bias*``/``*_bias`` are biases; a 1-D ``gamma``/``weight`` of a module torch does
    not define (layer scale, a custom RMSNorm) is a scale; other tensors of 2-D or more are weights.
    """
    if attr in ("running_mean", "running_var"):
        return attr
    if is_buffer:
        return "other"
    if part == "g":
        return "scale"
    if isinstance(module, NORMS):
        return {"weight": "scale", "bias": "shift"}.get(attr, "other")
    if isinstance(module, nn.MultiheadAttention) and attr in ATTENTION_ROLES:
        return ATTENTION_ROLES[attr]
    if attr.startswith("bias") or attr.endswith("_bias"):
        return "bias"
    if isinstance(tensor, UninitializedTensorMixin):
        return "weight"
    if not isinstance(module, KNOWN_LAYERS) and _scale_shaped(attr, tensor):
        return "scale"
    if tensor.ndim >= 2:
        return "weight"
    return "other"


def axes_of(module: nn.Module, attr: str, role: str, *, layer: Layer | None = None,
            shape: Shape | None = None, declared: tuple[str, ...] | None = None) -> tuple[str, ...] | None:
    """The axis roles of ``module.<attr>`` where they differ from the default ``(out, in, *space)``, else ``None``.

    ``layer`` (from :func:`layer_of`) gives a reparametrized tensor its layer's axes;
    ``shape`` is needed for weight norm's magnitude, ``bias_k``/``bias_v`` and ``(C, 1, ..)`` scales.
    ``declared`` (from :func:`declared_axes`, for the layer's tensor) wins over what the type shows.
    """
    ndim = None if shape is None else len(shape)
    if layer is not None and layer.part:
        if layer.part == "g":   # one magnitude per slice of the kept axis: that axis's role, the rest size 1
            if ndim is None or layer.dim is None or not -ndim <= layer.dim < ndim:
                return None
            weight = declared or axes_of(layer.module, layer.attr, "weight") or default_axes("weight", ndim)
            kept = layer.dim % ndim
            return tuple(a if i == kept else "other" for i, a in enumerate(weight))
        module, attr = layer.module, layer.attr
    if declared is not None:
        return declared
    if shape is not None and len(shape) > 1:
        if role == "bias" and isinstance(module, nn.MultiheadAttention) and attr in ("bias_k", "bias_v"):
            return ("other",) * (len(shape) - 1) + ("out",)   # (1, 1, embed_dim)
        if role == "scale" and all(d == 1 for d in shape[1:]):
            return ("out",) + ("other",) * (len(shape) - 1)   # (C, 1, 1) layer scale
    if role != "weight" or attr != "weight":
        return None
    if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
        return ("in", "out") + ("space",) * len(module.kernel_size)
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return ("in", "out")  # (num_embeddings, embedding_dim): one row per input token
    return None


def shallow_clone(module: nn.Module) -> nn.Module:
    """A new module object holding the same tensors and children in its own containers."""
    clone = module.__class__.__new__(module.__class__)
    state = {}
    for key, value in module.__dict__.items():
        if isinstance(value, Pending):
            value = Pending(value)
        elif isinstance(value, (dict, set)):
            value = value.copy()
        state[key] = value
    clone.__dict__.update(state)
    return clone


# ---- what torch's reset_parameters declares ---------------------------------------------------


class _PaddedNormal(Normal):
    """N(0, 1) with the ``padding_idx`` row zero, as ``nn.Embedding.reset_parameters`` draws."""

    def __init__(self, padding_idx: int) -> None:
        super().__init__(sigma=1.0)
        self.padding_idx = padding_idx

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        super().init_weight(name, arr)
        arr[self.padding_idx] = 0


def _torch_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` as torch's ``init`` computes them: ``shape[1]`` and ``shape[0]`` times the rest.

    For a transposed convolution's ``(in, out/g, *k)`` weight this is not polyparam's fan by
    axis roles; torch's ``reset_parameters`` uses it, so the declared formulas do too.
    """
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _bound(fan_in: int) -> Initializer:
    """``U(+-1/sqrt(fan_in))`` (0 for an empty fan): ``kaiming_uniform_(a=sqrt(5))`` and the bias rule."""
    return Uniform(1 / math.sqrt(fan_in) if fan_in > 0 else 0.0)


def declared_initializer(module: nn.Module, attr: str, shape: tuple[int, ...] | None,
                         parent: tuple[nn.Module, str] | None = None) -> Initializer | None:
    """The formula of torch's own ``reset_parameters`` for ``module.<attr>`` of ``shape``, as an initializer.

    ``nn.Linear``, ``nn.Conv*d``/``nn.ConvTranspose*d``: ``kaiming_uniform_(a=sqrt(5))`` weights and
    ``U(+-1/sqrt(fan_in))`` biases (both ``U(+-1/sqrt(fan_in))``, torch's fan); ``nn.Bilinear``:
    ``U(+-1/sqrt(in1_features))``; ``nn.Embedding``/``EmbeddingBag``: N(0, 1), the padding row 0;
    norms: scale 1, shift 0, running mean 0, variance 1, batch counter 0; ``nn.MultiheadAttention``:
    ``xavier_uniform_`` projections, ``xavier_normal_`` ``bias_k``/``bias_v``, zero biases (its
    ``out_proj.bias`` too: ``parent`` is ``(module's parent, module's name)``); RNN, LSTM, GRU and
    their cells: ``U(+-1/sqrt(hidden_size))``; ``nn.PReLU``: its ``init``. ``None`` for any other
    module, and while ``shape`` is unknown (``nn.Lazy*`` before the first forward).
    """
    if shape is None:
        return None
    if isinstance(parent, tuple) and isinstance(parent[0], nn.MultiheadAttention) and parent[1] == "out_proj" \
            and attr == "bias":
        return Zero()
    if isinstance(module, NORMS):
        return {"weight": One(), "bias": Zero(), "running_mean": Zero(), "running_var": One(),
                "num_batches_tracked": Zero()}.get(attr)
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and attr in ("weight", "bias"):
        weight = module.weight
        if isinstance(weight, UninitializedTensorMixin):
            return None
        return _bound(_torch_fans(tuple(weight.shape))[0])
    if isinstance(module, nn.Bilinear) and attr in ("weight", "bias"):
        return _bound(int(module.weight.shape[1]))
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and attr == "weight":
        return Normal(sigma=1.0) if module.padding_idx is None else _PaddedNormal(int(module.padding_idx))
    if isinstance(module, nn.MultiheadAttention):
        if attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            fan_in, fan_out = _torch_fans(shape)
            return Uniform(math.sqrt(6.0 / (fan_in + fan_out)))
        if attr in ("bias_k", "bias_v"):
            fan_in, fan_out = _torch_fans(shape)
            return Normal(sigma=math.sqrt(2.0 / (fan_in + fan_out)))
        return Zero() if attr == "in_proj_bias" else None
    if isinstance(module, (nn.modules.rnn.RNNBase, nn.modules.rnn.RNNCellBase)):
        hidden = int(module.hidden_size)
        return Uniform(1 / math.sqrt(hidden) if hidden > 0 else 0.0)
    if isinstance(module, nn.PReLU) and attr == "weight":
        return Constant(float(module.init))
    return None


class TorchParameter(Parameter):
    """One ``nn.Parameter`` or persistent buffer of a module, read live from the module.

    The tensor is looked up in its module at every use, so the object follows ties,
    untie and device moves that replace the tensor. It also knows the chain of child
    names from the root, which untie of a reused module needs. After replacing modules
    by hand (``net[2] = nn.Linear(...)``), take a fresh ``pp.tree(net)``.
    """

    backend = NAME

    def __init__(self, path: str, root: nn.Module, keys: tuple[str, ...], attr: str, is_buffer: bool,
                 module: nn.Module) -> None:
        # Parameter.__init__ is not called on purpose: role, axes and trainable are
        # computed on first use, which keeps building a tree of 1,000 layers cheap.
        self._path, self._root, self._keys, self._attr = path, root, keys, attr
        self._is_buffer, self._module = is_buffer, module

    # ---- facts ------------------------------------------------------------------------
    # The base class stores role, axes, trainable and groups in __init__; here they are read from the module.

    @cached_property
    def role(self) -> str:  # type: ignore[override]
        """The role declared with ``pp.roles`` for the layer's tensor, else read from the layer (:func:`role_of`)."""
        layer = self._layer()
        module, attr = (layer.module, layer.attr) if layer.part in ("original", "v") else (self._module, self._attr)
        if layer.part != "g":   # weight norm's magnitude is a scale, whatever the weight is declared as
            declared = roles.lookup(module, attr)[0]
            if declared is not None:
                return declared
        return role_of(module, attr, self._tensor(), is_buffer=self._is_buffer, part=layer.part)

    @property
    def _axes(self) -> tuple[str, ...] | None:  # type: ignore[override]
        """The axes declared with ``pp.roles`` for the layer's tensor, else read from the layer (:func:`axes_of`)."""
        t = self._tensor()
        shape = None if isinstance(t, UninitializedTensorMixin) else tuple(t.shape)
        layer = self._layer()
        module, attr = (layer.module, layer.attr) if layer.part else (self._module, self._attr)
        declared = declared_axes(module, attr, len(self._shape() if shape is None else shape), self.path)
        return axes_of(self._module, self._attr, self.role, layer=layer, shape=shape, declared=declared)

    def _trainable(self) -> bool:
        """Whether an optimizer updates it: a parameter with ``requires_grad`` (buffers never)."""
        return not self._is_buffer and self._tensor().requires_grad

    def _set_trainable(self, value: bool, /) -> None:
        """``requires_grad = value`` on the tensor the module holds (a tied one is the same tensor; a Lazy one too).

        Raises:
            UsageError: Making trainable a tensor torch cannot differentiate (integer).
        """
        TorchParameter._set_trainable_many([self], value)

    @property
    def groups(self) -> int:  # type: ignore[override]
        """The groups of a convolution kernel (its module's ``groups``), else 1."""
        layer = self._layer()
        if layer.attr == "weight" and layer.part in ("", "original", "v") and isinstance(
                layer.module, nn.modules.conv._ConvNd):
            return int(layer.module.groups)
        return 1

    @property
    def placements(self) -> tuple[Any, ...] | None:
        """The DTensor placements (``(Shard(dim=0),)``), or ``None`` for a plain tensor."""
        t = self._tensor()
        return tuple(t.placements) if is_dtensor(t) else None

    # ---- values -----------------------------------------------------------------------

    def local(self) -> np.ndarray:
        """This rank's shard of a sharded (DTensor) parameter as NumPy, without communication.

        A view of the local storage on CPU (writes go through). For a parameter that is
        not sharded, the whole value (as :meth:`numpy`).
        """
        self._require_data("read")
        return _dtensor.local_numpy(self._tensor())

    def _require_data(self, action: str) -> None:
        if self._tensor().is_meta:  # the core's advice (initialize) is not enough on meta
            msg = (f"Cannot {action} parameter {self.path!r}: expected a parameter with data, got one on the "
                   "'meta' device (shape only). Call tree.initialize(...) and then tree.materialize('cpu').")
            raise errors.UninitializedParameterError(msg, path=self.path, expected="initialized", got="uninitialized")
        super()._require_data(action)

    # ---- hooks: facts -----------------------------------------------------------------

    @property
    def nbytes(self) -> int | None:
        """As the base class's, from the tensor at once (a journal asks it per tensor; a third of its cost)."""
        t = self._tensor()
        if isinstance(t, UninitializedTensorMixin):   # a Lazy module's: the shape it will have, where known
            return Parameter.nbytes.fget(self)  # type: ignore[attr-defined]
        return t.numel() * t.element_size()

    def _shape(self) -> Shape:
        t = self._tensor()
        if isinstance(t, UninitializedTensorMixin):
            return lazy_shape(self._owner(), self._attr)
        return tuple(t.shape)

    def _dtype(self) -> Any:
        return np_dtype(self._tensor().dtype)

    def _device(self) -> str:
        return str(self._tensor().device)

    def _native(self) -> torch.Tensor:
        return self._tensor()

    def _native_name(self) -> str:
        return ".".join(self._keys + (self._attr,))

    def _kind(self) -> str:
        return "buffer" if self._is_buffer else "parameter"

    def _state(self) -> State:
        t = self._tensor()
        if isinstance(t, UninitializedTensorMixin):
            return "deferred"
        return "uninitialized" if t.is_meta else "initialized"

    # ---- hooks: values ----------------------------------------------------------------

    def _read(self) -> np.ndarray:
        settle(self._owner(), self._attr)      # a fill recorded on meta, after a plain module.to_empty
        t = self._tensor().detach()
        if is_dtensor(t):
            t = _dtensor.read_full(t)  # a collective: every rank reads the same parameter
        if not t.is_cpu:   # (is_cpu: a tenth of device.type's cost, asked per tensor)
            t = t.cpu()
        if t.is_conj() or t.is_neg():
            t = t.resolve_conj().resolve_neg()
        return torch2np(t)

    def _keep_storage(self) -> Callable[[], None] | None:
        """Prepare fresh storage for a large CPU tensor's next whole write; the old one becomes the undo record.

        Nothing changes here: :meth:`_write` (or an initializer, through :meth:`_staging`)
        fills the fresh storage and only then puts it in
        with ``t.data = fresh`` (one call: another thread reads the old values or the new,
        never a half-filled buffer, and an interrupt before it leaves the old storage in
        place). That keeps the ``nn.Parameter`` (what optimizers, hooks and ties hold),
        as ``load_state_dict(assign=True)`` does, and is done only where no one else can
        reach the storage (:func:`owns_storage`). Small tensors are copied instead: a copy
        costs less than the allocation.
        """
        t = self._tensor()
        if t.numel() * t.element_size() < MOVABLE_BYTES:   # (asked first: initialize asks for every tensor)
            return None
        settle(self._owner(), self._attr)
        t = self._tensor()
        if not owns_storage(t):
            return None
        old = t.data
        with torch.inference_mode(False):   # a load under inference_mode must not make the weight an inference tensor
            self.__dict__["_fresh"] = (torch.empty_like(old), old.data_ptr())   # same dtype, device and strides

        def put_back() -> None:
            self.__dict__.pop("_fresh", None)
            if t.data_ptr() != old.data_ptr():
                t.data = old
                torch.autograd.graph.increment_version(t)

        return put_back

    def _prepared(self) -> torch.Tensor | None:
        """The fresh storage :meth:`_keep_storage` prepared for this tensor's next whole write (taken once),
        or ``None`` where there is none or the tensor changed since."""
        fresh = self.__dict__.pop("_fresh", None)
        if fresh is None:
            return None
        t = self._tensor()
        if fresh[1] == t.data_ptr() and fresh[0].shape == t.shape and fresh[0].dtype == t.dtype:
            return fresh[0]
        return None

    def _put_in(self, fresh: torch.Tensor) -> None:
        """Make the filled ``fresh`` storage the tensor's (one call: see :meth:`_keep_storage`)."""
        t = self._tensor()
        t.data = fresh
        torch.autograd.graph.increment_version(t)
        forget(self._owner(), self._attr)

    def _staging(self) -> tuple[np.ndarray, Callable[[], None]] | None:
        """The fresh storage :meth:`_keep_storage` prepared, for an initializer to fill before it is put in."""
        fresh = self._prepared()
        if fresh is None:
            return None
        return torch2np(fresh), lambda: self._put_in(fresh)

    def _write(self, array: np.ndarray, /) -> None:
        fresh = self._prepared()
        if fresh is not None:
            _fill(fresh, array)
            self._put_in(fresh)     # filled first, then put in: see _keep_storage
            return
        t = self._tensor()
        if t.is_meta:  # no storage yet: the value is applied by TorchTree.materialize
            value = np.array(array, copy=True)
            self._defer(lambda: self._write(value))
            return
        if is_dtensor(t):
            _dtensor.refuse_partial(t, self.path, "write")
            self._write_local(array[_dtensor.local_box(t, self.path)])
            return
        if t.is_cpu:
            _fill(t, array)
        else:
            with torch.no_grad():
                t.copy_(np2torch(array))
        forget(self._owner(), self._attr)

    def _grad(self) -> np.ndarray | None:
        g = self._tensor().grad
        if g is None:
            return None
        g = g.detach()
        if is_dtensor(g):
            g = _dtensor.read_full(g)  # a collective, as _read
        if g.is_sparse:
            g = g.to_dense()
        return np.array(torch2np(g.cpu()), copy=True)

    def _write_grad(self, array: np.ndarray | None, /) -> None:
        """Store ``array`` as ``.grad`` of the tensor the module holds (a tie is one tensor); ``None`` clears it.

        An existing dense gradient is written in place, so references to it (DDP's bucket
        views, a user's) see the change; a sharded (DTensor) one in this rank's box. Without
        one, a new gradient takes the parameter's dtype and device (sparse stays sparse).

        Raises:
            UninitializedParameterError: The tensor has no data (meta, Lazy).
            ShapeMismatchError: ``array`` is not the parameter's shape.
            UnsupportedModelError: A sharded parameter without a sharded gradient to write into.
        """
        t = self._tensor()
        if array is None:
            t.grad = None
            return
        self._require_data("write the gradient of")
        shape = tuple(t.shape)
        if tuple(array.shape) != shape:
            msg = (f"Cannot write the gradient of parameter {self.path!r}: expected shape {shape}, got "
                   f"{tuple(array.shape)}. Pass a gradient of the parameter's shape (canonical layout).")
            raise errors.ShapeMismatchError(msg, path=self.path, expected=shape, got=tuple(array.shape))
        g = t.grad
        if is_dtensor(t):
            if g is None or not is_dtensor(g):
                got = "no gradient" if g is None else type(g).__name__
                msg = (f"Cannot write the gradient of sharded parameter {self.path!r}: expected a sharded "
                       f"(DTensor) gradient to write into, got {got}. Run the backward pass first.")
                raise errors.UnsupportedModelError(msg, path=self.path, expected="a DTensor gradient", got=got)
            local = g.to_local()
            with torch.no_grad():
                local.copy_(np2torch(np.ascontiguousarray(array[_dtensor.local_box(g, self.path)])))
            return
        with torch.no_grad():
            if g is not None and g.layout == torch.strided and tuple(g.shape) == shape:
                g.copy_(np2torch(array))   # converts dtype and device
                return
            new = np2torch(array).to(device=t.device, dtype=t.dtype, copy=True)
            t.grad = new.to_sparse() if g is not None and g.is_sparse else new

    def _cast(self, dtype: np.dtype, /) -> None:
        """``t.data = t.data.to(dtype)``, as ``module.to(dtype)`` does, and the gradient with it.

        The ``nn.Parameter`` (or buffer) object stays, so an optimizer built before holds it
        still and a tie (one object) stays; Lazy and meta tensors take the dtype for later.

        Raises:
            DTypeMismatchError: torch has no such dtype.
            UnsupportedModelError: A sharded (DTensor) parameter: FSDP holds its own copies.
        """
        target = torch_dtype(dtype)
        t = self._tensor()
        if is_dtensor(t):
            msg = (f"Cannot cast sharded parameter {self.path!r} to {dtype.name}: expected a plain tensor, got a "
                   f"DTensor ({_dtensor.placement_text(t)}), whose copies FSDP manages. Cast before sharding, or "
                   f"use fully_shard(mp_policy=MixedPrecisionPolicy(param_dtype=torch.{target}).")
            raise errors.UnsupportedModelError(msg, path=self.path, expected="a plain tensor", got="DTensor")
        with torch.no_grad():
            g = t.grad
            t.data = t.data.to(target)
            if g is not None:
                t.grad = g.to(target)

    # ---- bulk hooks: many tensors per call (Parameter's defaults loop over the hooks above) -------

    @staticmethod
    def _trainable_many(params: list[Parameter], /) -> list[bool]:
        """``requires_grad`` of each tensor the modules hold (buffers never), read in one pass."""
        return [not p._is_buffer and p._module._parameters[p._attr].requires_grad
                for p in cast("list[TorchParameter]", params)]

    @staticmethod
    def _set_trainable_many(params: list[Parameter], value: bool, /) -> None:
        """``requires_grad = value`` on each tensor the modules hold (a Lazy module's too).

        Raises:
            UsageError: Unfreezing a tensor torch cannot differentiate (integer); before any flag changes.
        """
        tensors = []
        for p in cast("list[TorchParameter]", params):
            t = (p._module._buffers if p._is_buffer else p._module._parameters)[p._attr]
            tensors.append(t)
            if value and not (t.is_floating_point() or t.is_complex()):
                msg = (f"Cannot make parameter {p.path!r} trainable: expected a floating-point tensor, got "
                       f"dtype {t.dtype}, which torch cannot differentiate. Leave it frozen: unfreeze a "
                       "selection without it (where=lambda p: p.dtype.kind == 'f').")
                raise errors.UsageError(msg, path=p.path, expected="a floating-point tensor", got=str(t.dtype))
        for t in tensors:
            t.requires_grad = value   # as requires_grad_, which an uninitialized (Lazy) parameter refuses

    @staticmethod
    def _roles_many(params: list[Parameter], /) -> list[str]:
        """Each tensor's role; tensors of plain modules (no parametrization, no weight or spectral norm hook) of
        one module type, name and shape share one computation: :func:`role_of` and ``pp.roles`` read nothing
        else."""
        memo: dict[tuple[Any, ...], str] = {}
        out: list[str] = []
        for p in cast("list[TorchParameter]", params):
            role = p.__dict__.get("role")   # read or assigned before
            if role is None:
                module = p._module
                t = (module._buffers if p._is_buffer else module._parameters)[p._attr]
                if module._forward_pre_hooks or isinstance(module, parametrize.ParametrizationList) or isinstance(
                        t, UninitializedTensorMixin):
                    role = p.role
                else:
                    key = (type(module), p._attr, p._is_buffer, t.shape)
                    role = memo.get(key)
                    if role is None:
                        role = memo[key] = p.role
            out.append(role)
        return out

    @staticmethod
    def _read_many(params: list[Parameter], /) -> list[np.ndarray]:
        """A zero-copy NumPy view of each plain CPU tensor (as ``TorchTree.state``); any other through ``numpy``."""
        out: list[np.ndarray] = []
        for p in cast("list[TorchParameter]", params):
            module = p._module
            settle(module, p._attr)   # a fill recorded on meta, after a plain module.to_empty
            t = (module._buffers if p._is_buffer else module._parameters)[p._attr]
            if type(t) in PLAIN and t.is_cpu and not (t.is_conj() or t.is_neg()):
                out.append(torch2np(t.detach()))
            else:
                out.append(p.numpy())
        return out

    @staticmethod
    def _foreach_grads(params: list[TorchParameter]) -> tuple[list[list[torch.Tensor]], list[Parameter]]:
        """The dense gradients of ``params`` by device and dtype, for torch's foreach kernels, and the parameters
        whose gradient takes the per-parameter path (sparse, sharded, a tensor subclass). Parameters without a
        gradient, and empty gradients, are left out."""
        grads: list[torch.Tensor] = []
        other: list[Parameter] = []
        tensor, strided = torch.Tensor, torch.strided
        for p in params:
            module = p._module
            t = (module._buffers if p._is_buffer else module._parameters)[p._attr]
            g = t.grad
            if g is None:
                continue
            if type(g) is tensor and type(t) in PLAIN and g.layout is strided and not g.is_meta:
                if g.numel():
                    grads.append(g)
            else:
                other.append(p)
        if not grads:
            return [], other
        dtype, device = grads[0].dtype, grads[0].device
        if all(g.dtype is dtype and g.device == device for g in grads):
            return [grads], other
        groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for g in grads:
            groups.setdefault((g.device, g.dtype), []).append(g)
        return list(groups.values()), other

    @staticmethod
    def _foreach_norm(groups: list[list[torch.Tensor]], norm_type: float) -> float:
        """The ``norm_type`` norm of the tensors of ``groups`` together, as ``clip_grad_norm_`` computes it:
        ``torch._foreach_norm`` per device and dtype (float16/bfloat16 in float32), combined in float64 on the
        CPU (one small copy per device: the result is a Python float anyway)."""
        norms: list[float] = []
        with torch.no_grad():
            for group in groups:
                wide = torch.float32 if group[0].dtype in (torch.float16, torch.bfloat16) else None
                each = None
                if group[0].device.type in FOREACH_DEVICES:
                    try:
                        each = torch._foreach_norm(group, norm_type, dtype=wide)
                    except TypeError:   # torch before 2.3 has no dtype argument here
                        each = torch._foreach_norm(group, norm_type) if wide is None else None
                if each is None:
                    each = [torch.linalg.vector_norm(g, norm_type, dtype=wide) for g in group]
                norms.append(float(torch.linalg.vector_norm(torch.stack(each).to("cpu", torch.float64), norm_type)))
        if len(norms) <= 1:
            return norms[0] if norms else 0.0
        return float(torch.linalg.vector_norm(torch.tensor(norms, dtype=torch.float64), norm_type))

    @staticmethod
    def _grad_norm_many(params: list[Parameter], norm_type: float, /) -> float:
        """``torch._foreach_norm`` of the gradient tensors themselves (no NumPy copy, torch's threads); sparse
        and sharded gradients through the default."""
        groups, other = TorchParameter._foreach_grads(cast("list[TorchParameter]", params))
        norm = TorchParameter._foreach_norm(groups, norm_type)
        if other:
            rest = Parameter._grad_norm_many(other, norm_type)
            norm = float(torch.linalg.vector_norm(torch.tensor([norm, rest], dtype=torch.float64), norm_type))
        return norm

    @staticmethod
    def _clip_grads_many(params: list[Parameter], max_norm: float, norm_type: float, /) -> float:
        """``clip_grad_norm_``'s way: the norm of :meth:`_grad_norm_many`, then one ``torch._foreach_mul_`` per
        device and dtype, in place (DDP's bucket views and a user's references see it), the factor a float32
        tensor (float64 for float64 gradients) as torch's; with a sparse or sharded gradient among them, the
        default."""
        groups, other = TorchParameter._foreach_grads(cast("list[TorchParameter]", params))
        if other:
            return Parameter._clip_grads_many(params, max_norm, norm_type)
        norm = TorchParameter._foreach_norm(groups, norm_type)
        factor = max_norm / (norm + 1e-6)
        if not factor >= 1.0:   # NaN too: torch's clamp(max=1.0) keeps it, and every gradient becomes NaN
            with torch.no_grad():
                for group in groups:
                    first = group[0]
                    scale = torch.tensor(factor, device=first.device,
                                         dtype=torch.float64 if first.dtype == torch.float64 else torch.float32)
                    if first.device.type in FOREACH_DEVICES:
                        torch._foreach_mul_(group, scale)
                    else:
                        for g in group:
                            g.mul_(scale)
        return norm

    @staticmethod
    def _zero_grads_many(params: list[Parameter], /) -> None:
        """``torch._foreach_zero_`` on the gradient tensors, as ``optimizer.zero_grad(set_to_none=False)``;
        with a sparse or sharded gradient among them, the default."""
        groups, other = TorchParameter._foreach_grads(cast("list[TorchParameter]", params))
        if other:
            Parameter._zero_grads_many(params)
            return
        with torch.no_grad():
            for group in groups:
                if group[0].device.type in FOREACH_DEVICES:
                    torch._foreach_zero_(group)
                else:
                    for g in group:
                        g.zero_()

    @staticmethod
    def _cast_many(params: list[Parameter], dtype: np.dtype, /) -> None:
        """``_cast`` of each, undone from the storage itself instead of a copy of the values.

        A narrowing cast keeps the old storage object (and gradient) until every tensor is
        cast; a widening one is undone by casting back, which is exact. With a sharded
        (DTensor) tensor among them, the default, which refuses it and casts back the rest.
        """
        tensors = [p._tensor() for p in cast("list[TorchParameter]", params)]
        if any(is_dtensor(t) for t in tensors):
            Parameter._cast_many(params, dtype)
            return
        target = torch_dtype(dtype)
        # (tensor, its old data or dtype, its gradient, the gradient's old data or dtype); as model.to does, the
        # gradient object stays and takes the new dtype through .data (a pinned grad_dtype refuses t.grad = ...)
        done: list[tuple[torch.Tensor, Any, torch.Tensor | None, Any]] = []
        current = params[0]
        with torch.no_grad():
            try:
                for p, t in zip(params, tensors):
                    current = p
                    data, g = t.data, t.grad
                    exact = torch.promote_types(data.dtype, target) == target   # widening: casting back restores
                    t.data = data.to(target)
                    done.append((t, data.dtype if exact else data, None, None))
                    if g is not None:
                        g_data = g.data
                        g.data = g_data.to(target)
                        done[-1] = (t, done[-1][1], g, g_data.dtype if exact else g_data)
            except BaseException as exc:
                for t, data, g, g_data in reversed(done):
                    t.data = t.data.to(data) if isinstance(data, torch.dtype) else data
                    if g is not None:
                        g.data = g.data.to(g_data) if isinstance(g_data, torch.dtype) else g_data
                if not isinstance(exc, Exception):
                    raise
                msg = (f"Cannot cast parameter {current.path!r} to {dtype.name}: expected torch to change its dtype, "
                       f"got {type(exc).__name__}: {exc}. Nothing was changed; cast the module with module.to(...) "
                       "to see torch's own error.")
                raise errors.UnsupportedModelError(msg, path=current.path, expected=f"a cast to {dtype.name}",
                                                   got=repr(exc)) from exc

    def _identity(self) -> Any:
        return id(self._tensor())

    def _writable_view(self) -> np.ndarray | None:
        """A NumPy view of a plain CPU tensor, for a write (an item write, an initializer filling in place).

        The write is counted as torch counts an in-place one (the autograd version counter:
        a backward through a graph that saved the old values then refuses, as it does after
        ``nn.init.*_`` under ``no_grad``, instead of using the new values). A fill recorded
        on meta runs first: after a plain ``module.to_empty`` it would otherwise overwrite
        this write at the first forward; so does one recorded under a tie's other path,
        which the count would otherwise drop (a write since ``to_empty``) though this write
        may be of one element.
        """
        t = self._tensor()
        if is_dtensor(t):
            return None  # no global storage: writes go through _write to the local box
        if not t.is_cpu or isinstance(t, UninitializedTensorMixin) or t.is_conj() or t.is_neg():
            return None
        settle(self._owner(), self._attr)
        t = self._tensor()
        if t._version == 0:   # never written since it was made (to_empty): a fill may wait under another path
            settle_tensor(t)
        torch.autograd.graph.increment_version(t)
        return torch2np(t.detach())

    def _write_refusal(self) -> str | None:
        """Refuse a tensor whose elements share memory (``expand``, ``as_strided``): a write would leave every
        element that shares a place holding the last value written to it, as torch's own ``copy_`` refuses."""
        t = self._tensor()
        if isinstance(t, UninitializedTensorMixin) or t.is_contiguous() or t.is_meta or is_dtensor(t):
            return None     # (contiguous: no two elements share memory; a lazy tensor has no strides to ask)
        if torch._debug_has_internal_overlap(t) != 1:   # 0: none; 2: too hard to tell, as copy_ lets it pass
            return None
        return (f"a tensor whose {t.numel()} elements share memory (strides {tuple(t.stride())}, an expand() or "
                "as_strided view), where a write keeps only the last value written to each place. Give it its own "
                "storage first: module.<name> = nn.Parameter(tensor.contiguous())")

    def _memory_span(self) -> tuple[int, int, bool] | None:
        t = self._tensor()
        if not t.is_cpu or is_dtensor(t) or isinstance(t, UninitializedTensorMixin):
            return None
        start = t.data_ptr()
        if t.is_contiguous():
            return start, start + t.nbytes, True   # a tenth of what a NumPy view costs
        if t.is_conj() or t.is_neg():
            return None   # its reads resolve the bit: a copy
        # from the strides (torch's are never negative), not a view: this only reads, and _writable_view
        # is for writes (it runs a recorded fill first)
        last = sum((n - 1) * stride for n, stride in zip(t.shape, t.stride()))
        return start, start + (last + 1) * t.element_size(), False

    # ---- hooks: sharded (DTensor) parameters --------------------------------------------

    def _local_box(self) -> tuple[slice, ...] | None:
        t = self._tensor()
        return _dtensor.local_box(t, self.path) if is_dtensor(t) else None

    def _local_view(self) -> np.ndarray | None:
        t = self._tensor()
        if not is_dtensor(t) or t.is_meta:
            return None
        local = t.to_local().detach()
        if local.device.type != "cpu" or local.is_conj() or local.is_neg():
            return None
        torch.autograd.graph.increment_version(local)  # the caller writes into it
        return torch2np(local)

    def _write_local(self, array: np.ndarray, /) -> None:
        local = self._tensor().to_local()
        if local.device.type == "cpu":
            np.copyto(torch2np(local.detach()), array, casting="unsafe")
            torch.autograd.graph.increment_version(local)
        else:
            with torch.no_grad():
                local.copy_(np2torch(np.ascontiguousarray(array)))
        forget(self._owner(), self._attr)

    def _read_local(self) -> np.ndarray:
        return _dtensor.local_numpy(self._tensor())

    def _shard_writer(self) -> bool:
        t = self._tensor()
        return _dtensor.is_primary(t) if is_dtensor(t) else _dtensor.rank_world()[0] == 0

    def _placement(self) -> str | None:
        t = self._tensor()
        return _dtensor.placement_text(t) if is_dtensor(t) else None

    def _agree_seed(self, seed: int, /) -> int:
        return _dtensor.agree_seed(seed) if is_dtensor(self._tensor()) else seed

    # ---- hooks: deferred initialization ---------------------------------------------------

    def _defers_init(self) -> bool:
        return self._tensor().is_meta

    def _defer(self, fill: Callable[[], None], /) -> None:
        owner = self._owner()
        record(owner, self._attr, fill, lazy=isinstance(self._store(owner)[self._attr], UninitializedTensorMixin))

    # ---- hooks: ties ----------------------------------------------------------------------

    def _share(self, anchor: Parameter, /) -> None:
        source = anchor._native()
        owner = self._owner()
        if not self._is_buffer and not isinstance(source, nn.Parameter):
            msg = (f"Cannot tie parameter {self.path!r} to buffer {anchor.path!r}: expected an nn.Parameter, "
                   f"got {type(source).__name__}. Tie parameters with parameters and buffers with buffers.")
            raise errors.TieError(msg, path=self.path, expected="nn.Parameter", got=type(source).__name__)
        self._store(owner)[self._attr] = source

    def _reattach(self, native: Any, /) -> bool:
        """Put the very tensor back (an optimizer built before holds it), as ``_share`` replaced it."""
        if not isinstance(native, torch.Tensor):
            return False
        self._store(self._owner())[self._attr] = native
        return True

    def _unshare(self) -> None:
        owner = self._privatize()
        store = self._store(owner)
        t = store[self._attr]
        if isinstance(t, UninitializedParameter):
            own: torch.Tensor = UninitializedParameter(  # type: ignore[call-arg]  # stubs lack device, dtype
                requires_grad=t.requires_grad, device=t.device, dtype=t.dtype)
        elif isinstance(t, UninitializedBuffer):
            own = UninitializedBuffer(  # type: ignore[call-arg]  # stubs lack device, dtype
                requires_grad=t.requires_grad, device=t.device, dtype=t.dtype)
        else:
            data = t.detach().clone()
            own = nn.Parameter(data, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else data
        store[self._attr] = own

    # ---- hooks: initializers ----------------------------------------------------------------

    def _declared_initializer(self) -> Initializer | None:
        """What torch's ``reset_parameters`` draws for this tensor (:func:`declared_initializer`), or ``None``.

        Weight norm's magnitude and direction (computed from the weight) have no formula of their own.
        """
        layer = self._layer()
        if layer.part not in ("", "original"):
            return None
        t = self._tensor()
        shape = None if isinstance(t, UninitializedTensorMixin) else tuple(t.shape)
        return declared_initializer(layer.module, layer.attr, shape, parent=None if layer.part else self._parent())

    def _after_fill(self) -> None:
        """An ``Embedding``'s (or ``EmbeddingBag``'s) ``padding_idx`` row back to zeros after a draw, as
        ``reset_parameters`` leaves it: the row never gets a gradient, so a drawn one would stay."""
        layer = self._layer()
        module = layer.module
        if layer.part or layer.attr != "weight" or not isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return
        index = module.padding_idx
        t = self._tensor()
        if index is None or t.is_meta or is_dtensor(t) or isinstance(t, UninitializedTensorMixin):
            return
        with torch.no_grad():
            t[index].fill_(0)

    @staticmethod
    def _after_fill_many(params: list[Parameter], /) -> None:
        """Weight norm's magnitude ``g`` set to ``‖v‖`` (norm over every axis but its kept one) wherever both
        ``g`` and ``v`` were drawn and ``g`` holds its role's ones, as ``weight_norm`` sets it: the layer's
        weight ``g * v / ‖v‖`` is then the initializer's draw, not rows of norm 1. A ``g`` a rule gave other
        values keeps them; where only one of them was drawn (a selection), the other is left as it is. On
        meta tensors it runs with their recorded fills, when they get storage."""
        mine = cast("list[TorchParameter]", params)
        drawn = {id(p._tensor()) for p in mine}
        for g_param in mine:
            if g_param._attr != "original0" and not g_param._attr.endswith("_g"):
                continue   # (asked first: cheaper than the layer, for every drawn tensor)
            layer = g_param._layer()
            if layer.part != "g":
                continue
            owner, attr = g_param._owner(), g_param._attr
            v_attr = "original1" if attr == "original0" else attr[:-1] + "v"
            v = owner._parameters.get(v_attr)   # this layer's own v: a v tied to another layer's counts too
            if v is None or id(v) not in drawn or is_dtensor(v) or is_dtensor(g_param._tensor()):
                continue
            dim = -1 if layer.dim is None else layer.dim
            if not any(t.is_meta or isinstance(t, UninitializedTensorMixin) for t in (g_param._tensor(), v)):
                _set_magnitude(g_param._tensor(), v, dim)
                continue
            fills = pending(owner)
            recorded = fills.get(attr) if fills else None   # g's own draw, run first when it gets storage

            def fill(owner: nn.Module = owner, attr: str = attr, v_attr: str = v_attr, dim: int = dim,
                     recorded: Callable[[], None] | None = recorded) -> None:
                if recorded is not None:
                    recorded()
                settle(owner, v_attr)   # v's recorded draw first
                _set_magnitude(owner._parameters[attr], owner._parameters[v_attr], dim)

            g_param._defer(fill)

    def _parent(self) -> tuple[nn.Module, str] | None:
        """``(parent module, name)`` of the module holding this tensor; ``None`` for the root's own tensors."""
        if not self._keys:
            return None
        module = self._root
        for key in self._keys[:-1]:
            module = module._modules[key]
        return module, self._keys[-1]

    # ---- where the tensor lives -----------------------------------------------------------

    def _tensor(self) -> torch.Tensor:
        module = self._module
        return (module._buffers if self._is_buffer else module._parameters)[self._attr]

    def _owner(self) -> nn.Module:
        return self._module

    def _layer(self) -> Layer:
        """The layer this tensor belongs to (see :func:`layer_of`), found again only when the module's hooks change.

        Role, axes, groups and the declared initializer each ask (a walk of the module's
        hooks). The answer is kept with the module and the keys of its forward pre-hooks:
        weight or spectral norm removed and applied again gets new keys.
        """
        module, hooks = self._module, tuple(self._module._forward_pre_hooks)
        found = self.__dict__.get("_found_layer")
        if found is None or found[0] is not module or found[1] != hooks:
            found = self.__dict__["_found_layer"] = (module, hooks, layer_of(module, self._attr, self._host))
        return found[2]

    def _host(self) -> tuple[nn.Module, str]:
        """``(module, name)`` of the layer whose ``parametrizations.<name>`` owns this tensor."""
        module = self._root
        for key in self._keys[:-2]:   # ..., "parametrizations", name
            module = module._modules[key]
        return module, self._keys[-1]

    def _store(self, owner: nn.Module) -> dict:
        return owner._buffers if self._is_buffer else owner._parameters

    def _privatize(self) -> nn.Module:
        """Make every module on this parameter's path used only by this path; return the owner.

        A module reached through several paths (a reused block) is replaced, at this
        path only, by a shallow copy that still holds the same tensors and children.
        """
        counts = Counter(id(m) for _, m in self._root.named_modules(remove_duplicate=False))
        module = self._root
        for key in self._keys:
            child = module._modules[key]
            if counts[id(child)] > 1:
                child = shallow_clone(child)
                module._modules[key] = child
            module = child
        self._module = module
        return module
