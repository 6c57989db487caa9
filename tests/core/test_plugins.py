"""The plugin system: lazy loading, isolation of broken plugins, the hooks themselves.

Broken plugins are real installed distributions: a folder with a ``.dist-info``
(METADATA + entry_points.txt) on ``sys.path``, as pip would leave them, exercised
in a child process so the test's own plugin manager is untouched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

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
    # an error text with rich markup and a terminal escape: shown literally, never interpreted
    "markup_error": "raise RuntimeError('bad [/config] value \\x1b[2J [link=file:///etc/passwd]click[/link]')\n",
    # loaded fine, but provides no backend: still listed
    "no_backend": textwrap.dedent("""
        from polyparam import hookimpl

        @hookimpl
        def polyparam_backend_for(obj):
            return None
    """),
    # an entry point that is not a plugin at all: listed as an error
    "not_a_module": "# entry point: not_a_module = not_a_module:PLUGIN\nPLUGIN = 5\n",
}


def install_fake_distributions(site: Path, plugins: dict[str, str] | None = None) -> None:
    """Write each plugin module and its .dist-info, as an installed distribution looks.

    A source whose first line is ``# entry point: <name> = <value>`` is registered with that
    entry point instead of ``<module> = <module>`` (e.g. ``x = module:ATTRIBUTE``).
    """
    for name, source in (PLUGINS if plugins is None else plugins).items():
        (site / f"{name}.py").write_text(source)
        first = source.lstrip("\n").splitlines()[0] if source.strip() else ""
        entry_point = first.split(":", 1)[1].strip() if first.startswith("# entry point:") else f"{name} = {name}"
        info = site / f"polyparam_{name}_plugin-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: polyparam-{name}-plugin\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[polyparam]\n{entry_point}\n")


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
    """`polyparam plugins` shows every plugin, the working backends and each load error, and exits 1."""
    done = run_child(broken_site, "import sys; from polyparam._cli import main; sys.exit(main(['plugins']))",
                     COLUMNS="200")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    for expected in ("broken_import", "boom at import", "misspelled_hook", "numpy", "ok"):
        assert expected in done.stdout
    # plugins that register no backend are listed too
    rows = {line.split()[1]: line for line in done.stdout.splitlines() if line.startswith("│")}
    assert "ok, no backend" in rows["no_backend"] and "error:" in rows["not_a_module"]
    assert "implements no polyparam hook" in " ".join(done.stdout.replace("│", " ").split())  # across wrapped lines


def test_plugins_command_shows_error_text_literally(broken_site: Path) -> None:
    """Markup and terminal escapes in a plugin's error are shown as text: no MarkupError, no raw ESC."""
    done = run_child(broken_site, "import sys; from polyparam._cli import main; sys.exit(main(['plugins']))",
                     COLUMNS="200")
    assert "MarkupError" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "\x1b" not in done.stdout
    for token in ("[/config]", "\\x1b[2J", "[link=file:///etc/passwd]click[/link]"):
        assert token in done.stdout, token


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


# ---- plugins that exit, interrupt, hang or claim a built-in name ----------------------------

HOSTILE = {
    "exits_at_import": "import sys\nsys.exit(3)\n",
    "interrupts_at_import": "raise KeyboardInterrupt\n",
    "looks_up_at_import": "import polyparam\npolyparam.list_backends()\n",
    "gets_backend_at_import": "import polyparam\npolyparam.get_backend('numpy')\n",
    "exits_in_dispatch": textwrap.dedent("""
        from polyparam import hookimpl

        @hookimpl
        def polyparam_backend_names():
            return ["quitter"]

        @hookimpl
        def polyparam_backend_for(obj):
            raise SystemExit(4)
    """),
    "exits_in_get_backend": textwrap.dedent("""
        from polyparam import hookimpl

        @hookimpl
        def polyparam_backend_names():
            return ["leaver"]

        @hookimpl
        def polyparam_get_backend(name):
            if name == "leaver":
                raise SystemExit(5)
    """),
}

