"""Every hook is documented with its exact signature and has a test_hook_<name>."""

import inspect
import re
from pathlib import Path

from polyparam import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = [name for name in hookspecs.__all__ if name.startswith("polyparam_")]


def signature_text(name: str) -> str:
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


def test_every_hook_is_documented_with_its_signature() -> None:
    headings = re.findall(r"^## `(.+)`$", (ROOT / "docs" / "hooks.md").read_text(), flags=re.M)
    assert sorted(headings) == sorted(signature_text(name) for name in HOOKS)


def test_every_hook_has_a_test() -> None:
    sources = "".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    for name in HOOKS:
        assert f"def test_hook_{name}(" in sources, name
