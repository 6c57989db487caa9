"""PyTorch's own initializer tests, done through polyparam.

A port of PyTorch 2.13's ``test/nn/test_init.py`` (``TestNNInit``, 29 tests, and
``TestNNInitDeviceType``, 5 tests, on CPU): each test's operation fills a torch tensor
held as a module parameter through ``p.initialize(...)``, with the upstream sizes,
random arguments (``random.seed(123)``), thresholds and expected values, on two routes:

* ``builtin``: polyparam's built-in with the same arguments (``pp.init.Uniform(low=, high=)``, ...);
* ``torch``: the ``torch.nn.init`` function itself (a ``functools.partial`` with its arguments).

Then: torch seeds through polyparam, every ``nn.init`` function's arguments, what
``pp.init.Declared()`` draws for torch's layers, and the differences from torch on purpose.
"""

from __future__ import annotations

import math
import random
import string
import warnings
from functools import partial, reduce
from operator import mul
from typing import Any, Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
stats = pytest.importorskip("scipy.stats")
import torch.nn.functional as F  # noqa: E402, N812  torch's spelling
from torch import nn  # noqa: E402
from torch.nn import init  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402

ROUTES = ["builtin", "torch"]




class Holder(nn.Module):
    """One tensor as a module parameter ``w`` (a plain module: its role and axes come from the shape)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(tensor)


def through(tensor: torch.Tensor, initializer: Any, *, seed: int | None = None) -> torch.Tensor:
    """``tensor`` filled by ``initializer`` through polyparam (``p.initialize``: filled as is, whatever its role)."""
    holder = Holder(tensor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.AlreadyInitializedWarning)
        pp.tree(holder)["w"].initialize(initializer, force_reinit=True, seed=seed)
    return holder.w.detach()


def pick(route: str, builtin: Callable[[], Any], native: Any) -> Any:
    """The route's initializer: ``builtin()`` (built here, so a refused argument raises inside ``pytest.raises``),
    or the torch function ``native``."""
    return builtin() if route == "builtin" else native


def gain_of(route: str, nonlinearity: str, param: Any = None) -> float:
    """The gain polyparam uses: ``pp.init.calculate_gain``, or the one of ``kaiming_normal_(a=param)`` translated."""
    if route == "builtin":
        return pp.init.calculate_gain(nonlinearity, param)
    return pp.init.as_initializer(partial(init.kaiming_normal_, a=param, nonlinearity=nonlinearity)).gain


@pytest.fixture
def rnd() -> random.Random:
    return random.Random(123)   # upstream: random.seed(123) in setUp


@pytest.fixture(autouse=True)
def _torch_seed() -> None:
    torch.manual_seed(0)        # upstream's TestCase seeds torch before every test


# ---- upstream helpers -----------------------------------------------------------------------------


def _is_normal(tensor: torch.Tensor, mean: float, std: float) -> bool:
    samples = tensor.reshape(-1).double().numpy()
    return stats.kstest(samples, "norm", args=(mean, std))[1] > 0.0001


def _is_trunc_normal(tensor: torch.Tensor, mean: float, std: float, a: float, b: float) -> bool:
    z_samples = ((tensor.reshape(-1).double() - mean) / std).numpy()
    a0, b0 = (a - mean) / std, (b - mean) / std
    return stats.kstest(z_samples, "truncnorm", args=(a0, b0))[1] > 0.0001


def _is_uniform(tensor: torch.Tensor, a: float, b: float) -> bool:
    samples = tensor.reshape(-1).double().numpy()
    return stats.kstest(samples, "uniform", args=(a, (b - a)))[1] > 0.0001


def _random_nd(rnd: random.Random, dims: int, size_min: int, size_max: int, dtype: Any = None) -> torch.Tensor:
    size = [rnd.randint(size_min, size_max) for _ in range(dims)]
    return torch.zeros(size, dtype=dtype)


def _random_float(rnd: random.Random, a: float, b: float) -> float:
    return (b - a) * rnd.random() + a


def _fans(tensor: torch.Tensor) -> tuple[int, int]:
    fan_in, fan_out = tensor.size(1), tensor.size(0)
    if tensor.dim() > 2:
        fan_in *= tensor[0, 0].numel()
        fan_out *= tensor[0, 0].numel()
    return fan_in, fan_out


# ---- TestNNInit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_calculate_gain_linear(route: str) -> None:
    for fn in ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose2d", "conv_transpose2d", "conv_transpose3d"]:
        assert gain_of(route, fn) == 1


@pytest.mark.parametrize("route", ROUTES)
def test_calculate_gain_nonlinear(route: str) -> None:
    expected = {"sigmoid": 1, "tanh": 1.6666666666666667, "relu": 1.4142135623730951,
                "leaky_relu": 1.4141428569978354, "selu": 0.75}
    for fn in ["sigmoid", "tanh", "relu", "leaky_relu", "selu"]:
        assert gain_of(route, fn) == expected[fn]


@pytest.mark.parametrize("route", ROUTES)
def test_calculate_gain_leaky_relu(route: str) -> None:
    expected = {None: 1.4141428569978354, 0: 1.4142135623730951, 0.01: 1.4141428569978354, 10: 0.14071950894605836}
    for param in [None, 0, 0.01, 10]:
        assert gain_of(route, "leaky_relu", param) == expected[param]


@pytest.mark.parametrize("route", ROUTES)
def test_calculate_gain_leaky_relu_only_accepts_numbers(route: str) -> None:
    for param in [True, [1], {"a": "b"}]:
        with pytest.raises(ValueError):
            through(torch.zeros(3, 3), pick(route, partial(pp.init.He, a=param),
                                            partial(init.kaiming_uniform_, a=param)))
        with pytest.raises(ValueError):
            gain_of(route, "leaky_relu", param)


@pytest.mark.parametrize("route", ROUTES)
def test_calculate_gain_only_accepts_valid_nonlinearities(route: str, rnd: random.Random) -> None:
    for n in [2, 5, 25]:
        name = "".join(rnd.choice(string.ascii_lowercase) for _ in range(n))
        with pytest.raises(ValueError):
            through(torch.zeros(3, 3), pick(route, partial(pp.init.He, nonlinearity=name),
                                            partial(init.kaiming_uniform_, nonlinearity=name)))


@pytest.mark.parametrize("route", ROUTES)
def test_uniform(route: str, rnd: random.Random) -> None:
    for dims in [1, 2, 4]:
        tensor = _random_nd(rnd, dims, size_min=30, size_max=50)
        a = _random_float(rnd, -3, 3)
        b = a + _random_float(rnd, 1, 5)
        out = through(tensor, pick(route, partial(pp.init.Uniform, low=a, high=b), partial(init.uniform_, a=a, b=b)))
        assert _is_uniform(out, a, b), "Expected uniform distribution"


@pytest.mark.parametrize("route", ROUTES)
def test_normal(route: str, rnd: random.Random) -> None:
    for dims in [1, 2, 4]:
        tensor = _random_nd(rnd, dims, size_min=30, size_max=50)
        mean = _random_float(rnd, -3, 3)
        std = _random_float(rnd, 1, 5)
        out = through(tensor, pick(route, partial(pp.init.Normal, sigma=std, mean=mean),
                                   partial(init.normal_, mean=mean, std=std)))
        assert _is_normal(out, mean, std), "Expected normal distribution"


@pytest.mark.parametrize("route", ROUTES)
def test_trunc_normal_generator(route: str) -> None:
    """Upstream: a generator seeded 42 and ``torch.manual_seed(42)`` give the same values. Built-ins: ``seed=42``."""
    if route == "builtin":
        value = through(torch.empty(5), pp.init.TruncatedNormal(sigma=1.0), seed=42)
        ref = through(torch.empty(5), pp.init.TruncatedNormal(sigma=1.0), seed=42)
    else:
        gen = torch.Generator()
        gen.manual_seed(42)
        value = through(torch.empty(5), partial(init.trunc_normal_, generator=gen))
        torch.manual_seed(42)
        ref = through(torch.empty(5), init.trunc_normal_)
    torch.testing.assert_close(value, ref, rtol=0, atol=0)
    assert _is_trunc_normal(value, mean=0, std=1, a=0, b=1), "Expected truncated normal distribution"


@pytest.mark.parametrize("route", ROUTES)
def test_constant(route: str, rnd: random.Random) -> None:
    for dims in [1, 2, 4]:
        tensor = _random_nd(rnd, dims, size_min=1, size_max=5)
        val = _random_float(rnd, 1, 10)
        out = through(tensor, pick(route, partial(pp.init.Constant, val), partial(init.constant_, val=val)))
        torch.testing.assert_close(out, out.clone().fill_(val))


@pytest.mark.parametrize("route", ROUTES)
def test_ones_and_zeros(route: str, rnd: random.Random) -> None:
    for (builtin, native), val in zip([(pp.init.One, init.ones_), (pp.init.Zero, init.zeros_)], [1, 0]):
        for dims in [1, 2, 4]:
            tensor = _random_nd(rnd, dims, size_min=1, size_max=5)
            out = through(tensor, pick(route, builtin, native))
            torch.testing.assert_close(out, out.clone().fill_(val))


@pytest.mark.parametrize("route", ROUTES)
def test_eye(route: str, rnd: random.Random) -> None:
    out = through(_random_nd(rnd, 2, size_min=1, size_max=5), pick(route, pp.init.Identity, init.eye_))
    for i in range(out.size(0)):
        for j in range(out.size(1)):
            assert out[i][j] == (1 if i == j else 0), (i, j, out[i][j])


@pytest.mark.parametrize("route", ROUTES)
def test_eye_only_works_on_2d_inputs(route: str, rnd: random.Random) -> None:
    for dims in [1, 3]:
        with pytest.raises(ValueError):
            through(_random_nd(rnd, dims, size_min=1, size_max=3), pick(route, pp.init.Identity, init.eye_))


@pytest.mark.parametrize("route", ROUTES)
def test_dirac_properties(route: str, rnd: random.Random) -> None:
    for dims in [3, 4, 5]:
        for groups in [1, 2, 3]:
            a, c, d, e = (rnd.randint(1, 5) for _ in range(4))
            b = rnd.randint(1, 5 * groups)
            tensor = torch.randn((a * groups, b, c, d, e)[:dims])
            out = through(tensor, pick(route, partial(pp.init.Dirac, groups), partial(init.dirac_, groups=groups)))
            c_out, c_in = out.size(0) // groups, out.size(1)
            min_d = min(c_out, c_in)
            assert torch.nonzero(out).size(0) == min_d * groups
            torch.testing.assert_close(out.sum(), torch.tensor(float(min_d * groups)))


@pytest.mark.parametrize("route", ROUTES)
def test_dirac_identity(route: str) -> None:
    for groups in [1, 3]:
        batch, in_c, out_c, size, kernel_size = 8, 3, 9, 5, 3
        eff_out_c = out_c // groups
        for conv, k in ((F.conv1d, 1), (F.conv2d, 2), (F.conv3d, 3)):
            input_tensor = torch.randn(batch, in_c, *(size,) * k)
            filter_var = torch.cat([torch.zeros(eff_out_c, in_c, *(kernel_size,) * k)] * groups)
            filter_var = through(filter_var, pick(route, partial(pp.init.Dirac, groups),
                                                  partial(init.dirac_, groups=groups)))
            output_tensor = conv(input_tensor, filter_var)
            inner = (slice(None), slice(None)) + (slice(1, -1),) * k
            for g in range(groups):
                torch.testing.assert_close(input_tensor[inner],
                                           output_tensor[:, eff_out_c * g: eff_out_c * g + in_c])
                assert torch.nonzero(output_tensor[:, eff_out_c * g + in_c: eff_out_c * (g + 1)]).numel() == 0


@pytest.mark.parametrize("route", ROUTES)
def test_dirac_only_works_on_3_4_5d_inputs(route: str, rnd: random.Random) -> None:
    for dims in [1, 2, 6]:
        with pytest.raises(ValueError):
            through(_random_nd(rnd, dims, size_min=1, size_max=3), pick(route, pp.init.Dirac, init.dirac_))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_xavier_errors_on_inputs_smaller_than_2d(route: str, kind: str, rnd: random.Random) -> None:
    """Upstream's two tests ``test_xavier_{uniform,normal}_errors_on_inputs_smaller_than_2d``."""
    for dims in [0, 1]:
        tensor = _random_nd(rnd, dims, size_min=1, size_max=1)
        with pytest.raises(ValueError):
            builtin = partial(pp.init.Xavier, rnd_type="uniform" if kind == "uniform" else "gaussian")
            through(tensor, pick(route, builtin, getattr(init, f"xavier_{kind}_")))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("use_gain", [True, False])
