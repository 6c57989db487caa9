"""Sharded checkpoints: one safetensors file per process, each holding the boxes it owns.

``pp.save(tree, directory, sharded=True)`` is called on every process of a
distributed job; process ``r`` of ``w`` writes ``directory/rank-<r>-of-<w>.safetensors``
with the boxes of the global arrays it holds (their global offsets and shapes in the
metadata). No process gathers a whole parameter. A box held by several processes
(replicated) is written by one of them only.

``pp.load(tree, directory)`` reads, for each parameter, only the box the calling
process holds (``safe_open(...).get_slice``), whatever world size or placement wrote
the files; :func:`consolidate` puts the pieces together into one ordinary polyparam
safetensors file. Ties survive both ways.

Metadata of each file: ``format = "polyparam-shard"``, ``polyparam.shard`` = JSON
``{"version", "rank", "world_size", "backend", "ties", "pieces": {key: {"path",
"global_shape", "offset", "role", "checksum"}}}``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from polyparam import errors
from polyparam._formats import PolyparamMetadata, fingerprint
from polyparam._parameter import format_shape

if TYPE_CHECKING:
    from polyparam._checkpoint import LoadReport
    from polyparam._tree import ParameterTree

__all__ = ["Piece", "ShardIndex", "consolidate", "load_sharded", "save_sharded", "write_shard_file"]

SHARD_VERSION = 1
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64", "I32": "int32", "I16": "int16",
           "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool"}
_NAME = re.compile(r"rank-(\d{5})-of-(\d{5})\.safetensors$")


def shard_file(directory: str | os.PathLike[str], rank: int, world: int) -> str:
    return os.path.join(os.fspath(directory), f"rank-{rank:05d}-of-{world:05d}.safetensors")


@dataclass
class Piece:
    """One box of one parameter, as a process holds it."""

    path: str
    global_shape: tuple[int, ...]
    offset: tuple[int, ...]
    value: np.ndarray
    role: str = "weight"


def write_shard_file(directory: str | os.PathLike[str], rank: int, world: int, pieces: list[Piece], *,
                     ties: list[list[str]], backend: str | None, checksum: bool = True) -> str:
    """Write one process's pieces atomically; returns the file written."""
    from polyparam._checkpoint import _contiguous, atomic_write

    os.makedirs(directory, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    described: dict[str, Any] = {}
    for piece in pieces:
        value = _contiguous(piece.value)
        tensors[piece.path] = value
        described[piece.path] = {"path": piece.path, "global_shape": list(piece.global_shape),
                                 "offset": list(piece.offset), "role": piece.role,
                                 "checksum": fingerprint(value) if checksum else None}
    header = {"version": SHARD_VERSION, "rank": rank, "world_size": world, "backend": backend, "ties": ties,
              "pieces": described}
    target = shard_file(directory, rank, world)
    from polyparam._formats._safetensors import write

    with atomic_write(target) as tmp:
        write(tmp, tensors, {"format": "polyparam-shard", "polyparam.shard": json.dumps(header)})
    return target


def save_sharded(tree: ParameterTree, directory: str | os.PathLike[str], /, *, checksum: bool = True) -> str:
    """Write this process's boxes of every parameter of ``tree`` (call it on every process)."""
    rank, world = tree._process_rank()
    pieces: list[Piece] = []
    for path, p in tree.items():
        p._require_data("save")
        if not p._shard_writer():
            continue
        box = p._local_box()
        if box is None:
            box, value = tuple(slice(0, d) for d in p.shape), p.numpy()
        else:
            value = p._read_local()
        pieces.append(Piece(path, tuple(p.shape), tuple(s.start for s in box), value, p.role))
    ties = [list(group.paths) for group in tree.ties()]
    written = write_shard_file(directory, rank, world, pieces, ties=ties, backend=tree.backend, checksum=checksum)
    tree._barrier()
    if rank == 0:  # files of another world size left by an earlier save would mix with these
        for stale in glob.glob(os.path.join(os.fspath(directory), "rank-*-of-*.safetensors")):
            m = _NAME.search(stale)
            if m and int(m.group(2)) != world:
                os.unlink(stale)
    tree._barrier()
    return written


class ShardIndex:
    """Every piece of a sharded checkpoint directory, read without loading values."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        from safetensors import safe_open

        self.directory = os.fspath(directory)
        files = sorted(f for f in glob.glob(os.path.join(self.directory, "rank-*-of-*.safetensors"))
                       if _NAME.search(f))
        worlds = {int(_NAME.search(f).group(2)) for f in files}  # type: ignore[union-attr]
        if len(worlds) != 1:
            msg = (f"Cannot read sharded checkpoint {self.directory!r}: expected the files of one save "
                   f"(rank-RRRRR-of-WWWWW.safetensors with one W), got {len(files)} files of world sizes "
                   f"{sorted(worlds)}. Save again with pp.save(tree, directory, sharded=True).")
            raise errors.MetadataError(msg, file=self.directory, expected="one world size", got=sorted(worlds))
        world = worlds.pop()
        ranks = {int(_NAME.search(f).group(1)) for f in files}  # type: ignore[union-attr]
        if ranks != set(range(world)):
            missing = sorted(set(range(world)) - ranks)
            msg = (f"Cannot read sharded checkpoint {self.directory!r}: expected {world} files, got no file for "
                   f"ranks {missing}. Copy the whole directory.")
            raise errors.MetadataError(msg, file=self.directory, expected=world, got=sorted(ranks))
        self.world_size = world
        self.files = files
        self.ties: list[list[str]] = []
        self.backend: str | None = None
        self.pieces: dict[str, list[tuple[str, tuple[int, ...], tuple[int, ...]]]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.roles: dict[str, str] = {}
        self.checksums: dict[tuple[str, str], str] = {}
        self._handles: dict[str, Any] = {}
        for file in files:
            handle = safe_open(file, framework="np")
            self._handles[file] = handle
            raw = handle.metadata() or {}
            try:
                header = json.loads(raw["polyparam.shard"])
                pieces = header["pieces"]
            except (KeyError, ValueError, TypeError):
                msg = (f"Cannot read shard file {file!r}: expected polyparam shard metadata, got "
                       f"{sorted(raw)[:5]}. The file was not written by pp.save(..., sharded=True).")
                raise errors.MetadataError(msg, file=file, expected="polyparam.shard", got=sorted(raw)[:5]) from None
            if header.get("version", 0) > SHARD_VERSION:
                msg = (f"Cannot read shard file {file!r}: expected shard format version <= {SHARD_VERSION}, got "
                       f"{header.get('version')}. Upgrade polyparam.")
                raise errors.UnsupportedVersionError(msg, file=file, expected=SHARD_VERSION, got=header.get("version"))
            if header.get("ties"):
                self.ties = [list(g) for g in header["ties"]]
            self.backend = header.get("backend") or self.backend
            for key, info in pieces.items():
                path = info["path"]
                shape = tuple(int(d) for d in handle.get_slice(key).get_shape())
                gshape = tuple(int(d) for d in info["global_shape"])
                offset = tuple(int(o) for o in info["offset"])
                if (len(offset) != len(gshape) or len(shape) != len(gshape)
                        or any(o < 0 or o + n > d for o, n, d in zip(offset, shape, gshape))
                        or self.shapes.setdefault(path, gshape) != gshape):
                    msg = (f"Cannot read shard file {file!r}: expected piece {key!r} inside global shape "
                           f"{format_shape(gshape)}, got offset {offset} and shape {format_shape(shape)}. "
                           "The directory mixes saves or was edited.")
                    raise errors.MetadataError(msg, file=file, path=path, expected=gshape, got=(offset, shape))
                self.pieces.setdefault(path, []).append((file, key, offset, shape))  # type: ignore[arg-type]
                self.dtypes.setdefault(path, self._slice_dtype(handle, key))
                self.roles[path] = info.get("role", "weight")
                if info.get("checksum"):
                    self.checksums[(file, key)] = info["checksum"]

    @staticmethod
    def _slice_dtype(handle: Any, key: str) -> np.dtype:
        name = handle.get_slice(key).get_dtype()
        if name in _DTYPES:
            return np.dtype(_DTYPES[name])
        return np.dtype(handle.get_tensor(key).dtype)  # anything else numpy's safetensors reader knows

    def paths(self) -> dict[str, str]:
        """Every path the directory gives a value for, mapped to the stored path (ties included)."""
        out = {path: path for path in self.pieces}
        for group in self.ties:
            anchor = next((q for q in group if q in self.pieces), None)
            if anchor is not None:
                for member in group:
                    out.setdefault(member, anchor)
        return out

    def read(self, path: str, box: tuple[slice, ...] | None = None, *, verify: bool = False) -> np.ndarray:
        """The box ``box`` (default: all) of the global array stored under ``path``, reading only what it needs."""
        shape = self.shapes[path]
        if box is None:
            box = tuple(slice(0, d) for d in shape)
        lo = [s.start for s in box]
        hi = [s.stop for s in box]
        out = np.empty(tuple(b - a for a, b in zip(lo, hi)), self.dtypes[path])
        if out.size == 0:
            return out
        covered = 0
        for file, key, offset, pshape in self.pieces[path]:
            a = [max(l, o) for l, o in zip(lo, offset)]
            b = [min(h, o + n) for h, o, n in zip(hi, offset, pshape)]
            if any(x >= y for x, y in zip(a, b)):
                continue
            handle = self._handles[file]
            if verify and (file, key) in self.checksums:
                whole = handle.get_tensor(key)
                if fingerprint(whole) != self.checksums[(file, key)]:
                    msg = (f"Cannot load piece {key!r} from {file!r}: expected data with checksum "
                           f"{self.checksums[(file, key)]}, got {fingerprint(whole)}. The file is corrupt.")
                    raise errors.ChecksumError(msg, file=file, path=path, expected=self.checksums[(file, key)],
                                               got=fingerprint(whole))
            src = tuple(slice(x - o, y - o) for x, y, o in zip(a, b, offset))
            dst = tuple(slice(x - l, y - l) for x, y, l in zip(a, b, lo))
            part = handle.get_slice(key)[src] if src else handle.get_tensor(key)
            out[dst] = part
            covered += math.prod(y - x for x, y in zip(a, b))
        if covered != out.size:
            msg = (f"Cannot read {path!r} from {self.directory!r}: expected pieces covering the box "
                   f"{[(s.start, s.stop) for s in box]}, got {covered} of {out.size} elements. "
                   "The directory is incomplete or mixes saves.")
            raise errors.MetadataError(msg, file=self.directory, path=path, expected=out.size, got=covered)
        return out


def load_sharded(tree: ParameterTree, directory: str | os.PathLike[str], /, *, strict: bool = True,
                 cast: bool = False) -> LoadReport:
    """Load a sharded checkpoint into ``tree``: every process reads only the boxes it holds.

    All or nothing on each process: keys, shapes and dtypes are checked before the first
    write. Tie groups the files record are restored.
    """
    from polyparam._checkpoint import LoadReport

    index = ShardIndex(directory)
    source = index.paths()
    from polyparam._tree import check_keys, storage_groups

    groups = storage_groups(tree)
    missing, unexpected = check_keys(groups, source, strict=strict, subject=repr(index.directory))
    plan = []
    for members in groups.values():
        stored = next((source[q] for q, _ in members if q in source), None)
        if stored is None:
            continue
        path, p = members[0]
        if tuple(p.shape) != index.shapes[stored]:
            msg = (f"Cannot load {stored!r} from {index.directory!r} into parameter {path!r}: expected shape "
                   f"{format_shape(p.shape)}, got {format_shape(index.shapes[stored])}. Load a checkpoint of the "
                   "same architecture.")
            raise errors.ShapeMismatchError(msg, path=path, expected=p.shape, got=index.shapes[stored])
        dtype = index.dtypes[stored]
        if dtype != p.dtype and not (cast and np.can_cast(dtype, p.dtype, casting="same_kind")):
            msg = (f"Cannot load {stored!r} from {index.directory!r} into parameter {path!r}: expected dtype "
                   f"{p.dtype.name!r}, got {dtype.name!r}. Pass cast=True to convert it.")
            raise errors.DTypeMismatchError(msg, path=path, expected=p.dtype, got=dtype)
        p._require_data(f"load {stored!r} into")
        plan.append((path, p, stored))
    to_tie = []
    by_path = {q: p for members in groups.values() for q, p in members}
    for group in index.ties:
        present = [by_path[q] for q in group if q in by_path]
        if len({p._identity() for p in present}) > 1:
            to_tie.append(present)
    report = LoadReport(missing=missing if not strict else [], unexpected=unexpected if not strict else [])
    if to_tie:
        from polyparam._tie import tie

        for params in to_tie:
            tie(*list({p._identity(): p for p in params}.values()))
            report.tied.append([p.path for p in params])
    for path, p, stored in plan:
        box = p._local_box()
        value = index.read(stored, box)
        if value.dtype != p.dtype:
            value = value.astype(p.dtype)
        if box is None:
            p._write(value)
        else:
            p._write_local(value)
        report.loaded.append(path)
    return report


def consolidate(directory: str | os.PathLike[str], path: str | os.PathLike[str], /, *, checksum: bool = True) -> str:
    """Put a sharded checkpoint together into one polyparam safetensors file (``pp.load`` reads it anywhere).

    Runs in one process, without any framework; pieces are verified against their
    checksums. Holds the whole model in memory while writing.
    """
    from polyparam._checkpoint import write_tensors

    index = ShardIndex(directory)
    tensors = {p: index.read(p, verify=True) for p in index.pieces}
    meta = PolyparamMetadata(ties=[g for g in index.ties if any(q in tensors for q in g)], backend=index.backend,
                             roles={p: index.roles[p] for p in tensors})
    write_tensors(path, tensors, meta, format="safetensors", checksum=checksum)
    return os.fspath(path)
