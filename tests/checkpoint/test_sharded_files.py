"""Malformed sharded checkpoints: every fault is a typed error before the first write, and changes nothing.

The directories are written here without torch.distributed: one safetensors file per
rank, as ``pp.save(tree, directory, sharded=True)`` writes them, then edited.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import polyparam as pp
from polyparam import errors
from polyparam.checkpoint.formats import fingerprint
from polyparam.checkpoint.sharded import shard_file

W = np.arange(24, dtype=np.float32).reshape(4, 6) + 1
B = np.arange(6, dtype=np.float32) - 3


def good() -> tuple[list[dict[str, np.ndarray]], list[dict[str, Any]]]:
    """Two ranks: w (4, 6) split by rows, b (6,) whole on rank 0."""
    tensors = [{"w": W[:2].copy(), "b": B.copy()}, {"w": W[2:].copy()}]
    headers = []
    for rank, offsets in enumerate(({"w": [0, 0], "b": [0]}, {"w": [2, 0]})):
        pieces = {key: {"path": key, "global_shape": [4, 6] if key == "w" else [6], "offset": offsets[key],
                        "role": "weight" if key == "w" else "bias", "checksum": fingerprint(tensors[rank][key])}
                  for key in tensors[rank]}
        headers.append({"version": 1, "rank": rank, "world_size": 2, "backend": "numpy", "ties": [], "save_id": 7,
                        "pieces": pieces})
    return tensors, headers


def write(directory: Path, tensors: list[dict[str, np.ndarray]], headers: list[Any]) -> None:
    directory.mkdir(exist_ok=True)
    for rank, (values, header) in enumerate(zip(tensors, headers)):
        text = header if isinstance(header, str) else json.dumps(header)
        save_file(values, shard_file(directory, rank, len(tensors)),
                  metadata={"format": "polyparam-shard", "polyparam.shard": text})


def model() -> pp.ParameterTree:
    return pp.tree({"w": np.zeros((4, 6), np.float32), "b": np.zeros(6, np.float32)})


def test_a_good_directory_loads_and_consolidates(tmp_path: Path) -> None:
    write(tmp_path / "d", *good())
    tree = model()
    pp.load(tree, tmp_path / "d")
    np.testing.assert_array_equal(tree["w"].numpy(), W)
    np.testing.assert_array_equal(tree["b"].numpy(), B)
    pp.consolidate(tmp_path / "d", tmp_path / "one.safetensors")
    other = model()
    pp.load(other, tmp_path / "one.safetensors")
    np.testing.assert_array_equal(other["w"].numpy(), W)


def _set(rank: int, *keys: Any, value: Any) -> Callable[[list, list], None]:
    def edit(tensors: list, headers: list) -> None:
        node = headers[rank]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


def _text(rank: int, text: str) -> Callable[[list, list], None]:
    def edit(tensors: list, headers: list) -> None:
        headers[rank] = text
    return edit


def _drop_piece(tensors: list, headers: list) -> None:
    del headers[1]["pieces"]["w"]


def _renamed_tensor(tensors: list, headers: list) -> None:
    tensors[1]["w_renamed"] = tensors[1].pop("w")


def _other_dtype(tensors: list, headers: list) -> None:
    tensors[1]["w"] = tensors[1]["w"].astype(np.float64)
    headers[1]["pieces"]["w"]["checksum"] = None


def _corrupt(tensors: list, headers: list) -> None:
    tensors[1]["w"] = tensors[1]["w"].copy()
    tensors[1]["w"].reshape(-1).view(np.uint8)[5] ^= 0x04   # checksum kept: the data no longer matches


FAULTS: dict[str, tuple[Callable[[list, list], None], type[Exception]]] = {
    "not JSON": (_text(0, "{"), errors.MetadataError),
    "not an object": (_text(1, "[1, 2]"), errors.MetadataError),
    "version as text": (_set(0, "version", value="1"), errors.MetadataError),
    "future version": (_set(1, "version", value=99), errors.UnsupportedVersionError),
    "pieces as a list": (_set(0, "pieces", value=[]), errors.MetadataError),
    "piece without path": (_set(1, "pieces", "w", "path", value=None), errors.MetadataError),
    "negative offset": (_set(1, "pieces", "w", "offset", value=[-2, 0]), errors.MetadataError),
    "bool in a shape": (_set(0, "pieces", "b", "global_shape", value=[True]), errors.MetadataError),
    "offset past the end": (_set(1, "pieces", "w", "offset", value=[3, 0]), errors.MetadataError),
    "global shapes differ": (_set(1, "pieces", "w", "global_shape", value=[5, 6]), errors.MetadataError),
    "overlapping pieces": (_set(1, "pieces", "w", "offset", value=[1, 0]), errors.MetadataError),
    "a gap": (_drop_piece, errors.MetadataError),
    "huge global shape": (_set(0, "pieces", "b", "global_shape", value=[10**15]), errors.MetadataError),
    "key not in the file": (_renamed_tensor, errors.MetadataError),
    "dtypes differ": (_other_dtype, errors.MetadataError),
    "ties not lists": (_set(0, "ties", value="w"), errors.MetadataError),
    "backend not a name": (_set(0, "backend", value=5), errors.MetadataError),
    "checksum not text": (_set(1, "pieces", "w", "checksum", value=7), errors.MetadataError),
    "role not text": (_set(0, "pieces", "b", "role", value=["bias"]), errors.MetadataError),
    "corrupt data": (_corrupt, errors.ChecksumError),
    "save id as text": (_set(0, "save_id", value="7"), errors.MetadataError),
    "files of two saves": (_set(1, "save_id", value=8), errors.MetadataError),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_refused_before_any_write(tmp_path: Path, fault: str) -> None:
    edit, expected = FAULTS[fault]
    tensors, headers = good()
    edit(tensors, headers)
    write(tmp_path / "d", tensors, headers)
    tree = model()
    tree["w"].set(np.full((4, 6), 7, np.float32))
    with pytest.raises(expected) as info:
        pp.load(tree, tmp_path / "d")
    assert isinstance(info.value, errors.CheckpointFormatError)
    assert "Cannot" in str(info.value) and info.value.file
    assert (tree["w"].numpy() == 7).all() and (tree["b"].numpy() == 0).all()
    assert tree.ties() == []
    with pytest.raises(expected):
        pp.consolidate(tmp_path / "d", tmp_path / "one.safetensors")
    assert not (tmp_path / "one.safetensors").exists()


def test_a_truncated_shard_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "d", *good())
    file = Path(shard_file(tmp_path / "d", 1, 2))
    file.write_bytes(file.read_bytes()[:-5])
    tree = model()
    with pytest.raises(errors.CheckpointFormatError):
        pp.load(tree, tmp_path / "d")
    assert (tree["w"].numpy() == 0).all()


def test_verify_false_skips_only_the_checksums(tmp_path: Path) -> None:
    tensors, headers = good()
    _corrupt(tensors, headers)
    write(tmp_path / "d", tensors, headers)
    tree = model()
    pp.load(tree, tmp_path / "d", verify=False)
    assert tree["w"].numpy()[2:].tobytes() == tensors[1]["w"].tobytes()


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**13) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)


def _places(node: Any, trail: tuple = ()) -> list[tuple]:
    out = [trail]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _places(value, (*trail, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _places(value, (*trail, i))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edit_of_the_shard_metadata_is_loaded_or_refused_with_a_typed_error(tmp_path: Path,
                                                                              data: st.DataObject) -> None:
    tensors, headers = good()
    rank = data.draw(st.sampled_from([0, 1]))
    edited = copy.deepcopy(headers[rank])
    trail = data.draw(st.sampled_from(_places(edited)))
    value = data.draw(JSON)
    if not trail:
        edited = value
    else:
        node = edited
        for key in trail[:-1]:
            node = node[key]
        node[trail[-1]] = value
    headers[rank] = edited
    directory = tmp_path / f"fuzz-{data.draw(st.integers(0, 10**9))}"
    write(directory, tensors, headers)
    tree = model()
    try:
        pp.load(tree, directory)
    except errors.PolyparamError:
        assert (tree["w"].numpy() == 0).all() and (tree["b"].numpy() == 0).all()


def test_mapping_and_partial_options_apply_to_a_sharded_directory(tmp_path) -> None:
    """strip_prefix, rename, root, allow_missing and skip_mismatch work on pp.save(..., sharded=True) output."""
    import polyparam as pp
    from polyparam import errors

    directory = str(tmp_path / "ck")
    saved = pp.tree({"module": {"enc": {"weight": np.arange(6, dtype=np.float32).reshape(2, 3)},
                                "head": {"weight": np.ones((4, 3), np.float32)}}})
    pp.save(saved, directory, sharded=True)

    plain = pp.tree({"enc": {"weight": np.zeros((2, 3), np.float32)},
                     "head": {"weight": np.zeros((4, 3), np.float32)}})
    report = pp.load(plain, directory, strip_prefix="module.")
    assert sorted(report.loaded) == ["enc.weight", "head.weight"] and report.renamed
    np.testing.assert_array_equal(plain["enc.weight"].numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))

    new_head = pp.tree({"enc": {"weight": np.zeros((2, 3), np.float32)},
                        "head": {"weight": np.zeros((9, 3), np.float32)}})
    report = pp.load(new_head, directory, rename=[(r"^module\.", "")], skip_mismatch=True)
    assert report.loaded == ["enc.weight"] and report.skipped == [("head.weight", (4, 3), (9, 3))]
    assert not new_head["head.weight"].numpy().any()

    nested = pp.tree({"backbone": {"enc": {"weight": np.zeros((2, 3), np.float32)}},
                      "other": np.zeros(2, np.float32)})
    with pytest.warns(UserWarning):
        report = pp.load(nested, directory, root="backbone", strip_prefix="module.", ignore_extra=True)
    assert report.loaded == ["backbone.enc.weight"] and report.unexpected == ["backbone.head.weight"]
    assert not nested["other"].numpy().any()

    before = plain.state(copy=True)
    with pytest.raises(errors.StateError):   # nothing matches: refused, nothing written
        pp.load(plain, directory, strict=False)
    assert all(np.array_equal(before[k], v) for k, v in plain.state().items())
