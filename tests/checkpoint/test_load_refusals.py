"""What pp.load refuses before the first write: integer codes for floating parameters, a file whose ties
contradict its tensors; and the words of its refusals (accepted dtypes, an unknown layout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import polyparam as pp
from polyparam import errors
from polyparam.checkpoint.formats import open_archive
from polyparam.checkpoint.sharded import shard_file

CODES = np.array([[5, -5, -105, -127]] * 3, np.int8)


def _meta(**entries: object) -> dict[str, str]:
    """polyparam's metadata strings, with ``entries`` (``ties=...``, ``layout=...``) JSON-encoded where needed."""
    meta = {"format": "polyparam", "polyparam.version": "1", "polyparam.layout": "canonical",
            "polyparam.aliases": "materialize"}
    for name, value in entries.items():
        meta[f"polyparam.{name}"] = value if isinstance(value, str) else json.dumps(value)
    return meta


# ---- integers never move into a floating parameter, cast or not ----------------------------------------------


@pytest.mark.parametrize("source", ["int8", "uint8", "int64", "bool"])
@pytest.mark.parametrize("target", ["float32", "float64", "complex64"])
@pytest.mark.parametrize("how", [{}, {"cast": True}, {"dtype": "saved"}], ids=["plain", "cast", "saved"])
def test_integer_codes_are_refused_for_a_floating_parameter(tmp_path: Path, source: str, target: str,
                                                            how: dict[str, object]) -> None:
    """A quantized kernel's int8 codes are not its values: refused with the path, never "pass cast=True"."""
    path = tmp_path / "q.safetensors"
    save_file({"weight": CODES.astype(source), "bias": np.ones(3, np.float32)}, str(path))
    model = {"weight": np.zeros((3, 4), target), "bias": np.zeros(3, np.float32)}
    with pytest.raises(errors.DTypeMismatchError) as info:
        pp.load(pp.tree(model), path, **how)  # type: ignore[arg-type]
    assert info.value.path == "weight" and info.value.expected == np.dtype(target)
    assert info.value.got == np.dtype(source) and "Pass cast=True" not in str(info.value)
    assert "'weight'" in str(info.value) and "dequantize" in str(info.value)
    assert not model["weight"].any() and not model["bias"].any()


