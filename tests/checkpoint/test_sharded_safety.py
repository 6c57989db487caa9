"""Sharded checkpoints that stay inside their directory, check ties like one file, and say what is wrong briefly.

Findings F1, F2, F3, F5, F7, F24 and F25 of the reliability trial (issue #14). Every
directory is written by ``pp.save(tree, directory, sharded=True)`` in one process
(world size 1), then edited where a case needs metadata no model would write.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import polyparam as pp
from polyparam import errors

RANK0 = "rank-00000-of-00001.safetensors"


def snapshot(tree: pp.ParameterTree) -> tuple[dict[str, bytes], list[list[str]]]:
    """Bitwise values by path, and the tie groups."""
    return ({path: np.array(p.numpy(), copy=True).tobytes() for path, p in tree._occurrences()},
            [list(g.paths) for g in tree.ties()])


def set_ties(directory: Path, ties: list[list[str]]) -> None:
    """Rewrite the tie groups recorded in a world-1 directory (values and checksums unchanged)."""
    file = directory / RANK0
    with safe_open(str(file), "np") as fh:
        metadata = fh.metadata()
    header = json.loads(metadata["polyparam.shard"])
    header["ties"] = ties
    tensors = load_file(str(file))
    save_file(tensors, str(file), metadata={**metadata, "polyparam.shard": json.dumps(header)})


# ---- F1: directory names are names, not glob patterns ---------------------------------------------------------


@pytest.mark.parametrize("name", ["run[1]", "run*", "run?", "r[!x]n1"])
def test_load_reads_only_the_named_directory(tmp_path: Path, name: str) -> None:
    pp.save(pp.tree({"w": np.full(3, 1, np.float32)}), tmp_path / name, sharded=True)
    pp.save(pp.tree({"w": np.full(3, 666, np.float32)}), tmp_path / "run1", sharded=True)   # a sibling run
    tree = pp.tree({"w": np.zeros(3, np.float32)})
    pp.load(tree, tmp_path / name)
    np.testing.assert_array_equal(tree["w"].numpy(), np.full(3, 1, np.float32))
    pp.consolidate(tmp_path / name, tmp_path / "one.safetensors")
    out = pp.tree({"w": np.zeros(3, np.float32)})
    pp.load(out, tmp_path / "one.safetensors")
    np.testing.assert_array_equal(out["w"].numpy(), np.full(3, 1, np.float32))


def test_a_bracketed_directory_alone_loads(tmp_path: Path) -> None:
    pp.save(pp.tree({"w": np.full(3, 1, np.float32)}), tmp_path / "run[1]", sharded=True)
    tree = pp.tree({"w": np.zeros(3, np.float32)})
    pp.load(tree, tmp_path / "run[1]")
    np.testing.assert_array_equal(tree["w"].numpy(), np.full(3, 1, np.float32))


def test_save_removes_stale_files_only_inside_the_named_directory(tmp_path: Path) -> None:
    for sibling in ("x1", "x2"):
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "rank-00000-of-00002.safetensors").write_bytes(b"keep me")
    target = tmp_path / "x[12]"
    target.mkdir()
    (target / "rank-00001-of-00002.safetensors").write_bytes(b"stale")   # an earlier save on 2 ranks
    pp.save(pp.tree({"w": np.ones(3, np.float32)}), target, sharded=True)
    for sibling in ("x1", "x2"):
        assert (tmp_path / sibling / "rank-00000-of-00002.safetensors").read_bytes() == b"keep me"
    assert sorted(p.name for p in target.iterdir()) == [RANK0]


# ---- F5 and F7: ties are checked as the single-file load checks them, before any change ---------------------


def tree4() -> pp.ParameterTree:
    return pp.tree({"a": np.ones(6, np.float32), "b": np.full(6, 2, np.float32), "c": np.full(6, 3, np.float32),
                    "w": np.ones((4, 6), np.float32)})


def as_single(directory: Path, tmp_path: Path) -> Path:
    """The same checkpoint as one file."""
    path = tmp_path / "one.safetensors"
    pp.consolidate(directory, path)
    return path


def test_an_untieable_later_group_changes_nothing(tmp_path: Path) -> None:
    """Groups [[a, b], [c, w]] with c (6,) and w (4, 6): refused before a and b are tied or written."""
    directory = tmp_path / "d"
    pp.save(pp.tree({"a": np.full(6, 10, np.float32), "c": np.full(6, 12, np.float32),
                     "w": np.full((4, 6), 11, np.float32)}), directory, sharded=True)
    set_ties(directory, [["a", "b"], ["c", "w"]])
    tree = tree4()
    before = snapshot(tree)
    with pytest.raises(errors.TieMismatchError):
        pp.load(tree, directory)
    assert snapshot(tree) == before


def tied_directory(tmp_path: Path) -> Path:
    """a and b tied in the saved model: the directory stores a once and records [[a, b]]."""
    src = pp.tree({"a": np.full(6, 10, np.float32), "b": np.zeros(6, np.float32)})
    pp.tie(src["a"], src["b"])
    directory = tmp_path / "tied"
    pp.save(src, directory, sharded=True)
    return directory


def untied_values_directory(tmp_path: Path) -> Path:
    """a and b stored separately, with different values."""
    directory = tmp_path / "untied"
    pp.save(pp.tree({"a": np.full(6, 1, np.float32), "b": np.full(6, 2, np.float32)}), directory, sharded=True)
    return directory


def pair(tied: bool) -> pp.ParameterTree:
    tree = pp.tree({"a": np.zeros(6, np.float32), "b": np.full(6, 5, np.float32)})
    if tied:
        pp.tie(tree["a"], tree["b"])
    return tree


SOURCES: dict[str, Callable[[Path, Path], Path]] = {"sharded": lambda d, tmp: d, "single file": as_single}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_ties_ignore_writes_values_without_tying(tmp_path: Path, kind: str) -> None:
    source = SOURCES[kind](tied_directory(tmp_path), tmp_path)
    tree = pair(tied=False)
    report = pp.load(tree, source, ties="ignore")
    assert tree.ties() == [] and report.tied == []
    np.testing.assert_array_equal(tree["a"].numpy(), np.full(6, 10, np.float32))
    np.testing.assert_array_equal(tree["b"].numpy(), np.full(6, 10, np.float32))


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_ties_strict_refuses_an_untied_model_and_changes_nothing(tmp_path: Path, kind: str) -> None:
    source = SOURCES[kind](tied_directory(tmp_path), tmp_path)
    tree = pair(tied=False)
    before = snapshot(tree)
    with pytest.raises(errors.TieMismatchError):
        pp.load(tree, source, ties="strict")
    assert snapshot(tree) == before


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_ties_restore_ties_and_strict_accepts_a_tied_model(tmp_path: Path, kind: str) -> None:
    source = SOURCES[kind](tied_directory(tmp_path), tmp_path)
    tree = pair(tied=False)
    new_tie = r"tied \['a', 'b'\] as .* ties them.*apart.*optimizer.*ties='ignore'"
    with pytest.warns(errors.PolyparamWarning, match=new_tie):
        report = pp.load(tree, source)
    assert [list(g.paths) for g in tree.ties()] == [["a", "b"]] and report.tied == [["a", "b"]]
    tied = pair(tied=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # ties the model already has: nothing to say
        pp.load(tied, source)
        pp.load(tied, source, ties="strict")
    np.testing.assert_array_equal(tied["b"].numpy(), np.full(6, 10, np.float32))


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_different_values_for_a_model_tie_group_are_refused(tmp_path: Path, kind: str) -> None:
    """The model ties a and b; the checkpoint gives them different values: refused, unless ties='ignore'."""
    source = SOURCES[kind](untied_values_directory(tmp_path), tmp_path)
    tree = pair(tied=True)
    before = snapshot(tree)
    with pytest.raises(errors.TieMismatchError):
        pp.load(tree, source)
    assert snapshot(tree) == before
    pp.load(tree, source, ties="ignore")         # takes the first
    np.testing.assert_array_equal(tree["b"].numpy(), np.full(6, 1, np.float32))


def test_equal_values_for_a_model_tie_group_load(tmp_path: Path) -> None:
    directory = tmp_path / "equal"
    pp.save(pp.tree({"a": np.full(6, 4, np.float32), "b": np.full(6, 4, np.float32)}), directory, sharded=True)
    tree = pair(tied=True)
    pp.load(tree, directory)
    np.testing.assert_array_equal(tree["b"].numpy(), np.full(6, 4, np.float32))


def test_an_invalid_ties_argument_is_refused_for_a_directory(tmp_path: Path) -> None:
    directory = tied_directory(tmp_path)
    with pytest.raises(errors.InvalidArgumentError):
        pp.load(pair(tied=False), directory, ties="sometimes")  # type: ignore[arg-type]


# ---- F2 and F3 for shard files ----------------------------------------------------------------------------------


def test_a_sharded_save_during_in_place_updates_loads_back(tmp_path: Path) -> None:
    tree = pp.tree({f"l{i}": np.zeros((256, 1024), np.float32) for i in range(6)})
    stop = threading.Event()

    def train() -> None:
        while not stop.is_set():
            for _, p in tree.items():
                p.numpy()[...] += 1.0

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    try:
        directories = [tmp_path / f"live{i}" for i in range(3)]
        for directory in directories:
            pp.save(tree, directory, sharded=True)
    finally:
        stop.set()
        thread.join()
    for directory in directories:
        pp.load(pp.tree({f"l{i}": np.zeros((256, 1024), np.float32) for i in range(6)}), directory)


def test_a_shard_key_load_refuses_is_refused_before_writing(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    pp.save(pp.tree({"w": np.ones(3, np.float32)}), directory, sharded=True)
    before = hashlib.sha256((directory / RANK0).read_bytes()).hexdigest()
    with pytest.raises(errors.InvalidKeyError):
        pp.save(pp.tree({"__w": np.ones(3, np.float32)}), directory, sharded=True)
    assert hashlib.sha256((directory / RANK0).read_bytes()).hexdigest() == before
    assert sorted(p.name for p in directory.iterdir()) == [RANK0]


def test_a_failed_sharded_save_removes_the_folder_it_made_and_only_that(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A sharded save that fails while writing (a full disk) left behind the empty folder it had made."""
    import errno

    from polyparam.checkpoint import sharded

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sharded, "write_safetensors", full)
    tree = pp.tree({"w": np.ones(3, np.float32)})
    with pytest.raises(errors.CheckpointWriteError):
        pp.save(tree, tmp_path / "new", sharded=True)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(errors.CheckpointWriteError):
        pp.save(tree, tmp_path / "kept", sharded=True)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]


