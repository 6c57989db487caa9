"""The Hugging Face Hub's sharded layout: read on every path that reads checkpoints, written by pp.save."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import transformers

import polyparam as pp
from polyparam import errors
from polyparam.checkpoint.hub import parse_size, plan_shards

transformers.logging.set_verbosity_error()


def gpt2(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=100, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


def bert(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128, vocab_size=100, max_position_embeddings=32)
    return transformers.BertModel(config).eval()


def outputs(model: Any) -> torch.Tensor:
    x = torch.arange(24).reshape(2, 12) % 100
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def values(model: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    """A GPT-2 saved by transformers itself in 100 KB shards (6 shards and an index)."""
    model = gpt2(seed=1)
    model.save_pretrained(tmp_path / "hf", max_shard_size="100KB")
    return tmp_path / "hf"


# ---- reading what transformers writes ---------------------------------------------------------------


def test_a_directory_saved_by_transformers_loads_into_a_model(hf_dir: Path) -> None:
    assert len([f for f in os.listdir(hf_dir) if f.endswith(".safetensors")]) > 3
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    for source in (hf_dir, hf_dir / "model.safetensors.index.json"):
        model = gpt2(seed=2)
        report = pp.load(model, source)
        assert "transformer.wte.weight" in report.loaded and not report.missing
        torch.testing.assert_close(outputs(model), outputs(reference), rtol=0, atol=0)


def test_every_reader_takes_the_directory(hf_dir: Path, tmp_path: Path) -> None:
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    found = pp.diff(reference, hf_dir)                          # diff: the tied head is the stored embedding
    assert not found and found.values["lm_head.weight"] == (0.0, 0.0)
    model = gpt2(seed=3)
    model_tree = pp.tree(model)
    model_tree.initialize(pp.init.Load(hf_dir), force_reinit=True)   # pp.init.Load
    torch.testing.assert_close(outputs(model), outputs(reference), rtol=0, atol=0)
    pp.checkpoint.convert(hf_dir, tmp_path / "one.safetensors")  # convert
    other = gpt2(seed=4)
    pp.load(other, tmp_path / "one.safetensors")
    torch.testing.assert_close(outputs(other), outputs(reference), rtol=0, atol=0)
    shown = subprocess.run([sys.executable, "-m", "polyparam", "inspect", str(hf_dir)], capture_output=True,
                           text=True, env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "transformer.h.1.mlp.c_fc.weight" in shown.stdout and "hub" in shown.stdout


def test_partial_load_options_work_on_a_directory(hf_dir: Path) -> None:
    """Mapping and partial loads apply to a sharded checkpoint as to a single file."""
    model = gpt2(seed=2)
    body = model.transformer
    report = pp.load(body, hf_dir, strip_prefix="transformer.")
    assert report.loaded and not report.missing
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir)
    torch.testing.assert_close(body.h[1].mlp.c_fc.weight, reference.transformer.h[1].mlp.c_fc.weight,
                               rtol=0, atol=0)


def test_bin_shards_are_read_without_unpickling(tmp_path: Path) -> None:
    """Older checkpoints: pytorch_model.bin.index.json and .bin shards, read only through the safe reader."""
    source = gpt2(seed=5)
    state = source.state_dict()
    keys = [k for k in state if k != "lm_head.weight"]
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves, 1):
        name = f"pytorch_model-{i:05d}-of-00002.bin"
        torch.save({k: state[k].clone() for k in part}, tmp_path / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(state[k].numel() * state[k].element_size() for k in keys)
    (tmp_path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    model = gpt2(seed=6)
    pp.load(model, tmp_path)
    torch.testing.assert_close(outputs(model), outputs(source), rtol=0, atol=0)

    # a pickle that runs code, renamed to a shard, is refused before anything is read or written
    (tmp_path / "pytorch_model-00002-of-00002.bin").write_bytes(b"\x80\x04cos\nsystem\n(S'echo hi'\ntR.")
    before = values(model)
    with pytest.raises(errors.CheckpointFormatError):
        pp.load(gpt2(seed=7), tmp_path)
    assert all(np.array_equal(before[k], v) for k, v in values(model).items())


# ---- the index is validated like a header: typed errors, nothing written -------------------------------


def _edit_index(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = directory / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    edit(index)
    path.write_text(json.dumps(index))


def _first_shard(index: dict[str, Any]) -> str:
    return str(sorted(set(index["weight_map"].values()))[0])


BAD_INDEXES: dict[str, tuple[type[Exception], Callable[[dict[str, Any]], None]]] = {
    "a shard that is missing": (
        errors.ShardIndexError, lambda ix: ix["weight_map"].update({"transformer.wte.weight": "gone.safetensors"})),
    "a shard path leaving the directory": (
        errors.UnsafeContentError, lambda ix: ix["weight_map"].update({"transformer.wte.weight": "../x.safetensors"})),
    "an absolute shard path": (
        errors.UnsafeContentError, lambda ix: ix["weight_map"].update({"transformer.wte.weight": "/etc/passwd"})),
    "a key not in its shard": (errors.ShardIndexError, lambda ix: ix["weight_map"].update(
        {"transformer.wte.weight": sorted(set(ix["weight_map"].values()))[-1]})),
    "a shard key the index lacks": (errors.ShardIndexError, lambda ix: ix["weight_map"].pop("transformer.ln_f.bias")),
    "a wrong total_size": (errors.ShardIndexError, lambda ix: ix["metadata"].update({"total_size": 12})),
    "a total_size that is not a number": (errors.ShardIndexError,
                                          lambda ix: ix["metadata"].update({"total_size": True})),
    "no weight_map": (errors.HeaderSchemaError, lambda ix: ix.pop("weight_map")),
    "a shard name that is not a string": (errors.HeaderSchemaError,
                                          lambda ix: ix["weight_map"].update({"transformer.wte.weight": 3})),
    "a shard of another format": (errors.UnsupportedFormatError,
                                  lambda ix: ix["weight_map"].update({"transformer.wte.weight": "config.json"})),
}


@pytest.mark.parametrize("case", sorted(BAD_INDEXES))
def test_a_bad_index_is_refused_before_anything_is_written(hf_dir: Path, case: str) -> None:
    kind, edit = BAD_INDEXES[case]
    _edit_index(hf_dir, edit)
    model = gpt2(seed=8)
    before = values(model)
    with pytest.raises(kind) as info:
        pp.load(model, hf_dir)
    assert "model.safetensors.index.json" in str(info.value)
    assert all(np.array_equal(before[k], v) for k, v in values(model).items())


def test_a_key_in_two_shards_is_refused(hf_dir: Path) -> None:
    from safetensors.numpy import load_file, save_file

    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    key = "transformer.wte.weight"
    other = next(s for s in sorted(set(index["weight_map"].values())) if s != index["weight_map"][key])
    tensors = load_file(str(hf_dir / other))
    tensors[key] = np.zeros((100, 64), np.float32)
    save_file(tensors, str(hf_dir / other), metadata={"format": "pt"})
    with pytest.raises(errors.DuplicateKeyError, match="transformer.wte.weight"):
        pp.load(gpt2(), hf_dir)


@pytest.mark.parametrize("raw, kind", [(b"", errors.EmptyFileError), (b"\xff\xfe{", errors.HeaderEncodingError),
                                       (b"{not json", errors.HeaderJSONError), (b"[1, 2]", errors.HeaderSchemaError),
                                       (b'{"weight_map": {}, "weight_map": {}}', errors.DuplicateKeyError)])
def test_a_malformed_index_file_is_refused(tmp_path: Path, raw: bytes, kind: type[Exception]) -> None:
    (tmp_path / "model.safetensors.index.json").write_bytes(raw)
    with pytest.raises(kind):
        pp.load(pp.tree({"w": np.zeros(2, np.float32)}), tmp_path)


def test_a_shard_linked_from_outside_the_directory_is_refused(hf_dir: Path, tmp_path: Path) -> None:
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    shard = _first_shard(index)
    outside = tmp_path / "elsewhere.safetensors"
    os.replace(hf_dir / shard, outside)
    os.symlink(outside, hf_dir / shard)
    with pytest.raises(errors.UnsafeContentError, match="link"):
        pp.load(gpt2(), hf_dir)


def test_a_directory_without_a_checkpoint_is_a_typed_error_everywhere(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    tree = pp.tree({"w": np.zeros(1)})
    for call in (lambda: pp.diff(tree, tmp_path), lambda: pp.load(tree, tmp_path),
                 lambda: tree.initialize(pp.init.Load(tmp_path), force_reinit=True)):
        with pytest.raises(errors.NotACheckpointError, match="model.safetensors.index.json") as info:
            call()
        assert isinstance(info.value, IsADirectoryError) and info.value.file == str(tmp_path)
    shown = subprocess.run([sys.executable, "-m", "polyparam", "inspect", str(tmp_path)], capture_output=True,
                           text=True)
    assert shown.returncode != 0 and "Traceback" not in shown.stderr and "model.safetensors" in shown.stderr


def test_a_format_given_with_a_directory_reads_what_the_directory_holds(hf_dir: Path) -> None:
    for fmt in ("safetensors", "hub", None):
        model = gpt2(seed=2)
        assert pp.load(model, hf_dir, format=fmt).loaded


def test_a_hugging_face_cache_snapshot_of_links_loads(hf_dir: Path, tmp_path: Path) -> None:
    """snapshots/<rev>/<file> -> ../../blobs/<hash>, as huggingface_hub lays its cache out."""
    repo = tmp_path / "models--x--gpt2"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for i, name in enumerate(sorted(os.listdir(hf_dir))):
        blob = repo / "blobs" / f"blob{i}"
        os.replace(hf_dir / name, blob)
        os.symlink(os.path.join("..", "..", "blobs", blob.name), snapshot / name)
    reference = transformers.GPT2LMHeadModel.from_pretrained(snapshot).eval()
    model = gpt2(seed=2)
    pp.load(model, snapshot)
    torch.testing.assert_close(outputs(model), outputs(reference), rtol=0, atol=0)


def test_tied_tensors_in_bin_shards_load_and_stay_tied(tmp_path: Path) -> None:
    """Older transformers wrote .bin shards with tied tensors sharing storage, every key in the index."""
    source = gpt2(seed=11)
    state = source.state_dict()            # lm_head.weight shares transformer.wte.weight's storage
    keys = list(state)
    first, second = keys[: len(keys) // 2], keys[len(keys) // 2:]
    second.append("transformer.wte.weight")   # with its tied head, as transformers kept storages together
    first.remove("transformer.wte.weight")
    weight_map = {}
    for i, part in enumerate([first, second], 1):
        name = f"pytorch_model-{i:05d}-of-00002.bin"
        torch.save({k: state[k] for k in part}, tmp_path / name)
        weight_map.update(dict.fromkeys(part, name))
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = gpt2(seed=12)
    pp.load(model, tmp_path)
    torch.testing.assert_close(outputs(model), outputs(source), rtol=0, atol=0)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_thousands_of_shards_stay_within_the_open_file_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polyparam.checkpoint.formats.hub as hub

    tree = pp.tree({f"w{i}": np.full(8, i, np.float32) for i in range(40)})
    pp.save(tree, tmp_path, max_shard_size=1)             # one shard per tensor
    monkeypatch.setattr(hub, "_OPEN_SHARDS", 3)
    out = pp.tree({f"w{i}": np.zeros(8, np.float32) for i in range(40)})
    with hub.HubArchive(str(tmp_path / "model.safetensors.index.json")) as archive:
        assert len(archive._open) <= 3
        pp.load(out, tmp_path)
    np.testing.assert_array_equal(out["w39"].numpy(), np.full(8, 39, np.float32))


def test_a_shard_that_is_not_a_regular_file_is_named_so(hf_dir: Path) -> None:
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    shard = _first_shard(index)
    os.remove(hf_dir / shard)
    os.mkfifo(hf_dir / shard)
    with pytest.raises(errors.UnsupportedFormatError, match="regular file"):
        pp.load(gpt2(), hf_dir)


# ---- writing the layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("make, cls", [(gpt2, transformers.GPT2LMHeadModel), (bert, transformers.BertModel)],
                         ids=["gpt2", "bert"])
def test_from_pretrained_reads_what_pp_save_writes(tmp_path: Path, make: Callable[..., Any], cls: Any) -> None:
    model = make(seed=9)
    model.config.save_pretrained(tmp_path)
    pp.save(model, tmp_path, max_shard_size="60KB", keys="native")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    on_disk = sum(os.path.getsize(tmp_path / s) for s in shards)
    assert index["metadata"]["total_size"] <= on_disk
    back = cls.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(outputs(back), outputs(model), rtol=0, atol=0)
    again = make(seed=10)
    pp.load(again, tmp_path)
    torch.testing.assert_close(outputs(again), outputs(model), rtol=0, atol=0)


def test_shards_respect_the_size_and_ties_survive(tmp_path: Path) -> None:
    tree = pp.tree({"emb": np.arange(12, dtype=np.float32).reshape(3, 4), "head": np.zeros((3, 4), np.float32),
                    "big": np.ones(1000, np.float32), "b": np.full(3, 2, np.float64)})
    pp.tie(tree["emb"], tree["head"])
    pp.save(tree, tmp_path / "ck", max_shard_size=100)
    index = json.loads((tmp_path / "ck" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3      # 48 B | 4000 B alone | 24 B
    out = pp.tree({"emb": np.zeros((3, 4), np.float32), "head": np.ones((3, 4), np.float32),
                   "big": np.zeros(1000, np.float32), "b": np.zeros(3, np.float64)})
    pp.load(out, tmp_path / "ck")
    assert [list(group.paths) for group in out.ties()] == [["emb", "head"]]
    np.testing.assert_array_equal(out["head"].numpy(), np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(out["big"].numpy(), np.ones(1000, np.float32))


def test_a_checksum_catches_a_flipped_bit_in_a_shard(tmp_path: Path) -> None:
    tree = pp.tree({f"w{i}": np.full(64, i, np.float32) for i in range(4)})
    pp.save(tree, tmp_path, max_shard_size=300)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = tmp_path / index["weight_map"]["w2"]
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0x40
    shard.write_bytes(bytes(raw))
    with pytest.raises(errors.ChecksumError, match=index["weight_map"]["w2"]) as info:
        pp.load(pp.tree({f"w{i}": np.zeros(64, np.float32) for i in range(4)}), tmp_path)
    assert info.value.file == str(shard)    # the file to restore


def test_a_resave_keeps_other_files_and_removes_the_old_shards(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"keep": 1}')
    (tmp_path / "model.safetensors").write_bytes(b"an older single-file save")
    tree = pp.tree({f"w{i}": np.full(64, i, np.float32) for i in range(4)})
    for step in range(3):
        for _, p in tree.items():
            p.set(p.numpy() + 1)
        pp.save(tree, tmp_path, max_shard_size=300)
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        shards = set(index["weight_map"].values())
        assert {f for f in os.listdir(tmp_path) if f.endswith(".safetensors")} == shards
        assert (tmp_path / "config.json").read_text() == '{"keep": 1}'
        out = pp.tree({f"w{i}": np.zeros(64, np.float32) for i in range(4)})
        pp.load(out, tmp_path)
        np.testing.assert_array_equal(out["w3"].numpy(), np.full(64, 3 + step + 1, np.float32))


def test_a_resave_never_removes_what_the_old_index_names_but_shards(tmp_path: Path) -> None:
    """An index naming a config, a script or itself as shards: a save removes none of them."""
    for name in ("config.json", "train.py"):
        (tmp_path / name).write_text("keep")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "config.json", "b": "train.py", "c": "model.safetensors.index.json"}}))
    tree = pp.tree({"w": np.ones(4, np.float32)})
    pp.save(tree, tmp_path, max_shard_size="5GB")
    assert (tmp_path / "config.json").read_text() == "keep" and (tmp_path / "train.py").read_text() == "keep"
    pp.load(pp.tree({"w": np.zeros(4, np.float32)}), tmp_path)


def test_the_index_path_names_its_directory_and_a_file_name_is_refused(tmp_path: Path) -> None:
    tree = pp.tree({"w": np.ones(4, np.float32)})
    pp.save(tree, tmp_path / "model.safetensors.index.json", max_shard_size="1GB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    for name in ("x.safetensors", "x.npz"):
        with pytest.raises(errors.InvalidArgumentError, match="expected a directory"):
            pp.save(tree, tmp_path / name, max_shard_size="1GB")
        assert not (tmp_path / name).exists()
    with pytest.raises(errors.InvalidArgumentError, match="staging"):
        pp.save(tree, tmp_path / "y.safetensors", staging="1MB")


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polyparam.checkpoint.formats.safetensors as st

    tree = pp.tree({f"w{i}": np.full(64, i, np.float32) for i in range(4)})
    pp.save(tree, tmp_path, max_shard_size=300)
    before = sorted(os.listdir(tmp_path))
    real, calls = st.write, []

    def fail_on_third(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> dict[str, str]:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(path, tensors, metadata)

    monkeypatch.setattr(st, "write", fail_on_third)
    with pytest.raises(errors.CheckpointWriteError):
        pp.save(pp.tree({f"w{i}": np.full(64, 9, np.float32) for i in range(4)}), tmp_path, max_shard_size=300)
    assert sorted(os.listdir(tmp_path)) == before
    out = pp.tree({f"w{i}": np.zeros(64, np.float32) for i in range(4)})
    pp.load(out, tmp_path)
    np.testing.assert_array_equal(out["w3"].numpy(), np.full(64, 3, np.float32))


def test_an_interrupt_after_the_index_is_in_place_keeps_the_new_checkpoint(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C (or a scheduler's signal) during the directory fsync that follows the index's rename: the new
    index names the new shards, so those stay (the old ones go at the next save) and the directory loads."""
    import polyparam.checkpoint.io as io

    pp.save(pp.tree({f"w{i}": np.full(64, 1, np.float32) for i in range(4)}), tmp_path, max_shard_size=300)
    real = io._fsync_dir

    def interrupted_after_the_index(directory: str) -> None:
        real(directory)
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        if any(name.count("-") == 4 for name in index["weight_map"].values()):   # this save's shards (named -<id>)
            raise KeyboardInterrupt

    monkeypatch.setattr(io, "_fsync_dir", interrupted_after_the_index)
    with pytest.raises(KeyboardInterrupt):
        pp.save(pp.tree({f"w{i}": np.full(64, 2, np.float32) for i in range(4)}), tmp_path, max_shard_size=300)
    monkeypatch.setattr(io, "_fsync_dir", real)
    out = pp.tree({f"w{i}": np.zeros(64, np.float32) for i in range(4)})
    pp.load(out, tmp_path)
    np.testing.assert_array_equal(out["w3"].numpy(), np.full(64, 2, np.float32))
    pp.save(out, tmp_path, max_shard_size=300)   # the next save removes the shards no index names
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".safetensors")) == sorted(set(
        index["weight_map"].values()))


