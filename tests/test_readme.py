"""The README's examples run as written: the user-model example through the CLI, and the Python API snippets."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.test_cli import run

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block_after(marker: str, lang: str) -> str:
    i = README.index(marker)
    start = README.index(f"```{lang}\n", i) + len(f"```{lang}\n")
    return README[start : README.index("```", start)]


def test_user_model_example_runs_and_forgets(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_model.py").write_text(_block_after("<!-- example: my_model.py", "python"))
    toml = next(b for b in re.findall(r"```toml\n(.*?)```", README, flags=re.S) if b.startswith("# my_run.toml"))
    (tmp_path / "my_run.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("my_model", None)
    try:
        code, _, err = run(["unlearn", "--config", "my_run.toml", "--out", "runs/mine", "--quiet"], capsys)
    finally:
        sys.modules.pop("my_model", None)
    assert code == 0, err
    s = json.loads((tmp_path / "runs" / "mine" / "summary.json").read_text())
    assert s["method"] == "rep" and s["forget_fraction_initial"] > 0.25
    assert s["status"] == "unlearned" and s["forget_fraction_final"] < 0.02


def test_python_api_snippets_run():
    i = README.index("## Python API")
    blocks = re.findall(r"```python\n(.*?)```", README[i : README.index("## Methods", i)], flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.steps_run == 100 and "cos2" in result.log[-1]


@pytest.mark.parametrize("section", ["## Two commands"])
def test_readme_commands_use_the_pinned_torch(section):
    text = README[README.index(section) :]
    assert "pip install torch==2.13.0" in text
