"""The torch zoo: real architectures built from small configs (random weights, no download), each checked for
count, names, a tree-wide seeded initialize, pp.save/pp.load, the framework's own checkpoint and transfer.

Hugging Face GPT-2 (tied head, ``Conv1D`` weights stored ``(in, out)``) and BERT, and hand-written models shaped
like torchvision's: a ViT (``nn.MultiheadAttention``, blocks named inside ``nn.Sequential``), a ConvNeXt stage
(``(C, 1, 1)`` layer scale), a ResNet with BatchNorm, and weight norm, spectral norm and a persistent buffer.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils import parametrizations  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402

transformers.logging.set_verbosity_error()


# ---- torchvision-shaped models ------------------------------------------------------------


class EncoderBlock(nn.Module):
    """torchvision's ViT EncoderBlock: pre-norm attention and MLP, each with a residual."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.self_attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    """torchvision's VisionTransformer in small: ``encoder.layers.encoder_layer_<i>`` (path ``encoder.layers.<i>``)."""

    def __init__(self, image: int = 16, patch: int = 8, dim: int = 32, depth: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.patch = patch
        self.conv_proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(torch.empty(1, (image // patch) ** 2 + 1, dim).normal_(std=0.02))
        self.encoder.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(dim, 2, 2 * dim)) for i in range(depth)))
        self.encoder.ln = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(dim, classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.encoder.pos_embedding
        x = self.encoder.ln(self.encoder.layers(x))
        return self.heads(x[:, 0])


class Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    """torchvision's ConvNeXt block: depthwise 7x7, channels-last LayerNorm, MLP, a ``(C, 1, 1)`` layer scale 1e-6."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute(0, 2, 3, 1),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), Permute(0, 3, 1, 2))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)


class ConvNeXt(nn.Module):
    def __init__(self, dim: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, dim, 4, stride=4), CNBlock(dim), CNBlock(dim))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dim), nn.Linear(dim, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, with a strided 1x1 downsample."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.downsample(x))


class ResNet(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 16, 2))
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Normed(nn.Module):
    """weight_norm and spectral_norm (parametrizations) and a persistent buffer the forward uses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = parametrizations.weight_norm(nn.Linear(6, 8))
        self.conv = parametrizations.spectral_norm(nn.Conv1d(8, 8, 3, padding=1))
        self.fc2 = nn.Linear(8, 3)
        self.register_buffer("offset", torch.linspace(-1, 1, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.fc1(x)) + self.offset   # (batch, length, 8)
        y = self.conv(y.transpose(1, 2)).transpose(1, 2)
        return self.fc2(y)


# ---- the zoo ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """How to build one model of the zoo (``seed`` seeds torch's own init) and run it."""

    make: Callable[[], nn.Module]
    inputs: Callable[[], torch.Tensor]
    hf: bool = False
    train_steps: int = 0   # forwards in training mode before the checks: running statistics and counters move

    def build(self, seed: int) -> nn.Module:
        """The model from torch seed ``seed``, every float tensor moved by U(0, 0.1): two seeds differ everywhere."""
        torch.manual_seed(seed)
        model = self.make()
        with torch.no_grad():
            for t in {id(t): t for t in model.state_dict(keep_vars=True).values()}.values():
                if t.is_floating_point():
                    t.add_(torch.rand_like(t) * 0.1)
        if self.train_steps:
            model.train()
            with torch.no_grad():
                for _ in range(self.train_steps * (seed + 1)):   # a fresh copy's counters differ too
                    model(self.inputs() * 2 + 0.5)
        return model.eval()


def run(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor):   # a Hugging Face output object
        out = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return out.numpy().copy()


def tokens() -> torch.Tensor:
    return torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))


def images(size: int = 16) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def gpt2() -> nn.Module:
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def bert() -> nn.Module:
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16)
    return transformers.BertModel(config)


ZOO = {
    "gpt2": Spec(gpt2, tokens, hf=True),
    "bert": Spec(bert, tokens, hf=True),
    "vit": Spec(ViT, images),
    "convnext": Spec(ConvNeXt, images),
    "resnet": Spec(ResNet, images, train_steps=3),
    "normed": Spec(Normed, lambda: torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(0))),
}