HOSTILE_CHILD = textwrap.dedent("""
    import json, time
    import numpy as np
    import polyparam as pp
    from polyparam import numpy as pnp, errors
    from polyparam._manager import plugin_statuses

    out = {}
    start = time.monotonic()
    out["dict"] = pp.tree({"w": np.ones(3, np.float32)}).backend
    out["seconds"] = time.monotonic() - start
    net = pnp.Sequential(pnp.Dense(2, in_units=3))
    pp.tree(net).initialize(pp.init.Constant(1))
    out["numpy_works"] = float(pp.tree(net)["0.weight"].numpy().sum())
    try:
        pp.get_backend("leaver")
    except errors.BackendError as exc:
        out["leaver"] = [type(exc).__name__, exc.plugin]
    out["statuses"] = {s.name: s.error for s in plugin_statuses()}
    out["backends"] = pp.list_backends()
    print(json.dumps(out))
""")


def _last_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_plugins_that_exit_or_interrupt_are_isolated(tmp_path: Path) -> None:
    """sys.exit or KeyboardInterrupt in a plugin's import, SystemExit in its hooks: reported, never fatal."""
    install_fake_distributions(tmp_path, HOSTILE)
    out = _last_json(run_child(tmp_path, HOSTILE_CHILD, POLYPARAM_PLUGIN_TIMEOUT="30"))
    assert out["dict"] == "numpy" and out["numpy_works"] == 6.0
    statuses = out["statuses"]
    assert "import failed: SystemExit: 3" in statuses["exits_at_import"]
    assert "import failed: KeyboardInterrupt" in statuses["interrupts_at_import"]
    assert "hook polyparam_backend_for failed: SystemExit: 4" in statuses["exits_in_dispatch"]
    assert out["leaver"] == ["PluginContractError", "exits_in_get_backend"]
    assert "SystemExit: 5" in statuses["exits_in_get_backend"]
    # a plugin that looks backends up while it is imported is told so at once, not after the time limit
    assert "while it was being imported" in statuses["looks_up_at_import"]
    assert "while it was being imported" in statuses["gets_backend_at_import"]
    assert out["seconds"] < 20
    assert "quitter" not in out["backends"] and "leaver" not in out["backends"]
    assert statuses["numpy"] is None


def test_plugins_command_exits_1_when_a_plugin_exits(tmp_path: Path) -> None:
    """`polyparam plugins` survives a plugin that calls sys.exit at import, lists it, and exits 1."""
    install_fake_distributions(tmp_path, HOSTILE)
    done = run_child(tmp_path, "import sys; from polyparam._cli import main; sys.exit(main(['plugins']))",
                     COLUMNS="200", POLYPARAM_PLUGIN_TIMEOUT="30")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "exits_at_import" in done.stdout and "SystemExit" in done.stdout


def test_a_slow_plugin_import_is_reported_not_waited_on(tmp_path: Path) -> None:
    """An import that outlasts POLYPARAM_PLUGIN_TIMEOUT is reported and left behind; the rest works."""
    install_fake_distributions(tmp_path, {"hangs_at_import": "import time\ntime.sleep(600)\n"})
    out = _last_json(run_child(tmp_path, HOSTILE_CHILD, POLYPARAM_PLUGIN_TIMEOUT="1"))
    assert out["dict"] == "numpy" and out["numpy_works"] == 6.0
    assert out["seconds"] < 30
    error = out["statuses"]["hangs_at_import"]
    assert "timed out after 1 s" in error and "POLYPARAM_PLUGIN_TIMEOUT" in error


def test_a_blocking_backend_for_hook_is_set_aside_not_waited_on(tmp_path: Path) -> None:
    """A third-party polyparam_backend_for that blocks is reported after POLYPARAM_PLUGIN_TIMEOUT; pp.tree works."""
    plugin = ("import time\nfrom polyparam.backend import hookimpl\n"
              "@hookimpl\ndef polyparam_backend_names():\n    return ['hang']\n"
              "@hookimpl\ndef polyparam_backend_for(obj):\n    time.sleep(600)\n")
    install_fake_distributions(tmp_path, {"blocks_in_backend_for": plugin})
    out = _last_json(run_child(tmp_path, HOSTILE_CHILD, POLYPARAM_PLUGIN_TIMEOUT="1"))
    assert out["dict"] == "numpy" and out["numpy_works"] == 6.0
    assert out["seconds"] < 30
    error = out["statuses"]["blocks_in_backend_for"]
    assert "did not return within 1 s" in error and "POLYPARAM_PLUGIN_TIMEOUT" in error