def test_torch_int8_codes_are_refused_for_a_linear_weight_with_cast(tmp_path: Path) -> None:
    """The trial's case: an int8 safetensors file into nn.Linear with cast=True changes nothing."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    path = tmp_path / "int8.safetensors"
    save_torch({"weight": torch.from_numpy(CODES), "bias": torch.zeros(3)}, str(path))
    model = torch.nn.Linear(4, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(errors.DTypeMismatchError) as info:
        pp.load(model, path, cast=True)
    assert info.value.path == "weight"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_integer_codes_are_refused_from_a_sharded_directory_with_cast(tmp_path: Path) -> None:
    source = pp.tree({"w": CODES.copy()})
    pp.save(source, tmp_path / "d", sharded=True)
    model = {"w": np.zeros((3, 4), np.float32)}
    with pytest.raises(errors.DTypeMismatchError) as info:
        pp.load(pp.tree(model), tmp_path / "d", cast=True)
    assert info.value.path == "w" and not model["w"].any()


@pytest.mark.parametrize(("source", "target"), [("float64", "float32"), ("float16", "float32"),
                                                ("int64", "int8"), ("uint16", "int32"), ("bool", "int8")])
def test_casts_within_a_kind_still_load_with_cast(tmp_path: Path, source: str, target: str) -> None:
    path = tmp_path / "w.safetensors"
    value = np.array([1, 0, 1], source)
    save_file({"w": value}, str(path))
    model = {"w": np.zeros(3, target)}
    with pytest.raises(errors.DTypeMismatchError, match="Pass cast=True"):
        pp.load(pp.tree(model), path)
    pp.load(pp.tree(model), path, cast=True)
    np.testing.assert_array_equal(model["w"], value.astype(target))


# ---- a file whose ties contradict its tensors ------------------------------------------------------------------


def _contradicting(path: Path, *, same: bool = False) -> None:
    """A file storing b and c, different unless ``same``, whose metadata says they are tied."""
    save_file({"b": np.ones(3, np.float32), "c": np.full(3, 1 if same else 5, np.float32)}, str(path),
              metadata=_meta(ties=[["b", "c"]]))


def test_a_file_tying_two_different_tensors_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """Tying b and c as the file says would silently replace one of the two stored values (ties="strict" refuses
    the untied model before: TieMismatchError)."""
    path = tmp_path / "tie.safetensors"
    _contradicting(path)
    model = {"b": np.zeros(3, np.float32), "c": np.zeros(3, np.float32)}
    tree = pp.tree(model)
    with pytest.raises(errors.TieMismatchError):
        pp.load(tree, path, ties="strict")
    with pytest.raises(errors.MetadataError) as info:
        pp.load(tree, path)
    assert "'b'" in str(info.value) and "'c'" in str(info.value)
    assert info.value.path == "b" and info.value.expected == "b" and info.value.got == "c"
    assert info.value.file == str(path)
    assert not model["b"].any() and not model["c"].any() and tree.ties() == []


def test_a_file_tying_two_different_tensors_is_refused_for_a_tied_model_too(tmp_path: Path) -> None:
    path = tmp_path / "tie.safetensors"
    _contradicting(path)
    tree = pp.tree({"b": np.zeros(3, np.float32), "c": np.zeros(3, np.float32)})
    pp.tie(tree["b"], tree["c"])
    with pytest.raises((errors.MetadataError, errors.TieMismatchError)):
        pp.load(tree, path)
    assert not tree["b"].numpy().any()


def test_a_file_tying_two_different_tensors_loads_each_as_stored_with_ties_ignore(tmp_path: Path) -> None:
    """The remedy the refusal names: ties='ignore' writes each stored tensor to its own parameter."""
    path = tmp_path / "tie.safetensors"
    _contradicting(path)
    model = {"b": np.zeros(3, np.float32), "c": np.zeros(3, np.float32)}
    pp.load(pp.tree(model), path, ties="ignore")
    np.testing.assert_array_equal(model["b"], [1, 1, 1])
    np.testing.assert_array_equal(model["c"], [5, 5, 5])


@pytest.mark.filterwarnings("ignore::polyparam.errors.PolyparamWarning")
def test_a_tie_stored_twice_with_equal_values_still_loads_and_ties(tmp_path: Path) -> None:
    path = tmp_path / "tie.safetensors"
    _contradicting(path, same=True)
    tree = pp.tree({"b": np.zeros(3, np.float32), "c": np.zeros(3, np.float32)})
    pp.load(tree, path)
    assert [sorted(g.paths) for g in tree.ties()] == [["b", "c"]]
    np.testing.assert_array_equal(tree["c"].numpy(), [1, 1, 1])


@pytest.mark.filterwarnings("ignore::polyparam.errors.PolyparamWarning")
@pytest.mark.parametrize("aliases", ["reference", "materialize"])
@pytest.mark.parametrize("ext", ["safetensors", "npz"])
def test_files_pp_save_writes_for_a_tied_model_load_into_tied_and_untied_models(tmp_path: Path, aliases: str,
                                                                                ext: str) -> None:
    source = pp.tree({"b": np.arange(3, dtype=np.float32), "c": np.zeros(3, np.float32)})
    pp.tie(source["b"], source["c"])
    path = tmp_path / f"m.{ext}"
    pp.save(source, path, aliases=aliases)  # type: ignore[arg-type]
    with open_archive(path) as archive:
        assert archive.metadata.ties == [["b", "c"]]
        assert sorted(archive.entries) == (["b", "c"] if aliases == "materialize" else ["b"])
    for tied in (False, True):
        tree = pp.tree({"b": np.zeros(3, np.float32), "c": np.zeros(3, np.float32)})
        if tied:
            pp.tie(tree["b"], tree["c"])
        pp.load(tree, path)
        np.testing.assert_array_equal(tree["c"].numpy(), [0, 1, 2])
        assert [sorted(g.paths) for g in tree.ties()] == [["b", "c"]]


def test_a_tied_weight_holding_nan_round_trips_into_a_tied_model(tmp_path: Path) -> None:
    """``aliases="materialize"`` writes a tie's one value under each member's key; with a NaN in it the values
    compared unequal (NaN != NaN) and the model's own file was refused as "different tensors"."""
    torch = pytest.importorskip("torch")

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e, self.h = torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=False)
            self.h.weight = self.e.weight

    model = Tied()
    with torch.no_grad():
        model.e.weight[0, 0] = float("nan")
    pp.save(pp.tree(model), tmp_path / "nan.safetensors", aliases="materialize")
    other = Tied()
    pp.load(other, tmp_path / "nan.safetensors")
    assert other.h.weight is other.e.weight
    torch.testing.assert_close(other.e.weight, model.e.weight, equal_nan=True)
    with torch.no_grad():
        other.h.weight = torch.nn.Parameter(other.e.weight.clone())   # untied, one holding another value
        other.h.weight[1, 1] = 5.0
    pp.save(pp.tree(other), tmp_path / "two.safetensors", aliases="materialize")
    with pytest.raises(errors.TieMismatchError):     # values that do differ are still refused for a tied model
        pp.load(Tied(), tmp_path / "two.safetensors")


