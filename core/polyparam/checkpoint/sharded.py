"""Sharded checkpoints: one safetensors file per process, each holding the boxes it owns.

``pp.save(tree, directory, sharded=True)`` is called on every process of a
distributed job; process ``r`` of ``w`` writes ``directory/rank-<r>-of-<w>.safetensors``
with the boxes of the global arrays it holds (their global offsets and shapes in the
metadata). No process gathers a whole parameter. A box held by several processes
(replicated) is written by one of them only.

``pp.load(tree, directory)`` reads, for each parameter, only the box the calling
process holds (a mapped view of each piece it overlaps), whatever world size or placement wrote
the files; :func:`consolidate` puts the pieces together into one ordinary polyparam
safetensors file. Ties survive both ways.

Metadata of each file: ``format = "polyparam-shard"``, ``polyparam.shard`` = JSON
``{"version", "rank", "world_size", "backend", "ties", "save_id", "pieces": {key:
{"path", "global_shape", "offset", "role", "checksum"}}}``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from polyparam import errors
from polyparam._layout import format_shape
from polyparam._manager import get_backend
from polyparam._params.mapping import KeyMap
from polyparam._params.plan import (
    WritePlan,
    check_keys,
    check_partial,
    fit_problem,
    layout_doubts,
    resolve_keys,
    storage_groups,
)
from polyparam.checkpoint.formats import WRITABLE, PolyparamMetadata, detect_format, fingerprint
from polyparam.checkpoint.formats.base import cut_doubts
from polyparam.checkpoint.io import (
    LoadReport,
    atomic_write,
    check_fit,
    check_recorded_ties,
    check_writable,
    native_order,
    refuse_foreign_doubts,
    write_error,
    write_safetensors,
    write_tensors,
)

if TYPE_CHECKING:
    from polyparam._params.parameter import Parameter
    from polyparam._params.tree import ParameterTree

__all__ = ["Piece", "ShardIndex", "consolidate", "load_sharded", "save_sharded", "write_shard_file"]

SHARD_VERSION = 1
_UNSET = object()
_NAME = re.compile(r"rank-(\d{5})-of-(\d{5})\.safetensors")


def rank_files(directory: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """``(file, rank, world)`` of every ``rank-RRRRR-of-WWWWW.safetensors`` directly inside ``directory``, sorted.

    Names are compared, never expanded: ``[``, ``*`` or ``?`` in ``directory`` are plain characters.
    """
    base = os.fspath(directory)
    found = []
    try:
        with os.scandir(base) as entries:
            for entry in entries:
                match = _NAME.fullmatch(entry.name)
                if match:
                    found.append((os.path.join(base, entry.name), int(match.group(1)), int(match.group(2))))
    except OSError:  # no such directory, or not readable: no rank files (the caller says what it expected)
        return []
    return sorted(found)


def _summary(values: list[int], limit: int = 10) -> str:
    """``[0, 1, 2, ...] (99,998 in all)``: a list short enough for a message."""
    if len(values) <= limit:
        return str(values)
    return f"{str(values[:limit])[:-1]}, ...] ({len(values):,} in all)"


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
                     ties: list[list[str]], backend: str | None, checksum: bool = True,
                     save_id: int | None = None, doubts: dict[str, str] | None = None) -> str:
    """Write one process's pieces atomically; returns the file written. ``doubts``: ``{path: why}`` of the
    parameters whose canonical layout the model could not establish (see ``PolyparamMetadata.doubts``)."""

    target = shard_file(directory, rank, world)
    tensors: dict[str, np.ndarray] = {}
    described: dict[str, Any] = {}
    for piece in pieces:
        tensors[piece.path] = native_order(piece.value)   # write_snapshot reads any strides
        described[piece.path] = {"path": piece.path, "global_shape": list(piece.global_shape),
                                 "offset": list(piece.offset), "role": piece.role, "checksum": None}
    check_writable(target, tensors, "safetensors")

    def metadata(sums: dict[str, str]) -> dict[str, str]:
        for key, info in described.items():
            info["checksum"] = sums.get(key)
        header = {"version": SHARD_VERSION, "rank": rank, "world_size": world, "backend": backend, "ties": ties,
                  "save_id": save_id, "pieces": described, **({"doubts": doubts} if doubts else {})}
        return {"format": "polyparam-shard", "polyparam.shard": json.dumps(header)}

    made = not os.path.isdir(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise write_error(target, exc) from exc
    try:
        with atomic_write(target) as tmp:
            write_safetensors(tmp, tensors, metadata, checksum=checksum)
    except BaseException:
        if made:   # the folder this save made, if nothing else is in it (another process's file keeps it)
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise
    return target


def save_sharded(tree: ParameterTree, directory: str | os.PathLike[str], /, *, checksum: bool = True) -> str:
    """Write this process's boxes of every parameter of ``tree`` (call it on every process).

    Every process learns whether all of them wrote their file (a collective), so one
    that fails makes every process raise instead of leaving the others waiting. The
    files of one save share a ``save_id``; a directory mixing files of two saves (one
    process failed, or was killed, after others replaced theirs) is refused by ``load``.
    """
    rank, world = tree._process_rank()
    save_id = tree._broadcast(secrets.randbits(63))
    failure: Exception | None = None
    written = shard_file(directory, rank, world)
    try:
        pieces: list[Piece] = []
        items = tree.items()
        doubts = {path: why for (path, _), why in zip(items, layout_doubts([p for _, p in items])) if why}
        for path, p in items:
            p._require_data("save")
            if not p._shard_writer():
                continue
            box = p._local_box()
            if box is None:
                box, value = tuple(slice(0, d) for d in p.shape), p.numpy()
            else:
                value = p._read_local()
            shape = cast("tuple[int, ...]", tuple(p.shape))  # the data exists (checked above): every dimension is known
            pieces.append(Piece(path, shape, tuple(s.start for s in box), value, p.role))
        ties = [list(group.paths) for group in tree.ties()]
        write_shard_file(directory, rank, world, pieces, ties=ties, backend=tree.backend, checksum=checksum,
                         save_id=save_id, doubts=doubts)
    except Exception as exc:  # noqa: BLE001  every process must reach the agreement below, or the others wait forever
        failure = exc
    if not tree._all_succeeded(failure is None):
        if failure is not None:
            raise failure
        msg = (f"Cannot save sharded checkpoint {os.fspath(directory)!r}: expected every process to write its "
               f"file, got a failure on another process (its own error says which). This process's file "
               f"{os.path.basename(written)} was written; load refuses the directory until a save succeeds.")
        raise errors.CheckpointError(msg, expected="every process saved",
                                     got="another process failed")
    if rank == 0:  # files of another world size left by an earlier save would mix with these
        for stale, _, other in rank_files(directory):
            if other != world:
                os.unlink(stale)
    tree._barrier()
    return written


def _bad(file: str, what: str, got: Any) -> errors.MetadataError:
    text = repr(got)
    text = text if len(text) <= 120 else text[:117] + "..."
    msg = (f"Cannot read shard file {file!r}: expected {what}, got {text}. The file was not written by "
           "pp.save(..., sharded=True) or was edited; save the model again.")
    return errors.MetadataError(msg, file=file, expected=what, got=got)


def _is_index(value: Any) -> bool:
    """A list of at most 64 non-negative ints (a shape or an offset)."""
    return (isinstance(value, list) and len(value) <= 64
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value))


def _shard_header(file: str, raw: dict[str, str]) -> dict[str, Any]:
    """The validated ``polyparam.shard`` metadata of one file (typed errors for anything else)."""
    text = raw.get("polyparam.shard")
    if not isinstance(text, str):
        raise _bad(file, "polyparam shard metadata ('polyparam.shard')", sorted(raw)[:5])
    try:
        header = json.loads(text)
    except ValueError:
        raise _bad(file, "shard metadata in JSON", text) from None
    if not isinstance(header, dict):
        raise _bad(file, "a JSON object of shard metadata", header)
    version = header.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad(file, "an integer shard format version", version)
    if version > SHARD_VERSION:
        msg = (f"Cannot read shard file {file!r}: expected shard format version <= {SHARD_VERSION}, got "
               f"{version}. Upgrade polyparam.")
        raise errors.UnsupportedVersionError(msg, file=file, expected=SHARD_VERSION, got=version)
    ties = header.get("ties") or []
    if not (isinstance(ties, list) and all(isinstance(g, list) and all(isinstance(q, str) for q in g) for g in ties)):
        raise _bad(file, "ties as lists of paths", ties)
    if not isinstance(header.get("backend"), (str, type(None))):
        raise _bad(file, "a backend name", header.get("backend"))
    doubts = header.get("doubts", {})
    if not (isinstance(doubts, dict) and all(isinstance(k, str) and isinstance(v, str) and v
                                             for k, v in doubts.items())):
        raise _bad(file, "doubts as a map of paths to the doubts of their layout", doubts)
    header["doubts"] = cut_doubts(doubts)
    if not isinstance(header.get("save_id"), (int, type(None))) or isinstance(header.get("save_id"), bool):
        raise _bad(file, "an integer save id", header.get("save_id"))
    pieces = header.get("pieces")
    if not isinstance(pieces, dict):
        raise _bad(file, "pieces as a JSON object", pieces)
    for key, info in pieces.items():
        if not (isinstance(info, dict) and isinstance(info.get("path"), str) and _is_index(info.get("global_shape"))
                and _is_index(info.get("offset")) and isinstance(info.get("role", "weight"), str)
                and isinstance(info.get("checksum"), (str, type(None)))):
            raise _bad(file, f"piece {key!r} as {{path, global_shape, offset, role, checksum}}", info)
    return header


def _overlap(a: tuple[tuple[int, ...], tuple[int, ...]], b: tuple[tuple[int, ...], tuple[int, ...]]) -> bool:
    """Whether two boxes ``(offset, shape)`` share an element."""
    return all(max(oa, ob) < min(oa + na, ob + nb) for oa, na, ob, nb in zip(a[0], a[1], b[0], b[1]))


class ShardIndex:
    """Every piece of a sharded checkpoint directory, validated, read without loading values.

    Each file is checked by polyparam's safetensors reader (header, offsets, sizes), its
    shard metadata against the schema, and the pieces of every path must tile its global
    shape exactly (no gap, no overlap): any other directory raises a
    :class:`~polyparam.errors.CheckpointFormatError` subclass before a value is read.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        from polyparam.checkpoint.formats.safetensors import SafetensorsArchive

        self.directory = os.fspath(directory)
        found = rank_files(self.directory)
        files = [f for f, _, _ in found]
        worlds = {w for _, _, w in found}
        if not found:
            msg = (f"Cannot read checkpoint directory {self.directory!r}: expected a Hub checkpoint "
                   "(model.safetensors.index.json and its shards, or model.safetensors) or polyparam's "
                   "per-process shards (rank-RRRRR-of-WWWWW.safetensors), got neither. Pass a checkpoint file, "
                   "or a directory pp.save(tree, directory, max_shard_size=...) or sharded=True wrote.")
            raise errors.NotACheckpointError(msg, file=self.directory, expected="a checkpoint directory", got=[])
        if len(worlds) != 1:
            msg = (f"Cannot read sharded checkpoint {self.directory!r}: expected the files of one save "
                   f"(rank-RRRRR-of-WWWWW.safetensors with one W), got {len(files)} files of world sizes "
                   f"{_summary(sorted(worlds))}. Save again with pp.save(tree, directory, sharded=True).")
            raise errors.MetadataError(msg, file=self.directory, expected="one world size", got=sorted(worlds))
        world = worlds.pop()
        ranks = {r for _, r, _ in found}
        if ranks != set(range(world)):
            missing = sorted(set(range(world)) - ranks)
            msg = (f"Cannot read sharded checkpoint {self.directory!r}: expected {world} files, got no file for "
                   f"ranks {_summary(missing)}. Copy the whole directory (the error's `missing` lists every rank).")
            error = errors.MetadataError(msg, file=self.directory, expected=world, got=sorted(ranks))
            error.missing = missing  # type: ignore[attr-defined]
            raise error
        self.world_size = world
        self.files = files
        self.ties: list[list[str]] = []
        self.backend: str | None = None
        self.doubts: dict[str, str] = {}
        self.pieces: dict[str, list[tuple[str, str, tuple[int, ...], tuple[int, ...]]]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.roles: dict[str, str] = {}
        self.checksums: dict[tuple[str, str], str] = {}
        self._archives: dict[str, Any] = {}
        self._save_id: Any = _UNSET
        try:
            for file in files:
                self._add_file(file, SafetensorsArchive(file))
        except BaseException:
            self.close()
            raise
        for path, pieces in self.pieces.items():
            self._check_tiling(path, pieces)

    def _add_file(self, file: str, archive: Any) -> None:
        self._archives[file] = archive
        header = _shard_header(file, archive.extra)
        save_id = header.get("save_id")
        if self._save_id is _UNSET:
            self._save_id = save_id
        elif save_id != self._save_id:
            msg = (f"Cannot read sharded checkpoint {self.directory!r}: expected the files of one save, got "
                   f"{os.path.basename(file)} from save {save_id} beside files from save {self._save_id}. A save "
                   "failed part-way or the directory mixes copies; save the model again.")
            raise errors.MetadataError(msg, file=file, expected=self._save_id, got=save_id)
        if header.get("ties"):
            self.ties = [list(g) for g in header["ties"]]
        self.backend = header.get("backend") or self.backend
        self.doubts.update(header.get("doubts", {}))
        for key, info in header["pieces"].items():
            entry = archive.entries.get(key)
            if entry is None:
                raise _bad(file, f"a tensor stored under the piece key {key!r}", sorted(archive.entries)[:5])
            path, shape = info["path"], tuple(entry.shape)
            gshape, offset = tuple(info["global_shape"]), tuple(info["offset"])
            if (len(offset) != len(gshape) or len(shape) != len(gshape)
                    or any(o + n > d for o, n, d in zip(offset, shape, gshape))
                    or self.shapes.setdefault(path, gshape) != gshape):
                msg = (f"Cannot read shard file {file!r}: expected piece {key!r} inside global shape "
                       f"{format_shape(self.shapes.get(path, gshape))}, got offset {offset} and shape "
                       f"{format_shape(shape)}. The directory mixes saves or was edited.")
                raise errors.MetadataError(msg, file=file, path=path, expected=gshape, got=(offset, shape))
            if self.dtypes.setdefault(path, entry.dtype) != entry.dtype:
                msg = (f"Cannot read shard file {file!r}: expected piece {key!r} of {path!r} in "
                       f"{self.dtypes[path].name!r} as its other pieces, got {entry.dtype.name!r}. The directory "
                       "mixes saves or was edited.")
                raise errors.MetadataError(msg, file=file, path=path, expected=self.dtypes[path], got=entry.dtype)
            self.pieces.setdefault(path, []).append((file, key, offset, shape))
            self.roles[path] = info.get("role", "weight")
            if info.get("checksum"):
                self.checksums[(file, key)] = info["checksum"]

    def _check_tiling(self, path: str, pieces: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]]) -> None:
        """The pieces of ``path`` cover its global shape exactly once (so reads need no coverage count)."""
        gshape = self.shapes[path]
        boxes = sorted(((o, n), (f, k)) for f, k, o, n in pieces if math.prod(n))
        for i, (box, (file, key)) in enumerate(boxes):
            for other, (ofile, okey) in boxes[i + 1:]:
                if gshape and other[0][0] >= box[0][0] + box[1][0]:
                    break       # sorted by the first offset: no later box reaches back into this one
                if _overlap(box, other):
                    msg = (f"Cannot read {path!r} from {self.directory!r}: expected pieces that do not overlap, "
                           f"got {key!r} of {file!r} and {okey!r} of {ofile!r} sharing elements. The directory "
                           "mixes saves or was edited.")
                    raise errors.MetadataError(msg, file=file, path=path, expected="disjoint pieces", got=(key, okey))
        covered = sum(math.prod(n) for _, _, _, n in pieces)
        if covered != math.prod(gshape):
            msg = (f"Cannot read {path!r} from {self.directory!r}: expected pieces covering its global shape "
                   f"{format_shape(gshape)} ({math.prod(gshape)} elements), got {covered}. The directory is "
                   "incomplete or mixes saves.")
            raise errors.MetadataError(msg, file=self.directory, path=path, expected=math.prod(gshape), got=covered)

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()
        self._archives.clear()

    def __enter__(self) -> ShardIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def paths(self) -> dict[str, str]:
        """Every path the directory gives a value for, mapped to the stored path (ties included)."""
        out = {path: path for path in self.pieces}
        for group in self.ties:
            anchor = next((q for q in group if q in self.pieces), None)
            if anchor is not None:
                for member in group:
                    out.setdefault(member, anchor)
        return out

    def _overlapping(self, path: str, box: tuple[slice, ...]) -> list[tuple[str, str, tuple[int, ...], tuple[int, ...],
                                                                          list[int], list[int]]]:
        lo, hi = [s.start for s in box], [s.stop for s in box]
        out = []
        for file, key, offset, pshape in self.pieces[path]:
            a = [max(x, o) for x, o in zip(lo, offset)]
            b = [min(y, o + n) for y, o, n in zip(hi, offset, pshape)]
            if all(x < y for x, y in zip(a, b)):
                out.append((file, key, offset, pshape, a, b))
        return out

    def verify(self, path: str, box: tuple[slice, ...] | None = None) -> None:
        """Check the checksum of every piece the box ``box`` (default: all) of ``path`` reads from."""
        box = box if box is not None else tuple(slice(0, d) for d in self.shapes[path])
        for file, key, *_ in self._overlapping(path, box):
            expected = self.checksums.get((file, key))
            if expected is None:
                continue
            got = fingerprint(self._archives[file].read(key))
            if got != expected:
                msg = (f"Cannot load piece {key!r} from {file!r}: expected data with checksum {expected}, got "
                       f"{got}. The file is corrupt; restore it from a good copy.")
                raise errors.ChecksumError(msg, file=file, path=path, expected=expected, got=got)

    def read(self, path: str, box: tuple[slice, ...] | None = None, *, verify: bool = False) -> np.ndarray:
        """The box ``box`` (default: all) of the global array stored under ``path``, reading only what it needs."""
        box = box if box is not None else tuple(slice(0, d) for d in self.shapes[path])
        if verify:
            self.verify(path, box)
        lo = [s.start for s in box]
        out = np.empty(tuple(s.stop - s.start for s in box), self.dtypes[path])
        if out.size == 0:
            return out
        for file, key, offset, _, a, b in self._overlapping(path, box):
            src = tuple(slice(x - o, y - o) for x, y, o in zip(a, b, offset))
            dst = tuple(slice(x - low, y - low) for x, y, low in zip(a, b, lo))
            out[dst] = self._archives[file].read(key)[src]   # a mapped view: only the box's pages are read
        return out


