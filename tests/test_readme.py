"""The README's first-minute example runs as written."""

import re
from pathlib import Path


def test_readme_example_runs(capsys) -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(code, "README.md", "exec"), {})
    assert "3.bias" in capsys.readouterr().out
