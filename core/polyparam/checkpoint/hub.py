"""Writing the Hugging Face Hub's sharded layout: ``pp.save(tree, directory, max_shard_size="5GB")``.

Tensors go, in the tree's order, into ``model-0000K-of-0000N.safetensors`` shards of at
most ``max_shard_size`` bytes (a tensor larger than that gets a shard of its own, as
``transformers`` does), and ``model.safetensors.index.json`` maps every key to its
shard. ``transformers``' ``from_pretrained`` reads the directory (save with
``keys="native"``), and so does :func:`polyparam.load`
(:mod:`polyparam.checkpoint.formats.hub`).

The index is the commit point. Shards are written, fsynced and renamed into the
directory under names no current file has, then the new index replaces the old one
atomically, and only then are the previous checkpoint's shards removed. A save killed
at any point leaves the previous index and every shard it names in place (a re-save
whose standard names are taken writes ``model-0000K-of-0000N-<id>.safetensors``; the
next save goes back to the standard names once they are free). Other files in the
directory (``config.json``, a tokenizer) are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from typing import Any

import numpy as np

from polyparam import errors
from polyparam.checkpoint.formats import PolyparamMetadata
from polyparam.checkpoint.formats.hub import INDEX_NAMES, _read_index
from polyparam.checkpoint.io import (
    atomic_write,
    check_writable,
    native_order,
    remove_stale_temporaries,
    write_error,
)

__all__ = ["INDEX", "parse_size", "plan_shards", "write_hub"]

#: The index this writer makes.
INDEX = INDEX_NAMES[0]
_SHARD = re.compile(r"model-\d{5}-of-\d{5}(?:-[0-9a-f]{8})?\.safetensors")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str, /, *, argument: str = "max_shard_size") -> int:
    """Bytes in ``size``: an int, or ``"5GB"`` (10**9), ``"500MiB"`` (2**20 each), ``"1.5GB"``, as ``transformers``."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        value = int(size)
    elif isinstance(size, str) and (match := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, re.I)):
        unit = (match.group(2) or "").upper()
        value = int(float(match.group(1)) * _UNITS[unit])
        if _UNITS[unit] == 1 and "." in match.group(1):   # "1.5" bytes: no such size
            value = -1
    else:
        value = -1
    if value <= 0:
        msg = (f"Invalid value for argument `{argument}`: expected a positive number of bytes (an int, or a string "
               f"like '5GB' or '500MiB'). Received: {argument}={size!r}.")
        raise errors.InvalidArgumentError(msg, argument=argument, expected="a size like '5GB'", got=size)
    return value


def plan_shards(tensors: dict[str, np.ndarray], limit: int) -> list[list[str]]:
    """Keys per shard, in order: each shard holds at most ``limit`` bytes unless one tensor alone is larger."""
    shards: list[list[str]] = []
    size = 0
    for key, value in tensors.items():
        if not shards or (size + value.nbytes > limit and shards[-1]):
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += value.nbytes
    return shards or [[]]


