"""TensorFlow and MXNet in one process, in both orders (each run in a fresh subprocess).

``import tensorflow`` then ``import mxnet`` segfaults in libmxnet's static initializer
when TensorFlow loaded libstdc++ first. ``import polyparam`` loads libstdc++ before any
framework, so polyparam users can import both in any order; where it is too late,
the backend raises FrameworkImportError before loading libmxnet, never a segfault.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

if importlib.util.find_spec("mxnet") is None or importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs mxnet and tensorflow", allow_module_level=True)

pytestmark = pytest.mark.slow

GLUON = """
    import mxnet as mx
    from mxnet.gluon import nn
    net = nn.Sequential()
    net.add(nn.Dense(3))
    tree = pp.tree(net)
    tree.initialize(pp.init.Xavier(), seed=0)
    out = net(mx.nd.ones((2, 4)))
    assert out.shape == (2, 3) and tree["0.weight"].shape == (3, 4)
    print("gluon ok")
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "POLYPARAM_NO_PRELOAD"}
    environ.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore", **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=environ)


def test_polyparam_then_tensorflow_then_mxnet_works() -> None:
    proc = _run("import polyparam as pp\nimport tensorflow as tf\n" + textwrap.dedent(GLUON)
                + "print(float(tf.reduce_sum(tf.ones(3))))\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gluon ok" in proc.stdout and "3.0" in proc.stdout


def test_mxnet_then_tensorflow_works() -> None:
    proc = _run("import mxnet\nimport tensorflow\nimport polyparam as pp\n" + textwrap.dedent(GLUON))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gluon ok" in proc.stdout


def test_tensorflow_first_raises_a_clear_error_instead_of_crashing() -> None:
    proc = _run("""
        import sys
        import tensorflow
        import polyparam as pp
        try:
            pp.get_backend("mxnet")
        except pp.errors.FrameworkImportError as exc:
            print("refused:", exc)
            assert exc.backend == "mxnet"
        else:
            raise AssertionError("no error")
        assert "mxnet" not in sys.modules or not hasattr(sys.modules["mxnet"], "base")
        try:
            import polyparam_mxnet._backend
        except pp.errors.FrameworkImportError:
            print("refused again")
    """)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert "refused: Cannot import mxnet in this process" in proc.stdout
    assert "Import polyparam (or mxnet) before tensorflow" in proc.stdout
    assert "refused again" in proc.stdout


def test_without_the_preload_the_check_still_prevents_the_crash() -> None:
    proc = _run("""
        import polyparam as pp
        import tensorflow
        try:
            pp.get_backend("mxnet")
        except pp.errors.FrameworkImportError:
            print("refused")
    """, POLYPARAM_NO_PRELOAD="1")
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert "refused" in proc.stdout


def test_keras_then_polyparam_mxnet_is_allowed() -> None:
    """keras loads libstdc++ (optree, ml_dtypes) before TensorFlow: safe, so no false alarm."""
    proc = _run("import keras\nimport polyparam as pp\n" + textwrap.dedent(GLUON))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gluon ok" in proc.stdout