@pytest.mark.parametrize("value", ["0", "30"])
def test_plugins_import_in_a_worker_thread_unless_the_limit_is_0(tmp_path: Path, value: str) -> None:
    """POLYPARAM_PLUGIN_TIMEOUT=0 imports in the calling thread (no limit); isolation holds either way."""
    plugins = {name: HOSTILE[name] for name in ("exits_at_import", "looks_up_at_import")}
    plugins["records_thread"] = ("import threading\nfrom polyparam import hookimpl\n"
                                 "MAIN = threading.current_thread() is threading.main_thread()\n"
                                 "@hookimpl\ndef polyparam_backend_for(obj):\n    return None\n")
    install_fake_distributions(tmp_path, plugins)
    code = ("import json, sys, polyparam as pp; from polyparam._manager import plugin_statuses; pp.list_backends(); "
            "print(json.dumps([sys.modules['records_thread'].MAIN, {s.name: s.error for s in plugin_statuses()}]))")
    main_thread, statuses = _last_json(run_child(tmp_path, code, POLYPARAM_PLUGIN_TIMEOUT=value))
    assert main_thread is (value == "0")
    assert "SystemExit: 3" in statuses["exits_at_import"]
    assert "while it was being imported" in statuses["looks_up_at_import"]
    assert statuses["records_thread"] is None


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_an_invalid_plugin_timeout_is_refused(value: str) -> None:
    """POLYPARAM_PLUGIN_TIMEOUT must be a number of seconds, 0 or more."""
    code = ("import polyparam as pp\nfrom polyparam import errors\n"
            "try:\n    pp.list_backends()\nexcept errors.InvalidArgumentError as exc:\n"
            "    print(exc.argument, exc.got)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "POLYPARAM_PLUGIN_TIMEOUT": value})
    assert done.stdout.split() == ["POLYPARAM_PLUGIN_TIMEOUT", value], done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_the_users_interrupt_during_plugin_loading_still_stops_the_program(tmp_path: Path) -> None:
    """Ctrl-C while a plugin imports reaches the waiting thread and stops the program, as always."""
    marker = tmp_path / "importing"
    install_fake_distributions(tmp_path, {"waits_at_import": (
        f"import time\nopen({str(marker)!r}, 'w').close()\ntime.sleep(600)\n")})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "POLYPARAM_PLUGIN_TIMEOUT": "300"}
    child = subprocess.Popen([sys.executable, "-c", "import polyparam as pp; pp.list_backends(); print('went on')"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), child.communicate(timeout=5)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode != 0 and "went on" not in stdout
    assert "KeyboardInterrupt" in stderr


@pytest.mark.parametrize("limit", ["0", "10"])
def test_a_keyboard_interrupt_from_a_hook(tmp_path: Path, limit: str) -> None:
    """In the caller's thread (POLYPARAM_PLUGIN_TIMEOUT=0) a KeyboardInterrupt may be the user's: it propagates
    and the plugin stays. A third-party backend_for hook otherwise runs in a worker thread, which no signal
    reaches: its KeyboardInterrupt is its own, so the plugin is set aside and pp.tree goes on."""
    install_fake_distributions(tmp_path, {"interrupts_in_dispatch": textwrap.dedent("""
        from polyparam import hookimpl

        @hookimpl
        def polyparam_backend_for(obj):
            raise KeyboardInterrupt
    """)})
    code = textwrap.dedent("""
        import numpy as np, polyparam as pp
        from polyparam._manager import plugin_statuses
        try:
            print("tree", pp.tree({"w": np.ones(2)}).backend)
        except KeyboardInterrupt:
            print("interrupted", [s.error for s in plugin_statuses() if s.name == "interrupts_in_dispatch"])
        else:
            print("reported", [s.error for s in plugin_statuses() if s.name == "interrupts_in_dispatch"])
    """)
    done = run_child(tmp_path, code, POLYPARAM_PLUGIN_TIMEOUT=limit)
    lines = done.stdout.strip().splitlines()
    if limit == "0":
        assert lines == ["interrupted [None]"], done.stderr
    else:
        assert lines[0] == "tree numpy" and "KeyboardInterrupt" in lines[1], done.stdout + done.stderr


BUILTIN_CLAIMS = {
    "hijack_numpy": textwrap.dedent("""
        import types
        from polyparam import hookimpl

        CALLED = []

        def _fake():
            from polyparam.backend import BACKEND_NAMES
            from polyparam.numpy import _backend as real

            def tree(obj):
                CALLED.append(obj)
                return real.tree(obj)

            fake = types.SimpleNamespace(**{name: getattr(real, name) for name in BACKEND_NAMES})
            fake.tree, fake.HIJACKED = tree, True
            return fake

        @hookimpl
        def polyparam_backend_names():
            return ["numpy"]

        @hookimpl
        def polyparam_get_backend(name):
            return _fake() if name == "numpy" else None

        @hookimpl
        def polyparam_backend_for(obj):
            return "numpy" if isinstance(obj, dict) else None
    """),
    # answers for numpy without declaring it
    "sneaky_numpy": textwrap.dedent("""
        import types
        from polyparam import hookimpl

        @hookimpl
        def polyparam_get_backend(name):
            if name == "numpy":
                from polyparam.backend import BACKEND_NAMES
                from polyparam.numpy import _backend as real
                fake = types.SimpleNamespace(**{n: getattr(real, n) for n in BACKEND_NAMES})
                fake.HIJACKED = True
                return fake
    """),
    # an entry point named like the built-in
    "shadow_numpy": "# entry point: numpy = shadow_numpy\nfrom polyparam import hookimpl\n",
}

CLAIM_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import polyparam as pp
    from polyparam import _manager

    out = {}
    out["hijacked"] = getattr(pp.get_backend("numpy"), "HIJACKED", False)
    pp.tree({"w": np.ones(2)})
    out["called"] = bool(getattr(sys.modules.get("hijack_numpy"), "CALLED", []))
    out["statuses"] = {s.name: [s.distribution, s.backends, s.error] for s in _manager.plugin_statuses()}
    out["owners"] = _manager.backend_owners()
    print(json.dumps(out))
""")


def test_a_plugin_cannot_take_over_a_builtin_backend_name(tmp_path: Path) -> None:
    """A third-party plugin claiming `numpy` is refused and reported; the real NumPy backend answers."""
    install_fake_distributions(tmp_path, BUILTIN_CLAIMS)
    out = _last_json(run_child(tmp_path, CLAIM_CHILD))
    assert out["hijacked"] is False and out["called"] is False
    error = out["statuses"]["hijack_numpy"][2]
    assert "built-in backend name 'numpy'" in error and "POLYPARAM_ALLOW_OVERRIDE=numpy" in error
    assert out["owners"]["numpy"] == "numpy"
    assert out["statuses"]["numpy"] == ["polyparam", ["numpy"], None]
    shadow = [status for name, status in out["statuses"].items() if name.startswith("numpy ")]
    assert len(shadow) == 1 and "already taken" in shadow[0][2] and shadow[0][0] == "polyparam-shadow_numpy-plugin"


def test_a_builtin_backend_name_is_overridden_only_on_request(tmp_path: Path) -> None:
    """POLYPARAM_ALLOW_OVERRIDE=numpy lets the plugin answer for numpy, and `polyparam plugins` says who does."""
    install_fake_distributions(tmp_path, BUILTIN_CLAIMS)
    out = _last_json(run_child(tmp_path, CLAIM_CHILD, POLYPARAM_ALLOW_OVERRIDE="numpy"))
    assert out["hijacked"] is True and out["called"] is True
    assert out["statuses"]["hijack_numpy"][2] is None
    assert out["owners"]["numpy"] == "hijack_numpy"
    done = run_child(tmp_path, "import sys; from polyparam._cli import main; sys.exit(main(['plugins']))",
                     COLUMNS="200", POLYPARAM_ALLOW_OVERRIDE="numpy")
    rows = [" ".join(line.split()) for line in done.stdout.splitlines() if line.startswith("│ ")]
    hijack = next(row for row in rows if row.startswith("│ hijack_numpy"))
    builtin = next(row for row in rows if row.startswith("│ numpy │ polyparam"))
    assert "overrides the built-in" in hijack and "overridden by hijack_numpy" in builtin


def test_an_invalid_override_name_is_refused() -> None:
    """POLYPARAM_ALLOW_OVERRIDE names built-in backends only."""
    code = ("import polyparam as pp\nfrom polyparam import errors\n"
            "try:\n    pp.list_backends()\nexcept errors.InvalidArgumentError as exc:\n"
            "    print(exc.argument, exc.got)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "POLYPARAM_ALLOW_OVERRIDE": "numpy,jaxx"})
    assert done.stdout.split() == ["POLYPARAM_ALLOW_OVERRIDE", "['jaxx']"], done.stderr


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