# ---- F24: consolidate honours the extension ----------------------------------------------------------------------


def test_consolidate_writes_the_format_of_the_extension(tmp_path: Path) -> None:
    directory = tied_directory(tmp_path)
    out = tmp_path / "x.npz"
    pp.consolidate(directory, out)
    assert out.read_bytes()[:2] == b"PK"
    tree = pair(tied=False)
    pp.load(tree, out)
    assert [list(g.paths) for g in tree.ties()] == [["a", "b"]]
    np.testing.assert_array_equal(tree["b"].numpy(), np.full(6, 10, np.float32))


def test_consolidate_refuses_an_extension_it_cannot_write(tmp_path: Path) -> None:
    directory = tied_directory(tmp_path)
    with pytest.raises(errors.UnsupportedFormatError):
        pp.consolidate(directory, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


# ---- F25: short messages, full facts on the exception -------------------------------------------------------


def test_a_lone_rank_file_of_a_huge_world_gives_a_short_message(tmp_path: Path) -> None:
    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "rank-00000-of-99999.safetensors"))
    with pytest.raises(errors.MetadataError) as info:
        pp.load(pp.tree({"w": np.zeros(2, np.float32)}), tmp_path)
    assert len(str(info.value)) < 1000
    missing: Any = getattr(info.value, "missing", None)
    assert missing is not None and len(missing) == 99_998 and missing[0] == 1 and missing[-1] == 99_998
    assert info.value.expected == 99_999 and info.value.got == [0]


def test_many_world_sizes_give_a_short_message(tmp_path: Path) -> None:
    for world in range(2, 400):
        (tmp_path / f"rank-00000-of-{world:05d}.safetensors").write_bytes(b"")
    with pytest.raises(errors.MetadataError) as info:
        pp.load(pp.tree({"w": np.zeros(2, np.float32)}), tmp_path)
    assert len(str(info.value)) < 1000 and len(info.value.got) == 398


def test_listing_ignores_names_that_only_contain_the_pattern(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    pp.save(pp.tree({"w": np.ones(3, np.float32)}), directory, sharded=True)
    (directory / f"x{RANK0}").write_bytes(b"not mine")
    (directory / f"{RANK0}.bak").write_bytes(b"not mine")
    tree = pp.tree({"w": np.zeros(3, np.float32)})
    pp.load(tree, directory)
    assert os.path.exists(directory / f"x{RANK0}")
    np.testing.assert_array_equal(tree["w"].numpy(), np.ones(3, np.float32))