def load_sharded(tree: ParameterTree, directory: str | os.PathLike[str], /, *, strict: bool = True,
                 cast: bool = False, ties: Literal["restore", "strict", "ignore"] = "restore",
                 verify: bool = True, keymap: KeyMap | None = None, allow_missing: bool | None = None,
                 ignore_extra: bool | None = None, skip_mismatch: bool = False) -> LoadReport:
    """Load a sharded checkpoint into ``tree``: every process reads only the boxes it holds.

    All or nothing on each process: the files, keys, shapes, dtypes, ties and (with
    ``verify``) the checksums of every piece this process reads are checked before the
    first write. ``ties`` as for :func:`polyparam.load`: ``"restore"`` ties what the files
    record as tied, ``"strict"`` refuses any difference, ``"ignore"`` only writes values;
    parameters the model ties must get one value from the directory. ``keymap``,
    ``allow_missing``, ``ignore_extra`` and ``skip_mismatch`` map and filter the stored
    paths as :func:`polyparam.load` does for one file.
    """
    if ties not in ("restore", "strict", "ignore"):
        msg = ("Invalid value for argument `ties`: expected one of ('restore', 'strict', 'ignore'). Received: "
               f"ties={ties!r}.")
        raise errors.InvalidArgumentError(msg, argument="ties", expected=("restore", "strict", "ignore"), got=ties)
    with ShardIndex(directory) as index:
        return _load_sharded(tree, index, strict=strict, cast=cast, ties=ties, verify=verify,
                             keymap=keymap or KeyMap(), allow_missing=allow_missing, ignore_extra=ignore_extra,
                             skip_mismatch=skip_mismatch)


