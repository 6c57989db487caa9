"""FlaxTree: an NNX module (or a container of modules inside one) as a polyparam parameter tree."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from polyparam.backend import Parameter, ParameterTree, join_path
from polyparam_flax import NAME
from polyparam_flax._convert import to_numpy
from polyparam_flax._layout import Step, children_of, is_a, leaves_of, members_of, resolve
from polyparam_flax._parameter import FlaxParameter
from polyparam_flax._training import optax_groups

__all__ = ["FlaxTree"]

_MODES = ("deterministic", "use_running_average")   # what Module.eval() sets


class FlaxTree(ParameterTree):
    """``native`` is the module (or ``nnx.List``/``nnx.Dict``, or a function of an ``nnx.Sequential``) at this node."""

    backend = NAME

    def __init__(self, native: Any, /, *, path: str = "", root: Any = None, steps: tuple[Step, ...] = ()) -> None:
        super().__init__(native, path=path)
        self._root = native if root is None else root
        self._steps = steps

    def _children(self) -> list[tuple[str, ParameterTree]]:
        node = resolve(self._root, self._steps)
        return [(name, FlaxTree(child, path=join_path(self.path, name), root=self._root, steps=self._steps + steps))
                for name, steps, child in children_of(node, at=self.path)]

    def _param_groups(self, groups: list[tuple[dict[str, Any], list[tuple[str, Parameter]]]], optimizer: Any,
                      /) -> Any:
        """An :class:`~polyparam_flax._training.OptaxGroups` (label tree for ``optax.multi_transform`` and each
        label's options); given ``optimizer``, a factory ``**options -> optax.GradientTransformation``, the
        ``optax.multi_transform`` itself."""
        return optax_groups(self._root, groups, optimizer)

    def _leaves(self) -> list[tuple[str, Parameter]]:
        return _leaf_params(resolve(self._root, self._steps), self.path, self._root, self._steps)

    def _occurrences(self) -> list[tuple[str, Parameter]]:
        """As the base class's walk (each node's leaves, then its children, in order), with the node met on the
        way handed down: a subtree per block would find its block from the root again (an ``nnx.List`` item
        costs more than the rest of the step)."""
        out: list[tuple[str, Parameter]] = []
        stack = [(resolve(self._root, self._steps), self.path, self._steps)]
        while stack:
            node, path, steps = stack.pop()
            children, variables = members_of(node, at=path)
            out.extend((p.path, p) for _, p in _leaf_params(node, path, self._root, steps, variables))
            stack.extend((child, join_path(path, name), steps + child_steps)
                         for name, child_steps, child in reversed(children))
        return out

    def _forward(self, inputs: Any, /) -> Any:
        """The module called in inference mode (``eval()``: running statistics, no dropout); its modes restored."""
        module = resolve(self._root, self._steps)
        if not isinstance(module, nnx.Module):   # a function of an nnx.Sequential
            return jax.tree_util.tree_map(to_numpy, module(inputs))
        modules = [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.Module)]
        saved = [(m, {k: vars(m)[k] for k in _MODES if k in vars(m)}) for m in modules]
        sown = [(m, _intermediates(m)) for m in modules]
        module.eval()
        try:
            out = module(inputs)
        finally:
            for m, modes in saved:
                for key, value in modes.items():
                    setattr(m, key, value)
            for m, before in sown:   # what self.sow(nnx.Intermediate, ...) added: the state's structure is kept
                for key, variable in _intermediates(m).items():
                    if key not in before:
                        delattr(m, key)
                        continue
                    old, value = before[key]
                    old.set_raw_value(value)
                    if variable is not old:
                        setattr(m, key, old)
        return jax.tree_util.tree_map(to_numpy, out)


def _leaf_params(node: Any, path: str, root: Any, steps: tuple[Step, ...],
                 variables: list[tuple[str, Step, Any]] | None = None) -> list[tuple[str, Parameter]]:
    """``node``'s own parameters as ``(leaf name, FlaxParameter)``; ``path`` and ``steps`` lead to it, ``variables``
    are its ``variables_of`` where the caller read them already."""
    return [(leaf.name, FlaxParameter(join_path(path, leaf.name), leaf, root=root, steps=(*steps, step),
                                      variable=variable))
            for leaf, step, variable in leaves_of(node, at=path, steps=steps, variables=variables)]


def _intermediates(module: Any) -> dict[str, tuple[Any, Any]]:
    """``{attribute: (Variable, its value)}`` of the values ``module`` sowed (``nnx.Intermediate``)."""
    return {key: (value, value.get_raw_value()) for key, value in vars(module).items()
            if is_a(value, nnx.Intermediate)}
