"""Atheris fuzz target for the safetensors and npz readers (run on demand, not by pytest).

    pip install atheris
    python tests/checkpoint/fuzz_atheris.py -max_total_time=300 [CORPUS_DIR ...]

A crash is any exception outside polyparam.errors.CheckpointFormatError. Without a
corpus folder, the fuzzer starts from valid files made by polyparam's own writer (both
formats, with ties, checksums, float16 and int64 tensors), kept in a temporary folder.
The first input byte picks the reader (odd: safetensors, even: npz).
"""

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from polyparam import errors
    from polyparam.checkpoint.formats import open_archive

DIR = tempfile.mkdtemp()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    ext = "safetensors" if fdp.ConsumeBool() else "npz"
    path = os.path.join(DIR, f"f.{ext}")
    with open(path, "wb") as fh:
        fh.write(fdp.ConsumeBytes(fdp.remaining_bytes()))
    try:
        with open_archive(path) as archive:
            for key in archive.entries:
                archive.verify(key, archive.read(key))
    except errors.CheckpointFormatError:
        pass


def seed_corpus() -> str:
    """A folder of valid inputs: each writer's output behind its reader-choosing byte."""
    import numpy as np

    from polyparam.checkpoint.formats import PolyparamMetadata
    from polyparam.checkpoint.io import write_tensors

    corpus = tempfile.mkdtemp(prefix="corpus-")
    cases = [({"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a.bias": np.zeros(2, np.float16)},
              [["a.weight", "b.weight"]]),
             ({"x": np.ones((1,), np.int64)}, [])]
    for ext, choice in (("safetensors", b"\x01"), ("npz", b"\x00")):
        for i, (tensors, ties) in enumerate(cases):
            path = os.path.join(DIR, f"seed.{ext}")
            write_tensors(path, tensors, PolyparamMetadata(ties=ties))
            with open(path, "rb") as src, open(os.path.join(corpus, f"{ext}-{i}"), "wb") as dst:
                dst.write(choice + src.read())
    return corpus


if __name__ == "__main__":
    argv = sys.argv if any(not a.startswith("-") for a in sys.argv[1:]) else [*sys.argv, seed_corpus()]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
