"""All or nothing without an undo copy: a whole write of a large tensor moves its storage aside (``p.data = new``).

The old storage is the undo record, so it must only be moved where nothing else can see
the difference: the ``nn.Parameter`` object stays (optimizers, hooks, ties hold it), and
a tensor whose storage someone else holds (a view, a NumPy array, shared memory) is
written in place as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

import polyparam as pp
from polyparam import errors
from polyparam_torch._parameter import owns_storage

WIDTH = 1024   # a (1024, 1024) float32 weight is 4 MiB: past the size from which storage is moved


def _net(seed: int, activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(WIDTH, WIDTH), activation(), nn.Linear(WIDTH, 8))


def _pointers(model: nn.Module) -> dict[str, int]:
    return {k: v.data_ptr() for k, v in model.state_dict().items()}


def test_a_load_moves_large_storage_and_keeps_the_parameter_objects_an_optimizer_holds(tmp_path: object) -> None:
    model, source = _net(0), _net(1)
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pp.tree(model).state()                 # polyparam's own views, gone once dropped, do not pin the storage
    pp.save(model, Path(str(tmp_path)) / "m.safetensors")
    before = _pointers(model)
    pp.tree(model).load_state(pp.tree(source).state(copy=True))
    for name, p in model.named_parameters():
        assert p is params[name]
        torch.testing.assert_close(p, dict(source.named_parameters())[name], rtol=0, atol=0)
    assert _pointers(model)["0.weight"] != before["0.weight"]      # moved: no undo copy was made
    assert _pointers(model)["0.bias"] == before["0.bias"]          # small: copied into place
    model(torch.ones(2, WIDTH)).sum().backward()
    old = model[0].weight.detach().clone()
    optimizer.step()                                                # the optimizer updates what the model uses
    assert not torch.equal(model[0].weight, old)


def test_a_failed_transfer_puts_the_moved_storage_back() -> None:
    source, target = _net(0), _net(1, nn.ReLU)    # another activation: the check's outputs differ
    before = {k: v.clone() for k, v in target.state_dict().items()}
    pointers = _pointers(target)
    with pytest.raises(errors.TransferError):
        pp.transfer(source, target, check=np.ones((2, WIDTH), np.float32))
    assert _pointers(target) == pointers                            # the very storage it had
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


HOLDERS = {
    "a .data tensor": lambda w: w.data,
    "a NumPy view": lambda w: w.detach().numpy(),
    "a DLPack export": lambda w: np.from_dlpack(w),   # holds the parameter object itself, not its storage
    "the parameter's own .numpy()": lambda w: w.numpy(),   # the same: only the storage's flag shows it
}


@pytest.mark.parametrize("holder", list(HOLDERS))
def test_storage_someone_else_holds_is_written_in_place(holder: str) -> None:
    model, source = _net(0), _net(1)
    model[0].weight.requires_grad_(False)          # DLPack exports only tensors without grad
    held = HOLDERS[holder](model[0].weight)
    assert not owns_storage(model[0].weight)
    pp.tree(model).load_state(pp.tree(source).state(copy=True))
    np.testing.assert_array_equal(np.asarray(held), source[0].weight.detach().numpy())   # it sees the load


def test_memory_torch_did_not_allocate_is_written_in_place() -> None:
    array = np.zeros((WIDTH, WIDTH), np.float32)
    model = nn.Linear(WIDTH, WIDTH)
    model.weight = nn.Parameter(torch.from_numpy(array))     # the array owns the memory, not torch
    shared = nn.Linear(WIDTH, WIDTH).share_memory()
    assert not owns_storage(model.weight) and not owns_storage(shared.weight)
    source = nn.Linear(WIDTH, WIDTH)
    pp.tree(model).load_state(pp.tree(source).state(copy=True))
    np.testing.assert_array_equal(array, source.weight.detach().numpy())
    pointer = shared.weight.data_ptr()
    pp.tree(shared).load_state(pp.tree(source).state(copy=True))
    assert shared.weight.is_shared() and shared.weight.data_ptr() == pointer


@pytest.mark.parametrize("operation", ["load_state", "load", "transfer"])
def test_a_load_under_inference_mode_leaves_trainable_weights(operation: str, tmp_path: object) -> None:
    model, source = _net(0), _net(1)
    file = f"{tmp_path}/s.safetensors"
    pp.save(source, file)
    with torch.inference_mode():
        if operation == "load_state":
            pp.tree(model).load_state(pp.tree(source).state(copy=True))
        elif operation == "load":
            pp.load(model, file)
        else:
            pp.transfer(source, model)
    assert not model[0].weight.is_inference()
    model(torch.ones(2, WIDTH)).sum().backward()
    assert model[0].weight.grad is not None


def test_an_interrupt_before_the_undo_is_recorded_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal that lands just as the fresh storage is made: nothing was moved yet, so nothing is lost."""
    from polyparam_torch._parameter import TorchParameter

    model, source = _net(0), _net(1)
    before, pointers = {k: v.clone() for k, v in model.state_dict().items()}, _pointers(model)
    keep = TorchParameter._keep_storage

    def interrupted(self: TorchParameter) -> object:
        keep(self)                 # the fresh storage is made ...
        raise KeyboardInterrupt    # ... and the signal lands before the journal records the undo

    monkeypatch.setattr(TorchParameter, "_keep_storage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pp.tree(model).load_state(pp.tree(source).state(copy=True))
    assert _pointers(model) == pointers
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_a_tied_weight_stays_one_parameter_when_its_storage_moves() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(WIDTH, 512), nn.Linear(512, WIDTH, bias=False))
    model[1].weight = model[0].weight
    other = nn.Sequential(nn.Embedding(WIDTH, 512), nn.Linear(512, WIDTH, bias=False))
    other[1].weight = other[0].weight
    pp.tree(model).load_state(pp.tree(other).state(copy=True))
    assert model[1].weight is model[0].weight
    torch.testing.assert_close(model[0].weight, other[0].weight, rtol=0, atol=0)