def _names(directory: str, count: int) -> list[str]:
    """Shard names for this save: the standard ones, or, where one is taken, names with a fresh id."""
    standard = [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    if not any(os.path.lexists(os.path.join(directory, name)) for name in standard):
        return standard
    while True:
        tag = secrets.token_hex(4)
        names = [name.replace(".safetensors", f"-{tag}.safetensors") for name in standard]
        if not any(os.path.lexists(os.path.join(directory, name)) for name in names):
            return names


def _previous_shards(directory: str) -> set[str]:
    """Shard names the directory's current index points to (none if it has no readable index)."""
    try:
        with open(os.path.join(directory, INDEX), encoding="utf-8") as fh:
            weight_map = json.load(fh).get("weight_map", {})
        return {name for name in weight_map.values() if isinstance(name, str)}
    except (OSError, ValueError, AttributeError):
        return set()


def write_hub(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], meta: PolyparamMetadata, *,
              max_shard_size: int | str, format: str | None = None, checksum: bool = True) -> list[str]:
    """Write ``tensors`` and ``meta`` into the directory ``path`` in the Hub's sharded layout; return the shard names.

    Raises:
        InvalidArgumentError: ``max_shard_size`` is not a size, or ``format`` is not safetensors.
        CheckpointWriteError: ``path`` is a file, or the disk refused a write (nothing of the
            previous checkpoint is lost).
        InvalidKeyError, UnknownDTypeError: What :func:`polyparam.save` refuses for one file.
    """
    from polyparam.checkpoint.formats.safetensors import write

    limit = parse_size(max_shard_size)
    directory = os.path.abspath(os.fspath(path))
    if os.path.basename(directory) == INDEX:    # the index's own path names its directory
        directory = os.path.dirname(directory)
    elif directory.endswith((".safetensors", ".npz", ".index.json")):
        msg = (f"Cannot save {directory!r} with max_shard_size: expected a directory (shards and an index go "
               f"into it), got a file name. Pass the directory, or {INDEX!r} inside it.")
        raise errors.InvalidArgumentError(msg, argument="path", expected="a directory", got=directory)
    if format not in (None, "safetensors"):
        msg = (f"Cannot save {directory!r} with max_shard_size: expected format 'safetensors' (the Hub's sharded "
               f"layout), got {format!r}. Drop format= or save one file without max_shard_size.")
        raise errors.InvalidArgumentError(msg, argument="format", expected="safetensors", got=format)
    tensors = {key: native_order(value) for key, value in tensors.items()}   # write_snapshot reads any strides
    check_writable(os.path.join(directory, INDEX), tensors, "safetensors")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise write_error(directory, exc) from exc
    groups = plan_shards(tensors, limit)
    _remove_stale_shard_temporaries(directory)
    names = _names(directory, len(groups))
    previous = _previous_shards(directory)
    sums: dict[str, str] = {}
    weight_map: dict[str, str] = {}
    written: list[str] = []
    try:
        for name, keys in zip(names, groups):
            with atomic_write(os.path.join(directory, name)) as tmp:
                sums.update(write(tmp, {key: tensors[key] for key in keys}, {"format": "pt"}))
            written.append(name)
            weight_map.update(dict.fromkeys(keys, name))
        if checksum:
            meta.checksums = sums
        metadata: dict[str, Any] = {"total_size": sum(value.nbytes for value in tensors.values()),
                                    **meta.to_strings()}
        with atomic_write(os.path.join(directory, INDEX)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}, fh, indent=2,
                      ensure_ascii=False)
            fh.write("\n")
    except BaseException:
        if not _index_names_any(directory, names):   # the previous index still names only its own shards
            for name in written:
                _remove(os.path.join(directory, name))
        # else the new index was in place when it failed (an interrupt during the directory's fsync): its shards
        # are the checkpoint now, and the previous ones go at the next save
        raise
    _remove_previous(directory, previous, set(names))
    return names


def _remove_stale_shard_temporaries(directory: str) -> None:
    """Delete the temporary folders that killed saves left for shards of any name: a shard named ``-<id>`` is
    named once, so no later save to that name would find its folder (which may hold gigabytes)."""
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        tags = {match.group(1) for entry in entries if (match := _SHARD_TEMPORARY.match(entry.name))}
    for tag in tags:
        remove_stale_temporaries(directory, tag)


_SHARD_TEMPORARY = re.compile(rf"\.({_SHARD.pattern})\.")


def _index_names_any(directory: str, names: list[str]) -> bool:
    """Whether the index in ``directory`` names any of ``names`` (this save's shards, whose names are its own)."""
    try:
        weight_map, _ = _read_index(os.path.join(directory, INDEX))
    except (OSError, errors.CheckpointFormatError):   # none, or not one this save wrote
        return False
    return bool(set(weight_map.values()) & set(names))


def _remove(file: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(file)


def _remove_previous(directory: str, previous: set[str], current: set[str]) -> None:
    """After the commit: the previous checkpoint's shards, shards of killed saves, a stale single file."""
    def shard_like(name: str) -> bool:   # never the index, a config or a user's script the old index named
        return name.endswith((".safetensors", ".bin")) and name != "model.safetensors"

    with os.scandir(directory) as entries:
        stale = [entry.name for entry in entries if entry.is_file(follow_symlinks=False) and shard_like(entry.name)
                 and (entry.name in previous or _SHARD.fullmatch(entry.name)) and entry.name not in current]
    for name in stale:
        _remove(os.path.join(directory, name))
    # transformers reads model.safetensors before an index: an older single-file save would shadow this one
    _remove(os.path.join(directory, "model.safetensors"))
