"""Checkpoints: tie-aware atomic saves, validated all-or-nothing loads, sharded checkpoints, formats.

* :mod:`~polyparam.checkpoint.io`: atomic writes, tensors to a file, the load report.
* :mod:`~polyparam.checkpoint.single`: one-file :func:`save`, :func:`load`, :func:`convert`.
* :mod:`~polyparam.checkpoint.sharded`: one file per process (DTensor/FSDP2), :func:`consolidate`.
* :mod:`~polyparam.checkpoint.formats`: readers of safetensors, npz and the frameworks' native
  files, each validated before anything is trusted (never unpickling).

``pp.save``, ``pp.load`` and ``pp.consolidate`` are these functions.
"""

from __future__ import annotations

from polyparam.checkpoint.io import LoadReport
from polyparam.checkpoint.sharded import consolidate
from polyparam.checkpoint.single import convert, load, save

__all__ = ["LoadReport", "consolidate", "convert", "load", "save"]
