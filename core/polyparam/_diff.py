"""``pp.diff``: compare two models, trees or checkpoint files, tensor by tensor; never writes."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from polyparam import errors
from polyparam._layout import format_shape, is_floating
from polyparam._params.plan import bookkeeping, resolve_keys, storage_groups
from polyparam._params.tree import ParameterCollection

__all__ = ["Diff", "diff"]

#: Rows ``str(diff)`` shows at most; the object keeps everything.
SHOWN = 20


@dataclass
class Diff:
    """What differs between ``a`` and ``b``.

    Attributes:
        only_a: Paths only ``a`` has.
        only_b: Paths only ``b`` has.
        shapes: ``(path, shape in a, shape in b)`` that differ.
        dtypes: ``(path, dtype in a, dtype in b)`` that differ (values are still compared).
        values: ``{path: (max |a - b|, max |a - b| / max |a|)}`` for every tensor both have
            with one shape; ``(0.0, 0.0)`` where they are equal (NaN equals NaN).
        ignored_buffers: A framework's bookkeeping buffers only one side has (torch's
            ``num_batches_tracked`` against a Keras model): no difference, as loads and
            transfers pass them over.
    """

    a: str = "a"
    b: str = "b"
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    shapes: list[tuple[str, tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=list)
    dtypes: list[tuple[str, str, str]] = field(default_factory=list)
    values: dict[str, tuple[float, float]] = field(default_factory=dict)
    ignored_buffers: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[str]:
        """Paths whose values differ."""
        return [path for path, (largest, _) in self.values.items() if largest != 0]

    @property
    def equal(self) -> bool:
        """The same paths, shapes, dtypes and values."""
        return not (self.only_a or self.only_b or self.shapes or self.dtypes or self.changed)

    def __bool__(self) -> bool:
        """True when anything differs, as ``if pp.diff(a, b):`` reads."""
        return not self.equal

    def __str__(self) -> str:
        if self.equal:
            return f"diff {self.a} -> {self.b}: equal ({len(self.values)} tensors)"
        lines = [f"diff {self.a} -> {self.b}: {len(self.changed)} of {len(self.values)} shared tensors differ, "
                 f"{len(self.only_a)} only in a, {len(self.only_b)} only in b, {len(self.shapes)} shape and "
                 f"{len(self.dtypes)} dtype differences"]
        rows = [(path, "only in a") for path in self.only_a] + [(path, "only in b") for path in self.only_b]
        rows += [(path, f"shape {format_shape(sa)} -> {format_shape(sb)}") for path, sa, sb in self.shapes]
        rows += [(path, f"dtype {da} -> {db}") for path, da, db in self.dtypes]
        rows += [(path, f"max abs {self.values[path][0]:.3g}, max rel {self.values[path][1]:.3g}")
                 for path in self.changed]
        width = max(len(path) for path, _ in rows[:SHOWN])
        lines += [f"  {path:<{width}}  {what}" for path, what in rows[:SHOWN]]
        if len(rows) > SHOWN:
            lines.append(f"  ... {len(rows) - SHOWN} more (the Diff object lists them all)")
        return "\n".join(lines)


class _Side:
    """One side of a diff: its keys, and each tensor's shape, dtype and value on demand."""

    def __init__(self, name: str, shapes: dict[str, tuple[Any, ...]], dtypes: dict[str, np.dtype],
                 read: Callable[[str], np.ndarray], books: frozenset[str] = frozenset()) -> None:
        self.name, self.shapes, self.dtypes, self.read = name, shapes, dtypes, read
        self.books = books   # the paths of a framework's bookkeeping buffers


@contextlib.contextmanager
def _open(obj: Any, other: Any) -> Iterator[_Side]:
    if isinstance(obj, (str, os.PathLike)):
        from polyparam.checkpoint.formats import open_archive
        from polyparam.checkpoint.io import bookkeeping_keys

        file = os.fspath(obj)
        with open_archive(file) as archive:
            stored = archive.paths()   # file path (tie members too) -> stored key
            keys = dict(stored)
            other_tree = None
            if not isinstance(other, (str, os.PathLike)):   # a model on the other side: its native names count
                from polyparam._manager import tree as tree_of

                other_tree = other if isinstance(other, ParameterCollection) else tree_of(other)
                resolved = resolve_keys(storage_groups(other_tree), stored, subject=repr(file))
                keys = {resolved[path]: key for path, key in stored.items()}
                for group in other_tree.ties():   # a file that stores one member of the model's tie (transformers'
                    present = [q for q in group.paths if q in keys]   # tied head) gives the others that value
                    for q in group.paths if present else ():
                        keys.setdefault(q, keys[present[0]])
            layout = archive.metadata.layout
            if layout != "canonical":   # a framework's own layout (Keras .weights.h5): converted by its model
                if other_tree is None or other_tree.backend != layout:
                    msg = (f"Cannot compare {file!r}: expected tensors in canonical layout, got the {layout!r} "
                           f"layout. Compare it with a {layout} model of the same architecture, whose backend "
                           "converts it.")
                    raise errors.MetadataError(msg, file=file, expected="canonical", got=layout)
                params = dict(other_tree._occurrences())
                values = {path: (params[path]._from_native_layout(archive.read(key)) if path in params
                                 else archive.read(key)) for path, key in keys.items()}
                yield _Side(repr(file), {path: tuple(v.shape) for path, v in values.items()},
                            {path: v.dtype for path, v in values.items()}, values.__getitem__)
                return
            shapes = {path: tuple(archive.entries[key].shape) for path, key in keys.items()}
            dtypes = {path: archive.entries[key].dtype for path, key in keys.items()}
            buffers = set(bookkeeping_keys(archive))
            yield _Side(repr(file), shapes, dtypes, lambda path: archive.read(keys[path]),
                        frozenset(path for path, key in keys.items() if key in buffers))
        return
    from polyparam._manager import tree as tree_of

    t = obj if isinstance(obj, ParameterCollection) else tree_of(obj)
    params = dict(t._occurrences())
    yield _Side(f"{t.backend} model", {path: tuple(p.shape) for path, p in params.items()},
                {path: p.dtype for path, p in params.items()}, lambda path: params[path].numpy(),
                frozenset(path for path, p in params.items() if bookkeeping(p)))


