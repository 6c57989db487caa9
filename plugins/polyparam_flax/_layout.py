"""The structure of an NNX module as polyparam sees it: child blocks, variables, and each variable's canonical leaf.

A node is reached from the root by *steps*: ``("attr", name)`` (a module attribute) or
``("item", key)`` (a position of an ``nnx.List``/list/tuple, a key of an ``nnx.Dict``/dict).
Parameters and trees keep the root and their steps and walk them on every access, so a
tie or a write that replaces a Variable or a module is seen at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from flax import nnx

from polyparam import errors, roles
from polyparam.backend import join_path
from polyparam_flax import NAME
from polyparam_flax._convert import Layout

__all__ = ["CANONICAL_ORDER", "SCALARS", "Leaf", "Step", "check_model", "children_of", "family", "is_a", "is_block",
           "leaf_of", "leaves_of", "members_of", "native_path", "number_dtype", "number_type", "put", "resolve",
           "shape_of", "variables_of"]

Step = tuple[str, Any]          # ("attr", name) | ("item", key)
Entry = tuple[str, tuple[Step, ...], Any]

#: Known leaves come in this order (torch's), the others after them in attribute order.
CANONICAL_ORDER = ("weight", "bias", "running_mean", "running_var")
_NORMS = (nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm, nnx.InstanceNorm)
_SKIP = (nnx.RngState, nnx.Intermediate)   # RNG keys and counters, sown intermediates: no parameters


@dataclass(frozen=True)
class Leaf:
    """How one NNX Variable maps to a canonical parameter."""

    name: str
    role: str
    axes: tuple[str, ...] | None
    layout: Layout = Layout()
    groups: int = 1


# ---- walking ----------------------------------------------------------------------------


def resolve(root: Any, steps: Sequence[Step]) -> Any:
    """The object ``steps`` lead to from ``root``. An ``nnx.List`` item is read where the list keeps it (its
    attribute ``"0"``, ``"1"``, ...): its ``__getitem__`` costs more than the rest of a step."""
    node = root
    for kind, key in steps:
        if kind == "attr":
            node = getattr(node, key)
        elif type(node) is nnx.List and type(key) is int and 0 <= key < node._length:
            node = vars(node)[str(key)]
        else:
            node = node[key]
    return node


def put(root: Any, steps: Sequence[Step], value: Any) -> None:
    """Make the last of ``steps`` hold ``value`` (an attribute or an item of its container)."""
    owner = resolve(root, steps[:-1])
    kind, key = steps[-1]
    if kind == "attr":
        setattr(owner, key, value)
    elif isinstance(owner, tuple):
        msg = (f"Cannot replace item {key!r} of a tuple at {native_path(steps[:-1]) or 'the root'!r}: expected a "
               "mutable container, got a tuple. Hold the modules in an nnx.List.")
        raise errors.TieError(msg, path=native_path(steps), expected="nnx.List", got="tuple")
    else:
        owner[key] = value


def native_path(steps: Sequence[Step]) -> str:
    """NNX's own dotted path of ``steps`` (``layers.0.kernel``), as ``nnx.state`` names it."""
    return ".".join(str(key) for _, key in steps)


#: The layer families polyparam knows, most specific first (an ``nnx.LoRALinear`` is a ``Linear``).
_FAMILIES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("general", nnx.LinearGeneral), ("linear", nnx.Linear), ("conv", nnx.Conv),
    ("conv_transpose", nnx.ConvTranspose), ("embed", nnx.Embed), ("batch_norm", nnx.BatchNorm),
    ("group_norm", nnx.GroupNorm), ("norm", _NORMS), ("lora", nnx.LoRA))
#: type -> (a block polyparam walks into, its family, a Variable type polyparam may list)
_BY_TYPE: dict[type, tuple[bool, str | None, bool]] = {}
_BY_TYPE_MAX = 4096   # forgotten past this many types (classes made on the fly)


