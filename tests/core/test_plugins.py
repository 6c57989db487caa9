"""The plugin system: lazy loading, isolation of broken plugins, the hooks themselves.

Broken plugins are real installed distributions: a folder with a ``.dist-info``
(METADATA + entry_points.txt) on ``sys.path``, as pip would leave them, exercised
in a child process so the test's own plugin manager is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import polyparam as pp
from polyparam import _manager, errors
from polyparam import numpy as pnp

PLUGINS = {
    # name: module source
    "broken_import": "raise RuntimeError('boom at import')\n",
    "misspelled_hook": textwrap.dedent("""
        from polyparam import hookimpl

        @hookimpl
        def polyparam_backend_nmes():
            return ["typo"]
    """),
    "raising_dispatch": textwrap.dedent("""
        from polyparam import hookimpl

        @hookimpl
        def polyparam_backend_names():
            return ["raiser"]

        @hookimpl
        def polyparam_backend_for(obj):
            raise ZeroDivisionError("dispatch exploded")
    """),
    "not_a_backend": textwrap.dedent("""
        from polyparam import hookimpl

        @hookimpl
        def polyparam_backend_names():
            return ["hollow"]

        @hookimpl
        def polyparam_get_backend(name):
            if name == "hollow":
                import types
                return types.SimpleNamespace(NAME="hollow")
    """),
    "bad_names": textwrap.dedent("""
        from polyparam import hookimpl

        @hookimpl
        def polyparam_backend_names():
            return ["Not A Name"]
    """),
}


def install_fake_distributions(site: Path) -> None:
    """Write each plugin module and its .dist-info, as an installed distribution looks."""
    for name, source in PLUGINS.items():
        (site / f"{name}.py").write_text(source)
        info = site / f"polyparam_{name}_plugin-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: polyparam-{name}-plugin\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[polyparam]\n{name} = {name}\n")


CHILD = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    import polyparam as pp
    from polyparam import numpy as pnp, errors
    from polyparam._manager import plugin_statuses

    out = {}
    net = pnp.Sequential(pnp.Dense(2, in_units=3))
    tree = pp.tree(net)                      # dispatch runs every plugin's backend_for
    tree.initialize(pp.init.Constant(1))
    out["numpy_works"] = float(tree["0.weight"].numpy().sum())
    try:
        pp.get_backend("hollow")
    except errors.PluginContractError as exc:
        out["hollow"] = [type(exc).__name__, exc.plugin, str(exc)]
    try:
        pp.get_backend("typo")
    except errors.BackendNotFoundError as exc:
        out["typo"] = type(exc).__name__
    out["statuses"] = {s.name: [s.distribution, s.backends, s.error] for s in plugin_statuses()}
    out["tree_again"] = pp.tree(net).backend
    out["backends"] = pp.list_backends()
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install_fake_distributions(site)
    return site


def run_child(site: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)


def test_broken_plugins_are_isolated_and_reported(broken_site: Path) -> None:
    """Broken plugins of every kind leave the NumPy backend working and are listed with their error."""
    done = run_child(broken_site, CHILD)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["numpy_works"] == 6.0 and out["tree_again"] == "numpy"
    statuses = out["statuses"]
    assert "boom at import" in statuses["broken_import"][2]
    assert statuses["broken_import"][0] == "polyparam-broken_import-plugin"
    assert "polyparam_backend_nmes" in statuses["misspelled_hook"][2]
    assert "dispatch exploded" in statuses["raising_dispatch"][2]
    assert "Not A Name" in statuses["bad_names"][2]
    assert out["hollow"][0] == "PluginContractError" and out["hollow"][1] == "not_a_backend"
    assert "missing names" in out["hollow"][2]
    assert "does not satisfy polyparam.Backend" in statuses["not_a_backend"][2]
    # nothing of a broken plugin stays registered
    assert "typo" not in out["backends"] and "raiser" not in out["backends"] and "hollow" not in out["backends"]
    assert out["typo"] == "BackendNotFoundError"
    assert statuses["numpy"][2] is None


def test_plugins_command_lists_errors(broken_site: Path) -> None:
    """`polyparam plugins` shows every plugin, the working backends and each load error."""
    done = run_child(broken_site, "import sys; from polyparam._cli import main; sys.exit(main(['plugins']))",
                     COLUMNS="200")
    assert done.returncode == 0, done.stderr
    for expected in ("broken_import", "boom at import", "misspelled_hook", "numpy", "ok"):
        assert expected in done.stdout


def test_autoload_can_be_disabled(broken_site: Path) -> None:
    """POLYPARAM_DISABLE_PLUGIN_AUTOLOAD=1 loads no entry point; NumPy still works."""
    code = ("import polyparam as pp; from polyparam._manager import plugin_statuses; "
            "print(pp.list_backends(), [s.name for s in plugin_statuses()])")
    done = run_child(broken_site, code, POLYPARAM_DISABLE_PLUGIN_AUTOLOAD="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['numpy'] ['numpy']"


def test_entry_points_load_lazily(broken_site: Path) -> None:
    """import polyparam loads no plugin; the first lookup does."""
    code = ("import sys, polyparam, polyparam._manager as m; print(m._pm is None, 'broken_import' in sys.modules); "
            "polyparam.list_backends(); print(m._pm is None)")
    done = run_child(broken_site, code)
    assert done.stdout.split() == ["True", "False", "False"], done.stderr


# ---- one test per hook (tests/test_hookspecs_meta.py checks they exist) ----------------


def test_hook_polyparam_backend_names() -> None:
    """Every registered plugin's names are listed, the reference backend included."""
    names = pp.list_backends()
    assert "numpy" in names and names == sorted(names)


def test_hook_polyparam_get_backend() -> None:
    """The NumPy plugin returns its backend module; unknown names raise with the available ones."""
    backend = pp.get_backend("numpy")
    assert backend.NAME == "numpy" and backend.is_native(pnp.Dense(1))
    with pytest.raises(errors.BackendNotFoundError) as info:
        pp.get_backend("no_such_backend")
    assert "numpy" in info.value.expected and "no_such_backend" in str(info.value)


def test_hook_polyparam_backend_for() -> None:
    """Models are dispatched to their backend; unknown objects raise UnsupportedModelError."""
    assert pp.backend_for(pnp.Sequential()) == "numpy"
    assert pp.backend_for({"w": np.zeros(2)}) == "numpy"
    with pytest.raises(errors.UnsupportedModelError) as info:
        pp.tree(object())
    assert "object" in str(info.value)
    assert isinstance(info.value, TypeError)


def test_manager_reset_reloads() -> None:
    """After a reset, the next lookup builds the manager again."""
    _manager._reset()
    assert _manager._pm is None
    assert "numpy" in pp.list_backends()
    assert _manager._pm is not None