def test_xavier_uniform(route: str, use_gain: bool, rnd: random.Random) -> None:
    for dims in [2, 4]:
        tensor = _random_nd(rnd, dims, size_min=20, size_max=25)
        gain = _random_float(rnd, 0.1, 2) if use_gain else 1
        native = partial(init.xavier_uniform_, gain=gain) if use_gain else init.xavier_uniform_
        out = through(tensor, pick(route, partial(pp.init.Xavier, magnitude=3 * gain**2), native))
        fan_in, fan_out = _fans(out)
        bounds = gain * math.sqrt(2.0 / (fan_in + fan_out)) * math.sqrt(3)
        assert _is_uniform(out, -bounds, bounds), "Expected uniform distribution"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("use_gain", [True, False])
def test_xavier_normal(route: str, use_gain: bool, rnd: random.Random) -> None:
    for dims in [2, 4]:
        tensor = _random_nd(rnd, dims, size_min=20, size_max=25)
        gain = _random_float(rnd, 0.1, 2) if use_gain else 1
        native = partial(init.xavier_normal_, gain=gain) if use_gain else init.xavier_normal_
        out = through(tensor, pick(route, partial(pp.init.Xavier, rnd_type="gaussian", magnitude=gain**2), native))
        fan_in, fan_out = _fans(out)
        assert _is_normal(out, 0, gain * math.sqrt(2.0 / (fan_in + fan_out))), "Expected normal distribution"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_kaiming_errors_on_inputs_smaller_than_2d(route: str, distribution: str, rnd: random.Random) -> None:
    """Upstream's two tests ``test_kaiming_{uniform,normal}_errors_on_inputs_smaller_than_2d``."""
    for dims in [0, 1]:
        with pytest.raises(ValueError):
            through(_random_nd(rnd, dims, size_min=1, size_max=1),
                    pick(route, partial(pp.init.He, distribution=distribution),
                         getattr(init, f"kaiming_{distribution}_")))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_kaiming_warning_on_0element_tensor(route: str, distribution: str) -> None:
    """Upstream's two tests ``test_kaiming_{uniform,normal}_warning_on_0element_tensor``: a UserWarning.

    The wording is polyparam's (it names the parameter): see "Differences from PyTorch".
    """
    with pytest.warns(UserWarning, match="has no elements .* initializing it changes nothing"):
        out = through(torch.empty(0, 1), pick(route, partial(pp.init.He, distribution=distribution),
                                              getattr(init, f"kaiming_{distribution}_")))
    assert out.shape == (0, 1)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_kaiming(route: str, distribution: str, rnd: random.Random) -> None:
    """Upstream's two tests ``test_kaiming_uniform`` and ``test_kaiming_normal``."""
    for use_a in [True, False]:
        for dims in [2, 4]:
            for mode in ["fan_in", "fan_out"]:
                tensor = _random_nd(rnd, dims, size_min=20, size_max=25)
                a = _random_float(rnd, 0.1, 2) if use_a else 0
                fn = getattr(init, f"kaiming_{distribution}_")
                native = partial(fn, a=a, mode=mode) if use_a else partial(fn, mode=mode)
                out = through(tensor, pick(route, partial(pp.init.He, a=a, mode=mode, distribution=distribution),
                                           native))
                fan_in, fan_out = _fans(out)
                n = fan_in if mode == "fan_in" else fan_out
                expected_std = math.sqrt(2.0 / ((1 + a**2) * n))
                if distribution == "uniform":
                    bounds = expected_std * math.sqrt(3.0)
                    assert _is_uniform(out, -bounds, bounds), "Expected uniform distribution"
                else:
                    assert _is_normal(out, 0, expected_std), "Expected normal distribution"