def _load_sharded(tree: ParameterTree, index: ShardIndex, *, strict: bool, cast: bool, verify: bool,
                  ties: str = "restore", keymap: KeyMap | None = None, allow_missing: bool | None = None,
                  ignore_extra: bool | None = None, skip_mismatch: bool = False) -> LoadReport:
    """The single-file load's checks (see ``single._load``), each process reading only its boxes."""
    subject = repr(index.directory)
    groups = storage_groups(tree)
    mapped, renamed, dropped = (keymap or KeyMap()).apply(index.paths(), subject=subject)
    stored = {mapped[key]: value for key, value in index.paths().items() if key in mapped}  # mapped -> stored
    resolved = resolve_keys(groups, stored, subject=subject)   # a model's native names -> canonical paths
    source = {resolved[key]: value for key, value in stored.items()}  # path -> stored path
    missing, unexpected, ignored = check_keys(groups, source, strict=strict, subject=subject,
                                              allow_missing=allow_missing, ignore_extra=ignore_extra)
    plan = WritePlan(subject)
    recorded = [[resolved.get(mapped[q], mapped[q]) for q in group if q in mapped] for group in index.ties]

    plan.add_recorded_ties(groups, recorded, ties=ties, backend=tree.backend,
                           capabilities=get_backend(tree.backend).CAPABILITIES)
    if ties != "ignore":
        check_recorded_ties(index.directory, recorded, source, index.read)   # whole arrays: every process alike

    # Values: one stored path per model group; members given different values must agree (whole
    # arrays, so every process decides alike).
    stored_of: dict[str, str] = {}
    skipped: list[tuple[str, tuple[int, ...], tuple[Any, ...]]] = []
    for members in groups.values():
        keys = list(dict.fromkeys(source[q] for q, _ in members if q in source))
        if not keys:
            continue
        path, p = members[0]
        misfit = next((key for key in keys if fit_problem(p, index.shapes[key], index.dtypes[key]) == "shape"), None)
        if skip_mismatch and misfit is not None:   # a tie group is skipped whole: it holds one value
            skipped.append((next(q for q, _ in members if source.get(q) == misfit), tuple(index.shapes[misfit]),
                            tuple(p.shape)))
            continue
        for key in keys:
            check_fit(plan, path, p, index.shapes[key], index.dtypes[key], key=key, cast=cast)
        p._require_data(f"load {keys[0]!r} into")
        if ties != "ignore":
            plan.check_one_value(members, keys, index.read)  # whole arrays: every process decides alike

        def read(p: Parameter = p, stored: str = keys[0]) -> np.ndarray:
            return index.read(stored, p._local_box())

        plan.add(path, p, read, local=True)
        stored_of[path] = keys[0]
    refuse_foreign_doubts(tree, PolyparamMetadata(backend=index.backend, doubts=index.doubts),
                          [(w.path, w.param, stored_of[w.path]) for w in plan.writes], subject)
    if verify:
        for write in plan.writes:
            index.verify(stored_of[write.path], write.param._local_box())
    report = LoadReport(missing=missing, unexpected=unexpected, ignored_buffers=ignored, renamed=renamed,
                        dropped=dropped, skipped=skipped)
    # warnings name the caller of pp.load: load -> load_sharded -> _load_sharded -> here
    check_partial(subject, matched=len(plan.writes), missing=missing, unexpected=unexpected,
                  skipped=len(skipped), stacklevel=5)
    plan.commit(description=f"load {os.path.basename(index.directory)}", progress=False,
                on_written=report.loaded.append, on_tied=report.tied.append, stacklevel=5)
    return report


