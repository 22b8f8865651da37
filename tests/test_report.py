"""``genunlearn report``: committed tables and quoted numbers are regenerated from committed data and checked."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from genunlearn.cli import cli
from genunlearn.report import PENDING, ReportError, format_value, render_document, run_report, select
from tests.test_cli import run

REPO = Path(__file__).resolve().parents[1]


# --- selectors and formatting -------------------------------------------------------------------------------
DATA = {
    "rows": [
        {"entry": "s", "x": [3.0, 0.5], "stats": {"median": 34}},
        {"entry": "uno", "x": [2.0, 0.1], "beta": 10.0},
    ],
    "models": {"mnist-vae": {"ratios": {"uno/s": 2.874, "memory (tensor) uno/s": 1.9}}},
    "relearn": {"10": {"100": 0.25}},
}


def test_select_keys_indices_filters_and_literal_keys():
    assert select(DATA, "rows[entry=uno].x.0") == 2.0
    assert select(DATA, "rows[entry=uno].x[1]") == 0.1
    assert select(DATA, "rows[beta=10].entry") == "uno"  # numbers match numerically
    assert select(DATA, "rows[entry=s].stats?.median") == 34
    assert select(DATA, "models.mnist-vae.ratios.uno/s") == 2.874
    assert select(DATA, "models.mnist-vae.ratios[memory (tensor) uno/s]") == 1.9
    assert select(DATA, "relearn.10.100") == 0.25  # numeric keys of a mapping
    with pytest.raises(ReportError, match="matches 0 items"):
        select(DATA, "rows[entry=zz].x")
    with pytest.raises(ReportError, match="no key 'typo'"):
        select(DATA, "rows[entry=s].typo")


def test_format_value():
    assert format_value(0.0512, ".1%") == "5.1%"
    assert format_value(0.0131, ".1f", 1e3) == "13.1"
    assert format_value([6, 3, 4], ".0f") == "6, 3, 4"
    assert format_value(float("inf"), ".0f") == "never"
    assert format_value(None, ".1f") == "—" and format_value([3, None], "g", none="never") == "3, never"
    assert format_value(1.04, "+.2f") == "+1.04"


def _doc_root(tmp_path: Path, body: str) -> Path:
    (tmp_path / "data.json").write_text(json.dumps(DATA))
    (tmp_path / "doc.md").write_text(body)
    return tmp_path


def test_values_and_blocks_are_regenerated_and_checked(tmp_path):
    body = (
        "<!-- source D = data.json -->\n"
        "UNO/S is <!-- v D:models.mnist-vae.ratios.uno/s :.2f -->9.99<!-- /v --> and S needs "
        "<!-- v D:rows[entry=s].x.0 - D:rows[entry=uno].x.0 :+.1f -->?<!-- /v --> more; median "
        "<!-- v D:rows[entry=uno].stats?.median :.0f -->x<!-- /v -->; memory "
        "<!-- v 'D:models.mnist-vae.ratios[memory (tensor) uno/s]' :.1f -->1.9<!-- /v --> "
        "<!-- v D:rows[entry=s].x.0 /2 *10 :.0f -->15<!-- /v -->.\n"
        "<!-- begin generated: models-evaluation eval.json -->\nstale\n<!-- end generated: models-evaluation -->\n"
        "An example, not a marker: `<!-- v D:nothing.here -->x<!-- /v -->`, and\n"
        "```\n<!-- begin generated: nope -->\n<!-- end generated: nope -->\n```\n"
    )
    root = _doc_root(tmp_path, body)
    (root / "eval.json").write_text(
        json.dumps({"rows": [{"model": "mnist-vae", "weights": "w", "metric": "neg_elbo", "value": 148.617}]})
    )
    text = render_document(root / "doc.md", root)
    assert "<!-- /v --> and S needs" in text
    assert "-->2.87<!-- /v -->" in text and "-->+1.0<!-- /v -->" in text and f"-->{PENDING}<!-- /v -->" in text
    assert "| mnist-vae | w | neg. ELBO (nats/image) | 148.62 |" in text and "stale" not in text
    diffs = run_report(root, check=True)
    assert len(diffs) == 1 and diffs[0].line == 2 and "9.99" in diffs[0].committed and "2.87" in diffs[0].expected
    assert (root / "doc.md").read_text() == body  # --check writes nothing
    assert run_report(root) and run_report(root, check=True) == []  # rewritten, then consistent
    data = json.loads((root / "data.json").read_text())
    data["models"]["mnist-vae"]["ratios"]["uno/s"] = 3.0  # the data changes: the check fails again
    (root / "data.json").write_text(json.dumps(data))
    (diff,) = run_report(root, check=True)
    assert "3.00" in diff.expected


def test_bad_markers_are_one_line_errors(tmp_path, capsys):
    root = _doc_root(tmp_path, "<!-- v D:rows.0 -->x<!-- /v -->\n")
    with pytest.raises(ReportError, match="doc.md:1"):
        run_report(root, check=True)
    (root / "doc.md").write_text("<!-- begin generated: nope -->\n<!-- end generated: nope -->\n")
    code, _, err = run(["report", "--check", "--root", str(root)], capsys)
    assert code == 2 and "unknown generator 'nope'" in err


def test_cli_check_exit_status(tmp_path, capsys):
    root = _doc_root(tmp_path, "<!-- source D = data.json -->\n<!-- v D:rows[entry=s].x.0 -->3.0<!-- /v -->\n")
    code, out, _ = run(["report", "--check", "--root", str(root)], capsys)
    assert code == 0 and "matches" in out
    (root / "doc.md").write_text("<!-- source D = data.json -->\n<!-- v D:rows[entry=s].x.0 -->4.0<!-- /v -->\n")
    code, _, err = run(["report", "--check", "--root", str(root)], capsys)
    assert code == 1 and "doc.md:2" in err and "'4.0'" not in err.split("from data")[1]
    code, out, _ = run(["report", "--root", str(root)], capsys)
    assert code == 0 and "updated" in out and "-->3.0<" in (root / "doc.md").read_text()
    code, out, _ = run(["report", "--list"], capsys)
    assert code == 0 and "bench-vs-paper" in out and "step-cost-times" in out


# --- the repository ------------------------------------------------------------------------------------------
def test_every_committed_table_and_quoted_number_matches_its_data():
    """The acceptance check: table.md/csv, summary.md/csv, generated blocks and quoted values agree with the data."""
    diffs = run_report(REPO, check=True)
    assert not diffs, "\n".join(map(str, diffs[:3]))


DOCS_WITH_RESULTS = [str(p.relative_to(REPO)) for p in sorted((REPO / "results").rglob("README.md"))] + [
    "benchmarks/NOTES.md",
    "docs/findings.md",
]


def _strip_markers(line: str) -> str:
    import re

    line = re.sub(r"<!-- v .*? -->.*?<!-- /v -->", "", line)
    return re.sub(r"`[^`]*`", "", line)


@pytest.mark.parametrize("doc", DOCS_WITH_RESULTS)
def test_tables_with_numbers_are_generated(doc):
    """Every markdown table row with a number lies in a generated block (or one marked as not data)."""
    inside = None
    for i, line in enumerate((REPO / doc).read_text().splitlines(), 1):
        if line.startswith("<!-- begin generated:") or line.startswith("<!-- begin not generated:"):
            inside = line
        elif line.startswith("<!-- end generated:") or line.startswith("<!-- end not generated"):
            inside = None
        elif line.startswith("|") and inside is None and any(ch.isdigit() for ch in _strip_markers(line)):
            pytest.fail(f"{doc}:{i}: a table row with numbers outside a generated block: {line[:100]}")


# --- every results folder says how to reproduce it -------------------------------------------------------------
DATA_SUFFIXES = {".json", ".jsonl", ".csv", ".md", ".png"}
NOT_DATA = {"README.md", "COMMAND", "SOURCE.md"}


def results_folders() -> list[Path]:
    folders = set()
    for base in (REPO / "results", REPO / "benchmarks" / "results"):
        for f in base.rglob("*"):
            rel = f.relative_to(base).parts
            if f.is_file() and f.suffix in DATA_SUFFIXES and f.name not in NOT_DATA:
                if "runs" in rel or "figures" in rel:
                    continue
                folders.add(f.parent)
    return sorted(folders)


def read_command_file(path: Path) -> list[tuple[list[str], str]]:
    """``TARGETS: COMMAND`` lines of a COMMAND file (comments start with #)."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        targets, sep, command = line.partition(": ")
        assert sep, f"{path}: expected 'TARGETS: COMMAND', got {line!r}"
        out.append((targets.split(), command))
    return out


def _parse_genunlearn(args: list[str]) -> None:
    cmd: click.Command = cli
    while isinstance(cmd, click.Group):
        name, args = args[0], args[1:]
        assert name in cmd.commands, f"unknown subcommand {name!r}"
        cmd = cmd.commands[name]
    cmd.make_context(cmd.name, list(args))  # parses and validates the options, runs nothing


def test_results_folders_exist():
    names = {str(p.relative_to(REPO)) for p in results_folders()}
    assert {"results/mnist/authors", "results/mnist/bundled", "results/models", "benchmarks/results"} <= names


@pytest.mark.parametrize("folder", results_folders(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_results_folder_has_a_reproducing_command(folder):
    if (folder / "SOURCE.md").is_file():  # transcribed, not computed (the paper's tables)
        assert "transcribed" in (folder / "SOURCE.md").read_text().lower()
        return
    assert (folder / "COMMAND").is_file(), f"{folder}: no COMMAND file"
    lines = read_command_file(folder / "COMMAND")
    assert lines, f"{folder}/COMMAND: no command"
    covered: set[str] = set()
    for targets, command in lines:
        covered.update(targets)
        for part in command.split(" && "):
            args = shlex.split(part)
            if args[0] == "genunlearn":
                _parse_genunlearn(args[1:])
            elif args[0] == "python" and args[1] == "-m":  # a module of the package
                module = REPO / "src" / (args[2].replace(".", "/") + ".py")
                assert module.is_file(), f"{folder}/COMMAND: no module {args[2]}"
            elif args[0] == "python":
                assert (REPO / args[1]).is_file(), f"{folder}/COMMAND: no script {args[1]}"
            else:
                assert args[0] in ("rm", "mkdir", "git"), f"{folder}/COMMAND: unexpected program {args[0]!r}"
        rel = str(folder.relative_to(REPO))
        assert rel in command, f"{folder}/COMMAND: the command does not write into {rel}"
    if "." not in covered:
        data = {f.name for f in folder.iterdir() if f.is_file() and f.suffix in DATA_SUFFIXES} - NOT_DATA
        assert data <= covered, f"{folder}/COMMAND: no command for {sorted(data - covered)}"


# --- writers record their origin ---------------------------------------------------------------------------------
def test_models_evaluate_writes_json_with_provenance(tmp_path, capsys):
    code, out, err = run(["models", "--evaluate", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "m" / "evaluation.json").read_text())
    bundled = [r for r in data["rows"] if r["weights"].startswith("bundled")]
    assert {r["metric"] for r in bundled} == {"neg_elbo", "accuracy"} and all(r["value"] for r in bundled)
    assert all(len(r["file"]["sha256"]) == 64 for r in bundled)
    assert data["provenance"]["command"]["line"].startswith("genunlearn models --evaluate --out")
    assert "| mnist-classifier | bundled (genunlearn), bn1 applied | accuracy |" in out
    assert run_report(tmp_path, check=True) == []
    code, _, err = run(["models", "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "--out needs --evaluate" in err


def test_sweep_cells_record_monitor_and_provenance(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, str(REPO / "benchmarks" / "sweep.py"), "--methods", "d", "--seeds", "0", "--steps", "2"]
    cmd += ["--fid-samples", "0", "--hold", "1", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (cell,) = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    assert cell["monitor"] == {
        "classifier_checkpoint": "bundled",
        "classifier_bn": True,
        "samples": 1024,
        "mode": "eval",
        "latents_seed": 10_000,
    }
    assert cell["hold"] == 1 and cell["fid_samples"] == 0 and cell["classifier_checkpoint"] is None
    prov = cell["provenance"]
    assert prov["command"]["line"].startswith("python ") and "--steps 2" in prov["command"]["line"]
    assert prov["config"]["unlearn_config"]["method"] == "d" and len(prov["inputs"]["vae"]["sha256"]) == 64
    assert run_report(tmp_path, check=True) == []  # summary.md / summary.csv regenerate from cells.jsonl


def test_goal_checks_apply_each_part_of_issue_17s_goal():
    from genunlearn.report import goal_checks

    row = {"median_first_below": 10, "held": 9, "seeds": 10, "median_fid_retain_delta": 1.5,
           "median_collateral_at_first": 0.03}  # fmt: skip
    assert goal_checks(row) == {"speed": True, "hold": True, "fid": True, "collateral": True}
    worse = {**row, "median_first_below": float("inf"), "held": 8, "median_fid_retain_delta": 1.51,
             "median_collateral_at_first": None}  # fmt: skip
    assert goal_checks(worse) == {"speed": False, "hold": False, "fid": False, "collateral": False}


def test_sweep_goal_block_lists_the_digits_meeting_each_part(tmp_path):
    """The generated goal table on a two-digit sweep: digit 9 meets everything, digit 8 only the FID part."""
    from genunlearn.report import GENERATORS

    def cell(forget, seed, first, ff_after, fid, coll):
        curve = [0.5] * first + [0.01] + [ff_after] * 100
        return {"method": "rep", "beta_o": 1e3, "ascent_weight": 1.0, "beta_r": 10.0, "lr": 1e-3, "optimizer": "adam",
                "loss_reduction": "sum", "forget": forget, "seed": seed, "steps": 101 + first, "checkpoint": None,
                "classifier_checkpoint": None, "status": "ok", "first_below": first, "stays_below": first,
                "held": ff_after < 0.02, "ff_initial": 0.5, "ff_final": ff_after, "ff_min": 0.01, "fid_retain": 10.0,
                "fid_retain_delta": fid, "time_per_step_s": 0.01, "curve": curve,
                "collateral_at_first": coll, "collateral_final": coll, "retained_tv_final": 0.05,
                "hold": 100}  # fmt: skip

    cells = [cell(9, k, 2, 0.01, 0.1, 0.02) for k in range(10)] + [cell(8, k, 30, 0.05, 0.5, 0.1) for k in range(10)]
    path = tmp_path / "cells.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cells))
    table = GENERATORS["sweep-goal"][0](tmp_path, ["beta_r", "cells.jsonl"])
    row = next(line for line in table.splitlines() if line.startswith("| rep |"))
    assert row.split(" | ")[2:] == ["9", "9", "8, 9", "9", "9 |"]


def test_collateral_floor_block_gives_each_digits_median_and_range_per_sweep(tmp_path):
    from genunlearn.report import GENERATORS, ReportError

    def cell(forget, seed, coll, tv):
        return {"method": "d", "lr": 1e-3, "optimizer": "adam", "forget": forget, "seed": seed, "steps": 10,
                "collateral_final": coll, "retained_tv_final": tv}  # fmt: skip

    for name, scale in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        cells = [cell(1, k, scale * c, 0.01 * scale) for k, c in enumerate((0.02, 0.04, 0.10))] + [
            cell(7, 0, 0.05, 0.02)
        ]
        (tmp_path / name / "cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cells))
    table = GENERATORS["collateral-floor"][0](tmp_path, ["a/cells.jsonl", "b/cells.jsonl"])
    lines = table.splitlines()
    assert lines[0] == "| digit left out of the data | `a` | `b` |"
    assert lines[2] == "| 1 | 4.0% (2.0-10.0%), TV 1.0% | 8.0% (4.0-20.0%), TV 2.0% |"
    assert lines[3].startswith("| 7 | 5.0% (5.0-5.0%)")
    assert "after 10 updates of `d` (lr 0.001, adam)" in table
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cells.jsonl").write_text(json.dumps({**cell(1, 0, 0.1, 0.1), "collateral_final": None}) + "\n")
    with pytest.raises(ReportError, match="no cells with a collateral reading"):
        GENERATORS["collateral-floor"][0](tmp_path, ["c/cells.jsonl"])


def test_lora_unlearn_block_gives_medians_hold_and_collateral(tmp_path):
    from genunlearn.report import GENERATORS

    row = {"config": "lora-r4", "lr": 1e-3, "seeds": 3, "trainable_parameters": 14296,
           "updates_to_unlearn": [4, None, 6], "reached": 2, "median_updates": 6,
           "forget_fraction_final": [0.0, 0.05, 0.01],
           "median_fid_retain_change": 0.5, "held": 1, "median_collateral_at_first": 0.125,
           "median_collateral_final": None}  # fmt: skip
    original = {"0": {"fid_retain": 11.0}, "1": {"fid_retain": 12.0}}
    data = {"unlearn": {"method": "rep", "model": "m", "steps": 120, "monitor": "1,024 latents", "fid_samples": 100,
                        "original": original, "summary": [row]}}  # fmt: skip
    (tmp_path / "lora.json").write_text(json.dumps(data))
    table = GENERATORS["lora-unlearn"][0](tmp_path, ["lora.json"])
    line = next(x for x in table.splitlines() if x.startswith("| 0.001 |"))
    assert line == "| 0.001 | lora-r4 | 14,296 | 6 (2/3) | 1/3 | 1.0% | +0.50 | 12.5% → — |"
    assert "median retain FID 11.50" in table
