"""The architecture, checked by reading the source: no import cycle in the core, and
backends (built-in and example) that reach the core only through its public modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"


def _module_name(file: Path, base: Path) -> str:
    parts = list(file.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers of the bodies of ``if TYPE_CHECKING:`` blocks (imports there run for type checkers only)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(file: Path, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Every module ``file`` imports (at any depth, TYPE_CHECKING excluded), with its line.

    ``from package import name`` counts as an import of ``package.name`` when that is a
    module, else of ``package``.
    """
    tree = ast.parse(file.read_text(), filename=str(file))
    skip = _type_checking_lines(tree)
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            out.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
            out.append((base, node.lineno))
    return out


def _core_graph() -> dict[str, set[str]]:
    files = {_module_name(f, CORE): f for f in (CORE / "polyparam").rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, file in files.items():
        for target, _ in _imports(file, name, file.name == "__init__.py"):
            if target in files and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _real_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop the edge to a package that ``from package import submodule`` adds beside the submodule's.

    Importing a submodule runs its package's ``__init__`` first, but that is Python's
    loading order, not a dependency of the importing module on the package's contents.
    """
    out: dict[str, set[str]] = {}
    for name, targets in graph.items():
        out[name] = {t for t in targets if not any(u.startswith(f"{t}.") and u in targets for u in targets)}
    return out


def test_the_core_has_no_import_cycle() -> None:
    graph = _real_edges(_core_graph())
    assert len(graph) > 30, sorted(graph)  # the walk found the core
    cycles = _cycles(graph)
    assert not cycles, f"import cycles in core/polyparam (function-level imports count): {cycles}"


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _backend_files() -> list[Path]:
    roots = [ROOT / "plugins", ROOT / "examples" / "polyparam_jax" / "polyparam_jax"]
    return sorted(f for root in roots for f in root.rglob("*.py"))


def _private_core_imports(file: Path) -> list[str]:
    tree = ast.parse(file.read_text(), filename=str(file))
    bad = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                     if node.module == "polyparam"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "polyparam" and any(part.startswith("_") for part in parts[1:]):
                bad.append(f"{file}:{node.lineno} imports {name}")
    return bad


@pytest.mark.parametrize("file", _backend_files(), ids=lambda f: str(f.relative_to(ROOT)))
def test_backends_import_only_public_core_modules(file: Path) -> None:
    """A built-in backend can do nothing a third-party one cannot: polyparam.backend is the door."""
    assert not _private_core_imports(file)


def test_the_private_import_check_catches_each_form(tmp_path: Path) -> None:
    sample = tmp_path / "plugin.py"
    sample.write_text("import polyparam._tree\nfrom polyparam._models import Case\nfrom polyparam import _threads\n"
                      "from polyparam.backend import Parameter\nfrom polyparam import errors\n")
    assert len(_private_core_imports(sample)) == 3
