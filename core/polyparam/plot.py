"""Looking rather than reading: histograms and training curves of a model's parameters.

The chapter's "diagnostics and visualizations", on any backend:

```python
import polyparam as pp
from polyparam import plot

fig = plot.histograms(pp.tree(net), grads=True)    # one row per layer: values | gradients
fig.savefig("params.png")

history = plot.History(pp.tree(net))               # per-layer statistics over training steps
for step in range(100):
    train_step()
    history.record(step)
history.plot().savefig("training.png")
```

Every function returns a `matplotlib.figure.Figure` made without ``pyplot``, so
nothing opens a window and no global state changes; notebooks display it. matplotlib
is imported when a function is called, never at ``import polyparam`` (install it with
``pip install "polyparam[plot]"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from polyparam import errors

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from polyparam.backend import Parameter, ParameterCollection

__all__ = ["STATISTICS", "History", "histograms", "layers"]


def _figure(rows: int, cols: int, *, width: float, height: float) -> tuple[Figure, np.ndarray]:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        msg = ("Cannot plot: expected matplotlib to be installed, got ImportError. "
               'Install it with `pip install "polyparam[plot]"`.')
        raise ImportError(msg) from exc
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def layers(params: ParameterCollection, /) -> dict[str, list[tuple[str, Parameter]]]:
    """Group parameters by layer: the path without its last segment (``"0.1.weight"`` -> ``"0.1"``).

    Tied parameters appear once, under the first layer that uses them.
    """
    out: dict[str, list[tuple[str, Parameter]]] = {}
    for path, p in params.items():
        layer, _, _ = path.rpartition(".")
        out.setdefault(layer, []).append((path, p))
    return out


def _values(p: Parameter, *, grads: bool) -> np.ndarray | None:
    if p.state != "initialized":
        return None
    value = p.grad() if grads else p.numpy()
    if value is None:
        return None
    return np.asarray(value, dtype=np.float64).ravel()


def histograms(params: ParameterCollection, /, *, grads: bool = False, bins: int = 50,
               roles: Sequence[str] | None = ("weight",), log: bool = False) -> Figure:
    """Per-layer histograms of parameter values (and gradients), one row per parameter.

    Args:
        params: A tree or a selection (``tree.select("*.weight")``).
        grads: Add a second column with the gradients (empty panels say "no gradient"
            before the first backward pass).
        bins: Histogram bins per panel.
        roles: Which parameter roles to show; ``None`` for every role.
        log: Logarithmic counts.

    Returns:
        A figure with one row per parameter; each axes is titled with the path and
        ``values`` or ``gradients``, so ``fig.axes[i].get_title()`` finds it.

    Raises:
        ParameterNotFoundError: No parameter with one of ``roles`` has data.
    """
    chosen = [(path, p) for path, p in params.items()
              if (roles is None or p.role in roles) and p.state == "initialized"]
    if not chosen:
        msg = (f"Cannot plot histograms: expected initialized parameters with roles {tuple(roles or ())}, got none. "
               "Initialize the model (or run a forward pass for deferred shapes) first.")
        raise errors.ParameterNotFoundError(msg, path="", expected=roles, got=[])
    cols = 2 if grads else 1
    fig, axes = _figure(len(chosen), cols, width=4.0, height=1.8)
    for row, (path, p) in enumerate(chosen):
        for col, kind in enumerate(("values", "gradients")[:cols]):
            ax = axes[row, col]
            ax.set_title(f"{path} {kind}", fontsize=9)
            data = _values(p, grads=kind == "gradients")
            if data is None:
                ax.text(0.5, 0.5, "no gradient", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            ax.hist(data, bins=bins, log=log, color="C0" if kind == "values" else "C1")
            ax.tick_params(labelsize=7)
    fig.suptitle(f"{params.backend} parameters", fontsize=10)
    return fig


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if a.size else 0.0


STATISTICS: dict[str, tuple[bool, Callable[[np.ndarray], float]]] = {
    "mean": (False, lambda a: float(a.mean()) if a.size else 0.0),
    "std": (False, lambda a: float(a.std()) if a.size else 0.0),
    "rms": (False, _rms),
    "abs_max": (False, lambda a: float(np.abs(a).max()) if a.size else 0.0),
    "grad_rms": (True, _rms),
    "grad_abs_max": (True, lambda a: float(np.abs(a).max()) if a.size else 0.0),
}
"""Statistics `History` records, by name: ``(of gradients?, function of the flat array)``."""


@dataclass
class History:
    """Per-parameter statistics over training steps, for plotting.

    Call `record` after each step (or every few); gradient statistics are NaN
    while a parameter has no gradient.

    Attributes:
        params: The tree or selection watched.
        stats: Names from `STATISTICS`.
        roles: Parameter roles watched (``None``: all).
        steps: The recorded step numbers.
        values: ``{statistic: {path: [value per recorded step]}}``.

    Raises:
        InvalidArgumentError: A name in ``stats`` is not in `STATISTICS` (also a ``ValueError``).
    """

    params: ParameterCollection
    stats: Sequence[str] = ("mean", "std", "grad_rms")
    roles: Sequence[str] | None = ("weight",)
    steps: list[int] = field(default_factory=list)
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [s for s in self.stats if s not in STATISTICS]
        if unknown:
            msg = (f"Invalid value for argument `stats`: expected names from {sorted(STATISTICS)}. "
                   f"Received: stats={list(self.stats)!r}.")
            raise errors.InvalidArgumentError(msg, argument="stats", expected=sorted(STATISTICS), got=list(self.stats))
        self.values = {s: {} for s in self.stats}

    def record(self, step: int | None = None, /) -> None:
        """Compute every statistic of every watched parameter now."""
        self.steps.append(len(self.steps) if step is None else int(step))
        for path, p in self.params.items():
            if self.roles is not None and p.role not in self.roles:
                continue
            value = _values(p, grads=False)
            grad = _values(p, grads=True)
            for name in self.stats:
                of_grads, fn = STATISTICS[name]
                data = grad if of_grads else value
                series = self.values[name].setdefault(path, [])
                series.extend([float("nan")] * (len(self.steps) - 1 - len(series)))
                series.append(float("nan") if data is None else fn(data))

    def plot(self) -> Figure:
        """One axes per statistic, one line per parameter, over the recorded steps.

        Raises:
            UsageError: Nothing was recorded yet (also a ``ValueError``).
        """
        if not self.steps:
            msg = "Cannot plot a History: expected at least one record() call, got none. Call record() after each step."
            raise errors.UsageError(msg, expected="at least one record() call", got=0)
        fig, axes = _figure(len(self.stats), 1, width=6.0, height=2.2)
        for ax, name in zip(axes[:, 0], self.stats):
            for path, series in self.values[name].items():
                padded = series + [float("nan")] * (len(self.steps) - len(series))
                ax.plot(self.steps, padded, label=path, marker="." if len(self.steps) < 30 else None)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return fig

    def as_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """The recorded values as arrays: ``{statistic: {path: array over steps}}``."""
        return {name: {path: np.asarray(series) for path, series in by_path.items()}
                for name, by_path in self.values.items()}


def _to_png(fig: Any, path: str) -> None:
    """Write ``fig`` to ``path`` with the Agg canvas (no GUI backend needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path)