def _kind(value: Any) -> tuple[bool, str | None, bool]:
    """``(is a block, family, is a Variable type listed)`` of ``value``, asked once per type: the ``isinstance``
    checks against NNX's abstract classes cost about 0.3 us each, and a walk asks them of every attribute of
    every module."""
    kind = type(value)
    known = _BY_TYPE.get(kind)
    if known is None:
        block = issubclass(kind, (nnx.Module, list, tuple, dict))
        family = next((name for name, types in _FAMILIES if issubclass(kind, types)), None)
        listed = issubclass(kind, nnx.Variable) and not issubclass(kind, _SKIP)
        if len(_BY_TYPE) >= _BY_TYPE_MAX:
            _BY_TYPE.clear()
        known = _BY_TYPE[kind] = (block, family, listed)
    return known


def family(module: Any) -> str | None:
    """The known layer family of ``module`` (``"linear"``, ``"conv"``, ``"norm"``, ... see :data:`_FAMILIES`),
    or ``None``."""
    return _kind(module)[1]


def is_block(value: Any) -> bool:
    """Whether ``value`` is a module or a container polyparam walks into (RNG streams are not)."""
    return _kind(value)[0]


def is_a(value: Any, types: type | tuple[type, ...]) -> bool:
    """``isinstance(value, types)`` for Variable types, by the value's class: NNX's ``VariableMeta.__instancecheck__``
    also asks whether a value is a JAX tracer standing for a Variable (inside a transform), 0.7 to 2.7 us a call;
    polyparam reads models outside transforms, where a Variable is an instance of its class."""
    return issubclass(type(value), types)


#: Python numbers a Variable may hold (``nnx.Param(1.0)``, a counter ``nnx.Variable(0)``): read as 0-d values of
#: the dtype JAX gives them (:func:`number_dtype`), written back as the same Python type.
SCALARS = (bool, int, float, complex)


def _is_array(raw: Any) -> bool:
    return hasattr(raw, "shape") and hasattr(raw, "dtype")


def number_type(raw: Any) -> type | None:
    """The Python number type of a Variable's value (``float`` for ``1.0`` and for JAX's typed float literals
    that a transform leaves), or ``None`` for an array."""
    if _is_array(raw):
        return None
    kind = next((kind for kind in SCALARS if isinstance(raw, kind)), None)
    if kind is int:
        limits = np.iinfo(number_dtype(int))
        if not limits.min <= raw <= limits.max:
            return None   # JAX's integer does not hold it: refused by check_model, not read as an object array
    return kind


def number_dtype(kind: type) -> np.dtype:
    """The dtype JAX gives a Python number of ``kind`` (``jnp.asarray(1.5)``: float32, int32, bool, complex64;
    64-bit with ``jax_enable_x64``), which a jitted step leaves in the Variable: a parameter holding a Python
    number reads in it, so a checkpoint saved before a step loads after it."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.result_type(kind)))


def is_variable(value: Any) -> bool:
    """Whether ``value`` is a Variable holding an array or a Python number, which polyparam lists (not an RNG key
    or a sown value; a Variable holding anything else is refused by :func:`check_model`)."""
    return _kind(value)[2] and _listable(value.get_raw_value())


def _listable(raw: Any) -> bool:
    """Whether a Variable's value is one polyparam reads as a parameter: an array or a Python number."""
    return _is_array(raw) or number_type(raw) is not None


def shape_of(variable: Any) -> tuple[int, ...]:
    """The native shape of a Variable's array, ``()`` for a Python number (``Variable.shape`` reads the value
    through its hooks: 6 us)."""
    raw = variable.get_raw_value()
    return () if number_type(raw) is not None else tuple(int(d) for d in raw.shape)