@pytest.fixture(params=sorted(ZOO))
def spec(request: pytest.FixtureRequest) -> Spec:
    return ZOO[request.param]


def state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def assert_same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    """Bitwise equal outputs and state_dicts (running statistics and step counters included)."""
    np.testing.assert_array_equal(run(a, x), run(b, x))
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        np.testing.assert_array_equal(sb[key], value, err_msg=key)


def assert_gpt2_tied(model: nn.Module) -> None:
    if isinstance(model, transformers.GPT2LMHeadModel):
        assert model.lm_head.weight is model.transformer.wte.weight


# ---- 1. count, trainable count and names ---------------------------------------------------


def test_count_trainable_and_names_are_the_frameworks(spec: Spec) -> None:
    model = spec.build(0)
    tree = pp.tree(model)
    unique = {id(t): t for t in model.state_dict(keep_vars=True).values()}
    assert sum(p.size or 0 for _, p in tree.items()) == sum(t.numel() for t in unique.values())
    assert sum(p.size or 0 for _, p in tree.items() if p.trainable) == sum(
        t.numel() for t in model.parameters() if t.requires_grad)
    names = {p.native_name for _, p in tree.items()}
    names |= {tree[path].native_name for group in tree.ties() for path in group.paths}
    assert names == set(model.state_dict())


# ---- 2. tree-wide seeded initialize ----------------------------------------------------------


def test_tree_wide_xavier_fills_weights_and_leaves_the_rest_as_specified(spec: Spec) -> None:
    """Weights change; biases and shifts 0, scales 1 (weight norm's magnitude: ‖v‖, as weight_norm sets it),
    running mean 0 and variance 1 (polyparam's convention, as for every BatchNorm), buffers of role other
    untouched; the same seed twice gives the same values."""
    model = spec.build(0)
    tree = pp.tree(model)
    before = {path: np.array(p.numpy(), copy=True) for path, p in tree.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.PolyparamWarning)   # "left N buffers of unknown role"
        report = tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    first = {path: np.array(p.numpy(), copy=True) for path, p in tree.items()}
    conventional = {"bias": 0, "shift": 0, "scale": 1, "running_mean": 0, "running_var": 1}
    for path, p in tree.items():
        if p.role == "weight":
            assert path in report.initialized and not np.array_equal(first[path], before[path]), path
        elif path.endswith("parametrizations.weight.original0"):   # weight norm's g
            v = torch.from_numpy(first[path[:-1] + "1"])
            np.testing.assert_allclose(first[path], torch.norm_except_dim(v, 2, 0).numpy(), rtol=1e-6)
        elif p.role in conventional:
            np.testing.assert_array_equal(first[path], conventional[p.role], err_msg=path)
        else:
            assert p.kind == "buffer" and path in report.skipped, path
            np.testing.assert_array_equal(first[path], before[path], err_msg=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.PolyparamWarning)
        tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    for path, p in tree.items():
        np.testing.assert_array_equal(p.numpy(), first[path], err_msg=path)
    assert_gpt2_tied(model)
    run(model, spec.inputs())


# ---- 3. pp.save / pp.load, 4. the framework's own checkpoint, 5. transfer -----------------------


def test_save_then_load_gives_equal_outputs(spec: Spec, tmp_path: Path) -> None:
    src, dst = spec.build(0), spec.build(1)
    file = tmp_path / "model.safetensors"
    pp.save(src, file)
    pp.load(dst, file)
    assert_same(src, dst, spec.inputs())
    assert_gpt2_tied(dst)


def test_torch_save_state_dict_loads_through_pp_load(spec: Spec, tmp_path: Path) -> None:
    src, dst = spec.build(0), spec.build(1)
    torch.save(src.state_dict(), tmp_path / "model.pt")
    pp.load(dst, tmp_path / "model.pt")
    assert_same(src, dst, spec.inputs())
    assert_gpt2_tied(dst)


