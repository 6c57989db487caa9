"""polyparam.plot: figures render to PNG and show what the parameters hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import polyparam as pp  # noqa: E402
from polyparam import errors, plot  # noqa: E402
from polyparam import numpy as pnp  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _trained_mlp() -> tuple[pnp.Sequential, pp.ParameterTree, np.ndarray]:
    net = pnp.Sequential(pnp.Dense(8, activation="relu", in_units=4), pnp.Dense(3, in_units=8))
    tree = pp.tree(net)
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype(np.float32)
    return net, tree, x


def _bar_heights(ax) -> list[float]:
    return [patch.get_height() for patch in ax.patches]


def _png(fig, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    plot._to_png(fig, str(out))
    assert out.read_bytes()[:8] == PNG_MAGIC
    return out


def test_histograms_show_every_weight_with_its_counts(tmp_path: Path) -> None:
    """One panel per weight, titled with the path; bar heights are np.histogram of the values."""
    _, tree, _ = _trained_mlp()
    fig = plot.histograms(tree, bins=12)
    _png(fig, tmp_path, "values.png")
    assert [ax.get_title() for ax in fig.axes] == ["0.weight values", "1.weight values"]
    for ax, path in zip(fig.axes, ["0.weight", "1.weight"]):
        counts, _ = np.histogram(tree[path].numpy().astype(np.float64).ravel(), bins=12)
        assert _bar_heights(ax) == counts.tolist()


def test_gradient_column_before_and_after_backward(tmp_path: Path) -> None:
    """Before backward the gradient panels say so; after it they hold the gradients' histogram."""
    net, tree, x = _trained_mlp()
    fig = plot.histograms(tree, grads=True, bins=7)
    assert len(fig.axes) == 4
    assert fig.axes[1].get_title() == "0.weight gradients"
    assert _bar_heights(fig.axes[1]) == []
    assert [t.get_text() for t in fig.axes[1].texts] == ["no gradient"]
    net(x)
    net.backward()
    fig = plot.histograms(tree, grads=True, bins=7)
    _png(fig, tmp_path, "grads.png")
    counts, _ = np.histogram(tree["1.weight"].grad().astype(np.float64).ravel(), bins=7)
    assert _bar_heights(fig.axes[3]) == counts.tolist()


def test_histograms_of_a_selection_and_of_all_roles() -> None:
    """A selection limits the panels; roles=None adds the biases."""
    _, tree, _ = _trained_mlp()
    assert [ax.get_title() for ax in plot.histograms(tree.select("1.*")).axes] == ["1.weight values"]
    titles = [ax.get_title() for ax in plot.histograms(tree, roles=None).axes]
    assert titles == ["0.weight values", "0.bias values", "1.weight values", "1.bias values"]


def test_histograms_of_nothing_is_refused() -> None:
    """A deferred model has nothing to plot yet; the error says what to do."""
    tree = pp.tree(pnp.Sequential(pnp.Dense(4)))
    with pytest.raises(errors.ParameterNotFoundError, match="forward pass"):
        plot.histograms(tree)


def test_history_records_statistics_over_steps(tmp_path: Path) -> None:
    """Statistics per parameter and step are the NumPy ones; the figure has one line per parameter."""
    net, tree, x = _trained_mlp()
    history = plot.History(tree, stats=("mean", "std", "grad_rms"))
    expected_means = []
    for step in range(4):
        net(x)
        net.backward()
        w = tree["0.weight"]
        expected_means.append(float(w.numpy().astype(np.float64).mean()))
        grad_rms = float(np.sqrt(np.mean(np.square(w.grad().astype(np.float64)))))
        history.record(step)
        w.set(w.numpy() - 0.1 * w.grad())     # one SGD step
    arrays = history.as_arrays()
    np.testing.assert_allclose(arrays["mean"]["0.weight"], expected_means)
    assert arrays["grad_rms"]["0.weight"][-1] == pytest.approx(grad_rms)
    assert len(set(arrays["mean"]["0.weight"].tolist())) == 4        # training moved the weights
    fig = history.plot()
    _png(fig, tmp_path, "history.png")
    assert [ax.get_title() for ax in fig.axes] == ["mean", "std", "grad_rms"]
    for ax in fig.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["0.weight", "1.weight"]
        np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), expected_means)


def test_history_without_gradients_records_nan() -> None:
    """Gradient statistics are NaN before any backward; unknown statistics are refused."""
    _, tree, _ = _trained_mlp()
    history = plot.History(tree, stats=("grad_rms",))
    history.record()
    assert np.isnan(history.as_arrays()["grad_rms"]["0.weight"]).all()
    with pytest.raises(ValueError, match="stats"):
        plot.History(tree, stats=("median",))
    with pytest.raises(ValueError, match="record"):
        plot.History(tree).plot()


def test_unknown_statistic_is_a_typed_error_naming_the_choices() -> None:
    """An unknown name in ``stats`` is an InvalidArgumentError with the facts; still a ValueError."""
    _, tree, _ = _trained_mlp()
    with pytest.raises(errors.InvalidArgumentError, match="stats") as info:
        plot.History(tree, stats=("mean", "median"))
    exc = info.value
    assert isinstance(exc, ValueError) and isinstance(exc, errors.UsageError)
    assert (exc.argument, exc.expected, exc.got, exc.path) == ("stats", sorted(plot.STATISTICS), ["mean", "median"],
                                                                None)


def test_plotting_an_empty_history_is_a_typed_error() -> None:
    """History.plot() before any record() is a UsageError saying what to call; still a ValueError."""
    _, tree, _ = _trained_mlp()
    with pytest.raises(errors.UsageError, match=r"Call record\(\) after each step") as info:
        plot.History(tree).plot()
    exc = info.value
    assert isinstance(exc, ValueError) and not isinstance(exc, errors.InvalidArgumentError)
    assert (exc.expected, exc.got) == ("at least one record() call", 0)


def test_import_polyparam_does_not_import_matplotlib() -> None:
    """matplotlib loads only when a plot is made."""
    code = ("import sys, polyparam, polyparam.plot; assert 'matplotlib' not in sys.modules; "
            "import polyparam as pp; pp.plot; assert 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