def _unread(node: Any, at: str) -> errors.UnsupportedModelError | None:
    """The refusal of state ``nnx.state`` holds that polyparam would leave out, or ``None``: a Variable holding
    neither an array nor a number (a dict of arrays), an array or number held as a module's data without a
    Variable (``nnx.data(jnp.ones(3))``), or an ``nnx.Pytree`` that is not a Module holding Variables (an
    ``nnx.Optimizer`` kept on the model), or a Variable or module an ``nnx.Sequential`` holds beside its
    ``layers``. Left out, it would be missing from every save, load, transfer and diff."""
    numbers: tuple[type, ...] = SCALARS   # a module's data numbers are state; a tuple's are its configuration
    if isinstance(node, nnx.Module) and not isinstance(node, (nnx.List, nnx.Dict)):
        if getattr(type(node), "_pytree__is_pytree", True):
            nodes = vars(node).get("_pytree__nodes") or {}
            entries = [(name, value) for name, value in _attributes(node) if nodes.get(name)]
        else:   # pytree=False: NNX's graph takes every array attribute as state (numbers are not)
            entries, numbers = _attributes(node), ()
    elif isinstance(node, (Sequence, Mapping)) and not isinstance(node, str):
        entries, numbers = [(str(key), value) for key, value in _items(node)], ()
    else:
        return None
    for name, value in entries:
        if isinstance(node, nnx.Sequential) and name != "layers" and (is_block(value) or is_variable(value)):
            what, fix = (f"{type(value).__name__} held by the nnx.Sequential itself, beside its layers",
                         "Hold it in a module of its own among the layers, or in the module that holds the "
                         "Sequential")
        elif value is None or is_block(value) or is_a(value, _SKIP):
            continue
        elif is_a(value, nnx.Variable):
            raw = value.get_raw_value()
            if raw is None or _listable(raw):
                continue
            what, fix = (f"{type(value).__name__} holding a {type(raw).__name__}",
                         "Hold one array per Variable (a Variable for each entry, in an nnx.Dict)")
        elif isinstance(value, (jax.Array, np.ndarray, np.generic, *numbers)):
            what, fix = (f"{type(value).__name__} held as data without a Variable (nnx.data)",
                         "Hold it in a Variable: nnx.Param for a learned value, nnx.Variable or nnx.BatchStat "
                         "for state")
        elif (isinstance(value, nnx.Pytree) and not isinstance(value, (nnx.Rngs, nnx.RngStream))
              and any(is_variable(v) for _, v in nnx.iter_graph(value))):
            what, fix = (f"{type(value).__name__}, an nnx.Pytree that is not a Module, holding Variables",
                         "Keep it outside the model (an nnx.Optimizer, metrics), or make its class an nnx.Module "
                         "so polyparam walks it")
        else:
            continue
        path = join_path(at, name)
        article = "an" if what[0] in "AEIOUaeiou" else "a"
        msg = (f"Cannot read {path!r} of {type(node).__name__}: expected a Variable holding an array or a number, "
               f"got {article} {what}, which nnx.state saves but polyparam cannot list as a parameter (it would be "
               f"left out of every save, load and transfer). {fix}.")
        return errors.UnsupportedModelError(msg, backend=NAME, path=path, expected="a Variable holding an array",
                                            got=what)
    return None


def _items(container: Any) -> list[tuple[Any, Any]]:
    if isinstance(container, nnx.Dict):   # its keys are attributes: in the order assigned (see _attributes)
        return list(_attributes(container))
    if isinstance(container, Mapping):
        return list(container.items())
    return list(enumerate(container))


def _attributes(module: Any) -> list[tuple[str, Any]]:
    """``module``'s attributes in the order they were assigned.

    NNX's transforms (``nnx.jit``, ``nnx.update``) set a module's attributes again in sorted
    order, so ``vars(module)`` is alphabetical after one jitted step; the record of which
    attributes are data (``_pytree__nodes``) keeps the order they were first assigned in,
    which the paths' order and the layout rules of ``_flatten`` read.
    """
    attrs = vars(module)
    nodes = attrs.get("_pytree__nodes")
    names: Any = attrs
    if nodes:   # the recorded ones in their order, then the others (a dict's update keeps the places it has)
        names = {name: None for name in nodes if name in attrs}
        names.update(attrs)
    return [(name, attrs[name]) for name in names if not name.startswith(("_pytree__", "_object__"))]


def members_of(node: Any, *, at: str = "") -> tuple[list[Entry], list[tuple[str, Step, Any]]]:
    """``(children_of(node, at=at), variables_of(node))`` from one read of ``node``'s attributes (a walk needs
    both)."""
    if isinstance(node, nnx.Sequential):
        return children_of(node, at=at), []
    if isinstance(node, (Sequence, Mapping)) and not isinstance(node, str):
        found: list[tuple[Any, Step, Any]] = [(key, ("item", key), value) for key, value in _items(node)]
    elif isinstance(node, nnx.Module):
        found = [(name, ("attr", name), value) for name, value in _attributes(node)]
    else:
        return [], []
    children: list[Entry] = []
    variables: list[tuple[str, Step, Any]] = []
    for key, step, value in found:
        block, _, listed = _kind(value)
        if block:
            if "." in str(key):
                raise _dotted(node, str(key), at)
            children.append((str(key), (step,), value))
        elif listed and _listable(value.get_raw_value()):
            variables.append((str(key), step, value))
    return children, variables


