"""``benchmarks/sweep.py`` end to end on a tiny grid: cells, collateral, keep_weight only where it acts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from genunlearn.experiments.sweep_summary import read_cells
from genunlearn.report import run_report

REPO = Path(__file__).resolve().parents[1]


def test_sweep_records_collateral_and_keep_weight_only_for_rep_keep(tmp_path):
    out = tmp_path / "sweep"
    args = [sys.executable, "benchmarks/sweep.py", "--methods", "rep,rep-keep", "--x-param", "keep_weight"]
    args += ["--keep-weight", "1,30", "--forget", "1", "--seeds", "0", "--steps", "3", "--fid-samples", "0"]
    subprocess.run([*args, "--out", str(out)], cwd=REPO, check=True, capture_output=True, text=True)
    cells = read_cells(out / "cells.jsonl")
    assert sorted((c["method"], c.get("keep_weight")) for c in cells) == [
        ("rep", None),  # one rep cell, not one per keep_weight
        ("rep-keep", 1.0),
        ("rep-keep", 30.0),
    ]
    for c in cells:
        assert 0 < c["collateral_final"] < 1 and 0 <= c["retained_tv_final"] <= 1
        assert c["collateral_at_first"] is None or 0 <= c["collateral_at_first"] <= 1
        assert c["provenance"]["config"]["unlearn_config"]["keep_weight"] == c.get("keep_weight", 10.0)
    summary = (out / "summary.md").read_text()
    assert "keep_weight" in summary and "median collateral, final" in summary
    rep_row = next(line for line in summary.splitlines() if line.startswith("| rep |"))
    assert "| — |" in rep_row  # rep does not read keep_weight
    # the documents' sweep-by table: keep_weight as the x axis, "—" where the method does not read it
    doc = tmp_path / "README.md"
    doc.write_text(
        "<!-- begin generated: sweep-by keep_weight sweep/cells.jsonl -->\n<!-- end generated: sweep-by -->\n"
    )
    run_report(tmp_path)
    text = doc.read_text()
    rep_line = next(line for line in text.splitlines() if line.startswith("| rep |"))
    keep_line = next(line for line in text.splitlines() if line.startswith("| rep-keep |"))
    assert "| 1 | — |" in rep_line and "| 1 | 1 / 30 |" in keep_line and "→" in keep_line
    assert run_report(tmp_path, check=True) == []

    # a later invocation with a smaller grid: its summary covers that grid, --summarise-all every cell
    small = [a if a != "rep,rep-keep" else "rep-keep" for a in args]
    small = [a if a != "1,30" else "30" for a in small]
    subprocess.run([*small, "--out", str(out)], cwd=REPO, check=True, capture_output=True, text=True)
    assert not any(line.startswith("| rep |") for line in (out / "summary.md").read_text().splitlines())
    subprocess.run([*small, "--out", str(out), "--summarise-all"], cwd=REPO, check=True, capture_output=True, text=True)
    lines = (out / "summary.md").read_text().splitlines()
    assert any(line.startswith("| rep |") for line in lines)
    assert sum(line.startswith("| rep-keep |") for line in lines) == 2
    assert len(read_cells(out / "cells.jsonl")) == 3  # nothing re-run
