"""Orbax checkpoints (a Flax model's ``nnx.state`` saved by orbax), read through orbax itself.

An orbax PyTree checkpoint is a directory: ``_METADATA`` (the tree's structure, shapes and
dtypes, JSON), the array store (``manifest.ocdbt``, ``d/``, or zarr folders) and, for a
step a ``CheckpointManager`` or a ``StandardCheckpointer`` wrote, ``_CHECKPOINT_METADATA``.
:func:`find_item` accepts the item directory, or a step directory holding one item
(``<step>/default``). Opening reads only the metadata; :meth:`OrbaxArchive.read` restores
one array (orbax's partial restore) as NumPy, so a load holds one tensor at a time.

Keys are the tree paths joined by ``.``, without the ``value`` level NNX Variables add
(``layers.0.kernel``: NNX's own name of the Variable). Values are in Flax's native
layout (``kernel (in, out)``), which the metadata says (``layout="flax"``): ``pp.load``
converts them into a Flax model and refuses other models (load into Flax, then
``pp.transfer``). Leaves that are not numeric arrays (strings) are passed over; the state
of RNG streams (keys and counters, integers under ``rngs``) is listed as bookkeeping
buffers, which loads pass over.
orbax reads JSON metadata and array stores; nothing here unpickles.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from polyparam import errors
from polyparam.checkpoint.formats.base import MAX_TENSORS, Archive, Entry, PolyparamMetadata, check_key, check_shape

__all__ = ["ITEM_METADATA", "STEP_METADATA", "OrbaxArchive", "find_item", "is_orbax_checkpoint"]

#: The file orbax writes in every PyTree item directory (the tree's metadata).
ITEM_METADATA = "_METADATA"
#: The file orbax writes in a step directory (``CheckpointManager``, ``StandardCheckpointer``).
STEP_METADATA = "_CHECKPOINT_METADATA"
#: The level NNX's Variables add below each path when their state is saved.
_VALUE = "value"


def find_item(directory: str) -> str | None:
    """The item directory of the orbax checkpoint at ``directory``, or ``None`` if it is not one.

    ``directory`` itself when it holds ``_METADATA``; else, for a step directory (holding
    ``_CHECKPOINT_METADATA``), its one subdirectory that holds ``_METADATA``.
    """
    if not os.path.isdir(directory):
        return None
    if os.path.isfile(os.path.join(directory, ITEM_METADATA)):
        return directory
    if not os.path.isfile(os.path.join(directory, STEP_METADATA)):
        return None
    try:
        items = [entry.path for entry in os.scandir(directory)
                 if entry.is_dir(follow_symlinks=False) and os.path.isfile(os.path.join(entry.path, ITEM_METADATA))]
    except OSError:
        return None
    return items[0] if len(items) == 1 else None


def is_orbax_checkpoint(path: str | os.PathLike[str], /) -> bool:
    """Whether ``path`` is an orbax checkpoint directory :class:`OrbaxArchive` reads (see :func:`find_item`)."""
    return find_item(os.fspath(path)) is not None


def _orbax(file: str) -> Any:
    try:   # by name: orbax is optional (the flax extra) and has no stubs
        ocp = importlib.import_module("orbax.checkpoint")
    except ImportError:
        msg = (f"Cannot read orbax checkpoint {file!r}: expected the orbax-checkpoint package, got none installed. "
               "Install it (pip install orbax-checkpoint, or polyparam's flax extra).")
        raise errors.UnsupportedFormatError(msg, file=file, expected="orbax-checkpoint installed",
                                            got="not installed") from None
    return ocp


def _children(node: Any) -> list[tuple[Any, Any]] | None:
    """The children of a metadata tree node as ``(key, child)``, or ``None`` for a leaf."""
    if isinstance(node, Mapping):
        return list(node.items())
    if isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        return list(enumerate(node))
    return None


class OrbaxArchive(Archive):
    """An orbax PyTree checkpoint directory (the state of a Flax model), read through orbax."""

    format = "orbax"

    def __init__(self, file: str) -> None:
        super().__init__(file)
        item = find_item(file)
        if item is None:
            msg = (f"Cannot read orbax checkpoint {file!r}: expected a directory holding {ITEM_METADATA} (or a step "
                   f"directory holding {STEP_METADATA} and one such item), got neither. Pass the directory orbax "
                   "saved into.")
            raise errors.UnsupportedFormatError(msg, file=file, expected=ITEM_METADATA, got="no orbax metadata")
        ocp = _orbax(file)
        self._item = item
        self._ocp = ocp
        self._checkpointer = ocp.PyTreeCheckpointer()
        try:
            meta = self._checkpointer.metadata(item)
        except Exception as exc:  # noqa: BLE001 - orbax raises many kinds on damaged metadata
            msg = (f"Cannot read orbax checkpoint {file!r}: expected readable orbax metadata, got "
                   f"{type(exc).__name__}: {str(exc)[:200]}. The checkpoint is damaged or incomplete; save it again.")
            raise errors.CorruptArchiveError(msg, file=file, expected="orbax metadata",
                                             got=type(exc).__name__) from None
        tree = getattr(getattr(meta, "item_metadata", None), "tree", meta)
        self._where: dict[str, tuple[Any, ...]] = {}   # key -> the path in orbax's tree
        self._leaf: dict[str, Any] = {}                # key -> orbax's metadata of the array
        self._walk(tree, ())
        # the state of NNX's RNG streams (``<module>.rngs.<stream>.count`` and ``.key``, integers): no model lists it
        streams = [key for key, path in self._where.items()
                   if "rngs" in (str(k) for k in path) and self.entries[key].dtype.kind in "iu"]
        self.metadata = PolyparamMetadata(backend="flax", layout="flax", buffers=streams)

    def _walk(self, node: Any, path: tuple[Any, ...]) -> None:
        children = _children(node)
        if children is not None:
            for name, child in children:
                self._walk(child, (*path, name))
            return
        shape, dtype = getattr(node, "shape", None), getattr(node, "dtype", None)
        if shape is None or dtype is None:
            return   # a scalar or string leaf: no tensor
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            return   # a PRNG key array: no parameter of a model
        if np_dtype.kind not in "biufc" and "bfloat16" not in np_dtype.name:
            return
        names = [str(k) for k in (path[:-1] if len(path) > 1 and path[-1] == _VALUE else path)]
        key = check_key(".".join(names), self.file)
        if len(self.entries) >= MAX_TENSORS:
            msg = f"Cannot read {self.file!r}: expected at most {MAX_TENSORS} tensors, got more."
            raise errors.TooManyTensorsError(msg, file=self.file, expected=MAX_TENSORS, got=len(self.entries) + 1)
        if key in self.entries:
            msg = (f"Cannot read orbax checkpoint {self.file!r}: expected one array per path, got two for {key!r} "
                   f"({self._where[key]} and {path}). Save the model's nnx.state.")
            raise errors.MetadataError(msg, file=self.file, path=key, expected="one array", got="two")
        self.entries[key] = Entry(np_dtype, check_shape(tuple(int(d) for d in shape), key, self.file))
        self._where[key] = path
        self._leaf[key] = node

    def close(self) -> None:
        """Release orbax's checkpointer (its worker threads)."""
        close = getattr(self._checkpointer, "close", None)
        if callable(close):
            close()

    def read(self, key: str, /) -> np.ndarray:
        """One array, restored alone (orbax's partial restore) as read-only NumPy."""
        path = self._where.get(key)
        if path is None:
            msg = (f"Cannot read tensor {key!r} from {self.file!r}: expected one of its keys, got a key it lacks. "
                   "List them with polyparam inspect.")
            raise errors.MetadataError(msg, file=self.file, path=key, expected="a stored key", got=key)
        ocp = self._ocp
        target, args = self._leaf[key], ocp.RestoreArgs(restore_type=np.ndarray)
        for name in reversed(path):
            target, args = {name: target}, {name: args}
        try:
            restored = self._checkpointer.restore(self._item, args=ocp.args.PyTreeRestore(
                item=target, restore_args=args, partial_restore=True))
        except Exception as exc:  # noqa: BLE001 - the array store's own errors (tensorstore, zarr)
            msg = (f"Cannot read tensor {key!r} from {self.file!r}: expected its stored array, got "
                   f"{type(exc).__name__}: {str(exc)[:200]}. The checkpoint is damaged or incomplete.")
            raise errors.CorruptArchiveError(msg, file=self.file, path=key, expected="an array",
                                             got=type(exc).__name__) from None
        for name in path:
            restored = restored[name]
        value = np.asarray(restored)
        entry = self.entries[key]
        if value.shape != entry.shape or value.dtype != entry.dtype:
            msg = (f"Cannot read tensor {key!r} from {self.file!r}: expected {entry.dtype.name} {entry.shape} as its "
                   f"metadata says, got {value.dtype.name} {value.shape}. The checkpoint is damaged.")
            raise errors.CorruptArchiveError(msg, file=self.file, path=key, expected=entry.shape, got=value.shape)
        value.setflags(write=False)
        return value