def children_of(node: Any, *, at: str = "") -> list[Entry]:
    """The child blocks of ``node`` (at canonical path ``at``) as ``(name, steps from node, child)``, in order.

    An ``nnx.Sequential`` is a sequential container: its children are the positions of
    ``layers``, functions (``nnx.relu``) included, as a torch ``Sequential`` counts its ``ReLU``.

    Raises:
        UnsupportedModelError: A child's key (an ``nnx.Dict`` key, an attribute name) holds ``"."``.
    """
    if isinstance(node, nnx.Sequential):
        return [(str(i), (("attr", "layers"), ("item", i)), child) for i, child in enumerate(node.layers)]
    if isinstance(node, (Sequence, Mapping)) and not isinstance(node, str):
        entries: list[Entry] = [(str(key), (("item", key),), value) for key, value in _items(node) if is_block(value)]
    elif isinstance(node, nnx.Module):
        entries = [(name, (("attr", name),), value) for name, value in _attributes(node) if is_block(value)]
    else:
        return []
    for name, _, _ in entries:
        if "." in name:
            raise _dotted(node, name, at)
    return entries


def _dotted(node: Any, key: str, at: str) -> errors.UnsupportedModelError:
    """The refusal of a child keyed ``key``: ``"."`` separates the levels of a path, so its path would name no
    block (``tree["heads.cls"]``) or the same one as another child's (``{"a.b": ..., "a": {"b": ...}}``)."""
    where = f"{type(node).__name__} {at!r}" if at else f"the root {type(node).__name__}"
    msg = (f"Cannot name the child {key!r} of {where}: expected a key without '.', got {key!r}, whose path "
           f"{join_path(at, key)!r} would read as nested blocks (and may repeat another child's). Rename the key "
           f"without '.', e.g. {key.replace('.', '_')!r}.")
    return errors.UnsupportedModelError(msg, backend=NAME, path=at or None, expected="a key without '.'", got=key)


def variables_of(node: Any) -> list[tuple[str, Step, Any]]:
    """``node``'s own Variables as ``(native name, step, variable)``, in order."""
    if isinstance(node, nnx.Sequential):
        return []
    if isinstance(node, (Sequence, Mapping)) and not isinstance(node, str):
        return [(str(key), ("item", key), value) for key, value in _items(node) if is_variable(value)]
    if isinstance(node, nnx.Module):
        return [(name, ("attr", name), value) for name, value in _attributes(node) if is_variable(value)]
    return []


# ---- canonical leaves ---------------------------------------------------------------------


def _conv_kernel(module: Any, ndim: int) -> Leaf:
    """``nnx.Conv`` kernel ``(*k, in/groups, out)`` -> ``(out, in/groups, *k)``."""
    d = ndim - 2
    return Leaf("weight", "weight", ("out", "in", *["space"] * d), Layout((d + 1, d, *range(d))),
                groups=int(getattr(module, "feature_group_count", 1) or 1))


def _conv_transpose_kernel(module: Any, ndim: int) -> Leaf:
    """``nnx.ConvTranspose`` kernel -> torch's ``(in, out, *k)``.

    Stored ``(*k, in, out)`` it is convolved with the dilated input as it is, so the
    spatial axes flip; with ``transpose_kernel=True`` it is stored ``(*k, out, in)`` and
    JAX computes the adjoint of the convolution itself, so only the axes move.
    """
    d = ndim - 2
    space = tuple(range(2, 2 + d))
    if getattr(module, "transpose_kernel", False):
        return Leaf("weight", "weight", ("in", "out", *["space"] * d), Layout((d + 1, d, *range(d))))
    return Leaf("weight", "weight", ("in", "out", *["space"] * d), Layout((d, d + 1, *range(d)), flip=space))


