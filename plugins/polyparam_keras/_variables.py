"""Keras variables of a layer, and the state polyparam keeps on layers and variables.

Nothing here imports keras: it works on the layer objects it is given.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FOLLOWERS_ATTR", "GRAD_ATTR", "HOOK_ATTR", "ORIGINAL_ATTR", "PENDING_ATTR", "TIES_ATTR",
           "find_variable", "leaf_name", "own_variables"]

GRAD_ATTR = "_polyparam_grad"              # variable -> its last recorded gradient (NumPy, native layout)
PENDING_ATTR = "_polyparam_pending"        # layer -> {leaf: fill}, run after build
ORIGINAL_ATTR = "_polyparam_original"      # layer -> {leaf: own variable put aside by a tie}
HOOK_ATTR = "_polyparam_build_hooked"      # layer -> True once its build is wrapped
TIES_ATTR = "_polyparam_ties"              # member layer -> {leaf: anchor KerasParameter}, tie made before build
FOLLOWERS_ATTR = "_polyparam_followers"    # anchor layer -> [member layers waiting for its build]


def own_variables(layer: Any) -> list[Any]:
    """The variables ``layer`` itself tracks (not its sublayers'), trainable ones first."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def find_variable(layer: Any, name: str) -> Any | None:
    """``layer``'s own variable called ``name``, or ``None``."""
    for v in own_variables(layer):
        if v.name == name:
            return v
    return None


def leaf_name(name: str) -> str:
    """The path segment for a variable of a layer kind the adapter does not know."""
    return name.replace(".", "_").replace("/", "_")
