"""MXNet Gluon 1.9 backend. See :class:`polyparam.backend.Backend` for the contract; only
deviations are documented here.

* Paths are Gluon's structural names (``_collect_params_with_prefix``: ``0.weight``,
  ``0.1.0.bias``); native names are Gluon's global prefixed names (``dense0_weight``).
  BatchNorm-style ``gamma``/``beta`` appear as ``weight`` (role ``scale``) and ``bias``
  (role ``shift``); ``running_mean``/``running_var`` keep their names.
* Roles and axis roles: a :mod:`polyparam.roles` declaration for the owning block's type
  and the parameter's structural name (``weight``, ``gamma``) wins; then the block's type
  and the name.
* Kinds: a Gluon ``Constant`` (``params.get_constant``) is a ``constant`` and a parameter
  created with ``differentiable=False`` (running statistics) a ``buffer``; both are never
  trainable. A tree-wide ``initialize`` leaves constants, and buffers it has no rule for,
  as they are (Gluon's own ``force_reinit`` keeps a Constant's value too). ``trainable``
  is ``grad_req != "null"``, read live, so ``collect_params().setattr("grad_req", "null")``
  freezes; such frozen parameters stay ``parameter``s.
* Gluon's rule for a parameter's own ``init`` (``Dense(weight_initializer=...)``, PReLU's
  alpha, ``params.get(init=...)``): a tree- or selection-wide ``initialize`` keeps it; an
  initializer given to that one parameter replaces it. An ``init`` equal to what role
  dispatch gives anyway (a bias's ``"zeros"``) is not kept, so rules can reach it.
  ``pp.init.Declared()`` fills each parameter as ``net.initialize()`` would.
* row_sparse parameters keep their storage type: writes go through Gluon's sparse copy.
* ``tree.to(...)`` before ``initialize`` chooses the contexts the data will be put on.
* Gluon layouts are already canonical for dense and channel-first convolution weights;
  channel-last convolution weights ``(out, *kernel, in)`` are transposed on the way.
* Deferred initialization goes through Gluon's own machinery: polyparam hands the
  parameter an ``mx.init.Initializer`` that runs polyparam's fill when Gluon
  materializes the shape (the first forward pass).
* A parameter with several contexts (``cpu(0)``, ``cpu(1)``) keeps one replica per
  context; writes go to every replica, reads come from the first, and ``grad()`` is
  the sum over replicas.
* Writes copy through MXNet's copy operator, as ``Parameter.set_data`` does, so the
  convolution weights a CPU forward pass leaves in the MKLDNN layout take them too.
* Ties replace the Parameter object in the member block (Gluon shares by Parameter
  object, not by storage) and clear the cached graphs of hybridized blocks under the
  tree's root. A ``gluon.Trainer`` created before a tie or untie keeps the old objects:
  create it after.
* Recurrent layers (``rnn.LSTM``/``GRU``/``RNN`` and their cells): ``*_bias`` have role
  ``bias``, weights ``(gates * hidden, in)`` axes ``("out", "in")``. Gluon's
  ``save_parameters`` writes a fused layer's parameters under unfused keys
  (``2._unfused.0.i2h_weight``); those are native aliases, so ``pp.load`` reads the file.
* Training loops: freezing sets ``grad_req`` (unfreezing gives back the one it replaced, ``"add"``
  too); ``pp.param_groups`` sets ``lr_mult``/``wd_mult`` and returns the ``{name: Parameter}`` a
  ``Trainer`` takes; gradients are written into Gluon's buffers in place (clipping scales every
  replica by one factor); ``cast`` is ``Parameter.cast`` (float16/32/64; BatchNorm stays
  float32 under float16, as ``BatchNorm.cast`` keeps it).
"""

from __future__ import annotations

from polyparam import errors
from polyparam.backend import ModelFactory, ParameterTree
from polyparam_mxnet import NAME
from polyparam_mxnet._convert import gluon, mx
from polyparam_mxnet._models import GluonModels
from polyparam_mxnet._tree import GluonTree

__all__ = ["CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree"]

CAPABILITIES = frozenset({"tying", "deferred", "gradients", "devices", "forward", "training", "casting"})


def framework_version() -> str:
    """MXNet's version (``mx.__version__``)."""
    return str(mx.__version__)


def is_native(obj: object, /) -> bool:
    """Whether ``obj`` is a Gluon ``Block``."""
    return isinstance(obj, gluon.Block)


def tree(obj: object, /) -> ParameterTree:
    """The parameter tree of a Gluon ``Block``."""
    if not isinstance(obj, gluon.Block):
        msg = (f"Cannot wrap {type(obj).__name__} with the mxnet backend: expected a gluon Block "
               "(Block, HybridBlock, Sequential...), got another object. Pass the network itself.")
        raise errors.UnsupportedModelError(msg, backend=NAME, expected="gluon.Block", got=type(obj).__name__)
    return GluonTree(obj)


def models() -> ModelFactory:
    """The chapter's reference models in Gluon."""
    return GluonModels()