def diff(a: Any, b: Any, /) -> Diff:
    """Compare ``a`` and ``b``: any two of a model, a tree and a checkpoint file. Nothing is written.

    Paths are canonical on a model's side; a file's keys are matched to a model's paths on
    the other side (native names included), and tie groups are expanded (the file's, and
    the model's where the file stores one member), so a model and its own ``pp.save`` or
    ``save_pretrained`` compare equal. Tensors are read one at a time.

    Returns:
        A :class:`Diff`: ``print`` it for a short table; ``diff.equal`` says whether anything differs.
    """
    result = Diff()
    with _open(a, b) as side_a, _open(b, a) as side_b:
        result.a, result.b = side_a.name, side_b.name
        for side, other, only in ((side_a, side_b, result.only_a), (side_b, side_a, result.only_b)):
            for path in side.shapes:
                if path not in other.shapes:
                    (result.ignored_buffers if path in side.books else only).append(path)
        for path, shape in side_a.shapes.items():
            if path not in side_b.shapes:
                continue
            if shape != side_b.shapes[path]:
                result.shapes.append((path, shape, side_b.shapes[path]))
                continue
            if side_a.dtypes[path] != side_b.dtypes[path]:
                result.dtypes.append((path, side_a.dtypes[path].name, side_b.dtypes[path].name))
            result.values[path] = _difference(side_a.read(path), side_b.read(path))
    return result


def _kind(dtype: np.dtype) -> str:
    """NumPy's kind letter, with ``ml_dtypes`` types (kind ``"V"``) by what they hold: floats (bfloat16, float8,
    float4) ``"f"``, integers (int4, uint4, int2) ``"i"``/``"u"``."""
    if is_floating(dtype):
        return "f"
    if dtype.kind == "V" and dtype.name.startswith(("int", "uint")) and dtype.fields is None:
        return "u" if dtype.name.startswith("u") else "i"
    return dtype.kind


def _difference(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    kx, ky = _kind(x.dtype), _kind(y.dtype)
    if x.dtype == y.dtype and np.array_equal(x, y, equal_nan=kx in "fc"):
        return 0.0, 0.0
    if kx not in "biufc" or ky not in "biufc":
        return float("inf"), float("inf")
    x, y = (a.astype(np.int64) if a.dtype.kind == "V" and k in "iu" else a for a, k in ((x, kx), (y, ky)))   # int4
    if kx in "biu" and ky in "biu":   # exact: int64 and uint64 values beyond 2**53
        ox, oy = x.astype(object).reshape(-1), y.astype(object).reshape(-1)   # (0-d: np.abs gives a Python int)
        delta = np.abs(ox - oy)
        largest_int = int(delta.max()) if delta.size else 0
        scale_int = int(np.abs(ox).max()) if ox.size else 0
        return float(largest_int), (float(largest_int) / scale_int if scale_int else
                                    (0.0 if largest_int == 0 else float("inf")))
    wide = np.complex128 if "c" in kx + ky else np.float64
    fx, fy = x.astype(wide), y.astype(wide)
    same = (fx == fy) | (np.isnan(fx) & np.isnan(fy))   # equal infinities and NaN in the same place agree
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.where(same, 0.0, np.abs(fx - fy))
    delta = np.nan_to_num(delta, nan=np.inf, posinf=np.inf)   # (the default would clamp inf to the largest float)
    largest = float(delta.max()) if delta.size else 0.0
    finite = np.abs(fx[np.isfinite(fx)])
    scale = float(finite.max()) if finite.size else 0.0
    relative = largest / scale if scale > 0 else (0.0 if largest == 0 else float("inf"))
    return largest, relative
