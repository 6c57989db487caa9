"""B5: a model whose children are named inside nn.Sequential (torchvision ViT, DenseNet, RegNet) has
canonical paths that differ from its state_dict keys; its own checkpoints load, and polyparam's load
back into torch."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402


class Encoder(nn.Module):
    """As torchvision's ViT encoder: blocks named inside an nn.Sequential."""

    def __init__(self) -> None:
        super().__init__()
        blocks = ((f"encoder_layer_{i}", nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4))) for i in range(2))
        self.layers = nn.Sequential(OrderedDict(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return Model()


def test_tree_paths_and_state_dict_keys_differ_here() -> None:
    m = model(0)
    assert "encoder.layers.0.0.weight" in pp.tree(m).paths()
    assert "encoder.layers.encoder_layer_0.0.weight" in m.state_dict()


def test_load_state_takes_the_models_own_state_dict() -> None:
    src, dst = model(0), model(1)
    pp.tree(dst).load_state(src.state_dict())
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_pp_load_reads_the_frameworks_own_files(tmp_path: Path, writer: str) -> None:
    src, dst = model(0), model(1)
    if writer == "safetensors":
        file = tmp_path / "m.safetensors"
        save_file(src.state_dict(), str(file))
    else:
        file = tmp_path / "m.pt"
        torch.save(src.state_dict(), file)
    report = pp.load(dst, file)
    assert len(report.loaded) == len(src.state_dict())
    x = torch.randn(3, 4)
    assert torch.equal(src(x), dst(x))


def test_a_native_keyed_save_is_read_by_torch_and_by_polyparam(tmp_path: Path) -> None:
    src = model(0)
    file = tmp_path / "m.safetensors"
    pp.save(src, file, keys="native")
    dst = model(1)
    dst.load_state_dict(load_file(str(file)))  # strict: every key is the framework's own
    x = torch.randn(3, 4)
    assert torch.equal(src(x), dst(x))
    again = model(2)
    pp.load(again, file)
    assert torch.equal(src(x), again(x))


def test_two_keys_for_one_parameter_are_refused_before_any_write() -> None:
    src, dst = model(0), model(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    state = {k: v.numpy() for k, v in src.state_dict().items()}
    state["encoder.layers.0.0.weight"] = np.zeros((4, 4), np.float32)  # also given under its native name
    with pytest.raises(errors.StateError, match="one key per parameter"):
        pp.tree(dst).load_state(state)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k])


def test_load_state_of_something_not_a_mapping_is_typed() -> None:
    with pytest.raises(errors.StateError, match="mapping"):
        pp.tree(model(0)).load_state([("head.weight", np.zeros((2, 4), np.float32))])  # type: ignore[arg-type]
