"""The command line: the tour shows the chapter's facts, each statement followed by its output, like a console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import polyparam as pp
from polyparam._cli import main


def _printed_by(out: str, statement: str, *, nth: int = 0) -> list[str]:
    """The non-blank lines between the ``nth`` prompt showing ``statement`` and the next prompt or heading."""
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if line == f">>> {statement}"]
    assert len(starts) > nth, f"{statement!r} is not shown {nth + 1} time(s)"
    printed = []
    for line in lines[starts[nth] + 1:]:
        if line.startswith((">>> ", "#")):
            break
        if line.strip() and not line.startswith("..."):
            printed.append(line)
    return printed


def test_tour_on_numpy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tour", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    for fact in ("Init dense", "[[42. 42. 42. 42. 42. 42. 42. 42.]]", "[1. 1. 1. 1.] 0.0", "0.1.0.bias",
                 "(256, ?)", "deferred 2", "TieGroup(['1.weight', '2.weight'])", "[ True  True  True  True",
                 "42.  "):
        assert fact in out, fact
    # the deferred initializer prints at the first forward only
    first, second = out.split("## The first forward pass runs the initializer")[1].split("## The second one does not")
    assert first.count("Init dense") == 2 and "Init dense" not in second.split("##")[0]


def test_tour_prints_each_statement_then_its_output(capsys: pytest.CaptureFixture[str]) -> None:
    """As in a Python console: every ``>>>`` line is followed by what that statement printed, and only that."""
    assert main(["tour", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert _printed_by(out, "p = tree['1.bias']") == []
    assert _printed_by(out, "type(p.native)") == ["<class 'polyparam.numpy.Param'>"]
    assert _printed_by(out, "p") == ["NumpyParameter('1.bias', shape=(1,), dtype=float32, device='cpu')"]
    assert _printed_by(out, "p.numpy()") == ["[0.]"]
    assert _printed_by(out, "p.grad()") == ["None"]
    assert _printed_by(out, "[(path, p.shape) for path, p in tree[0].items()]") == [
        "('0.weight', (8, 4)) ('0.bias', (8,))"]
    assert _printed_by(out, "tree['0.weight'].numpy()[0], tree['0.bias'].numpy()[0]", nth=1) == ["[1. 1. 1. 1.] 0.0"]
    assert _printed_by(out, "tree['1.weight'].numpy()") == ["[[42. 42. 42. 42. 42. 42. 42. 42.]]"]
    # a statement's own prints come right after it, before the next statement
    inits = _printed_by(out, "tree.initialize(MyInit(), force_reinit=True, seed=0)")
    assert [line.split()[0] for line in inits] == ["Init", "Init"]
    assert _printed_by(out, "report = ltree.initialize(PrintInit())  # prints nothing") == []
    assert _printed_by(out, "report") == ["initialized 2, skipped 0, deferred 2"]
    assert len(_printed_by(out, "lazy_net(X)", nth=0)) == 2
    assert _printed_by(out, "lazy_net(X)", nth=1) == []
    assert _printed_by(out, "stree.ties()", nth=1) == ["[]"]
    # a multi-line statement continues with "...", then one empty "..." closes it, as at the prompt
    block = out.split(">>> class MyInit(pp.init.Initializer):\n")[1].split(">>> ")[0].splitlines()
    assert block[0] == "...     def init_weight(self, name, arr):" and block[-1] == "..."
    assert all(line.startswith("...") for line in block)


@pytest.mark.slow
def test_tour_on_every_backend_reads_like_a_repl() -> None:
    """``--backend all`` walks each installed backend in its own process, every one interleaved."""
    done = subprocess.run([sys.executable, "-m", "polyparam", "tour", "--backend", "all"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    sections = done.stdout.split("############################## backend: ")[1:]
    installed = [name for name in pp.list_backends() if f"(backend {name}: not available here" not in done.stdout]
    assert [s.split()[0] for s in sections] == installed and {"numpy", "torch", "keras"} <= set(installed)
    for section in sections:
        name = section.split()[0]
        assert _printed_by(section, "type(p.native)")[0].startswith("<class "), name
        assert _printed_by(section, "p.grad()") == ["None"], name
        if "deferred" in pp.get_backend(name).CAPABILITIES:   # the deferred-initialization step
            assert _printed_by(section, "report")[0].startswith("initialized "), name
        assert _printed_by(section, "stree.ties()", nth=1) == ["[]"], name


def test_tour_with_an_unknown_backend_fails_clearly() -> None:
    done = subprocess.run([sys.executable, "-m", "polyparam", "tour", "--backend", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "No backend named 'nope'" in done.stderr


def test_plugins_names_the_install_command_of_a_missing_framework(tmp_path: Path) -> None:
    """A built-in backend whose framework is missing names polyparam's extra, quoted for any shell; others do not."""
    missing = ["torch", "keras", "tensorflow", "mxnet", "jax", "flax"]
    for name in missing:  # each framework raises as an uninstalled one does
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f'raise ModuleNotFoundError("No module named {name!r}", '
                                                      f'name={name!r})\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-m", "polyparam", "plugins"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    rows = " ".join(done.stdout.replace("│", " ").split())  # one line, across wrapped cells
    for backend in ("torch", "keras", "mxnet", "flax"):
        assert f'Install it with `pip install "polyparam[{backend}]"`.' in rows, (backend, done.stdout)
    assert "pip install polyparam" not in rows  # neither unquoted (zsh expands the brackets) nor without the extra
    if "polyparam-jax" in rows:  # a third-party plugin: polyparam has no extra for its framework
        assert "Install the package that provides 'jax'" in rows and "polyparam[jax]" not in rows


# ---- names are shown as they are: no markup, no terminal escapes ------------------------------

HOSTILE_NAMES = ["[/x]", "[link=file:///etc/passwd]click[/link]", "[bold]x", "\x1b]0;pwned\x07\x1b[2J"]
SHOWN = ["[/x]", "[link=file:///etc/passwd]click[/link]", "[bold]x", "\\x1b]0;pwned\\x07\\x1b[2J"]


def test_inspect_shows_names_and_metadata_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Markup in tensor names or metadata is text, not style; control characters are escaped."""
    from safetensors.numpy import save_file

    path = tmp_path / "hostile.safetensors"
    save_file({name: np.ones(2, np.float32) for name in HOSTILE_NAMES}, str(path),
              metadata={"format": "polyparam", "polyparam.version": "1", "polyparam.backend": "[/b]"})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    for shown in SHOWN + ["saved from [/b]"]:
        assert shown in out, shown


def test_print_tree_shows_names_literally() -> None:
    """str(tree) and the notebook HTML show each key as it is, whatever brackets or escapes it holds."""
    tree = pp.tree({name: np.ones(2, np.float32) for name in HOSTILE_NAMES})
    text = str(tree)
    assert "\x1b" not in text
    for shown in SHOWN:
        assert shown in text, shown
    html = tree._repr_html_()
    assert "[/x]" in html and "[link=file:///etc/passwd]click[/link]" in html and "\x1b]0;" not in html


def test_errors_on_the_command_line_escape_control_characters(tmp_path: Path) -> None:
    """An error naming a file with an escape sequence in its name prints the escape, not the sequence."""
    done = subprocess.run([sys.executable, "-m", "polyparam", "inspect", str(tmp_path / "x\x1b[2J.safetensors")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "\x1b" not in done.stderr and "x\\x1b[2J.safetensors" in done.stderr

