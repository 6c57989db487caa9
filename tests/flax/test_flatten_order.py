"""A Flax ``Linear`` fed by a feature map flattened inside ``__call__``: its input rows follow NNX's channels-last
``(H, W, C)`` order, torch's follow ``(C, H, W)``. The model's structure cannot show it, so the parameter says so
(``_layout_doubt``) and a transfer to another framework refuses before writing anything; within Flax the native
order round-trips. Likewise a ``Linear`` whose outputs a reshape turns into the map a convolution reads."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flax")
torch = pytest.importorskip("torch")
import jax.numpy as jnp  # noqa: E402 - after the importorskip
from flax import nnx  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402

C, H, W = 4, 8, 8          # conv channels; input map 8x8, a 3x3 VALID conv makes 6x6
FLAT = C * (H - 2) * (W - 2)
X = np.random.default_rng(0).uniform(-1, 1, (2, 3, H, W)).astype(np.float32)


class Flattened(nnx.Module):
    """The natural NNX port of torch's ``Conv2d -> ReLU -> Flatten -> Linear``: a reshape in ``__call__``."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(3, C, (3, 3), padding="VALID", rngs=rngs)
        self.fc = nnx.Linear(FLAT, 2, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        x = nnx.relu(self.conv(x))
        return self.fc(x.reshape(x.shape[0], -1))


class Pooled(nnx.Module):
    """A CNN that pools to one value per channel: ``Linear(C)`` then ``Linear(2C)``, no flattened map anywhere."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(3, C, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(C, rngs=rngs)
        self.conv2 = nnx.Conv(C, 2 * C, (3, 3), rngs=rngs)   # 2C channels: the head's 4C is a multiple of both
        self.hidden = nnx.Linear(2 * C, 4 * C, rngs=rngs)
        self.head = nnx.Linear(4 * C, 2, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        x = nnx.relu(self.conv2(nnx.relu(self.norm(self.conv1(x)))))
        return self.head(nnx.relu(self.hidden(jnp.mean(x, axis=(1, 2)))))


def _torch_flattened() -> Any:
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, C, 3), nn.ReLU(), nn.Flatten(), nn.Linear(FLAT, 2)).eval()


def _flax_out(model: Any) -> np.ndarray:
    return np.asarray(model(jnp.asarray(X.transpose(0, 2, 3, 1))))


def _snapshot(model: Any) -> dict[str, np.ndarray]:
    return {path: np.array(value, copy=True) for path, value in pp.tree(model).state().items()}


def _doubts(model: Any) -> dict[str, str]:
    return {path: doubt for path, p in pp.tree(model).items() if (doubt := p._layout_doubt())}


def test_a_linear_fed_by_a_flattened_conv_map_says_it_is_in_doubt() -> None:
    doubts = _doubts(Flattened(nnx.Rngs(0)))
    assert list(doubts) == ["fc.weight"]            # not its bias (one per output), not the conv
    assert "'conv'" in doubts["fc.weight"] and "(H, W, C)" in doubts["fc.weight"]


def test_an_nnx_sequential_with_a_reshape_between_conv_and_linear_is_in_doubt() -> None:
    rngs = nnx.Rngs(0)
    net = nnx.Sequential(nnx.Conv(3, C, (3, 3), padding="VALID", rngs=rngs), nnx.relu,
                         lambda x: x.reshape(x.shape[0], -1), nnx.Linear(FLAT, 2, rngs=rngs))
    assert list(_doubts(net)) == ["3.weight"]
    nested = nnx.Sequential(nnx.Sequential(nnx.Conv(3, C, (3, 3), rngs=rngs), nnx.BatchNorm(C, rngs=rngs)),
                            nnx.Sequential(lambda x: x.reshape(x.shape[0], -1), nnx.Linear(FLAT, 2, rngs=rngs)))
    assert list(_doubts(nested)) == ["1.1.weight"]     # past the channel norm, across the containers


def test_pooled_maps_and_models_without_a_convolution_are_not_in_doubt() -> None:
    assert _doubts(Pooled(nnx.Rngs(0))) == {}
    rngs = nnx.Rngs(0)
    pooled = nnx.Sequential(nnx.Conv(3, C, (3, 3), rngs=rngs), nnx.BatchNorm(C, rngs=rngs), nnx.relu,
                            partial(jnp.mean, axis=(1, 2)), nnx.Linear(C, 10, rngs=rngs))
    assert _doubts(pooled) == {}
    mlp = nnx.Sequential(nnx.Linear(4, 8, rngs=rngs), nnx.relu, nnx.Linear(8, 16, rngs=rngs))
    assert _doubts(mlp) == {}
    both = nnx.Sequential(nnx.Conv(3, C, (3, 3), rngs=rngs),   # average and max pooling side by side: 2C
                          lambda x: jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1),
                          nnx.Linear(2 * C, 10, rngs=rngs))
    assert _doubts(both) == {}


def test_a_norm_over_the_flattened_features_is_in_doubt_too() -> None:
    rngs = nnx.Rngs(0)
    net = nnx.Sequential(nnx.Conv(3, C, (3, 3), padding="VALID", rngs=rngs), lambda x: x.reshape(x.shape[0], -1),
                         nnx.BatchNorm(FLAT, rngs=rngs), nnx.Linear(FLAT, 2, rngs=rngs))
    assert set(_doubts(net)) == {"2.weight", "2.bias", "2.running_mean", "2.running_var", "3.weight"}


def test_a_linear_whose_outputs_are_unflattened_into_a_conv_input_is_in_doubt() -> None:
    """A generator's ``Linear(z, C*h*w) -> reshape (h, w, C) -> ConvTranspose(C)``: its outputs (rows and bias)
    follow NNX's ``(h, w, C)`` order, torch's ``Unflatten`` reads ``(C, h, w)``."""
    rngs = nnx.Rngs(0)
    net = nnx.Sequential(nnx.Linear(5, C * 16, rngs=rngs), lambda x: x.reshape(x.shape[0], 4, 4, C),
                         nnx.ConvTranspose(C, 3, (3, 3), rngs=rngs))
    doubts = _doubts(net)
    assert set(doubts) == {"0.weight", "0.bias"}
    assert "Pool the map" not in doubts["0.weight"] and "Reorder the values" in doubts["0.weight"]   # no pooling here
    assert "Pool the map" in _doubts(Flattened(nnx.Rngs(0)))["fc.weight"]
    plain = nnx.Sequential(nnx.Linear(5, C, rngs=rngs), lambda x: x.reshape(x.shape[0], 1, 1, C),
                           nnx.ConvTranspose(C, 3, (3, 3), rngs=rngs))
    assert _doubts(plain) == {}


@pytest.mark.parametrize("direction", ["torch-to-flax", "flax-to-torch"])
def test_transfer_with_torch_refuses_the_flattened_map_and_changes_nothing(direction: str) -> None:
    torch_net, flax_net = _torch_flattened(), Flattened(nnx.Rngs(0))
    src, dst = (torch_net, flax_net) if direction == "torch-to-flax" else (flax_net, torch_net)
    rename = ([(r"^0\.", "conv."), (r"^3\.", "fc.")] if direction == "torch-to-flax"
              else [(r"^conv\.", "0."), (r"^fc\.", "3.")])
    before = _snapshot(dst)
    with pytest.raises(errors.TransferError, match=r"fc\.weight") as info:
        pp.transfer(src, dst, rename=rename)
    assert "Nothing was changed" in str(info.value)
    for path, value in _snapshot(dst).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)


@pytest.mark.parametrize("direction", ["torch-to-flax", "flax-to-torch"])
def test_a_file_of_the_other_framework_is_refused_as_transfer_is_and_changes_nothing(tmp_path: Path,
                                                                                     direction: str) -> None:
    """pp.load asks what pp.transfer asks: the Flax Linear's doubt when a torch file loads into it, and the doubt
    the saving Flax model recorded in its file when torch loads that file."""
    torch_net, flax_net = _torch_flattened(), Flattened(nnx.Rngs(0))
    src, dst = (torch_net, flax_net) if direction == "torch-to-flax" else (flax_net, torch_net)
    rename = ([(r"^0\.", "conv."), (r"^3\.", "fc.")] if direction == "torch-to-flax"
              else [(r"^conv\.", "0."), (r"^fc\.", "3.")])
    pp.save(src, tmp_path / "src.safetensors")
    before = _snapshot(dst)
    with pytest.raises(errors.TransferError, match=r"fc\.weight") as info:
        pp.load(dst, tmp_path / "src.safetensors", rename=rename)
    assert "Nothing was changed" in str(info.value) and "(H, W, C)" in str(info.value)
    for path, value in _snapshot(dst).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_within_flax_transfer_and_save_load_keep_the_native_order(tmp_path: Path) -> None:
    src, dst = Flattened(nnx.Rngs(0)), Flattened(nnx.Rngs(1))
    assert pp.transfer(src, dst).ok
    np.testing.assert_array_equal(_flax_out(dst), _flax_out(src))
    loaded = Flattened(nnx.Rngs(2))
    pp.save(src, tmp_path / "flat.safetensors")
    pp.load(loaded, tmp_path / "flat.safetensors")
    np.testing.assert_array_equal(_flax_out(loaded), _flax_out(src))


def test_rows_reordered_by_hand_and_written_with_load_state_give_torchs_outputs() -> None:
    """What the doubt tells to do: ``load_state`` writes regardless of it, so reordering the rows from torch's
    ``(C, H, W)`` to NNX's ``(H, W, C)`` moves the model."""
    torch_net, flax_net = _torch_flattened(), Flattened(nnx.Rngs(0))
    state = {path: np.array(value) for path, value in pp.tree(torch_net).state().items()}
    fc = state["3.weight"].reshape(2, C, H - 2, W - 2).transpose(0, 2, 3, 1).reshape(2, FLAT)
    pp.tree(flax_net).load_state({"conv.weight": state["0.weight"], "conv.bias": state["0.bias"],
                                  "fc.weight": fc, "fc.bias": state["3.bias"]})
    with torch.no_grad():
        expected = torch_net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(_flax_out(flax_net), expected, atol=1e-5)


def test_a_resnet_bottlenecks_channel_norms_are_not_in_doubt_and_transfer_from_torch() -> None:
    """A bottleneck's ``bn3`` holds ``4 * planes`` channels, assigned right before the shortcut's convolution of
    ``inplanes = planes`` inputs: 4x that convolution's channels, but a channel norm of ``conv3``'s map (no
    ``Linear`` on either side), so torch's ResNet transfers into the NNX port and both compute the same."""

    class Bottleneck(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.conv1 = nnx.Conv(C, C, (1, 1), use_bias=False, rngs=rngs)
            self.bn1 = nnx.BatchNorm(C, rngs=rngs)
            self.conv3 = nnx.Conv(C, 4 * C, (1, 1), use_bias=False, rngs=rngs)
            self.bn3 = nnx.BatchNorm(4 * C, rngs=rngs)
            self.downsample = nnx.Sequential(nnx.Conv(C, 4 * C, (1, 1), use_bias=False, rngs=rngs),
                                             nnx.BatchNorm(4 * C, rngs=rngs))

        def __call__(self, x: Any) -> Any:
            out = self.bn3(self.conv3(nnx.relu(self.bn1(self.conv1(x)))))
            return nnx.relu(out + self.downsample(x))

    class TorchBottleneck(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            nn = torch.nn
            self.conv1, self.bn1 = nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C)
            self.conv3, self.bn3 = nn.Conv2d(C, 4 * C, 1, bias=False), nn.BatchNorm2d(4 * C)
            self.downsample = nn.Sequential(nn.Conv2d(C, 4 * C, 1, bias=False), nn.BatchNorm2d(4 * C))

        def forward(self, x: Any) -> Any:
            out = self.bn3(self.conv3(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + self.downsample(x))

    block = Bottleneck(nnx.Rngs(0))
    assert _doubts(block) == {}
    source = TorchBottleneck().eval()
    for path, p in pp.tree(source).items():   # running statistics away from 0 and 1, so the check sees them
        if p.dtype == np.float32:
            p.set(np.random.default_rng(len(path)).uniform(0.5, 1.5, p.shape).astype(np.float32))
    x = np.random.default_rng(1).uniform(-1, 1, (2, C, 5, 5)).astype(np.float32)
    pp.transfer(source, block)
    block.eval()   # running statistics, as torch's eval()
    with torch.no_grad():
        expected = source(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(block(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2),
                               expected, rtol=1e-4, atol=1e-5)


def test_a_norm_over_flattened_features_at_the_end_of_the_model_stays_in_doubt() -> None:
    """``Conv -> reshape -> BatchNorm(k * C)`` as a model's output (an embedding head), and a LayerNorm over them
    before an ``nnx.LinearGeneral``: no convolution on the norm's other side, so its features may be a map's."""
    rngs = nnx.Rngs(0)
    head = nnx.Sequential(nnx.Conv(3, C, (3, 3), padding="VALID", rngs=rngs), lambda x: x.reshape(x.shape[0], -1),
                          nnx.BatchNorm(FLAT, rngs=rngs))
    assert set(_doubts(head)) == {"2.weight", "2.bias", "2.running_mean", "2.running_var"}
    general = nnx.Sequential(nnx.Conv(3, C, (3, 3), padding="VALID", rngs=rngs),
                             lambda x: x.reshape(x.shape[0], -1), nnx.LayerNorm(FLAT, rngs=rngs),
                             nnx.LinearGeneral(FLAT, 2, rngs=rngs))
    assert {"2.weight", "2.bias"} <= set(_doubts(general))


def test_a_jitted_step_changes_neither_the_doubt_nor_the_order_of_paths() -> None:
    """``nnx.jit`` sets a module's attributes again in sorted order (``classifier`` before ``features``); the
    paths and the layout rule follow the order they were assigned in, so a jitted model is read as a fresh one."""

    class Features(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.features = nnx.Conv(3, C, (3, 3), padding="VALID", rngs=rngs)
            self.classifier = nnx.Linear(FLAT, 2, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            x = nnx.relu(self.features(x))
            return self.classifier(x.reshape(x.shape[0], -1))

    model = Features(nnx.Rngs(0))
    fresh_paths, fresh_doubts = pp.tree(model).paths(), _doubts(model)
    nnx.jit(lambda m, x: m(x))(model, jnp.ones((1, H, W, 3)))
    assert [k for k in vars(model) if not k.startswith("_")] == ["classifier", "features"]   # what NNX did
    assert pp.tree(model).paths() == fresh_paths == ["features.weight", "features.bias", "classifier.weight",
                                                     "classifier.bias"]
    assert _doubts(model) == fresh_doubts and list(fresh_doubts) == ["classifier.weight"]
    with pytest.raises(errors.TransferError, match=r"classifier\.weight"):
        pp.transfer(_torch_flattened(), model, rename=[(r"^0\.", "features."), (r"^3\.", "classifier.")])


def test_a_norm_over_a_flattened_map_before_another_towers_conv_stays_in_doubt() -> None:
    """Two towers: ``img_conv -> reshape -> img_norm(k * C)``, then another tower's convolution assigned next.
    That convolution reads another map (not ``k * C`` channels), so the norm's features may still be the first
    map's, flattened: only a convolution of exactly its features makes it a channel norm."""

    class TwoTowers(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.img_conv = nnx.Conv(3, C, (3, 3), padding="VALID", rngs=rngs)
            self.img_norm = nnx.BatchNorm(FLAT, rngs=rngs)
            self.aux_conv = nnx.Conv(2, 5, (3,), rngs=rngs)
            self.head = nnx.Linear(FLAT + 5, 2, rngs=rngs)

    assert {"img_norm.weight", "img_norm.bias", "img_norm.running_mean", "img_norm.running_var"} <= set(
        _doubts(TwoTowers(nnx.Rngs(0))))


def test_a_jitted_step_keeps_the_order_of_an_nnx_dicts_entries() -> None:
    """``nnx.Dict`` entries are attributes too: after ``nnx.jit`` sorted them, the paths and the doubt follow the
    order they were added in."""

    class Parts(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.parts = nnx.Dict({"features": nnx.Conv(3, C, (3, 3), padding="VALID", rngs=rngs),
                                   "classifier": nnx.Linear(FLAT, 2, rngs=rngs)})

        def __call__(self, x: Any) -> Any:
            x = nnx.relu(self.parts["features"](x))
            return self.parts["classifier"](x.reshape(x.shape[0], -1))

    model = Parts(nnx.Rngs(0))
    fresh_paths, fresh_doubts = pp.tree(model).paths(), _doubts(model)
    nnx.jit(lambda m, x: m(x))(model, jnp.ones((1, H, W, 3)))
    assert list(model.parts.keys()) == ["classifier", "features"]   # what NNX did
    assert pp.tree(model).paths() == fresh_paths and fresh_paths[0] == "parts.features.weight"
    assert _doubts(model) == fresh_doubts and list(fresh_doubts) == ["parts.classifier.weight"]
