"""Whether a Linear's features may be a feature map flattened inside ``__call__`` (a doubt, never a conversion).

NNX has no flatten layer: a model flattens a channels-last map with a reshape in
``__call__``, so the features of a ``Linear`` after it are in ``(H, W, C)`` order (the rows
of its kernel), where the canonical (PyTorch) order is ``(C, H, W)``; a ``Linear`` whose
outputs are reshaped into a map that a convolution reads has its outputs (kernel columns
and bias) in that order too. NNX records neither the reshape nor a map's spatial size (an
``nnx.Conv`` keeps no input shape after a call), so the order cannot be converted. What the
structure does show is the modules in the order they were assigned (an ``nnx.Sequential``'s
order is its data flow) and each convolution's channels. The rule, on the modules that hold
parameters, in that order:

* forward: the first ``Linear`` after an ``nnx.Conv``/``nnx.ConvTranspose`` of ``C`` output
  channels (only normalizations between) whose ``in_features`` is ``k * C`` with ``k >= 4``
  takes a map of ``k`` positions flattened; one of exactly ``C`` inputs (a map pooled to one
  value per channel) is not in doubt, nor is a ``Linear`` after another ``Linear``.
* backward: the last ``Linear`` before a convolution of ``C`` input channels (only
  normalizations between) whose ``out_features`` is ``k * C`` with ``k >= 4`` makes a map of
  ``k`` positions.
* a normalization between them over ``k * C`` features holds per-feature values in that
  order too; one over ``C`` is a channel normalization of the map and is passed by. A
  normalization whose other side (past other normalizations) is a convolution of exactly
  its features is a channel norm of that map and not in doubt: a ResNet bottleneck's last
  ``BatchNorm`` (``4 * C`` channels, after a ``conv3`` of ``4 * C`` outputs) is followed in
  assignment order by the shortcut's convolution of ``C`` inputs, which reads the block's
  input, not the norm's output. One with a ``Linear``, another convolution, another
  module or nothing on its other side (a flattened embedding head) stays in doubt.

A subclassed model's ``__call__`` may use its modules in another order than it assigned them,
so the rule can miss a flatten (a ``Linear`` assigned before its convolution, a map concatenated
from several convolutions) or doubt a ``Linear`` that reads another input (a conditioning
projection assigned right after a convolution). A doubt only stops a transfer to another
framework; ``tree.load_state`` writes the values regardless.

The neighbours are found from the parameter's own place (its ancestors' children, one step
of the walk at a time), not by walking the whole model, so asking every parameter of a
large model stays linear in its size.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from flax import nnx

from polyparam_flax._layout import Step, is_variable, members_of, native_path, resolve, shape_of, variables_of

__all__ = ["Doubt", "flatten_doubt", "one_look"]

_MAPS = (nnx.Conv, nnx.ConvTranspose)
_NORMS = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm, nnx.InstanceNorm)
_SUBJECTS = (nnx.Linear, *_NORMS)   # the modules whose features a flattened map can put in doubt



class Doubt(NamedTuple):
    """Why a Variable's features may be a feature map's (a clause), and whether a flattened map is read (an input,
    fixed by pooling it first) rather than made (outputs a reshape turns into a map)."""

    why: str
    flattened: bool


Held = tuple[str, Any]   # (native path, module holding Variables of its own)
Chain = list[tuple[Any, str, int]]   # (ancestor, its native path, the index of the next one among its children)


#: ``{id(node): (node, its children, whether it holds Variables)}`` while :func:`one_look` is active, else ``None``
_SEEN: contextvars.ContextVar[dict[int, tuple[Any, list[Any], bool]] | None] = contextvars.ContextVar(
    "polyparam_flax_flatten_seen", default=None)


@contextlib.contextmanager
def one_look() -> Iterator[None]:
    """Read each module's children once while the rule is asked of many parameters (the model does not change
    meanwhile): their neighbours overlap, and reading a module's attributes is most of the rule's cost."""
    token = _SEEN.set({})
    try:
        yield
    finally:
        _SEEN.reset(token)


def _look(node: Any) -> tuple[list[Any], bool]:
    """``(children_of(node), whether node holds Variables of its own)``, remembered within :func:`one_look`."""
    seen = _SEEN.get()
    if seen is not None:
        known = seen.get(id(node))
        if known is not None and known[0] is node:
            return known[1], known[2]
    children, variables = members_of(node)
    holds = isinstance(node, nnx.Module) and bool(variables)
    if seen is not None:
        seen[id(node)] = (node, children, holds)
    return children, holds


def _children(node: Any) -> list[Any]:
    return _look(node)[0]


def _join(path: str, steps: Sequence[Step]) -> str:
    return ".".join(filter(None, [path, *(str(key) for _, key in steps)]))


def _holds(node: Any) -> bool:
    return _look(node)[1]


def _forward(node: Any, path: str) -> Iterator[Held]:
    """The holders of ``node``'s subtree in walk order (pre-order: a module, then its children in order)."""
    if _holds(node):
        yield path, node
    for _, steps, child in _children(node):
        yield from _forward(child, _join(path, steps))


def _backward(node: Any, path: str) -> Iterator[Held]:
    """The holders of ``node``'s subtree in reverse walk order."""
    for _, steps, child in reversed(_children(node)):
        yield from _backward(child, _join(path, steps))
    if _holds(node):
        yield path, node


