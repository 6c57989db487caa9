"""mkdocs hook: run the docs' code blocks on every backend at build time and show the output.

A page marks its examples with fenced blocks whose info string is ``python exec``
(the same code on every backend) or ``python exec="torch"`` (that backend's variant;
consecutive variants form one example). Each backend runs the page's examples, in
order, in a process of its own (TensorFlow and MXNet in one process are fragile), and
every example becomes a set of content tabs, one per backend, with the code that ran
and what it printed. A failing example fails the build.

A page may list its backends in its front matter: ``backends: [numpy, torch]``; the
default is NumPy, PyTorch, Keras and MXNet. Flax runs where a page names it, in the
current set's interpreter (numpy 2: ``.venv-current``), as MXNet needs the first.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from mkdocs.exceptions import PluginError

BACKENDS = {"numpy": "NumPy", "torch": "PyTorch", "keras": "Keras", "mxnet": "MXNet", "flax": "Flax NNX"}
#: The backends of a page that names none in its front matter (``backends: [...]``).
DEFAULT = ["numpy", "torch", "keras", "mxnet"]
FENCE = re.compile(r'^```python exec(?:="(?P<backend>\w+)")?[ \t]*\n(?P<code>.*?)^```[ \t]*$\n?', re.S | re.M)
MARK = "@@polyparam-docs-cell-{}@@"
ROOT = Path(__file__).resolve().parents[2]
#: Backends whose examples run in the current set (numpy 2; ``make install-current``), not the first.
CURRENT = {"flax": ROOT / ".venv-current" / "bin" / "python"}


def _cells(markdown: str) -> list[tuple[int, int, dict[str | None, str]]]:
    """(start, end, {backend or None: code}) for every example, consecutive variants merged."""
    cells: list[tuple[int, int, dict[str | None, str]]] = []
    for match in FENCE.finditer(markdown):
        backend, code = match.group("backend"), match.group("code")
        if backend is not None and backend not in BACKENDS:
            msg = f"Unknown backend {backend!r} in a docs example: expected one of {sorted(BACKENDS)}."
            raise PluginError(msg)
        previous = cells[-1] if cells else None
        joinable = (previous is not None and backend is not None and None not in previous[2]
                    and backend not in previous[2] and not markdown[previous[1]:match.start()].strip())
        if joinable:
            previous[2][backend] = code
            cells[-1] = (previous[0], match.end(), previous[2])
        else:
            cells.append((match.start(), match.end(), {backend: code}))
    return cells


def _code_for(cell: dict[str | None, str], backend: str) -> str | None:
    return cell.get(backend, cell.get(None))


def _run(backend: str, codes: list[str | None], page: str) -> list[str]:
    program = []
    for i, code in enumerate(codes):
        program.append(f"print({MARK.format(i)!r}, flush=True)")
        if code is not None:
            program.append(code)
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"), TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONWARNINGS="ignore", POLYPARAM_PROGRESS="0", COLUMNS="100")
    python = CURRENT.get(backend, Path(sys.executable))
    if not python.exists():
        msg = f"{page}: the {backend} examples run in the current set, expected {python}: run `make install-current`."
        raise PluginError(msg)
    done = subprocess.run([str(python), "-c", "\n".join(program)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    if done.returncode != 0:
        msg = f"{page}: the examples failed on the {backend} backend (exit {done.returncode}):\n{done.stderr[-3000:]}"
        raise PluginError(msg)
    parts = re.split(r"^@@polyparam-docs-cell-\d+@@\n", done.stdout, flags=re.M)
    return parts[1:]


def _tab(title: str, code: str, output: str) -> str:
    body = f"```python\n{code.rstrip()}\n```\n"
    if output.strip():
        body += f"\n```text\n{output.rstrip()}\n```\n"
    return f'=== "{title}"\n\n{textwrap.indent(body, "    ")}\n'


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 - mkdocs hook signature
    cells = _cells(markdown)
    if not cells:
        return markdown
    backends = page.meta.get("backends", DEFAULT)
    outputs = {b: _run(b, [_code_for(c, b) for _, _, c in cells], page.file.src_path) for b in backends}
    pieces, last = [], 0
    for i, (start, end, cell) in enumerate(cells):
        pieces.append(markdown[last:start])
        tabs = [_tab(BACKENDS[b], _code_for(cell, b), outputs[b][i])
                for b in backends if _code_for(cell, b) is not None]
        pieces.append("\n".join(tabs))
        last = end
    pieces.append(markdown[last:])
    return "".join(pieces)