def test_transfer_gives_equal_outputs(spec: Spec) -> None:
    src, dst = spec.build(0), spec.build(1)
    pp.transfer(src, dst)
    assert_same(src, dst, spec.inputs())
    assert_gpt2_tied(dst)


HF = sorted(name for name, s in ZOO.items() if s.hf)


@pytest.mark.parametrize("name", HF)
def test_save_pretrained_safetensors_loads_through_pp_load(name: str, tmp_path: Path) -> None:
    """Hugging Face's own file (GPT-2's tied head stored once) loads into a fresh model, the tie kept."""
    spec = ZOO[name]
    src, dst = spec.build(0), spec.build(1)
    src.save_pretrained(tmp_path)
    pp.load(dst, tmp_path / "model.safetensors")
    assert_same(src, dst, spec.inputs())
    assert_gpt2_tied(dst)


@pytest.mark.parametrize("name", HF)
def test_native_keyed_save_is_read_by_from_pretrained(name: str, tmp_path: Path) -> None:
    """pp.save(keys="native") next to the model's config.json is a folder from_pretrained reads."""
    spec = ZOO[name]
    src = spec.build(0)
    src.config.save_pretrained(tmp_path)
    pp.save(src, tmp_path / "model.safetensors", keys="native")
    dst = type(src).from_pretrained(tmp_path)
    assert_same(src, dst, spec.inputs())
    assert_gpt2_tied(dst)


# ---- model-specific facts ---------------------------------------------------------------------


def test_gpt2_conv1d_weights_are_in_out_and_the_head_is_tied() -> None:
    tree = pp.tree(ZOO["gpt2"].build(0))
    for path in ("transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_proj.weight"):
        assert tree[path].axes == ("in", "out"), path
    assert [group.paths for group in tree.ties()] == [["transformer.wte.weight", "lm_head.weight"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.PolyparamWarning)
        tree.initialize(pp.init.He(mode="fan_in", distribution="normal"), seed=0, force_reinit=True)
    fc = tree["transformer.h.0.mlp.c_fc.weight"]   # (32, 128): fan_in 32
    assert abs(fc.numpy().std() / math.sqrt(2 / 32) - 1) < 0.1


def test_vit_paths_differ_from_state_dict_keys_and_attention_biases_are_biases() -> None:
    tree = pp.tree(ZOO["vit"].build(0))
    p = tree["encoder.layers.0.self_attention.in_proj_bias"]
    assert p.native_name == "encoder.layers.encoder_layer_0.self_attention.in_proj_bias"
    assert p.role == "bias"


def test_convnext_layer_scale_is_a_scale_and_a_rule_keeps_its_1e_6() -> None:
    """A tree-wide initialize gives a scale its conventional 1 (torchvision's 1e-6 is the model's own
    hyper-parameter, which no initializer knows); a Mixed rule keeps 1e-6."""
    model = ZOO["convnext"].build(0)
    tree = pp.tree(model)
    scale = tree["features.1.layer_scale"]
    assert (scale.role, scale.axes) == ("scale", ("out", "other", "other"))
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    np.testing.assert_array_equal(scale.numpy(), 1)
    tree.initialize(pp.init.Mixed([("*.layer_scale", pp.init.Constant(1e-6))], default=pp.init.Xavier()),
                    seed=0, force_reinit=True)
    np.testing.assert_array_equal(scale.numpy(), np.float32(1e-6))
    np.testing.assert_array_equal(tree["features.1.block.2.weight"].numpy(), 1)   # the LayerNorm scale by role
    assert tree["features.1.block.0.weight"].groups == 16


def test_resnet_step_counters_are_in_the_state() -> None:
    """BatchNorm's num_batches_tracked (3 training steps) travels with state/load_state."""
    src, dst = ZOO["resnet"].build(0), ZOO["resnet"].build(1)
    assert int(src.bn1.num_batches_tracked) == 3 and int(dst.bn1.num_batches_tracked) == 6
    with torch.no_grad():
        src.bn1.num_batches_tracked.fill_(7)
    pp.tree(dst).load_state(pp.tree(src).state())
    assert int(dst.bn1.num_batches_tracked) == 7
    assert_same(src, dst, images())