def test_a_file_load_moves_storage_and_a_corrupt_one_changes_nothing(tmp_path: object) -> None:
    folder = Path(str(tmp_path))
    model, source = _net(0), _net(1)
    pp.save(source, folder / "m.safetensors")
    pp.load(model, folder / "m.safetensors")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)
    data = bytearray((folder / "m.safetensors").read_bytes())
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    start = 8 + int.from_bytes(data[:8], "little") + header["2.bias"]["data_offsets"][0]
    data[start + 1] ^= 0xFF     # the tensor written last: the checksum refuses it after the others are written
    (folder / "bad.safetensors").write_bytes(bytes(data))
    fresh = _net(2)
    before, pointers = {k: v.clone() for k, v in fresh.state_dict().items()}, _pointers(fresh)
    with pytest.raises(errors.PolyparamError):
        pp.load(fresh, folder / "bad.safetensors")
    assert _pointers(fresh) == pointers
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize("width", [4, WIDTH])   # written in place, and moved to fresh storage
def test_a_transfer_between_models_sharing_modules_swaps_them(width: int) -> None:
    torch.manual_seed(0)
    first, second = nn.Linear(width, width), nn.Linear(width, width)
    a, b = first.weight.detach().clone(), second.weight.detach().clone()
    pp.transfer(nn.Sequential(first, second), nn.Sequential(second, first))
    assert torch.equal(second.weight, a) and torch.equal(first.weight, b)


@pytest.mark.parametrize("width", [4, WIDTH])
def test_load_state_of_views_from_a_model_sharing_modules_swaps_them(width: int) -> None:
    """``state()`` returns views: loading one model's state into another that holds the same
    modules in another order must read every value before the first write changes it."""
    torch.manual_seed(0)
    first, second = nn.Linear(width, width), nn.Linear(width, width)
    a, b = first.weight.detach().clone(), second.weight.detach().clone()
    pp.tree(nn.Sequential(second, first)).load_state(pp.tree(nn.Sequential(first, second)).state())
    assert torch.equal(second.weight, a) and torch.equal(first.weight, b)