def _ancestry(root: Any, steps: Sequence[Step]) -> Chain | None:
    """``(ancestor, its native path, the index of the next one among its children)`` from the root down to
    the module ``steps`` lead to, or ``None`` when the steps are not a way the walk goes."""
    chain: Chain = []
    node, path, at = root, "", 0
    while at < len(steps):
        for index, (_, child_steps, child) in enumerate(_children(node)):
            if tuple(steps[at:at + len(child_steps)]) == tuple(child_steps):
                chain.append((node, path, index))
                node, path, at = child, _join(path, child_steps), at + len(child_steps)
                break
        else:
            return None
    return chain


def _after(chain: Chain, module: Any, path: str) -> Iterator[Held]:
    """The holders after ``module`` (at ``path``, reached through ``chain``) in walk order, its subtree first."""
    for _, child_steps, child in _children(module):
        yield from _forward(child, _join(path, child_steps))
    for parent, parent_path, index in reversed(chain):
        for _, child_steps, child in _children(parent)[index + 1:]:
            yield from _forward(child, _join(parent_path, child_steps))


def _before(chain: Chain) -> Iterator[Held]:
    """The holders before the module ``chain`` reaches, nearest first (reverse walk order, ancestors included)."""
    for parent, path, index in reversed(chain):
        for _, child_steps, child in reversed(_children(parent)[:index]):
            yield from _backward(child, _join(path, child_steps))
        if _holds(parent):
            yield path, parent


def _features(module: Any) -> int | None:
    """How many features a normalization holds values for (its scale's or bias's size), else ``None``."""
    for _, _, variable in variables_of(module):
        shape = shape_of(variable) if is_variable(variable) else ()
        if len(shape) == 1:
            return shape[0]
    return None


#: The fewest positions of a map taken as flattened: 2x2. Two or three times the channels are more often
#: pooled maps put side by side (average and max pooling concatenated) or a token sequence than a map.
MIN_POSITIONS = 4


def _multiple(features: int | None, channels: int) -> bool:
    """Whether ``features`` are those of a map of ``channels`` at :data:`MIN_POSITIONS` positions or more."""
    return (features is not None and channels > 0 and features >= MIN_POSITIONS * channels
            and features % channels == 0)


def _map_next_to(neighbours: Iterator[Held], *, made: bool) -> tuple[str, Any, int] | None:
    """The convolution nearest in ``neighbours`` past normalizations only, as ``(path, module, channels)``:
    the channels of the map it makes (``made``) or reads; ``None`` if another module comes first, or a
    normalization that holds values for neither its channels nor a multiple of them."""
    norms: list[int | None] = []
    for path, module in neighbours:
        if isinstance(module, _NORMS):
            norms.append(_features(module))
            continue
        if not isinstance(module, _MAPS):
            return None
        channels = int(module.out_features if made else module.in_features)
        if all(f == channels or _multiple(f, channels) for f in norms):
            return path, module, channels
        return None
    return None


def _channels_beyond(neighbours: Iterator[Held], features: int, *, made: bool) -> bool:
    """Whether the nearest module in ``neighbours`` past normalizations is a convolution that reads (``made``:
    it comes after the normalization) or makes ``features`` channels: the normalization then holds that map's
    channels, not flattened features (a ResNet bottleneck's last ``BatchNorm`` after the ``conv3`` of its
    channels, though the shortcut's convolution of fewer inputs follows it in assignment order)."""
    for _, module in neighbours:
        if isinstance(module, _NORMS):
            continue
        return isinstance(module, _MAPS) and int(module.in_features if made else module.out_features) == features
    return False


def flatten_doubt(root: Any, steps: Sequence[Step]) -> Doubt | None:
    """Why the Variable at ``steps`` (a ``Linear``'s or a normalization's) may hold a channels-last feature
    map's features in an order the model does not show, else ``None``.

    A ``Linear`` fed by a flattened map has only its kernel's rows in doubt (its bias is one
    value per output); one whose outputs become a map has its kernel and bias in doubt, and a
    normalization over such features every vector.
    """
    if not steps:
        return None
    at, attr = steps[:-1], str(steps[-1][1])
    module = resolve(root, at)
    if not isinstance(module, _SUBJECTS):
        return None
    chain = _ancestry(root, at)
    if chain is None:
        return None
    reasons, flattened = [], False
    for made, found in ((True, _map_next_to(_before(chain), made=True)),
                        (False, _map_next_to(_after(chain, module, native_path(at)), made=False))):
        if found is None:
            continue
        path, conv, channels = found
        is_linear = isinstance(module, nnx.Linear)
        features = int(module.in_features if made else module.out_features) if is_linear else _features(module)
        if features is None or not _multiple(features, channels) or (is_linear and made and attr != "kernel"):
            continue
        if not is_linear and _channels_beyond(_after(chain, module, native_path(at)) if made else _before(chain),
                                              features, made=made):
            continue   # the channels of a convolution's map (a ResNet's bn3 before the shortcut's conv)
        what = ("inputs" if made else "outputs") if is_linear else "per-feature values"
        how = "flattened by a reshape in __call__" if made else "that a reshape in __call__ makes"
        flattened = flattened or made
        reasons.append(f"its {features} {what} are {features // channels} x the {channels} channels of "
                       f"{type(conv).__name__} {path!r}, so they may be that feature map {how}")
    return Doubt("; ".join(reasons), flattened) if reasons else None
