"""polyparam plugin for MXNet Gluon 1.9. Importing this module never imports mxnet.

The adapter (:mod:`polyparam_mxnet._backend`) is imported the first time a Gluon block
is handled or ``pp.get_backend("mxnet")`` is called; before it loads libmxnet it checks
that the process can do so safely (see :mod:`polyparam_mxnet._loadorder`).

Files: ``_backend`` (the names of :class:`polyparam.backend.Backend`), ``_convert``
(the one import of mxnet; NumPy <-> NDArray, layouts, contexts), ``_parameter`` and
``_tree`` (the subclasses), ``_models`` (the reference models), ``_deferred`` (deferred
initialization through Gluon's own initializer call) and ``_loadorder`` (the libstdc++
check).
"""

from __future__ import annotations

from polyparam.backend import discovery_hooks

__all__ = ["NAME", "polyparam_backend_for", "polyparam_backend_names", "polyparam_get_backend"]

NAME = "mxnet"

# The backend module is imported by name on first use: the only way mxnet gets imported.
# Ownership is answered from sys.modules (array-api-compat's rule): mxnet not imported
# means no Gluon block can exist, so the object is not ours. `import mxnet` imports
# mxnet.gluon, so a Gluon block implies that module is present.
polyparam_backend_names, polyparam_get_backend, polyparam_backend_for = discovery_hooks(
    NAME, "polyparam_mxnet._backend", owns=[("mxnet.gluon", "Block")])
