"""Importing polyparam, listing backends and using the NumPy backend import no framework."""

import subprocess
import sys
import textwrap

FRAMEWORKS = ("torch", "tensorflow", "keras", "mxnet", "jax", "flax")

CHILD = f"FRAMEWORKS = {FRAMEWORKS!r}\n" + textwrap.dedent("""
    import sys
    import numpy as np
    import polyparam as pp
    from polyparam import numpy as pnp
    pp.list_backends()
    tree = pp.tree(pnp.Sequential(pnp.Dense(2, in_units=3)))
    tree.initialize(pp.init.Xavier(), seed=0)
    pp.tree({"w": np.zeros((2, 2))}).state()
    try:
        pp.tree(object())
    except pp.errors.UnsupportedModelError:
        pass
    from polyparam._cli import Tour
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        Tour("numpy").run()
    print(" ".join(sorted(m for m in FRAMEWORKS if m in sys.modules)))
""")


def test_no_framework_is_imported() -> None:
    """A fresh interpreter that uses the core and the tour has none of the frameworks in sys.modules."""
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_check_can_fail() -> None:
    """The same probe does see a framework that was imported (here: a stand-in module name)."""
    code = "import sys, types; sys.modules['torch'] = types.ModuleType('torch'); " + \
        f"print(' '.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "torch"