def test_a_save_removes_the_temporary_folders_killed_saves_left_for_shards_of_any_name(tmp_path: Path) -> None:
    """A process killed while writing ``model-00001-of-00002-<id>.safetensors`` leaves its temporary folder; that
    name is never written again, so the next sharded save to the directory removes it (a dead process's only:
    a running save's folder stays)."""
    from polyparam.checkpoint.io import _HOST

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    stale = tmp_path / f".model-00001-of-00002-0badc0de.safetensors.{_HOST}-{dead_pid}.abcdefgh.tmp"
    live = tmp_path / f".model-00002-of-00002-0badc0de.safetensors.{_HOST}-{os.getppid()}.abcdefgh.tmp"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "partial").write_bytes(b"\0" * 1024)
    pp.save(pp.tree({f"w{i}": np.ones(64, np.float32) for i in range(4)}), tmp_path, max_shard_size=300)
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("kill_at", [1, 4, 8, 9, 10])
def test_a_save_killed_at_any_point_leaves_the_previous_checkpoint_loadable(tmp_path: Path, kill_at: int) -> None:
    """Killed writing a shard (1), renaming one in (4, 8), before the index is renamed in (9): the previous
    checkpoint is whole; killed while removing the old shards (10): the new one is."""
    script = textwrap.dedent(f"""
        import os, numpy as np, polyparam as pp
        import polyparam.checkpoint.formats.safetensors as st
        tree = pp.tree({{f"w{{i}}": np.full(64, i, np.float32) for i in range(4)}})
        pp.save(tree, {str(tmp_path)!r}, max_shard_size=300)
        calls = []
        real_write, real_replace, real_remove = st.write, os.replace, os.remove
        def counted(fn):
            def inner(*args, **kwargs):
                calls.append(fn.__name__)
                if len(calls) == {kill_at}:
                    os._exit(9)
                return fn(*args, **kwargs)
            return inner
        st.write = counted(real_write)
        os.replace = counted(real_replace)
        os.remove = counted(real_remove)
        pp.save(pp.tree({{f"w{{i}}": np.full(64, 7, np.float32) for i in range(4)}}), {str(tmp_path)!r},
                max_shard_size=300)
        os._exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    out = pp.tree({f"w{i}": np.zeros(64, np.float32) for i in range(4)})
    pp.load(out, tmp_path)
    np.testing.assert_array_equal(out["w3"].numpy(), np.full(64, 3 if kill_at <= 9 else 7, np.float32))


def test_sizes_parse_as_transformers_does() -> None:
    assert parse_size("5GB") == 5 * 10**9 and parse_size("500MiB") == 500 * 2**20 and parse_size(123) == 123
    assert parse_size("1.5KB") == 1500 and parse_size("10 kb") == 10_000
    for bad in ("", "-1GB", "5 parsecs", 0, True, None, "1e9", "1.5"):
        with pytest.raises(errors.InvalidArgumentError, match="max_shard_size"):
            parse_size(bad)  # type: ignore[arg-type]


def test_a_tensor_larger_than_a_shard_gets_its_own() -> None:
    tensors = {"a": np.zeros(10, np.uint8), "b": np.zeros(50, np.uint8), "c": np.zeros(5, np.uint8),
               "d": np.zeros(30, np.uint8)}
    assert plan_shards(tensors, 40) == [["a"], ["b"], ["c", "d"]]


def _round_trip(tmp_path: Path, make: Callable[[int], Any]) -> None:
    source, target = make(0), make(1)
    pp.save(source, tmp_path, max_shard_size="2KB")
    assert len(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]) >= 4
    pp.load(target, tmp_path)
    a, b = pp.tree(source), pp.tree(target)
    for path, p in a.items():
        np.testing.assert_array_equal(b[path].numpy(), p.numpy())


def test_a_keras_model_saves_and_loads_the_sharded_layout(tmp_path: Path) -> None:
    import keras

    def make(seed: int) -> Any:
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((16,)), keras.layers.Dense(32), keras.layers.BatchNormalization(),
                                 keras.layers.Dense(8)])

    _round_trip(tmp_path, make)


def test_an_mxnet_gluon_model_saves_and_loads_the_sharded_layout(tmp_path: Path) -> None:
    import mxnet as mx
    from mxnet.gluon import nn

    def make(seed: int) -> Any:
        mx.random.seed(seed)
        net = nn.HybridSequential()
        net.add(nn.Dense(32, in_units=16), nn.BatchNorm(in_channels=32), nn.Dense(8, in_units=32))
        net.initialize()
        return net

    _round_trip(tmp_path, make)
