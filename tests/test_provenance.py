"""Provenance: what every results file records about its origin, and the compact per-seed records."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from genunlearn.experiments.records import (
    compact_curves,
    dumps_compact,
    event_stats,
    expand_curves,
    read_seed_record,
    write_seed_record,
)
from genunlearn.provenance import command_line, git_info, jsonable, run_record, summarise_provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


@dataclass(frozen=True)
class _Cfg:
    method: str = "s"
    forget: tuple[int, ...] = (1, 7)
    path: Path = Path("x/y")


def test_run_record_has_command_config_revision_versions_machine_date(monkeypatch):
    monkeypatch.setenv("GENUNLEARN_SHARED", "/data/shared")
    argv = ["/home/u/.venv/bin/genunlearn", "bench", "mnist", "--title", "two words", "--out", "r"]
    rec = run_record(_Cfg(), argv=argv, inputs={"missing": "does/not/exist.safetensors", "none": None})
    assert rec["command"]["line"] == "genunlearn bench mnist --title 'two words' --out r"
    assert rec["command"]["argv"] == argv and rec["command"]["executable"]
    assert rec["command"]["env"]["GENUNLEARN_SHARED"] == "/data/shared"
    assert rec["config"] == {"method": "s", "forget": [1, 7], "path": "x/y"}
    assert set(rec["git"]) >= {"commit", "dirty", "branch"}
    assert rec["versions"]["torch"] and rec["versions"]["genunlearn"]
    assert rec["machine"]["logical_cpus"] >= 1 and rec["machine"]["torch_threads"] >= 1 and rec["machine"]["cpu"]
    assert "cuda" in rec["machine"]
    load = rec["machine"]["load_average"]
    assert load is None or (len(load) == 3 and all(x >= 0 for x in load))
    assert datetime.fromisoformat(rec["date"]).utcoffset().total_seconds() == 0
    missing = {"path": "does/not/exist.safetensors", "sha256": None, "bytes": None}
    assert rec["inputs"] == {"missing": missing, "none": None}
    json.dumps(rec)  # JSON-able as it is


def test_command_line_for_scripts_and_modules(tmp_path):
    assert command_line(["benchmarks/sweep.py", "--seeds", "0,1"]) == "python benchmarks/sweep.py --seeds 0,1"
    module = str(Path("/x/src/genunlearn/report.py"))
    assert command_line([module, "--check"]) == "python -m genunlearn.report --check"


def test_input_files_are_fingerprinted(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    rec = run_record(inputs={"w": f})
    assert rec["inputs"]["w"]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert rec["inputs"]["w"]["bytes"] == 3


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@needs_git
def test_git_dirty_flag_follows_tracked_files(tmp_path):
    repo = tmp_path / "checkout"
    pkg = repo / "src" / "genunlearn"
    pkg.mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'genunlearn'\n")
    (pkg / "__init__.py").write_text("x = 1\n")
    (repo / "results").mkdir()
    (repo / "results" / "cells.jsonl").write_text("{}\n")
    _git(repo, "init", "-q", "-b", "trunk")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    head = _git(repo, "rev-parse", "HEAD")
    info = git_info(pkg)
    assert info == {
        "commit": head,
        "dirty": False,
        "code_dirty": False,
        "dirty_files": [],
        "branch": "trunk",
        "source": str(repo.resolve()),
    }
    (repo / "notes.txt").write_text("untracked files do not make the checkout dirty\n")
    assert git_info(pkg)["dirty"] is False
    (repo / "results" / "cells.jsonl").write_text("{}\n{}\n")  # a rerun rewrites its committed results
    info = git_info(pkg)
    assert info["dirty"] is True and info["code_dirty"] is False and info["dirty_files"] == ["results/cells.jsonl"]
    (pkg / "__init__.py").write_text("x = 2\n")
    info = git_info(pkg)
    assert info["dirty"] is True and info["code_dirty"] is True and info["commit"] == head
    assert info["dirty_files"] == ["results/cells.jsonl", "src/genunlearn/__init__.py"]


def test_installed_copy_outside_a_checkout_records_unknown_commit(tmp_path):
    pkg = tmp_path / "lib" / "site-packages" / "genunlearn"
    pkg.mkdir(parents=True)
    info = git_info(pkg)
    assert info["commit"] == "unknown" and info["dirty"] is None and info["branch"] is None
    assert info["code_dirty"] is None
    # a source tree that is not a git checkout (e.g. an unpacked sdist)
    src = tmp_path / "sdist" / "src" / "genunlearn"
    src.mkdir(parents=True)
    (tmp_path / "sdist" / "pyproject.toml").write_text("")
    assert git_info(src)["commit"] == "unknown"


def test_summarise_provenance_counts_commits_and_dirty_runs():
    recs = [
        {"git": {"commit": "a", "dirty": False}, "date": "2026-01-02T00:00:00+00:00"},
        {"git": {"commit": "a", "dirty": True}, "date": "2026-01-01T00:00:00+00:00"},
        None,
    ]
    s = summarise_provenance(recs)
    assert s["commits"] == {"a": 2} and s["dirty_runs"] == 1 and s["without_provenance"] == 1
    assert s["first_date"].startswith("2026-01-01") and s["last_date"].startswith("2026-01-02")


def test_jsonable_handles_nested_dataclasses_and_non_finite():
    out = jsonable({"c": _Cfg(), "t": (1, 2.5), "inf": math.inf})
    assert out["c"]["forget"] == [1, 7] and out["t"] == [1, 2.5] and math.isinf(out["inf"])


# --- compact per-seed records -------------------------------------------------------------------------------
def _curves(k: int = 531):
    rob = [max(0, 90 - i // 3) / 1024 for i in range(k)]
    ref = [max(0, 12 - i // 40) / 128 for i in range(k)]
    rob[5] = math.nan  # a reading the monitor did not make
    times = [0.0131 * i + 1e-7 * (i % 7) for i in range(k)]
    return {"forget_fraction_robust": rob, "forget_fraction_ref": ref, "compute_time_s": times}


def test_compact_curves_are_exact_for_fractions_and_microsecond_times():
    curve = _curves()
    enc = compact_curves(curve, {"forget_fraction_robust": 1024, "forget_fraction_ref": 128})
    counts = enc["forget_fraction_robust"]["counts"]
    assert counts[:3] == [90, 90, 90] and counts[5] is None
    dec = expand_curves(json.loads(json.dumps(enc)))
    for name in ("forget_fraction_robust", "forget_fraction_ref"):
        a, b = dec[name], curve[name]
        assert all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))
    assert max(abs(x - y) for x, y in zip(dec["compute_time_s"], curve["compute_time_s"], strict=True)) <= 5.01e-7


def test_fractions_that_are_not_counts_stay_floats():
    enc = compact_curves({"forget_fraction_robust": [0.1, 0.3]}, {"forget_fraction_robust": 1024})
    assert enc["forget_fraction_robust"] == [0.1, 0.3]
    assert expand_curves(enc)["forget_fraction_robust"] == [0.1, 0.3]
    assert expand_curves({"forget_fraction_robust": [0.5]}) == {"forget_fraction_robust": [0.5]}  # old records


def test_seed_record_round_trip_and_size(tmp_path):
    rec = {"entry": "uno", "seed": 3, "curve": _curves(), "config": {"steps": 530}, "provenance": run_record({})}
    path = write_seed_record(tmp_path / "seed3.json", rec, {"forget_fraction_robust": 1024, "forget_fraction_ref": 128})
    size = path.stat().st_size
    assert size < 12_000, size  # 531 readings x 3 curves + provenance: ~9 kB (plain floats: ~32 kB)
    back = read_seed_record(path)
    assert back["curve"]["forget_fraction_ref"] == rec["curve"]["forget_fraction_ref"]
    assert back["provenance"] == json.loads(json.dumps(rec["provenance"]))


def test_dumps_compact_keeps_scalar_lists_on_one_line():
    text = dumps_compact({"a": [1, 2, 3], "b": {"c": [None, 0.5]}, "d": [{"e": 1}]})
    assert '"a": [1,2,3]' in text and '"c": [null,0.5]' in text
    assert json.loads(text) == {"a": [1, 2, 3], "b": {"c": [None, 0.5]}, "d": [{"e": 1}]}


def test_event_stats_median_counts_never_as_latest():
    st = event_stats([4, None, 2, None, None])
    assert st["median"] is None and st["median_reached"] == 3 and (st["min"], st["max"]) == (2, 4)
    st = event_stats([4, None, 2, 8])
    assert st["median"] == 6 and st["reached"] == 3
    assert event_stats([])["median"] is None


def test_git_state_is_taken_once_per_process(monkeypatch):
    import genunlearn.provenance as prov

    calls = []
    monkeypatch.setattr(prov, "git_info", lambda: calls.append(1) or {"commit": "c", "dirty": len(calls) > 1})
    prov._process_git.cache_clear()
    try:
        prov.record_start()
        first = run_record()["git"]
        assert run_record()["git"] == first == {"commit": "c", "dirty": False} and len(calls) == 1
    finally:
        prov._process_git.cache_clear()