@pytest.mark.parametrize("width", [4, WIDTH])
def test_load_state_of_a_parameter_s_own_transposed_view(width: int) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(width, width, bias=False)
    tree = pp.tree(layer)
    expected = layer.weight.detach().clone().T
    tree.load_state({"weight": tree["weight"].numpy().T})
    assert torch.equal(layer.weight, expected)


@pytest.mark.parametrize("width", [4, WIDTH])
def test_load_state_into_a_transposed_parameter_of_a_contiguous_value_over_its_bytes(width: int) -> None:
    """The value covers the parameter's bytes exactly but in another order (the parameter is a
    transposed view): it is not the parameter's own value, so it is copied before the write."""
    torch.manual_seed(0)
    base = torch.randn(width, width)
    layer = nn.Linear(width, width, bias=False)
    layer.weight = nn.Parameter(base.T)
    value = base.numpy()
    expected = torch.from_numpy(value.copy())
    pp.tree(layer).load_state({"weight": value})
    assert torch.equal(layer.weight, expected)


@pytest.mark.parametrize("width", [4, WIDTH])
def test_a_transfer_whose_destination_shares_memory_with_a_later_source(width: int) -> None:
    """``c.weight`` is another Parameter over ``b.weight``'s memory: writing ``c`` changes the source of
    ``d``, so that source is read before the first write."""
    torch.manual_seed(0)
    a, b, c, d = (nn.Linear(width, width, bias=False) for _ in range(4))
    c.weight = nn.Parameter(b.weight.detach())
    old_a, old_b = a.weight.detach().clone(), b.weight.detach().clone()
    pp.transfer(nn.Sequential(a, b), nn.Sequential(c, d))
    assert torch.equal(c.weight, old_a) and torch.equal(d.weight, old_b)


class _FailsOnThirdWeight(pp.init.Constant):
    """A built-in's subclass: filled in place, through the view the undo copy is taken from."""

    def __init__(self) -> None:
        super().__init__(7.0)
        self.weights = 0

    def init_weight(self, name: str, arr: np.ndarray) -> None:
        self.weights += 1
        if self.weights == 3:
            raise RuntimeError("the third weight fails")
        super().init_weight(name, arr)


@pytest.mark.parametrize("budget", ["0", "10GB"])
def test_a_failed_in_place_initialize_restores_every_value(budget: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """initialize fills through a writable view and keeps its undo copy from that same view: a fill that
    fails restores what the earlier ones wrote, from memory or from the spilled file."""
    monkeypatch.setenv("POLYPARAM_UNDO_MEMORY", budget)
    monkeypatch.setenv("POLYPARAM_UNDO_DIR", str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(16, 16) for _ in range(4)])
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    with pytest.raises(errors.WriteFailedError, match="the third weight fails"):
        pp.tree(net).initialize(_FailsOnThirdWeight(), force_reinit=True)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    assert list(tmp_path.iterdir()) == []


