"""POLYPARAM_UNDO_MEMORY: undo copies past a budget go to a temporary file, and a failure still restores them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam._params.journal import Journal


class FailsOnThird(pp.init.Initializer):
    """Fills two parameters, then raises: what the first two got must be undone."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def init_weight(self, name: str, arr: np.ndarray) -> None:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("the third one fails")
        arr[...] = 7


def _model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"l{i}": {"weight": rng.standard_normal((64, 32)).astype(np.float32),
                      "bias": rng.standard_normal(64)} for i in range(4)}


@pytest.mark.parametrize("budget", ["0", "9KB", "10GB"])
def test_a_failed_initialize_restores_copies_from_memory_or_the_file(budget: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYPARAM_UNDO_MEMORY", budget)
    monkeypatch.setenv("POLYPARAM_UNDO_DIR", str(tmp_path))
    model = _model()
    before = {k: {n: v.copy() for n, v in layer.items()} for k, layer in model.items()}
    tree = pp.tree(model)
    with pytest.raises(errors.WriteFailedError, match="the third one fails"):
        tree.initialize(pp.init.Mixed([("*.weight", FailsOnThird())], default=pp.init.Constant(1.0)),
                        force_reinit=True)
    for key, layer in model.items():
        for name, value in layer.items():
            np.testing.assert_array_equal(value, before[key][name], err_msg=f"{key}.{name}")
    assert list(tmp_path.iterdir()) == []     # the copies' file was unlinked from the start


def test_a_refused_transfer_check_restores_spilled_torch_values(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("POLYPARAM_UNDO_MEMORY", "0")
    torch.manual_seed(0)
    src = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    dst = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))  # another activation
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(errors.TransferError):
        pp.transfer(src, dst, check=torch.randn(3, 8).numpy())
    for key, value in dst.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_only_the_budget_stays_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYPARAM_UNDO_MEMORY", "3000")
    tree = pp.tree({"a": np.ones(500, np.float32), "b": np.full(500, 2, np.float32), "c": np.full(10, 3.0)})
    journal = Journal("test")
    for _, p in tree.items():
        journal.keep(p)
    kinds = [type(value).__name__ for _, value, _ in journal._values]
    assert kinds == ["ndarray", "_Spilled", "ndarray"]   # 2000 B kept, 2000 B more spilled, 80 B fit again
    for _, p in tree.items():
        p.set(np.zeros(p.shape, p.dtype))
    assert journal.restore() == []
    np.testing.assert_array_equal(tree["b"].numpy(), np.full(500, 2, np.float32))
    assert journal._file is None


def test_a_bad_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYPARAM_UNDO_MEMORY", "lots")
    with pytest.raises(errors.InvalidArgumentError, match="POLYPARAM_UNDO_MEMORY"):
        pp.tree({"a": np.ones(3)}).initialize(pp.init.Constant(1.0), force_reinit=True)
