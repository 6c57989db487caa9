"""The backend author's guide (``docs/backend-guide.md``) is tested.

Its minimal backend is taken from the page itself (every code block whose info string
names a file: ```` ```python title="polyparam_tinynet/_tree.py" ````), written out as a
project, registered through a ``.dist-info`` built from the page's ``pyproject.toml``, as
pip would leave it, and the conformance kit runs on it in a child pytest that loads none
of this suite's settings. The page also names every hook and every role and axis word.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from polyparam.backend import AXIS_ROLES, ROLES, Parameter, ParameterCollection, ParameterTree

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "backend-guide.md"
#: A code block that is one file of the guide's backend.
FILE_BLOCK = re.compile(r'^```(?:python|toml) title="(?P<file>[^"]+)"[ \t]*\n(?P<code>.*?)^```[ \t]*$', re.S | re.M)
#: Environment variables of this run that must not reach the child run of the kit.
NOT_INHERITED = ("CI", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "POLYPARAM_DISABLE_PLUGIN_AUTOLOAD")


def guide_files() -> dict[str, str]:
    """``{relative path: content}`` of every file block of the guide."""
    files: dict[str, str] = {}
    for match in FILE_BLOCK.finditer(GUIDE.read_text(encoding="utf-8")):
        name = match.group("file")
        path = PurePosixPath(name)
        assert not path.is_absolute() and ".." not in path.parts, f"file block {name!r} leaves the project"
        assert name not in files, f"two code blocks are titled {name!r}"
        files[name] = match.group("code")
    return files


def toml_strings(text: str) -> dict[str, dict[str, str]]:
    """The ``key = "string"`` entries of each ``[table]`` of a TOML file (all the guide's pyproject needs;
    ``tomllib`` is not in Python 3.10)."""
    tables: dict[str, dict[str, str]] = {}
    table = ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[([\w.-]+)\]\s*(?:#.*)?", line.strip())
        entry = re.fullmatch(r'([\w.-]+)\s*=\s*"([^"]*)"\s*(?:#.*)?', line.strip())
        if header:
            table = header.group(1)
        elif entry:
            tables.setdefault(table, {})[entry.group(1)] = entry.group(2)
    return tables


def write_project(project: Path, files: dict[str, str]) -> tuple[str, dict[str, dict[str, str]]]:
    """Write ``files`` under ``project`` with the ``.dist-info`` of its ``pyproject.toml``.

    Returns the distribution's name and its entry points by group.
    """
    for name, code in files.items():
        target = project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code, encoding="utf-8")
    tables = toml_strings(files["pyproject.toml"])
    meta = tables["project"]
    groups = {table.split(".", 2)[2]: entries for table, entries in tables.items()
              if table.startswith("project.entry-points.")}
    info = project / f"{re.sub(r'[-_.]+', '_', meta['name'])}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items()) + "\n"
        for group, points in groups.items()))
    return meta["name"], groups


def test_the_guides_backend_passes_the_conformance_kit(tmp_path: Path) -> None:
    """The backend printed in the guide, installed as a package, passes the kit with 0 failed (skips are listed)."""
    files = guide_files()
    for needed in ("pyproject.toml", "tests/test_conformance.py"):
        assert needed in files, f"the guide has no code block titled {needed!r}; it has {sorted(files)}"
    project = tmp_path / "project"
    name, entry_points = write_project(project, files)
    assert entry_points.get("polyparam"), f"the guide's pyproject.toml registers no polyparam entry point: {name}"
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")  # this suite's configuration and conftest.py stay out of the child run
    report = tmp_path / "kit.xml"
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env["PYTHONPATH"] = os.pathsep.join([str(project), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini), "--rootdir", str(project),
         f"--junitxml={report}", "tests/test_conformance.py"],
        cwd=project, env=env, capture_output=True, text=True, timeout=900)
    output = f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert report.exists(), f"the kit did not run (exit {done.returncode}):\n{output}"
    failed, skipped, passed = [], [], 0
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        problems = [child for child in case if child.tag in ("failure", "error")]
        skips = [child for child in case if child.tag == "skipped"]
        if problems:
            failed.append(f"{test}: {problems[0].get('message')}")
        elif skips:
            skipped.append(f"{test}: {skips[0].get('message')}")
        else:
            passed += 1
    skips_text = "\n  ".join(skipped) or "none"
    assert not failed and done.returncode == 0, (
        f"{len(failed)} kit tests failed on the guide's backend ({name}):\n  " + "\n  ".join(failed)
        + f"\nskipped: {skips_text}\n{output}")
    assert passed >= 100, f"only {passed} kit tests passed; skipped: {skips_text}\n{output}"


def test_the_guide_names_every_hook() -> None:
    """Every ``_`` method of the base classes (hooks and core steps) is named in the guide."""
    text = GUIDE.read_text(encoding="utf-8")
    hooks = {name for cls in (Parameter, ParameterCollection, ParameterTree) for name, value in vars(cls).items()
             if name.startswith("_") and not name.endswith("_") and callable(value)}
    missing = sorted(name for name in hooks if not re.search(rf"`{re.escape(name)}[`(]", text))
    assert not missing, f"the guide does not name {missing}"


def test_the_guide_lists_every_role_and_axis_word() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    missing = [word for word in (*ROLES, *AXIS_ROLES) if f"| `{word}` |" not in text]
    assert not missing, f"the guide's tables lack {missing}"