def _initialized(model: nn.Module, init: pp.init.Initializer) -> dict[str, torch.Tensor]:
    pp.tree(model).initialize(init, seed=3, force_reinit=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("init", [pp.init.Xavier(), pp.init.Mixed([("*.bias", pp.init.One())], pp.init.Normal()),
                                  pp.init.Orthogonal()], ids=repr)
def test_initialize_fills_fresh_storage_and_keeps_the_parameter_objects(init: pp.init.Initializer) -> None:
    """A built-in fill writes every element, so a large tensor gets fresh storage (the old one is the undo
    record, no copy) with the very values a fill of its own storage gives: the same parameter objects, and an
    optimizer built before updates what the model uses."""
    model, pinned = _net(0), _net(0)
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before, pinned_before = _pointers(model), _pointers(pinned)
    views = [p.detach().numpy() for p in pinned.parameters()]   # a user's views: that storage must stay
    moved, in_place = _initialized(model, init), _initialized(pinned, init)
    assert views
    for key, value in moved.items():
        torch.testing.assert_close(value, in_place[key], rtol=0, atol=0, msg=key)
    assert _pointers(model)["0.weight"] != before["0.weight"]       # moved: no undo copy was made
    assert _pointers(model)["0.bias"] == before["0.bias"]           # small: filled in place
    assert _pointers(pinned) == pinned_before
    assert all(p is params[name] for name, p in model.named_parameters())
    assert model[0].weight._version > 0                             # an in-place init bumps it, as torch's own
    model(torch.ones(2, WIDTH)).sum().backward()
    old = model[0].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(model[0].weight, old)


class _RowZero(pp.init.Zero):
    """A built-in's subclass that writes one row only: the others must keep their values."""

    def init_weight(self, name: str, arr: np.ndarray) -> None:
        arr[0] = 0


def test_a_subclass_that_fills_part_of_a_tensor_keeps_the_rest() -> None:
    model = _net(0)
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    pp.tree(model).select("0.weight").initialize(_RowZero(), force_reinit=True)
    weight = model[0].weight.detach()
    assert not weight[0].any() and bool((weight[1:] == 2.0).all())


class _DrawError(RuntimeError):
    pass


class _ScratchFailsOnSecondWeight(pp.init.Initializer):
    """Not a built-in: it fills a scratch array that is then written, and the journal keeps a copy.
    ``first`` fills the first weight (5.0 everywhere by default)."""

    def __init__(self, first: Callable[[str, np.ndarray], None] | None = None) -> None:
        self.weights, self.first = 0, first

    def init_weight(self, name: str, arr: np.ndarray) -> None:
        self.weights += 1
        if self.weights == 2:
            raise _DrawError("the second weight fails")
        if self.first is None:
            arr[...] = 5.0
        else:
            self.first(name, arr)


@pytest.mark.parametrize("init", [pp.init.Uniform(), _ScratchFailsOnSecondWeight()], ids=["fresh storage", "scratch"])
def test_a_failed_initialize_puts_the_moved_storage_back(init: pp.init.Initializer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The second large weight's fill fails after the first one was filled (a built-in's in fresh storage, the
    old one kept; a custom one's in place, after a copy): both get back the very storage they had, with its
    values."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH))
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    pointers = _pointers(net)
    if isinstance(init, pp.init.Uniform):
        import polyparam.init.base as base

        calls, fill = [], base._fill_streams

        def failing(*args: object) -> None:
            calls.append(1)
            if len(calls) == 2:
                raise _DrawError("the second weight fails")
            fill(*args)

        monkeypatch.setattr(base, "_fill_streams", failing)
    with pytest.raises(errors.PolyparamError, match="weight fails"):
        pp.tree(net).initialize(init, force_reinit=True)
    assert _pointers(net) == pointers
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def test_a_custom_initializer_that_writes_the_model_itself_is_undone() -> None:
    """Custom code may write the model's tensor while it fills (torch's own init on it, then its values):
    the journal keeps a copy for it, never the live storage, so a later failure restores that tensor too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def torch_orthogonal(name: str, arr: np.ndarray) -> None:
        weight = model.get_parameter(name)
        with torch.no_grad():
            nn.init.orthogonal_(weight)
        arr[...] = weight.detach().numpy()

    with pytest.raises(errors.WriteFailedError, match="second weight fails"):
        pp.tree(model).initialize(_ScratchFailsOnSecondWeight(torch_orthogonal), force_reinit=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def test_a_built_in_with_a_method_replaced_keeps_what_it_leaves() -> None:
    """A built-in whose fill method is replaced on the instance (or the class) no longer promises to write
    every element, so it is not handed fresh storage: the rows it leaves keep their values."""
    model = _net(0)
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    init = pp.init.Xavier()
    xavier = init.init_weight

    def lower_half(name: str, arr: np.ndarray) -> None:
        drawn = np.empty_like(arr)
        xavier(name, drawn)
        arr[WIDTH // 2:] = drawn[WIDTH // 2:]

    init.init_weight = lower_half  # type: ignore[method-assign]
    assert not init._fills_every_element
    pp.tree(model).select("0.weight").initialize(init, seed=1, force_reinit=True)
    weight = model[0].weight.detach()
    assert bool((weight[:WIDTH // 2] == 2.0).all()) and not bool((weight[WIDTH // 2:] == 2.0).any())
