"""Atheris fuzz target for the safetensors and npz readers (run on demand, not by pytest).

    pip install atheris
    python tests/checkpoint/fuzz_atheris.py -max_total_time=300

A crash is any exception outside polyparam.errors.CheckpointFormatError.
"""

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from polyparam import errors
    from polyparam._formats import open_archive

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


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