@pytest.mark.parametrize("route", ROUTES)
def test_sparse_only_works_on_2d_inputs(route: str, rnd: random.Random) -> None:
    for dims in [1, 3]:
        with pytest.raises(ValueError):
            sparsity = _random_float(rnd, 0.1, 0.9)
            tensor = _random_nd(rnd, dims, size_min=1, size_max=3)
            through(tensor, pick(route, partial(pp.init.Sparse, sparsity), partial(init.sparse_, sparsity=sparsity)))


@pytest.mark.parametrize("route", ROUTES)
def test_sparse_default_std(route: str, rnd: random.Random) -> None:
    for use_random_std in [True, False]:
        tensor = _random_nd(rnd, 2, size_min=30, size_max=35)
        rows = tensor.size(0)
        sparsity = _random_float(rnd, 0.1, 0.2)
        std = _random_float(rnd, 0.01, 0.2) if use_random_std else 0.01
        native = (partial(init.sparse_, sparsity=sparsity, std=std) if use_random_std
                  else partial(init.sparse_, sparsity=sparsity))
        builtin = partial(pp.init.Sparse, sparsity, std) if use_random_std else partial(pp.init.Sparse, sparsity)
        out = through(tensor, pick(route, builtin, native))
        for col_idx in range(out.size(1)):
            column = out[:, col_idx]
            assert column[column == 0].nelement() >= math.ceil(sparsity * rows), "Expected more zeros for sparsity"
        assert _is_normal(out[out != 0], 0, std), "Expected normal distribution for non-zero elements"