def _linear_general(module: Any, attr: str, ndim: int) -> Leaf | None:
    """``nnx.LinearGeneral`` (``MultiHeadAttention``'s query, key, value and out): kernel ``(*batch, *in, *out)``,
    bias ``(*batch, *out)``, kept in NNX's layout and names (torch has no such layer).

    As Keras' ``EinsumDense``: the contracted axes are ``in``, the axes the layer makes ``out``,
    and each batch axis (one kernel per index) neither, so the fans are those of one kernel
    (query ``(E, heads, head_dim)``: fan in ``E``, fan out ``heads * head_dim``).
    """
    batch = len(getattr(module, "batch_axis", ()) or ())
    n_in = len(getattr(module, "in_features", ()) or ())
    if attr == "kernel" and ndim > batch + n_in:
        return Leaf("kernel", "weight", ("other",) * batch + ("in",) * n_in + ("out",) * (ndim - batch - n_in))
    if attr == "bias" and ndim >= batch:
        return Leaf("bias", "bias", ("other",) * batch + ("out",) * (ndim - batch))
    return None


def _known(module: Any, attr: str, ndim: int) -> Leaf | None:
    kind = family(module)
    if kind == "general":
        return _linear_general(module, attr, ndim)
    if attr == "bias" and kind in ("linear", "conv", "conv_transpose"):
        return Leaf("bias", "bias", ("out",))
    if kind == "linear" and attr == "kernel":
        return Leaf("weight", "weight", ("out", "in"), Layout((1, 0)))
    if kind == "conv" and attr == "kernel":
        return _conv_kernel(module, ndim)
    if kind == "conv_transpose" and attr == "kernel":
        return _conv_transpose_kernel(module, ndim)
    if kind == "embed" and attr == "embedding":
        return Leaf("weight", "weight", ("in", "out"))
    if kind in ("batch_norm", "group_norm", "norm"):
        return _NORM_LEAVES.get(attr) if kind == "batch_norm" or attr in ("scale", "bias") else None
    return None


_NORM_LEAVES = {"scale": Leaf("weight", "scale", None), "bias": Leaf("bias", "shift", None),
                "mean": Leaf("running_mean", "running_mean", None), "var": Leaf("running_var", "running_var", None)}


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in value) if isinstance(value, Sequence) else (int(value),)


