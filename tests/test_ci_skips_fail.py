"""In CI a skipped test must fail the run (every backend is installed there)."""

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text().replace('pytest_plugins = ["pytester"]', "")
RUNTIME_SKIP = "import pytest\n\ndef test_x():\n    pytest.skip('no framework')\n"
IMPORT_SKIP = "import pytest\npytest.importorskip('no_such_framework_zz')\n\ndef test_y():\n    pass\n"


@pytest.mark.parametrize("body", [RUNTIME_SKIP, IMPORT_SKIP], ids=["runtime-skip", "importorskip"])
@pytest.mark.parametrize("ci", ["true", ""], ids=["ci", "local"])
def test_skips_fail_only_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, body: str) -> None:
    """A run-time skip and a collection-time importorskip fail the run when CI=true, and skip locally."""
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_a=body)
    result = pytester.runpytest_subprocess()
    outcomes = result.parseoutcomes()
    if ci:
        assert result.ret != 0 and "skipped" not in outcomes
        result.stdout.fnmatch_lines(["*skipped in CI, where every backend is installed*"])
    else:
        assert result.ret in (0, pytest.ExitCode.NO_TESTS_COLLECTED) and outcomes.get("skipped") == 1