@pytest.mark.parametrize("route", ROUTES)
def test_orthogonal(route: str, rnd: random.Random) -> None:
    for use_gain in [True, False]:
        for tensor_size in [[3, 4], [4, 3], [20, 2, 3, 4], [2, 3, 4, 5]]:
            gain = _random_float(rnd, 0.1, 2) if use_gain else 1.0
            native = partial(init.orthogonal_, gain=gain) if use_gain else init.orthogonal_
            out = through(torch.zeros(tensor_size), pick(route, partial(pp.init.Orthogonal, gain), native))
            rows, cols = tensor_size[0], reduce(mul, tensor_size[1:])
            flat = out.view(rows, cols)
            if rows > cols:
                torch.testing.assert_close(torch.mm(flat.t(), flat), torch.eye(cols) * gain**2, atol=1e-6, rtol=0)
            else:
                torch.testing.assert_close(torch.mm(flat, flat.t()), torch.eye(rows) * gain**2, atol=1e-6, rtol=0)


def test_deprecation() -> None:
    """torch route only (polyparam has no deprecated initializer names): ``nn.init.normal`` warns as torch does."""
    x = torch.randn(3, 3)
    with pytest.warns(FutureWarning, match="deprecated"):
        through(x, init.normal)


# ---- TestNNInitDeviceType (CPU) ---------------------------------------------------------------------


def _trunc(route: str, mean: float, std: float, a: float, b: float) -> Any:
    return pick(route, partial(pp.init.TruncatedNormal, sigma=std, mean=mean, a=(a - mean) / std, b=(b - mean) / std),
                partial(init.trunc_normal_, mean=mean, std=std, a=a, b=b))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("dims", [1, 2, 4])
