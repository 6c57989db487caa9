"""Training with NNX and optax: which Params train, and ``pp.param_groups`` as optax labels.

NNX has no per-Variable switch: what trains is the filter given to ``nnx.grad`` and
``nnx.Optimizer(wrt=...)``. polyparam keeps its flag in the Variable's metadata
(``"trainable"``, absent means trainable) and :data:`trainable` is the NNX filter that
reads it, so ``p.trainable = False`` holds through a step that uses the filter::

    optimizer = nnx.Optimizer(model, tx, wrt=polyparam_flax.trainable)
    grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, polyparam_flax.trainable))(model, x, y)
    optimizer.update(model, grads)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from flax import nnx

from polyparam import errors
from polyparam.backend import Parameter

__all__ = ["FROZEN", "OptaxGroups", "is_trainable", "optax_groups", "set_trainable", "trainable"]

#: The metadata key of a Variable that holds polyparam's trainable flag.
KEY = "trainable"
#: The label of Params that no group holds (outside the collection the groups were made from).
FROZEN = "frozen"


def is_trainable(variable: Any) -> bool:
    """Whether ``variable`` is an ``nnx.Param`` not frozen by polyparam."""
    return isinstance(variable, nnx.Param) and bool(variable.get_metadata(KEY, True))


def trainable(path: Any, value: Any, /) -> bool:
    """The NNX filter of trainable Params (``nnx.Param`` whose ``"trainable"`` metadata is not ``False``)."""
    return is_trainable(value)


def set_trainable(variable: Any, value: bool) -> None:
    """Freeze (``False``) or unfreeze ``variable``; one Variable, so every place that holds it follows."""
    if value:
        if variable.has_metadata(KEY):
            variable.del_metadata(KEY)
    else:
        variable.set_metadata(KEY, False)


@dataclass(frozen=True)
class OptaxGroups:
    """``pp.param_groups`` on a Flax model: the label tree ``optax.multi_transform`` takes, and each label's options.

    ``labels`` is an ``nnx.State`` of strings shaped like ``nnx.state(model, polyparam_flax.trainable)``
    (what ``nnx.Optimizer(model, tx, wrt=polyparam_flax.trainable)`` hands to ``tx``): group ``i`` is
    labelled ``str(i)`` and a trainable Param outside the groups ``"frozen"``. ``options`` maps
    each label to its options. :meth:`transform` builds the optimizer::

        groups = pp.param_groups(model, [("role:bias", {"weight_decay": 0.0})],
                                 default={"weight_decay": 1e-4})
        tx = groups.transform(lambda **o: optax.adamw(1e-3, **o))
        optimizer = nnx.Optimizer(model, tx, wrt=polyparam_flax.trainable)
    """

    labels: Any
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        """The number of groups (labels with options)."""
        return len(self.options)

    def transform(self, factory: Callable[..., Any], /) -> Any:
        """``optax.multi_transform`` of ``factory(**options)`` per group (``optax.set_to_zero()`` for ``"frozen"``)."""
        import optax

        if not callable(factory):
            msg = (f"Invalid value for argument `optimizer`: expected a function of the group options that returns "
                   f"an optax.GradientTransformation (optax.adamw, or a lambda), got {type(factory).__name__}. "
                   "Pass e.g. optimizer=lambda **o: optax.adamw(1e-3, **o).")
            raise errors.InvalidArgumentError(msg, argument="optimizer", expected="a transformation factory",
                                              got=type(factory).__name__)
        transforms = {label: factory(**options) for label, options in self.options.items()}
        transforms[FROZEN] = optax.set_to_zero()
        return optax.multi_transform(transforms, self.labels)


def optax_groups(root: Any, groups: list[tuple[dict[str, Any], list[tuple[str, Parameter]]]],
                 optimizer: Any) -> Any:
    """``groups`` (options, members) of the model ``root`` as :class:`OptaxGroups`; given ``optimizer``
    (a factory of optax transformations), the ``optax.multi_transform`` itself."""
    label_of = {id(p.native): str(i) for i, (_, members) in enumerate(groups) for _, p in members}
    flat = [(tuple(path), label_of.get(id(var), FROZEN))
            for path, var in nnx.iter_graph(root) if isinstance(var, nnx.Variable) and is_trainable(var)]
    out = OptaxGroups(nnx.from_flat_state(flat), {str(i): dict(options) for i, (options, _) in enumerate(groups)})
    return out if optimizer is None else out.transform(optimizer)
