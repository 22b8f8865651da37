"""The MNIST benchmark: threshold bookkeeping, aggregation, and a --quick run end to end (resumable)."""

from __future__ import annotations

import json
import shlex

import pytest

from genunlearn.experiments.bench import BenchSettings, aggregate, first_below, held_below, stays_below
from genunlearn.experiments.records import read_seed_record
from genunlearn.report import run_report
from tests.test_cli import run


def test_first_and_stay_below():
    vals = [0.1, 0.01, 0.05, 0.01, 0.0, 0.0]
    assert first_below(vals, 0.02) == 1
    assert stays_below(vals, 0.02) == 3
    assert stays_below([0.1, 0.01, 0.05], 0.02) is None
    assert first_below([0.5, 0.3], 0.02) is None
    assert stays_below([0.0, 0.0], 0.02) == 0


def test_held_below_needs_the_whole_window():
    assert held_below([0.1, 0.01, 0.0, 0.01, 0.05], 0.02, 2) is True  # 0.05 comes after the window
    assert held_below([0.1, 0.01, 0.05, 0.0, 0.0], 0.02, 2) is False  # rebound inside the window
    assert held_below([0.1, 0.01, 0.0], 0.02, 2) is None  # window not over: undecided
    assert held_below([0.1, 0.3], 0.02, 2) is None


def _rec(u, st, fid, t, curve=(0.1, 0.0, 0.0)):
    return {
        "curve": {"forget_fraction_robust": list(curve)},
        "updates_to_unlearn_ref": u,
        "time_to_unlearn_ref_s": t,
        "updates_to_stay_ref": st,
        "updates_to_unlearn_robust": u,
        "time_to_unlearn_robust_s": t,
        "updates_to_stay_robust": st,
        "forget_fraction_final_ref": 0.0,
        "forget_fraction_final_robust": 0.0,
        "fid_final": fid,
        "fid_retain_final": fid,
        "time_per_step_s": 0.01,
    }


def test_aggregate_means_over_reaching_seeds_and_fidelity():
    recs = {
        "s": [
            _rec(10, 20, 5.0, 0.1),
            _rec(20, None, 7.0, 0.3, (0.1, 0.0, 0.5)),
            _rec(None, None, 6.0, None, (0.1,) * 3),
        ]
    }
    (row,) = aggregate(recs, {"fid": 5.0, "fid_retain": 5.0}, BenchSettings(fidelity_margin=1.5, hold=1))
    assert row["reached_ref"] == 2 and row["stayed_ref"] == 1 and row["seeds"] == 3
    assert row["held_robust"] == 1
    assert row["updates_to_unlearn_ref"][0] == pytest.approx(15.0)
    assert row["time_to_unlearn_ref_s"][0] == pytest.approx(0.2)
    assert row["fid"][0] == pytest.approx(6.0)
    assert row["fidelity"] is True  # 6.0 <= 5.0 + 1.5
    st = row["stats"]["updates_to_unlearn_ref"]  # the per-seed statistics prose may quote
    assert st["per_seed"] == [10, 20, None] and st["reached"] == 2
    assert st["median"] == 20 and st["median_reached"] == 15 and (st["min"], st["max"]) == (10, 20)
    assert row["stats"]["held_robust"] == {"per_seed": [True, False, None], "held": 1}
    assert row["stats"]["fid_final"]["median"] == 6.0
    (row,) = aggregate(recs, {"fid": 4.0, "fid_retain": 4.0}, BenchSettings(fidelity_margin=1.5))
    assert row["fidelity"] is False


