"""Every code cell of the chapter "Parameter Management" in its PyTorch version, through polyparam.

Each test is one cell (or two that belong together): it does through polyparam what the
cell does with torch, and checks the facts the cell shows against torch itself.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import polyparam as pp  # noqa: E402


@pytest.fixture
def X() -> torch.Tensor:  # noqa: N802 - the chapter's name for the input batch
    torch.manual_seed(0)
    return torch.rand(size=(2, 4))


@pytest.fixture
def net(X: torch.Tensor) -> nn.Sequential:  # noqa: N803
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    net(X)
    return net


def block1() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())


def block2() -> nn.Sequential:
    net = nn.Sequential()
    for i in range(4):
        net.add_module(f"block {i}", block1())
    return net


def test_cell_mlp(net: nn.Sequential) -> None:
    """net = nn.Sequential(Linear(4, 8), ReLU(), Linear(8, 1)); net(X)."""
    tree = pp.tree(net)
    assert tree.backend == "torch"
    assert len(tree) == len(net) == 3


def test_cell_state_dict_of_a_layer(net: nn.Sequential) -> None:
    """print(net[2].state_dict()): weight (1, 8) and bias (1,), float32."""
    native = net[2].state_dict()
    state = pp.tree(net)[2].state()
    assert [path.split(".")[-1] for path in state] == list(native) == ["weight", "bias"]
    for value, tensor in zip(state.values(), native.values()):
        assert value.shape == tuple(tensor.shape) and value.dtype == np.float32
        np.testing.assert_array_equal(value, tensor.numpy())


def test_cell_targeted_parameter(net: nn.Sequential) -> None:
    """type(net[2].bias), net[2].bias, net[2].bias.data."""
    bias = pp.tree(net)[2]["bias"]
    assert isinstance(bias, pp.Parameter)
    assert type(bias.native) is nn.Parameter and bias.native is net[2].bias
    assert bias.shape == (1,) and bias.dtype == np.float32 and bias.device == "cpu"
    np.testing.assert_array_equal(bias.numpy(), net[2].bias.data.numpy())


def test_cell_grad_is_none(net: nn.Sequential) -> None:
    """net[2].weight.grad == None."""
    assert net[2].weight.grad is None
    assert pp.tree(net)["2.weight"].grad() is None


def test_cell_all_parameters_at_once(net: nn.Sequential) -> None:
    """named_parameters() of net[0] and of net: names and shapes."""
    tree = pp.tree(net)
    assert [(p.native_name.split(".")[-1], p.shape) for _, p in tree[0].items()] == \
        [(name, tuple(p.shape)) for name, p in net[0].named_parameters()]
    assert [(path, p.shape) for path, p in tree.items()] == \
        [(name, tuple(p.shape)) for name, p in net.named_parameters()]


def test_cell_state_dict_key(net: nn.Sequential) -> None:
    """net.state_dict()['2.bias'].data."""
    tree = pp.tree(net)
    np.testing.assert_array_equal(tree.state()["2.bias"], net.state_dict()["2.bias"].numpy())
    np.testing.assert_array_equal(tree.get("2.bias").numpy(), net.state_dict()["2.bias"].numpy())


def test_cells_nested_blocks(X: torch.Tensor) -> None:  # noqa: N803
    """rgnet = Sequential(block2(), Linear(4, 1)); print(rgnet); rgnet[0][1][0].bias.data."""
    rgnet = nn.Sequential(block2(), nn.Linear(4, 1))
    rgnet(X)
    tree = pp.tree(rgnet)
    text = str(tree)
    for path, _ in tree.items():
        assert path in text
    assert len(tree.items()) == len(list(rgnet.parameters())) == 18
    bias = tree[0][1][0]["bias"]
    np.testing.assert_array_equal(bias.numpy(), rgnet[0][1][0].bias.data.numpy())
    assert bias.path == "0.1.0.bias" and bias.native_name == "0.block 1.0.bias"
    assert tree["0.1.0.bias"].is_tied_to(bias)


def test_cell_init_normal(net: nn.Sequential) -> None:
    """net.apply(init_normal): weights N(0, 0.01), biases zero."""
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
    assert np.abs(net[0].weight.data[0].numpy()).max() < 0.05
    assert float(net[0].bias.data[0]) == 0
    for layer in (net[0], net[2]):
        assert torch.count_nonzero(layer.bias).item() == 0
        assert torch.count_nonzero(layer.weight).item() == layer.weight.numel()


def test_cell_init_constant(net: nn.Sequential) -> None:
    """net.apply(init_constant): weights 1, biases 0."""
    pp.tree(net).initialize(pp.init.Constant(1), force_reinit=True)
    assert net[0].weight.data[0].tolist() == [1, 1, 1, 1] and float(net[0].bias.data[0]) == 0
    assert torch.all(net[2].weight == 1) and torch.all(net[2].bias == 0)


def test_cell_xavier_and_42(net: nn.Sequential) -> None:
    """net[0].apply(xavier); net[2].apply(init_42)."""
    tree = pp.tree(net)
    tree.initialize(pp.init.Constant(1), force_reinit=True)
    tree["0.weight"].initialize(pp.init.Xavier(), force_reinit=True)
    tree[2].initialize(pp.init.Constant(42), force_reinit=True)
    bound = np.sqrt(6 / (4 + 8))
    w0 = net[0].weight.data
    assert torch.all(w0.abs() <= bound) and not torch.all(w0 == 1)
    assert net[2].weight.data.tolist() == [[42.0] * 8]


def test_cell_custom_init(net: nn.Sequential) -> None:
    """net.apply(my_init): prints Init with each weight's name and shape; values 0 or 5 <= |w| <= 10."""
    printed = []

    class MyInit(pp.init.Initializer):
        def init_weight(self, name: str, arr: np.ndarray) -> None:
            printed.append(("Init", name, arr.shape))
            arr[:] = self.rng.uniform(-10, 10, arr.shape)
            arr *= np.abs(arr) >= 5

    pp.tree(net).initialize(MyInit(), force_reinit=True)
    assert printed == [("Init", "0.weight", (8, 4)), ("Init", "2.weight", (1, 8))]
    w = net[0].weight[:2].detach()
    assert torch.all((w == 0) | ((w.abs() >= 5) & (w.abs() <= 10)))


