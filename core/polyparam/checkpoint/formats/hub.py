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
                raise _bad(file, "each key once", key, cls=errors.DuplicateKeyError, key=key,
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


def _shard_path(file: str, directory: str, shard: str, key: str) -> str:
    """``directory/shard``, refused unless it is a plain file name that stays inside ``directory``."""
    plain = (shard and shard not in (".", "..") and "\x00" not in shard
             and os.path.basename(shard) == shard and "/" not in shard and "\\" not in shard)
    if not plain:
        raise _bad(file, "a shard file name inside the checkpoint's directory", shard, cls=errors.UnsafeContentError,
                   key=key, fix="polyparam never follows an index out of its directory; fix the index.")
    path = os.path.join(directory, shard)
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(directory):
        raise _bad(file, "a shard inside the checkpoint's directory", os.path.realpath(path),
                   cls=errors.UnsafeContentError, key=key,
                   fix="The shard is a link leading out of the directory; copy the file in instead.")
    if not os.path.isfile(path):
        raise _bad(file, f"the shard {shard!r} beside the index", "no such file", key=key)
    try:
        fmt = detect_format(shard)
    except errors.UnsupportedFormatError:
        fmt = None
    if fmt not in _SHARD_FORMATS:
        raise _bad(file, "a .safetensors or .bin shard", shard, cls=errors.UnsupportedFormatError, key=key)
    return path


class HubArchive(Archive):
    """A sharded checkpoint read through its index: one :class:`Archive` view over every shard."""

    format = "hub"

    def __init__(self, file: str, *, mmap: bool = True) -> None:
        super().__init__(file)
        from polyparam.checkpoint.formats import open_archive

        directory = os.path.dirname(os.path.abspath(file))
        weight_map, metadata = _read_index(file)
        paths: dict[str, str] = {}
        for key, shard in weight_map.items():
            if shard not in paths:
                paths[shard] = _shard_path(file, directory, shard, key)
        self.shards: dict[str, Archive] = {}
        self._where: dict[str, str] = dict(weight_map)
        try:
            for shard in sorted(set(weight_map.values())):
                self.shards[shard] = open_archive(paths[shard], mmap=mmap)
            self._check(weight_map)
            total = sum(self.shards[weight_map[key]].entries[key].nbytes for key in weight_map)
            declared = metadata.get("total_size")
            if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int)
                                         or declared != total):
                raise _bad(file, f"'total_size' equal to the shards' {total:,} bytes", declared)
            self.entries = {key: self.shards[weight_map[key]].entries[key] for key in weight_map}
            strings = {k: v for k, v in metadata.items() if isinstance(v, str)}
            self.metadata = PolyparamMetadata.from_strings(strings, set(self.entries), file=file)
            self.extra = {k: str(v) for k, v in metadata.items() if not k.startswith("polyparam.")}
        except BaseException:
            self.close()
            raise

    def _check(self, weight_map: dict[str, str]) -> None:
        for key, shard in weight_map.items():
            if key not in self.shards[shard].entries:
                raise _bad(self.file, f"{key!r} in shard {shard!r}, as the index says",
                           sorted(self.shards[shard].entries)[:3], key=key)
        for shard, archive in self.shards.items():
            for key in archive.entries:
                named = weight_map.get(key)
                if named is None:
                    raise _bad(self.file, f"every tensor of shard {shard!r} listed in the index", key, key=key,
                               fix="The index and its shards come from different saves; save the model again.")
                if named != shard:
                    raise _bad(self.file, f"{key!r} in one shard only ({named!r}, as the index says)", shard,
                               cls=errors.DuplicateKeyError, key=key,
                               fix="Two shards give it a value; remove the stale shard or save again.")

    def read(self, key: str, /) -> np.ndarray:
        return self.shards[self._where[key]].read(key)

    def close(self) -> None:
        for archive in getattr(self, "shards", {}).values():
            archive.close()