def test_a_sharded_directory_tying_two_different_tensors_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    values = {"b": np.ones(3, np.float32), "c": np.full(3, 5, np.float32)}
    pieces = {key: {"path": key, "global_shape": [3], "offset": [0], "role": "weight", "checksum": None}
              for key in values}
    header = {"version": 1, "rank": 0, "world_size": 1, "backend": "numpy", "ties": [["b", "c"]], "save_id": 1,
              "pieces": pieces}
    save_file(values, shard_file(directory, 0, 1),
              metadata={"format": "polyparam-shard", "polyparam.shard": json.dumps(header)})
    model = {"b": np.zeros(3, np.float32), "c": np.zeros(3, np.float32)}
    with pytest.raises(errors.MetadataError) as info:
        pp.load(pp.tree(model), directory)
    assert "'b'" in str(info.value) and "'c'" in str(info.value)
    assert not model["b"].any() and not model["c"].any()


# ---- the words of refusals ---------------------------------------------------------------------------------------


def test_an_unknown_safetensors_dtype_lists_every_dtype_the_reader_accepts(tmp_path: Path) -> None:
    """BF16 files load (with ml_dtypes): the list of accepted dtypes says so."""
    pytest.importorskip("ml_dtypes")
    raw = json.dumps({"a": {"dtype": "F8_E9M9", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(16))
    with pytest.raises(errors.UnknownDTypeError) as info:
        open_archive(path)
    assert "BF16" in info.value.expected and "'BF16'" in str(info.value)
    bf16 = tmp_path / "bf16.safetensors"
    raw = json.dumps({"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    bf16.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4))
    with open_archive(bf16) as archive:
        assert archive.entries["a"].dtype.name == "bfloat16"


@pytest.mark.parametrize("layout", ["evil", "keras", "orbax"])
def test_an_unknown_layout_is_refused_with_a_message_that_reads(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones(2, np.float32)}, str(path), metadata=_meta(layout=layout))
    model = {"w": np.zeros(2, np.float32)}
    with pytest.raises(errors.MetadataError) as info:
        pp.load(pp.tree(model), path)
    text = str(info.value)
    assert f"{layout!r}" in text and f" a {layout}" not in text and " a numpy" not in text, text
    assert not model["w"].any()