def test_cell_set_directly(net: nn.Sequential) -> None:
    """net[0].weight.data[:] += 1; net[0].weight.data[0, 0] = 42."""
    tree = pp.tree(net)
    before = net[0].weight.detach().clone()
    p = tree["0.weight"]
    p.set(p.numpy() + 1)
    p[0, 0] = 42
    expected = before + 1
    expected[0, 0] = 42
    torch.testing.assert_close(net[0].weight.data, expected)
    assert net[0].weight.data[0, 0].item() == 42


def test_cell_tied_parameters(X: torch.Tensor) -> None:  # noqa: N803
    """shared used at net[2] and net[4]: equal, write-through of 100, gradients added."""
    shared = nn.Linear(8, 8)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(8, 1))
    net(X)
    tree = pp.tree(net)
    assert [g.paths for g in tree.ties()] == [["2.weight", "4.weight"], ["2.bias", "4.bias"]]
    assert (tree["2.weight"].numpy()[0] == tree["4.weight"].numpy()[0]).all()
    tree["2.weight"][0, 0] = 100
    assert tree["4.weight"].numpy()[0, 0] == 100
    assert net[4].weight.data[0, 0].item() == 100
    assert bool(torch.all(net[2].weight.data[0] == net[4].weight.data[0]))
    # "the gradients of the second and third hidden layer are added together"
    net(X).sum().backward()
    tied = tree["2.weight"].grad()
    for group in tree.ties():
        group.untie()
    net.zero_grad()
    net(X).sum().backward()
    np.testing.assert_allclose(tied, tree["2.weight"].grad() + tree["4.weight"].grad(), rtol=1e-5, atol=1e-6)


def test_the_chapter_example_runs() -> None:
    """examples/torch_chapter.py runs to the end and shows the chapter's facts."""
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).parents[2] / "examples" / "torch_chapter.py"
    out = subprocess.run([sys.executable, str(script)], check=True, capture_output=True, text=True).stdout
    assert "0.1.0.bias (torch: 0.block 1.0.bias)" in out
    assert "meta model materialized with the same values: True" in out
    assert "tied gradient == sum of the two uses: True" in out
    assert out.count("Init 2.weight") == 2  # once eagerly, once at the lazy model's first forward