def test_trunc_normal_all_dtypes(route: str, dtype: torch.dtype, dims: int, rnd: random.Random) -> None:
    size = [rnd.randint(30, 50) for _ in range(dims)]
    mean = rnd.uniform(-3, 3)
    std = rnd.uniform(0.01, 1)
    a = rnd.uniform(mean - 2 * std, mean)
    b = rnd.uniform(mean, mean + 2 * std)
    out = through(torch.zeros(size, dtype=dtype), _trunc(route, mean, std, a, b))
    lo, hi = torch.tensor(a, dtype=dtype).item(), torch.tensor(b, dtype=dtype).item()
    assert out.min().item() >= lo, f"{dtype}: values below lower bound a={a}"
    assert out.max().item() <= hi, f"{dtype}: values above upper bound b={b}"
    assert _is_trunc_normal(out.float(), mean, std, a, b), f"{dtype}: failed KS test against truncated normal"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_trunc_normal_low_precision(route: str, dtype: torch.dtype) -> None:
    mean, std, a, b = 0.0, 1.0, -2.0, 2.0
    out = through(torch.empty(10000, dtype=dtype), _trunc(route, mean, std, a, b))
    assert out.min().item() >= a
    assert out.max().item() <= b
    assert _is_trunc_normal(out.float(), mean, std, a, b), f"{dtype}: failed KS test against truncated normal"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=["float32", "float64", "float16"])
def test_trunc_normal_narrow_interval(route: str, dtype: torch.dtype) -> None:
    mean, std, a, b = 0.0, 1.0, 2.0, 3.0
    out = through(torch.empty(10000, dtype=dtype), _trunc(route, mean, std, a, b))
    assert out.min().item() >= a
    assert out.max().item() <= b
    assert _is_trunc_normal(out.float(), mean, std, a, b), f"{dtype}: failed KS test against truncated normal"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("dtype", "min_unique"), [(torch.float32, 5000), (torch.float64, 5000),
                                                   (torch.float16, 3000), (torch.bfloat16, 1000)],
                         ids=["float32", "float64", "float16", "bfloat16"])
def test_trunc_normal_unique_values(route: str, dtype: torch.dtype, min_unique: int) -> None:
    out = through(torch.empty(10000, dtype=dtype), _trunc(route, 0.0, 1.0, -2.0, 2.0))
    assert out.min().item() >= -2.0
    assert out.max().item() <= 2.0
    assert out.unique().numel() > min_unique
    assert not out.isinf().any().item()
    assert not out.isnan().any().item()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["float32", "float64", "float16", "bfloat16"])
def test_trunc_normal_no_boundary_values_small_std(route: str, dtype: torch.dtype) -> None:
    out = through(torch.empty(10000, dtype=dtype), _trunc(route, 0.0, 0.1, -2.0, 2.0))
    assert (out == -2.0).sum().item() == 0
    assert (out == 2.0).sum().item() == 0


# ---- torch seeds through polyparam ------------------------------------------------------------------


RANDOM_FUNCTIONS = {
    "uniform_": init.uniform_, "normal_": init.normal_, "trunc_normal_": init.trunc_normal_,
    "xavier_uniform_": init.xavier_uniform_, "xavier_normal_": init.xavier_normal_,
    "kaiming_uniform_": init.kaiming_uniform_, "kaiming_normal_": init.kaiming_normal_,
    "orthogonal_": init.orthogonal_, "sparse_": partial(init.sparse_, sparsity=0.5),
}


def _linear_after_seed(fn: Any, seed: int | None = None) -> torch.Tensor:
    layer = nn.Linear(6, 5)                      # built first: its own draw does not move the seed below
    if seed is not None:
        torch.manual_seed(seed)
    pp.tree(layer).initialize(fn, force_reinit=True)
    return layer.weight.detach().clone()


@pytest.mark.parametrize("name", sorted(RANDOM_FUNCTIONS))
def test_torch_manual_seed_gives_the_same_values(name: str) -> None:
    fn = RANDOM_FUNCTIONS[name]
    first, second = _linear_after_seed(fn, 7), _linear_after_seed(fn, 7)
    assert torch.equal(first, second)
    assert not torch.equal(first, _linear_after_seed(fn, 8))


def test_a_generator_in_a_partial_seeds_polyparam() -> None:
    values = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(3)
        values.append(_linear_after_seed(partial(init.kaiming_normal_, generator=gen)))
    assert torch.equal(*values)
    # the default generator seeded alike draws the same polyparam seed
    assert torch.equal(values[0], _linear_after_seed(init.kaiming_normal_, 3))


def test_the_draw_advances_the_generator_as_torch_does() -> None:
    """Two calls in a row after one ``manual_seed`` differ (as two torch calls do), and repeat after reseeding."""
    torch.manual_seed(0)
    a, b = _linear_after_seed(init.xavier_uniform_), _linear_after_seed(init.xavier_uniform_)
    torch.manual_seed(0)
    c, d = _linear_after_seed(init.xavier_uniform_), _linear_after_seed(init.xavier_uniform_)
    assert not torch.equal(a, b)
    assert torch.equal(a, c) and torch.equal(b, d)


def test_the_report_names_the_seed_drawn_from_torch() -> None:
    layer = nn.Linear(6, 5)
    torch.manual_seed(11)
    report = pp.tree(layer).initialize(init.xavier_normal_, force_reinit=True)
    first = layer.weight.detach().clone()
    pp.tree(layer).initialize(pp.init.Xavier(rnd_type="gaussian", magnitude=1), seed=report.seed, force_reinit=True)
    assert torch.equal(first, layer.weight.detach())


