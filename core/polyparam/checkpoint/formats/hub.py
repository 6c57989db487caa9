"""The Hugging Face Hub's sharded layout: an index beside the shards it names.

A directory written by ``save_pretrained`` (or ``pp.save(..., max_shard_size=...)``)
holds ``model.safetensors.index.json``::

    {"metadata": {"total_size": 434176}, "weight_map": {"h.0.attn.bias": "model-00001-of-00006.safetensors", ...}}

beside ``model-0000K-of-0000N.safetensors`` shards (older checkpoints:
``pytorch_model.bin.index.json`` with ``.bin`` shards, read only through the safe
``.pt`` reader). A small model is one ``model.safetensors`` with no index.

The index is validated as strictly as a file header before any shard is read: a JSON
object of bounded size with no repeated key; every shard it names is a plain file
name inside the directory (no separator, no ``..``, no link leading out); every key
is in the shard the index names and nowhere else; no shard holds a key the index
does not list; ``total_size``, when present, equals the shards' bytes. Each shard is
then opened with its own format's reader (mapped, never loaded whole for
safetensors). polyparam's own metadata (ties, checksums, roles) sits in the index's
``metadata`` as the same strings a single file carries in its header.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Any

import numpy as np

from polyparam import errors
from polyparam.checkpoint.formats.base import Archive, PolyparamMetadata, check_key, detect_format, open_regular

__all__ = ["INDEX_NAMES", "SINGLE_NAMES", "HubArchive", "find_checkpoint", "is_index"]

#: Index files, in the order a directory is searched (``transformers``' names).
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
#: Single-file checkpoints of a directory without an index.
SINGLE_NAMES = ("model.safetensors", "pytorch_model.bin")
#: Upper bound on an index's size (a million keys with long names fit well inside).
MAX_INDEX = 100_000_000
#: Shard formats an index may name.
_SHARD_FORMATS = ("safetensors", "torch")


def is_index(file: str | os.PathLike[str]) -> bool:
    """Whether ``file`` is named like a Hub index (``*.index.json``)."""
    return os.fspath(file).lower().endswith(".index.json")


def find_checkpoint(directory: str | os.PathLike[str]) -> str | None:
    """The index (or single file) of the Hub checkpoint in ``directory``; ``None`` if it holds neither."""
    for name in (*INDEX_NAMES, *SINGLE_NAMES):
        candidate = os.path.join(os.fspath(directory), name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _bad(file: str, what: str, got: Any, *, cls: type[errors.CheckpointFormatError] = errors.ShardIndexError,
         key: str | None = None, fix: str = "The checkpoint is damaged or incomplete; download or save it again.",
         ) -> errors.CheckpointFormatError:
    where = f"tensor {key!r} in " if key is not None else ""
    shown = repr(got)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    msg = f"Cannot read {where}sharded checkpoint {file!r}: expected {what}, got {shown}. {fix}"
    return cls(msg, file=file, path=key, expected=what, got=got)


def _read_index(file: str) -> tuple[dict[str, str], dict[str, Any]]:
    """``(weight_map, metadata)`` of the index ``file``, checked for shape; nothing else is opened."""
    with open_regular(file) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_INDEX:
            raise _bad(file, f"an index of at most {MAX_INDEX:,} bytes", size, cls=errors.HeaderTooLargeError)
        raw = fh.read(MAX_INDEX + 1)
    if not raw:
        raise _bad(file, "a JSON index", "an empty file", cls=errors.EmptyFileError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(file, "a UTF-8 JSON index", str(exc), cls=errors.HeaderEncodingError) from None

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise _bad(file, "each JSON key of the index once", key, cls=errors.DuplicateKeyError,
                           fix="The index is damaged or crafted to confuse readers.")
            out[key] = value
        return out

    try:
        index = json.loads(text, object_pairs_hook=unique)
    except errors.DuplicateKeyError:
        raise
    except (ValueError, RecursionError) as exc:
        raise _bad(file, "a JSON index", str(exc)[:200], cls=errors.HeaderJSONError) from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        got = sorted(index)[:5] if isinstance(index, dict) else type(index).__name__
        raise _bad(file, "a JSON object with a 'weight_map' object", got, cls=errors.HeaderSchemaError)
    metadata = index.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _bad(file, "a 'metadata' object", metadata, cls=errors.HeaderSchemaError)
    weight_map = index["weight_map"]
    for key, shard in weight_map.items():
        check_key(key, file)
        if not isinstance(shard, str):
            raise _bad(file, "a shard file name", shard, cls=errors.HeaderSchemaError, key=key)
    return weight_map, metadata


def _inside(path: str, folder: str) -> bool:
    return os.path.dirname(path) == folder


def _shard_path(file: str, directory: str, shard: str, key: str) -> str:
    """``directory/shard``, refused unless it is a plain file name that stays inside ``directory``.

    A link is followed only to a file in the directory itself or, as the Hugging Face
    cache lays snapshots out (``snapshots/<revision>/<file> -> ../../blobs/<hash>``), in
    the ``blobs`` folder two levels up.
    """
    plain = (shard and shard not in (".", "..") and "\x00" not in shard
             and os.path.basename(shard) == shard and "/" not in shard and "\\" not in shard)
    if not plain:
        raise _bad(file, "a shard file name inside the checkpoint's directory", shard, cls=errors.UnsafeContentError,
                   key=key, fix="polyparam never follows an index out of its directory; fix the index.")
    path = os.path.join(directory, shard)
    real, home = os.path.realpath(path), os.path.realpath(directory)
    blobs = os.path.join(os.path.dirname(os.path.dirname(home)), "blobs")
    if not (_inside(real, home) or (os.path.islink(path) and _inside(real, blobs))):
        raise _bad(file, "a shard inside the checkpoint's directory (or a Hugging Face cache's blobs)", real,
                   cls=errors.UnsafeContentError, key=key,
                   fix="The shard is a link leading out of the directory; copy the file in instead.")
    if not os.path.lexists(path):
        raise _bad(file, f"the shard {shard!r} beside the index", "no such file", key=key)
    if not os.path.isfile(path):
        raise _bad(file, f"the shard {shard!r} to be a regular file", "a directory, FIFO or device", key=key,
                   cls=errors.UnsupportedFormatError, fix="Replace it with the shard's file.")
    try:
        fmt = detect_format(shard)
    except errors.UnsupportedFormatError:
        fmt = None
    if fmt not in _SHARD_FORMATS:
        raise _bad(file, "a .safetensors or .bin shard", shard, cls=errors.UnsupportedFormatError, key=key)
    return path


#: Shards held open at once (each safetensors shard is a mapped file; views outlive their closing).
_OPEN_SHARDS = 64


class HubArchive(Archive):
    """A sharded checkpoint read through its index: one :class:`Archive` view over every shard.

    Every shard is opened and validated once when the archive opens, then closed; at most
    ``_OPEN_SHARDS`` stay open for reads, so a directory of thousands of shards stays
    within the process's file limit.
    """

    format = "hub"

    def __init__(self, file: str, *, mmap: bool = True) -> None:
        super().__init__(file)
        directory = os.path.dirname(os.path.abspath(file))
        weight_map, metadata = _read_index(file)
        self._mmap = mmap
        self._paths: dict[str, str] = {}
        for key, shard in weight_map.items():
            if shard not in self._paths:
                self._paths[shard] = _shard_path(file, directory, shard, key)
        self._open: OrderedDict[str, Archive] = OrderedDict()
        self._where: dict[str, str] = {}      # stored key -> shard
        try:
            ties: list[list[str]] = []
            held: dict[str, list[str]] = {}   # key -> the shards that give it a value
            for shard in sorted(self._paths):
                archive = self._shard(shard)
                stored = archive.paths()      # every key the shard gives a value (tie members too) -> stored key
                for key, anchor in stored.items():
                    if key not in weight_map:
                        raise _bad(file, f"every tensor of shard {shard!r} listed in the index", key, key=key,
                                   fix="The index and its shards come from different saves; save the model again.")
                    held.setdefault(key, []).append(shard)
                    if anchor == key:
                        self.entries[key] = archive.entries[key]
                        self._where[key] = shard
                ties.extend(list(group) for group in archive.metadata.ties)
            for key, named in weight_map.items():
                found = held.get(key, [])
                if len(found) > 1:
                    raise _bad(file, f"{key!r} in one shard only ({named!r}, as the index says)", found,
                               cls=errors.DuplicateKeyError, key=key,
                               fix="Two shards give it a value; remove the stale shard or save again.")
                if found != [named]:
                    raise _bad(file, f"{key!r} in shard {named!r}, as the index says",
                               f"it in {found[0]!r}" if found else "it in no shard", key=key)
            unique = sum(entry.nbytes for entry in self.entries.values())
            per_key = sum(self.entries[self._anchor(key, ties)].nbytes for key in weight_map)
            declared = metadata.get("total_size")
            if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int)
                                         or declared not in (unique, per_key)):
                raise _bad(file, f"'total_size' equal to the shards' {unique:,} bytes", declared,
                           fix="transformers ignores this field; correct or remove 'total_size' in the index.")
            strings = {k: v for k, v in metadata.items() if isinstance(v, str)}
            self.metadata = PolyparamMetadata.from_strings(strings, set(self.entries), file=file)
            if ties and not self.metadata.ties:   # storage shared inside a .bin shard (a tied embedding)
                self.metadata.ties = ties
            self.extra = {k: str(v) for k, v in metadata.items() if not k.startswith("polyparam.")}
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _anchor(key: str, ties: list[list[str]]) -> str:
        return next((group[0] for group in ties if key in group), key)

    def _shard(self, shard: str) -> Archive:
        """The open archive of ``shard``, opening it (and closing the least recently used) as needed."""
        from polyparam.checkpoint.formats import open_archive

        archive = self._open.pop(shard, None)
        if archive is None:
            archive = open_archive(self._paths[shard], mmap=self._mmap)
            while len(self._open) >= _OPEN_SHARDS:
                self._open.popitem(last=False)[1].close()
        self._open[shard] = archive
        return archive

    def read(self, key: str, /) -> np.ndarray:
        return self._shard(self._where[key]).read(key)

    def verify(self, key: str, value: np.ndarray, /) -> None:
        """As :meth:`Archive.verify`, naming the shard that holds ``key`` (the file to restore)."""
        try:
            super().verify(key, value)
        except errors.ChecksumError as exc:
            shard = self._paths[self._where[key]]
            msg = str(exc).replace(repr(self.file), repr(shard), 1)
            raise errors.ChecksumError(msg, file=shard, path=key, expected=exc.expected, got=exc.got) from None

    def close(self) -> None:
        for archive in getattr(self, "_open", {}).values():
            archive.close()
        if hasattr(self, "_open"):
            self._open.clear()