def _configured(module: Any, attr: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape of ``module``'s Variable ``attr`` (now ``shape``) that the layer's own configuration implies, or
    ``None`` where polyparam does not know it. A LoRA's rank is not kept: it is read from ``shape``."""
    kind = family(module)
    if kind == "general":
        batch = tuple(int(n) for n in dict(getattr(module, "batch_axis", None) or {}).values())
        ins, outs = _ints(module.in_features), _ints(module.out_features)
        return {"kernel": batch + ins + outs, "bias": batch + outs}.get(attr)
    if kind == "linear":   # nnx.LoRALinear too
        return {"kernel": (int(module.in_features), int(module.out_features)),
                "bias": (int(module.out_features),)}.get(attr)
    if kind in ("conv", "conv_transpose"):
        kernel = getattr(module, "kernel_shape", None)
        return {"kernel": None if kernel is None else _ints(kernel), "bias": (int(module.out_features),)}.get(attr)
    if kind == "embed":
        return (int(module.num_embeddings), int(module.features)) if attr == "embedding" else None
    if kind == "group_norm":
        return (int(module.num_groups) * int(module.group_size),) if attr in ("scale", "bias") else None
    if kind in ("batch_norm", "norm"):
        return (int(module.num_features),) if attr in ("scale", "bias", "mean", "var") else None
    if kind == "lora" and shape:
        rank = {"lora_a": shape[-1], "lora_b": shape[-2] if len(shape) > 1 else None}.get(attr)
        if rank is not None:
            return (int(module.in_features), rank) if attr == "lora_a" else (rank, int(module.out_features))
    return None


def _stacked(module: Any, attr: str, shape: tuple[int, ...], expected: tuple[int, ...], *, path: str,
             native: str) -> errors.UnsupportedModelError:
    """The refusal of a Variable with more axes than one layer's: a stack of layers (``nnx.vmap`` / ``nnx.scan``)."""
    extra = len(shape) - len(expected)
    if shape[extra:] == expected:
        layers = 1
        for n in shape[:extra]:
            layers *= n
        axes = "a leading stack axis" if extra == 1 else f"{extra} leading stack axes {shape[:extra]}"
        what = f"{axes} of {layers} layers"
    else:
        what = f"{extra} {'axis' if extra == 1 else 'axes'} more than one layer has (layers stacked along another axis)"
    msg = (f"Cannot read {type(module).__name__} variable {native or attr!r} as parameter {path!r}: expected shape "
           f"{expected} from the layer's configuration, got {shape}, {what}, as nnx.vmap or nnx.scan build a layer "
           "stack; polyparam's layouts are per layer. Build the layers unstacked, as an nnx.List of modules (a "
           "Python loop over the layers, each with its own nnx.Rngs, in place of nnx.split_rngs + nnx.vmap).")
    return errors.UnsupportedModelError(msg, backend=NAME, path=path, expected=expected, got=shape)


def leaf_of(module: Any, attr: Any, variable: Any, *, at: str = "", native: str = "",
            known: Leaf | None = None) -> Leaf:
    """The canonical leaf of ``module``'s Variable ``attr``: known, else kept as it is (leaf named ``attr``,
    role ``"other"``, native layout); what ``pp.roles`` declares wins.

    ``at`` is the canonical path of ``module`` and ``native`` NNX's path of the Variable, for messages;
    ``known`` the known leaf where the caller looked it up already.

    Raises:
        UnsupportedModelError: The Variable has more axes than the layer's configuration implies: layers
            stacked by ``nnx.vmap`` / ``nnx.scan``, whose leading layer axis no layout of one layer can read.
    """
    name = str(attr)
    shape = shape_of(variable)
    ndim = len(shape)
    base = known or _known(module, name, ndim) or Leaf(name.replace(".", "_"), "other", None)
    expected = _configured(module, name, shape)
    if expected is not None and ndim > len(expected):
        raise _stacked(module, name, shape, expected, path=join_path(at, base.name), native=native)
    role, axes = roles.lookup(module, name, ndim=ndim)
    if role is None and axes is None:
        return base
    return Leaf(base.name, role or base.role, tuple(axes) if axes is not None else base.axes, base.layout, base.groups)


_RANK = {name: i for i, name in enumerate(CANONICAL_ORDER)}


def leaves_of(node: Any, *, at: str = "", steps: tuple[Step, ...] = (),
              variables: list[tuple[str, Step, Any]] | None = None) -> list[tuple[Leaf, Step, Any]]:
    """``node``'s own Variables as ``(canonical leaf, step, Variable)``, known leaves in :data:`CANONICAL_ORDER` first,
    the others after them in attribute order; ``at`` and ``steps`` lead to ``node``, ``variables`` are its
    :func:`variables_of` where the caller read them already. A stacked layer is refused at
    its first leaf in that order (``weight`` before ``bias``), see :func:`leaf_of`."""
    found = [(attr, step, variable, _known(node, attr, len(shape_of(variable))))
             for attr, step, variable in (variables_of(node) if variables is None else variables)]
    if len(found) > 1:   # stable: the others keep their order
        found.sort(key=lambda entry: len(_RANK) if entry[3] is None else _RANK.get(entry[3].name, len(_RANK)))
    return [(leaf_of(node, attr, variable, at=at, native=native_path((*steps, step)), known=known), step, variable)
            for attr, step, variable, known in found]


def check_model(root: Any) -> None:
    """Walk every block and Variable of ``root`` once, so what polyparam cannot name or read is refused when the
    tree is built rather than at the first fact.

    Raises:
        UnsupportedModelError: A child keyed with ``"."`` (see :func:`children_of`), a stacked layer
            (see :func:`leaf_of`), or state polyparam cannot list (see :func:`_unread`).
    """
    seen: set[int] = set()
    stack: list[tuple[Any, str, tuple[Step, ...]]] = [(root, "", ())]
    while stack:
        node, path, steps = stack.pop()
        if id(node) in seen:   # a module held twice (a tie) is read once; a graph may loop back
            continue
        seen.add(id(node))
        refusal = _unread(node, path)
        if refusal is not None:
            raise refusal
        children, variables = members_of(node, at=path)
        leaves_of(node, at=path, steps=steps, variables=variables)
        for name, child_steps, child in reversed(children):
            stack.append((child, join_path(path, name), steps + child_steps))