def test_quick_bench_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "mnist", "--quick", "--seeds", "2", "--methods", "s,uno,a", "--out", str(out)]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    for name in (
        "table.md",
        "table.csv",
        "results.json",
        "figures/histograms.png",
        "figures/forget_fraction.png",
        "figures/fid.png",
        "figures/grids.png",
        "figures/latent_map.png",
    ):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert [r["entry"] for r in results["rows"]] == ["a", "s", "uno"]
    assert all(r["seeds"] == 2 for r in results["rows"])
    rec = read_seed_record(out / "runs" / "uno" / "seed1.json")
    assert len(rec["curve"]["forget_fraction_robust"]) == 13  # initial + 12 updates
    raw = json.loads((out / "runs" / "uno" / "seed1.json").read_text())  # compact on disk, with provenance
    assert raw["curve"]["forget_fraction_robust"]["n"] == 256
    assert [k / 256 for k in raw["curve"]["forget_fraction_robust"]["counts"]] == rec["curve"]["forget_fraction_robust"]
    # collateral on the robust monitor's latents: 0 before the first update, stored as counts of retained inputs
    n_kept = rec["collateral_retained_inputs"]
    assert raw["curve"]["collateral_robust"]["n"] == n_kept and 0 < n_kept < 256
    assert rec["curve"]["collateral_robust"][0] == 0.0 and len(rec["curve"]["collateral_robust"]) == 13
    assert rec["collateral_final_robust"] == rec["curve"]["collateral_robust"][-1] > 0  # 12 UNO updates move some
    assert 0 <= rec["retained_tv_final_robust"] <= 1
    assert raw["provenance"]["machine"]["load_average"] is not None
    assert raw["provenance"]["command"]["line"] == shlex.join(["genunlearn", *argv])
    stats = results["rows"][0]["stats"]
    assert stats["seeds"] == [0, 1] and len(stats["updates_to_unlearn_robust"]["per_seed"]) == 2
    assert results["provenance"]["config"]["entries"] == ["s", "uno", "a"]
    assert results["run_provenance"]["runs"] == 6 and results["run_provenance"]["without_provenance"] == 0
    assert run_report(out, check=True) == []  # table.md / table.csv regenerate from results.json
    assert results["rows"][0]["collateral_final_robust"][0] is not None
    assert "collateral (%)" in (out / "table.md").read_text()
    assert "Gradient surgery (S)" in stdout
    stamp = (out / "runs" / "uno" / "seed1.json").stat().st_mtime_ns
    assert run(argv, capsys)[0] == 0  # resumed: finished seeds are not recomputed
    assert (out / "runs" / "uno" / "seed1.json").stat().st_mtime_ns == stamp
    code, _, err = run(["bench", "mnist", "--quick", "--methods", "zzz", "--out", str(out)], capsys)
    assert code == 2 and "unknown bench entries" in err
    # the audit of the seed-0 models becomes the table's last section (bench and report alike)
    clf = "src/genunlearn/models/weights/mnist-classifier.safetensors"
    audit = ["audit", "--forget", "1", "--independent-classifier", clf, "--starts", "4", "--search-steps", "2"]
    audit += ["--grid", "5", "--relearn-at", "1", "--relearn-forget", "0,1", "--relearn-seeds", "1", "--quiet"]
    audit += ["--unlearned", f"a={out / 'runs' / 'a' / 'seed0.safetensors'}", "--out", str(out / "audit")]
    code, _, err = run(audit, capsys)
    assert code == 0, err
    assert "Audit of the seed-0 models" not in (out / "table.md").read_text()
    assert run_report(out, check=True) != []  # table.md is stale once the audit exists
    assert run(argv, capsys)[0] == 0
    table = (out / "table.md").read_text()
    section = table[table.index("## Audit of the seed-0 models") :]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| algorithm")]
    assert [r.split(" | ")[0] for r in rows] == ["| original", "| Gradient ascent (A)"]  # only audited entries
    audited = json.loads((out / "audit" / "audit.json").read_text())["models"][1]
    assert rows[1].split(" | ")[1] == f"{100 * audited['verdict']['checks']['prior']['value']:.1f}%"
    assert rows[0].endswith("| reference |") and "relearn, 1 forget examples (k = 1)" in section
    assert "embedding search" not in section.lower()  # the column of conditional models' audits only
    assert run_report(out, check=True) == []
    doc = out / "README.md"  # the same rows as a generated block of a results README
    doc.write_text("<!-- begin generated: bench-audit results.json -->\n<!-- end generated: bench-audit -->\n")
    assert run_report(out, check=True) != []
    run_report(out)
    assert all(r in doc.read_text() for r in rows) and run_report(out, check=True) == []
