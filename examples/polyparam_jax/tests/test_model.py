"""The plugin's own behaviour beyond the kit: registration without importing jax, layers that run."""

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import polyparam as pp  # noqa: E402
from polyparam_jax import model as jm  # noqa: E402


def test_found_through_the_entry_point_without_importing_jax() -> None:
    """polyparam lists the backend from the entry point; neither that nor backend_for imports jax."""
    code = ("import sys, numpy as np, polyparam as pp; assert 'jax' in pp.list_backends(); "
            "pp.backend_for({'w': np.zeros(2)}); assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dense_layout_is_converted() -> None:
    """stax keeps kernels (in, out); polyparam shows (out, in), and writes land transposed."""
    net = jm.Model(jm.Sequential(jm.Dense(3), jm.Relu, jm.Dense(1)), (-1, 5))
    tree = pp.tree(net)
    assert tree["0.weight"].shape == (3, 5)
    assert net.params[0][0].shape == (5, 3)
    value = np.arange(15, dtype=np.float32).reshape(3, 5)
    tree["0.weight"].set(value)
    np.testing.assert_array_equal(np.asarray(net.params[0][0]), value.T)


@pytest.mark.parametrize("kind", ["conv1d", "conv2d", "conv3d", "conv_transpose2d", "grouped_conv2d",
                                  "depthwise_conv2d", "batchnorm"])
def test_zoo_layers_run(kind: str) -> None:
    """Every layer of the kit's zoo is a working layer, not only a parameter holder."""
    model = pp.get_backend("jax").models().layer(kind)
    shape = {"conv1d": (2, 4, 10), "conv2d": (2, 3, 8, 8), "conv3d": (2, 2, 5, 5, 5), "conv_transpose2d": (2, 6, 5, 5),
             "grouped_conv2d": (2, 8, 6, 6), "depthwise_conv2d": (2, 8, 6, 6), "batchnorm": (2, 8)}[kind]
    out = np.asarray(model(np.ones(shape, np.float32)))
    assert np.isfinite(out).all() and out.shape[0] == 2


def test_transposed_conv_is_the_adjoint_of_conv() -> None:
    """<conv_transpose(y), x> == <y, conv(x)> with the same kernel: the layout is PyTorch's (in, out, k, k)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 4, 3, 3)).astype(np.float32)        # conv_transpose: 6 -> 4 channels
    up = jm.Model(jm.ConvTranspose(4, (3, 3)), (-1, 6, 5, 5))
    down = jm.Model(jm.Conv(6, (3, 3)), (-1, 4, 7, 7))            # conv: 4 -> 6 channels, weight (6, 4, 3, 3)
    pp.tree(up)["weight"].set(w)
    pp.tree(down)["weight"].set(w)
    for model in (up, down):
        pp.tree(model)["bias"].set(np.zeros(pp.tree(model)["bias"].shape, np.float32))
    y = rng.normal(size=(1, 6, 5, 5)).astype(np.float32)
    x = rng.normal(size=(1, 4, 7, 7)).astype(np.float32)
    lhs = float(np.sum(np.asarray(up(y)) * x))
    rhs = float(np.sum(y * np.asarray(down(x))))
    assert lhs == pytest.approx(rhs, rel=1e-4)


@pytest.mark.parametrize(("kernel", "groups"), [((3,), 2), ((3, 2), 3), ((2, 3, 2), 2)])
def test_grouped_transposed_conv_matches_the_reference(kernel: tuple[int, ...], groups: int) -> None:
    """A grouped 1-, 2- or 3-d ConvTranspose computes PyTorch's conv_transpose from its canonical (in, out/g, *k)."""
    from polyparam.testing.reference import conv_transpose

    rng = np.random.default_rng(1)
    in_channels, out_channels = 6, 3 * groups
    spatial = (5, 4, 3)[:len(kernel)]
    model = jm.Model(jm.ConvTranspose(out_channels, kernel, groups=groups), (-1, in_channels, *spatial))
    tree = pp.tree(model)
    assert tree["weight"].shape == (in_channels, out_channels // groups, *kernel)
    w = rng.normal(size=tree["weight"].shape).astype(np.float32)
    b = rng.normal(size=(out_channels,)).astype(np.float32)
    tree["weight"].set(w)
    tree["bias"].set(b)
    x = rng.normal(size=(2, in_channels, *spatial)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), conv_transpose(x, w, b, groups=groups), rtol=1e-4, atol=1e-4)
