"""Checkpoint file formats: validating readers and the common :class:`Archive` view.

Every reader validates the whole structure (header, names, dtypes, shapes, byte
ranges) against the file's real size *before* it allocates or maps anything, and
refuses with one typed :class:`~polyparam.errors.CheckpointFormatError` subclass per
kind of malformation. A FIFO or a device is refused before it is read (it could block
forever or never end). No reader can unpickle: PyTorch files go only through
``torch.load(weights_only=True)`` after the pickle-only legacy layout is refused by
its magic bytes, ``.npz`` members are parsed here (never ``np.load``), HDF5 links and
external storage are refused.
"""

from __future__ import annotations

import os

from polyparam import errors
from polyparam.checkpoint.formats.base import (
    FORMAT_VERSION,
    MAX_ELEMENTS,
    MAX_TENSORS,
    READABLE,
    WRITABLE,
    Archive,
    Entry,
    PolyparamMetadata,
    check_key,
    check_shape,
    detect_format,
    fingerprint,
    refuse_other_format,
    sniff,
)

__all__ = ["FORMAT_VERSION", "MAX_ELEMENTS", "MAX_TENSORS", "READABLE", "WRITABLE", "Archive", "Entry",
           "PolyparamMetadata", "check_key", "check_shape", "detect_format", "fingerprint", "open_archive",
           "refuse_other_format", "sniff"]


def open_archive(path: str | os.PathLike[str], /, *, format: str | None = None, mmap: bool = True) -> Archive:
    """Open and validate a checkpoint file of any readable format.

    ``path`` may also be a Hub checkpoint: its index (``model.safetensors.index.json``,
    ``pytorch_model.bin.index.json``) or the directory holding it (or holding a single
    ``model.safetensors``); see :mod:`~polyparam.checkpoint.formats.hub`. An orbax
    checkpoint directory opens as :class:`~polyparam.checkpoint.formats.orbax.OrbaxArchive`.

    Raises:
        UnsupportedFormatError: Unknown extension or format, or not a regular file (a FIFO, a device).
        CheckpointFormatError: A subclass naming the malformation.
        NotACheckpointError: A directory holding no checkpoint (also an ``IsADirectoryError``).
        CheckpointNotFoundError: Nothing exists at ``path`` (also a ``FileNotFoundError``).
        OSError: The file cannot be opened.
    """
    file = os.fspath(path)
    if not os.path.lexists(file):
        folder = os.path.dirname(os.path.abspath(file))
        extensions = tuple(ext for exts in READABLE.values() for ext in exts)
        exists = os.path.isdir(folder)
        near = sorted(n for n in os.listdir(folder) if n.lower().endswith(extensions))[:5] if exists else []
        where = (f"checkpoints there: {near}" if near else
                 "no checkpoint in that folder" if exists else f"no folder {folder!r}")
        msg = (f"Cannot read checkpoint {file!r}: expected a file or checkpoint directory at that path, got nothing "
               f"({where}). Check the path (relative paths start from {os.getcwd()!r}).")
        raise errors.CheckpointNotFoundError(msg, file=file, expected="an existing path", got=near)
    from polyparam.checkpoint.formats.orbax import is_orbax_checkpoint

    if format == "orbax" or (format is None and is_orbax_checkpoint(file)):   # an orbax (Flax/JAX) directory
        from polyparam.checkpoint.formats.orbax import OrbaxArchive

        return OrbaxArchive(file)
    if os.path.isdir(file):   # a Hub checkpoint directory (save_pretrained's layout): its index or single file
        from polyparam.checkpoint.formats.hub import INDEX_NAMES, SINGLE_NAMES, find_checkpoint

        found = find_checkpoint(file)
        if found is None:
            expected = [*INDEX_NAMES, *SINGLE_NAMES]
            msg = (f"Cannot read checkpoint directory {file!r}: expected one of {expected} in it (or an orbax "
                   "checkpoint), got none. Pass the checkpoint file itself, or the directory save_pretrained "
                   "or pp.save(..., max_shard_size=...) wrote.")
            raise errors.NotACheckpointError(msg, file=file, expected=expected, got=sorted(os.listdir(file))[:5])
        file, given = found, None   # the format is the found file's own
    else:
        given = format
    fmt = given or detect_format(file)
    if fmt == "hub":
        from polyparam.checkpoint.formats.hub import HubArchive

        return HubArchive(file, mmap=mmap)
    if fmt == "safetensors":
        from polyparam.checkpoint.formats.safetensors import SafetensorsArchive

        return SafetensorsArchive(file, mmap=mmap)
    if fmt == "npz":
        from polyparam.checkpoint.formats.npz import NpzArchive

        return NpzArchive(file)
    if fmt == "torch":
        from polyparam.checkpoint.formats.native import TorchArchive

        return TorchArchive(file)
    if fmt == "mxnet":
        from polyparam.checkpoint.formats.native import MxnetArchive

        return MxnetArchive(file)
    if fmt == "keras":
        from polyparam.checkpoint.formats.native import KerasH5Archive

        return KerasH5Archive(file)
    msg = (f"Cannot read checkpoint {file!r}: expected a format in {sorted(READABLE)}, got {fmt!r}. "
           "Pass one of the listed formats.")
    raise errors.UnsupportedFormatError(msg, file=file, expected=sorted(READABLE), got=fmt)