def test_an_explicit_seed_wins_and_draws_nothing_from_torch() -> None:
    layer = nn.Linear(6, 5)
    state = torch.get_rng_state()
    pp.tree(layer).initialize(partial(init.normal_, std=0.5), seed=5, force_reinit=True)
    assert torch.equal(torch.get_rng_state(), state)
    ours = layer.weight.detach().clone()
    pp.tree(layer).initialize(pp.init.Normal(0.5), seed=5, force_reinit=True)
    assert torch.equal(ours, layer.weight.detach())


def test_deterministic_functions_draw_nothing_from_torch() -> None:
    layer = nn.Linear(4, 4)
    state = torch.get_rng_state()
    for fn in (init.eye_, init.zeros_, init.ones_, partial(init.constant_, val=2.0)):
        pp.tree(layer).initialize(fn, force_reinit=True)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_generator_that_is_not_a_torch_generator_is_refused() -> None:
    layer = nn.Linear(4, 4)
    before = layer.weight.detach().clone()
    with pytest.raises(errors.InitializerError, match="generator"):
        pp.tree(layer).initialize(partial(init.normal_, generator=np.random.default_rng(0)), force_reinit=True)
    assert torch.equal(layer.weight.detach(), before)


# ---- every nn.init function, with its arguments ---------------------------------------------------------


TRANSLATIONS = [
    (partial(init.uniform_, a=0.0, b=1.0), pp.init.Uniform(low=0.0, high=1.0)),
    (init.uniform_, pp.init.Uniform(low=0.0, high=1.0)),
    (partial(init.uniform_, a=-0.3, b=0.3), pp.init.Uniform(0.3)),
    (partial(init.uniform_, a=-1.0, b=3.0), pp.init.Uniform(low=-1.0, high=3.0)),
    (partial(init.normal_, mean=1.0, std=0.5), pp.init.Normal(sigma=0.5, mean=1.0)),
    (partial(init.trunc_normal_, mean=1.0, std=0.5, a=0.0, b=3.0),
     pp.init.TruncatedNormal(sigma=0.5, mean=1.0, a=-2.0, b=4.0)),
    (init.trunc_normal_, pp.init.TruncatedNormal(sigma=1.0, mean=0.0, a=-2.0, b=2.0)),
    (partial(init.constant_, val=0.25), pp.init.Constant(0.25)),
    (init.zeros_, pp.init.Zero()),
    (init.ones_, pp.init.One()),
    (init.eye_, pp.init.Identity()),
    (partial(init.dirac_, groups=3), pp.init.Dirac(3)),
    (partial(init.xavier_uniform_, gain=2.0), pp.init.Xavier(rnd_type="uniform", magnitude=12.0)),
    (partial(init.xavier_normal_, gain=0.5), pp.init.Xavier(rnd_type="gaussian", magnitude=0.25)),
    (partial(init.kaiming_uniform_, a=math.sqrt(5)), pp.init.He(a=math.sqrt(5), distribution="uniform")),
    (partial(init.kaiming_normal_, mode="fan_out", nonlinearity="relu"),
     pp.init.He(mode="fan_out", nonlinearity="relu", distribution="normal")),
    (partial(init.orthogonal_, gain=1.5), pp.init.Orthogonal(1.5)),
    (partial(init.sparse_, sparsity=0.3, std=0.02), pp.init.Sparse(0.3, 0.02)),
    (partial(init.sparse_, 0.1), pp.init.Sparse(0.1, 0.01)),
]


@pytest.mark.parametrize(("fn", "expected"), TRANSLATIONS, ids=[repr(e) for _, e in TRANSLATIONS])
def test_every_function_translates_with_its_arguments(fn: Any, expected: pp.init.Initializer) -> None:
    assert pp.init.as_initializer(fn) == expected


def test_an_asymmetric_uniform_fills_its_range() -> None:
    out = through(torch.zeros(200, 300), partial(init.uniform_, a=2.0, b=5.0), seed=0)
    assert 2.0 <= out.min().item() < 2.05 and 4.95 < out.max().item() < 5.0
    assert _is_uniform(out, 2.0, 5.0)


@pytest.mark.parametrize("fn", [partial(init.uniform_, a=1.0, b=0.0), partial(init.trunc_normal_, std=0.0),
                                partial(init.sparse_, sparsity=1.5), partial(init.dirac_, groups=0),
                                init.calculate_gain],
                         ids=["uniform a > b", "trunc_normal std 0", "sparsity > 1", "groups 0", "calculate_gain"])
def test_arguments_torch_refuses_are_refused(fn: Any) -> None:
    layer = nn.Linear(4, 4)
    before = layer.weight.detach().clone()
    with pytest.raises(errors.InitializerError):
        pp.tree(layer).initialize(fn, force_reinit=True)
    assert torch.equal(layer.weight.detach(), before)


# ---- pp.init.Declared(): torch's reset_parameters formulas ------------------------------------------------