def consolidate(directory: str | os.PathLike[str], path: str | os.PathLike[str], /, *, checksum: bool = True,
                format: str | None = None) -> str:
    """Put a sharded checkpoint together into one polyparam checkpoint file (``pp.load`` reads it anywhere).

    ``format`` is ``"safetensors"`` or ``"npz"``, from ``path``'s extension when ``None``
    (another extension is refused with ``UnsupportedFormatError`` before anything is read).
    Runs in one process, without any framework; pieces are verified against their
    checksums. Holds the whole model in memory while writing.
    """
    file = os.fspath(path)
    fmt = format or detect_format(file)
    if fmt not in WRITABLE:
        msg = (f"Cannot consolidate into {file!r}: expected a writable format {list(WRITABLE)}, got {fmt!r}. "
               "Name the file *.safetensors or *.npz.")
        raise errors.UnsupportedFormatError(msg, file=file, expected=list(WRITABLE), got=fmt)
    with ShardIndex(directory) as index:
        tensors = {p: index.read(p, verify=True) for p in index.pieces}
        meta = PolyparamMetadata(ties=[g for g in index.ties if any(q in tensors for q in g)], backend=index.backend,
                                 roles={p: index.roles[p] for p in tensors},
                                 doubts={p: why for p, why in index.doubts.items() if p in tensors})
    write_tensors(file, tensors, meta, format=fmt, checksum=checksum)
    return file
