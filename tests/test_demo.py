"""The main job (`genunlearn demo`) on a short budget: every output is written and the report is consistent."""

from __future__ import annotations

import json

from genunlearn.experiments.audit import AuditSettings
from genunlearn.experiments.demo import DEMO_METHODS, run_demo


def test_demo_writes_report_models_and_figures(tmp_path):
    assert DEMO_METHODS[0] == "rep"  # the recommended classifier-free method leads the demo
    tiny = AuditSettings(starts=4, search_steps=2, grid=5, relearn_at=(1,), relearn_forget=(0, 1), relearn_seeds=1)
    rows = run_demo(tmp_path, steps=12, fid_samples=500, methods=("rep", "s"), progress=False, audit=tiny)
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
    # every model is audited (the original too) and the verdict is in the table
    assert all(set(r["audit"]) >= {"audit_pass", "search_confident", "relearn_forget"} for r in rows)
    assert summary["audit_original"]["search_confident"] >= 0 and summary["audit_settings"]["starts"] == 4
    verdict = "pass" if rep["audit"]["audit_pass"] else "fail"
    assert rep_line.endswith(
        f"{100 * rep['audit']['search_confident']:.1f}% · {100 * rep['audit']['relearn_forget']:.1f}% · {verdict} |"
    )
    assert "Audit (`genunlearn audit`'s checks" in report