def _reset(module: nn.Module) -> None:
    """What torch does: every submodule's ``reset_parameters`` (MultiheadAttention: ``_reset_parameters``),
    children first, as their constructors run them."""
    for m in reversed(list(module.modules())):
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        elif isinstance(m, nn.MultiheadAttention):
            m._reset_parameters()


LAYERS: dict[str, Callable[[], nn.Module]] = {
    "Linear": lambda: nn.Linear(300, 200),
    "Bilinear": lambda: nn.Bilinear(40, 30, 50),
    "Conv1d": lambda: nn.Conv1d(16, 64, 5),
    "Conv2d groups": lambda: nn.Conv2d(32, 64, 3, groups=4),
    "Conv3d": lambda: nn.Conv3d(8, 16, 3),
    "ConvTranspose2d": lambda: nn.ConvTranspose2d(64, 32, 3, groups=2),
    "ConvTranspose1d": lambda: nn.ConvTranspose1d(48, 96, 4),
    "Embedding": lambda: nn.Embedding(500, 64),
    "Embedding padding": lambda: nn.Embedding(500, 64, padding_idx=3),
    "EmbeddingBag": lambda: nn.EmbeddingBag(300, 32),
    "LayerNorm": lambda: nn.LayerNorm(64),
    "BatchNorm2d": lambda: nn.BatchNorm2d(32),
    "GroupNorm": lambda: nn.GroupNorm(4, 32),
    "MultiheadAttention": lambda: nn.MultiheadAttention(64, 4, add_bias_kv=True),
    "MultiheadAttention kdim": lambda: nn.MultiheadAttention(64, 4, kdim=32, vdim=48),
    "RNN": lambda: nn.RNN(40, 64, num_layers=2),
    "LSTM proj": lambda: nn.LSTM(40, 64, proj_size=16, bidirectional=True),
    "GRU": lambda: nn.GRU(40, 64),
    "GRUCell": lambda: nn.GRUCell(40, 64),
    "PReLU": lambda: nn.PReLU(8, init=0.1),
    "TransformerEncoderLayer": lambda: nn.TransformerEncoderLayer(64, 4, dim_feedforward=128),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_declared_draws_what_reset_parameters_draws(name: str) -> None:
    """Per tensor: torch's constants exactly; random tensors from the same distribution (two-sample KS)."""
    torch.manual_seed(0)
    ref, ours = LAYERS[name](), LAYERS[name]()
    with torch.no_grad():
        for t in list(ref.parameters()) + list(ours.parameters()):
            t.fill_(float("nan"))
    _reset(ref)
    pp.tree(ours).initialize(pp.init.Declared(), seed=0, force_reinit=True)
    theirs_by_name = dict(ref.named_parameters())
    for path, value in ours.named_parameters():
        mine, theirs = value.detach().double().numpy().ravel(), theirs_by_name[path].detach().double().numpy().ravel()
        assert not np.isnan(mine).any(), path
        if np.all(theirs == theirs[0]):
            np.testing.assert_array_equal(mine, theirs, err_msg=path)
            continue
        if name == "Embedding padding":
            np.testing.assert_array_equal(mine == 0, theirs == 0, err_msg=path)
        assert stats.ks_2samp(mine, theirs).pvalue > 1e-4, path


BOUNDS = [   # (layer, tensor, torch's bound): U(+-bound) in reset_parameters
    (lambda: nn.Linear(300, 200), "weight", 1 / math.sqrt(300)),
    (lambda: nn.Linear(300, 200), "bias", 1 / math.sqrt(300)),
    (lambda: nn.Conv1d(16, 64, 5), "bias", 1 / math.sqrt(16 * 5)),
    (lambda: nn.ConvTranspose2d(64, 32, 3, groups=2), "weight", 1 / math.sqrt(16 * 9)),   # torch's fan: size(1)
    (lambda: nn.ConvTranspose2d(64, 32, 3, groups=2), "bias", 1 / math.sqrt(16 * 9)),
    (lambda: nn.Bilinear(40, 30, 50), "weight", 1 / math.sqrt(40)),
    (lambda: nn.RNN(40, 64), "weight_hh_l0", 1 / 8),
    (lambda: nn.MultiheadAttention(64, 4), "in_proj_weight", math.sqrt(6 / (64 + 192))),
]


@pytest.mark.parametrize(("layer", "name", "bound"), BOUNDS, ids=[f"{i}-{n}" for i, (_, n, _) in enumerate(BOUNDS)])
def test_declared_uniform_bounds(layer: Callable[[], nn.Module], name: str, bound: float) -> None:
    module = layer()
    pp.tree(module).initialize(pp.init.Declared(), seed=1, force_reinit=True)
    value = dict(module.named_parameters())[name].detach().abs()
    assert 0.9 * bound < value.max().item() <= bound


def test_declared_is_seeded_and_repeats() -> None:
    a, b = nn.Conv2d(8, 16, 3), nn.Conv2d(8, 16, 3)
    for m in (a, b):
        pp.tree(m).initialize(pp.init.Declared(), seed=4, force_reinit=True)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_declared_running_statistics_and_counter() -> None:
    bn = nn.BatchNorm1d(6)
    with torch.no_grad():
        bn.running_mean.fill_(3)
        bn.running_var.fill_(3)
        bn.num_batches_tracked.fill_(9)
    pp.tree(bn).select("*").initialize(pp.init.Declared(), seed=0, force_reinit=True)
    assert torch.equal(bn.running_mean, torch.zeros(6)) and torch.equal(bn.running_var, torch.ones(6))
    assert bn.num_batches_tracked.item() == 0


def test_declared_on_a_lazy_module_waits_for_the_shape() -> None:
    lazy = nn.LazyLinear(10)
    report = pp.tree(lazy).initialize(pp.init.Declared(), seed=0)
    assert sorted(report.deferred) == ["bias", "weight"]
    lazy(torch.zeros(2, 400))
    bound = 1 / math.sqrt(400)
    assert lazy.weight.abs().max().item() <= bound and lazy.bias.abs().max().item() <= bound
    assert lazy.weight.abs().max().item() > 0.9 * bound


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.zeros(3, 4))


