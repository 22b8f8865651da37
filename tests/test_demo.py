"""The main job (`genunlearn demo`) on a short budget: every output is written and the report is consistent."""

from __future__ import annotations

import json

from genunlearn.experiments.demo import DEMO_METHODS, run_demo


def test_demo_writes_report_models_and_figures(tmp_path):
    assert DEMO_METHODS[0] == "rep"  # the recommended classifier-free method leads the demo
    rows = run_demo(tmp_path, steps=12, fid_samples=500, methods=("rep", "s"), progress=False)
    assert [r["method"] for r in rows] == ["rep", "s"]
    for name in ("rep", "s"):
        for suffix in ("-grid.png", "-histogram.png", "-model.safetensors", "-log.csv"):
            assert (tmp_path / f"{name}{suffix}").is_file(), name + suffix
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["method"] for r in summary["runs"]] == ["rep", "s"]
    rep = rows[0]
    assert rep["forget_fraction_final"] < rep["forget_fraction_initial"]
    report = (tmp_path / "report.md").read_text()
    assert "| rep |" in report and "| s |" in report
    assert "collateral" in report and all(0 < r["collateral"] < 1 and 0 <= r["retained_tv"] <= 1 for r in rows)
    rep_line = next(line for line in report.splitlines() if line.startswith("| rep |"))
    assert f"{100 * rep['collateral']:.1f}% |" in rep_line
