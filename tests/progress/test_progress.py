"""Progress bars: on a terminal for big jobs, never in pipes or CI logs, switchable."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import numpy as np
import pytest

import polyparam as pp
from polyparam import _progress, errors

# 40 MiB of float32 weights: above the automatic threshold.
SCRIPT = """
import numpy as np, polyparam as pp
tree = pp.tree({{f"layer{{i}}": {{"weight": np.zeros((1024, 1024), np.float32)}} for i in range(10)}})
report = tree.initialize(pp.init.Uniform(), force_reinit=True{extra})
print("done", len(report.initialized))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != _progress.ENV_VAR}
    env.update(extra)
    return env


def _on_a_terminal(code: str, env: dict[str, str]) -> str:
    """Run ``code`` with stdout and stderr on a pseudo-terminal; return what the terminal got."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=slave, stderr=slave, stdin=subprocess.DEVNULL,
                            env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:        # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode(errors="replace")


def _in_a_pipe(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return done.stdout + done.stderr


def test_bar_shows_on_a_terminal() -> None:
    """A big initialize on a TTY draws a bar labelled with the operation and the bytes."""
    out = _on_a_terminal(SCRIPT.format(extra=""), _env())
    assert "done 10" in out
    assert "initialize" in out and "MB" in out
    assert "━" in out


def test_no_bar_in_a_pipe() -> None:
    """The same run with stderr in a pipe (CI logs) prints only its own output."""
    out = _in_a_pipe(SCRIPT.format(extra=""), _env())
    assert out.strip() == "done 10"


@pytest.mark.parametrize(("how", "extra", "env"), [
    ("argument", ", progress=False", {}),
    ("environment", "", {_progress.ENV_VAR: "0"}),
])
def test_switched_off_on_a_terminal(how: str, extra: str, env: dict[str, str]) -> None:
    """progress=False or POLYPARAM_PROGRESS=0 keep a terminal quiet."""
    out = _on_a_terminal(SCRIPT.format(extra=extra), _env(**env))
    assert "done 10" in out and "initialize" not in out


def test_forced_on_in_a_pipe() -> None:
    """POLYPARAM_PROGRESS=1 shows the bar even in a pipe; progress=False still wins over it."""
    out = _in_a_pipe(SCRIPT.format(extra=""), _env(**{_progress.ENV_VAR: "1"}))
    assert "initialize" in out
    out = _in_a_pipe(SCRIPT.format(extra=", progress=False"), _env(**{_progress.ENV_VAR: "1"}))
    assert "initialize" not in out


def test_small_jobs_stay_quiet_automatically(monkeypatch: pytest.MonkeyPatch) -> None:
    """Automatic mode needs a terminal and enough work; the argument decides when given."""
    monkeypatch.delenv(_progress.ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert _progress.enabled(None, work=_progress.MIN_BYTES)
    assert not _progress.enabled(None, work=_progress.MIN_BYTES - 1)
    assert _progress.enabled(True, work=0)
    monkeypatch.setenv(_progress.ENV_VAR, "0")
    assert not _progress.enabled(None, work=_progress.MIN_BYTES)
    assert _progress.enabled(True)


def test_bad_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in POLYPARAM_PROGRESS is an error naming the variable, not silently ignored."""
    monkeypatch.setenv(_progress.ENV_VAR, "maybe")
    with pytest.raises(ValueError, match=_progress.ENV_VAR):
        _progress.enabled(None)


def test_bad_environment_value_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal is an InvalidArgumentError naming the variable, what it accepts and what it got; still a
    ValueError, and it reaches the caller of a public operation unchanged."""
    monkeypatch.setenv(_progress.ENV_VAR, " Maybe ")
    with pytest.raises(errors.InvalidArgumentError, match="Set it to 1") as info:
        _progress.enabled(None)
    exc = info.value
    assert isinstance(exc, ValueError)
    assert (exc.argument, exc.got, exc.path) == (_progress.ENV_VAR, "maybe", None)
    assert "1" in exc.expected and "0" in exc.expected
    with pytest.raises(errors.InvalidArgumentError, match=_progress.ENV_VAR):
        list(_progress.track([1, 2], description="x"))
    with pytest.raises(errors.InvalidArgumentError, match=_progress.ENV_VAR):
        pp.tree({"w": np.zeros((2, 2), np.float32)}).initialize(pp.init.Uniform(), force_reinit=True)
    # an explicit argument decides without reading the variable
    assert _progress.enabled(False) is False


def test_track_yields_every_item_in_order() -> None:
    """With or without a bar, track is a transparent iterator."""
    for progress in (False, True):
        items = _progress.track(range(5), description="x", progress=progress, weight=lambda i: i)
        assert list(items) == [0, 1, 2, 3, 4]


class _Tty:
    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


FILE_OPS = """
import numpy as np, polyparam as pp, sys, os
tree = pp.tree({f"layer{i}": {"weight": np.ones((1024, 1024), np.float32)} for i in range(10)})
path = os.path.join(sys.argv[1], "m.safetensors")
pp.save(tree, path)
pp.load(tree, path)
pp.transfer(tree, pp.tree({f"layer{i}": {"weight": np.zeros((1024, 1024), np.float32)} for i in range(10)}))
print("done")
"""


def test_save_load_and_transfer_show_bars_on_a_terminal(tmp_path) -> None:
    """pp.save, pp.load and pp.transfer of 40 MiB draw labelled bars on a TTY, none in a pipe."""
    code = FILE_OPS.replace("sys.argv[1]", repr(str(tmp_path)))
    out = _on_a_terminal(code, _env())
    assert "done" in out
    for label in ("save m.safetensors", "load m.safetensors", "transfer numpy -> numpy"):
        assert label in out, label
    piped = _in_a_pipe(code, _env())
    assert piped.strip() == "done"