def test_unknown_modules_declare_nothing() -> None:
    model = nn.Sequential(Custom(), nn.Linear(4, 2))
    with pytest.raises(errors.InitializerError, match="declare an initializer"):
        pp.tree(model).initialize(pp.init.Declared(), seed=0, force_reinit=True)
    pp.tree(model).initialize(pp.init.Declared(default=pp.init.Constant(0.5)), seed=0, force_reinit=True)
    assert torch.equal(model[0].kernel, torch.full((3, 4), 0.5))
    assert model[1].weight.abs().max().item() <= 0.5


# ---- differences from PyTorch, on purpose -----------------------------------------------------------------


def test_difference_values_are_polyparams_streams_not_torchs_kernel() -> None:
    """The same torch seed gives the same values through polyparam, not the numbers torch's own call draws."""
    torch.manual_seed(0)
    native = init.normal_(torch.empty(50, 40))
    torch.manual_seed(0)
    ours = through(torch.empty(50, 40), init.normal_)
    assert not torch.equal(native, ours)
    assert stats.ks_2samp(native.numpy().ravel(), ours.numpy().ravel()).pvalue > 1e-4


def test_difference_fans_come_from_axis_roles() -> None:
    """A ConvTranspose weight is (in, out/g, *k): polyparam's kaiming takes fan_in from the ``in`` axis (16 * 9);
    torch's own kaiming_uniform_ takes it from size(1) (4 * 9). Declared() keeps torch's reset_parameters fan."""
    conv = nn.ConvTranspose2d(16, 4, 3)
    pp.tree(conv).initialize(init.kaiming_uniform_, seed=0, force_reinit=True)
    ours = conv.weight.abs().max().item()
    assert ours <= math.sqrt(6 / (16 * 9)) < 0.9 * math.sqrt(6 / (4 * 9))
    pp.tree(conv).initialize(pp.init.Declared(), seed=0, force_reinit=True)
    assert conv.weight.abs().max().item() > 0.9 / math.sqrt(4 * 9)
    embedding = nn.Embedding(1000, 10)   # (num_embeddings, dim): axes (in, out), so fan_in is 1000, not 10
    pp.tree(embedding).initialize(init.kaiming_uniform_, seed=0, force_reinit=True)
    assert embedding.weight.abs().max().item() <= math.sqrt(6 / 1000)


def test_difference_the_default_generator_is_the_cpu_one() -> None:
    """Without generator=, the seed is drawn from torch's default CPU generator (advanced by one draw)."""
    layer = nn.Linear(3, 3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    pp.tree(layer).initialize(init.normal_, force_reinit=True)
    after = torch.get_rng_state()
    assert not torch.equal(before, after)
    torch.set_rng_state(before)
    torch.randint(0, 2**63 - 1, (1,))
    assert torch.equal(torch.get_rng_state(), after)


def test_difference_a_tree_wide_function_fills_weights_only() -> None:
    """Given to a whole tree, a torch function fills the weights; biases and norms get 0 and 1 (Gluon's rule)."""
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    pp.tree(model).initialize(partial(init.constant_, val=0.5), force_reinit=True)
    assert torch.equal(model[0].weight, torch.full((4, 4), 0.5))
    assert torch.equal(model[0].bias, torch.zeros(4))
    assert torch.equal(model[1].weight, torch.ones(4)) and torch.equal(model[1].bias, torch.zeros(4))
    pp.tree(model)["0.bias"].initialize(partial(init.constant_, val=0.5), force_reinit=True)   # one tensor: as is
    assert torch.equal(model[0].bias, torch.full((4,), 0.5))


def test_difference_errors_and_warnings_are_polyparams() -> None:
    """Refusals are InitializerError (a ValueError, as torch raises) naming the parameter; the zero-element
    warning is a PolyparamWarning (a UserWarning) naming it."""
    with pytest.raises(errors.InitializerError, match="'w'") as caught:
        through(torch.zeros(3), init.xavier_uniform_)
    assert isinstance(caught.value, ValueError)
    with pytest.warns(errors.PolyparamWarning, match="Parameter 'w' has no elements"):
        through(torch.empty(0, 3), init.xavier_uniform_)
