"""The command line as a user runs it: outputs, one-line errors with exit status 2."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from genunlearn.cli import main
from genunlearn.models import MNISTVAE, load_model


def run(argv, capsys):
    old = sys.argv
    sys.argv = ["genunlearn", *argv]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
            raise SystemExit(0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_help_models_methods(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "unlearn" in out and "train" in out
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "mnist-vae" in out and "mnist-classifier" in out
    code, out, _ = run(["methods"], capsys)
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and {"a", "a-d", "sa", "s", "uno", "uno-s", "s-hat", "uno-hat", "uno-s-hat", "h"} <= set(names)


def test_unlearn_writes_summary_log_and_model(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run(
        [
            "unlearn",
            "--forget",
            "1",
            "--method",
            "uno",
            "--steps",
            "3",
            "--no-early-stop",
            "--monitor-samples",
            "64",
            "--fid-samples",
            "600",
            "--quiet",
            "--out",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    for key in (
        "method",
        "seed",
        "steps_run",
        "updates_to_unlearn",
        "time_to_unlearn_s",
        "time_per_step_s",
        "forget_fraction_initial",
        "forget_fraction_final",
        "fid_original",
        "fid_final",
        "config",
        "versions",
    ):
        assert key in summary, key
    assert summary["steps_run"] == 3 and summary["method"] == "uno"
    assert summary["objective"]["loss_reduction"] == "sum" and summary["config"]["optimizer"] == "adam"
    assert "loss_reduction" not in summary["config"]  # recorded only where it is applied
    assert summary["fid_original"] > 0 and summary["fid_final"] > 0
    assert summary["forget_set_size"] == 6742
    rows = (out_dir / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("step,compute_time_s,forget_fraction")
    new = load_model("mnist-vae", out_dir / "model.safetensors")
    old = load_model("mnist-vae")
    assert isinstance(new, MNISTVAE)
    assert not torch.equal(new.decoder[3].weight, old.decoder[3].weight)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["unlearn", "--forget", "12"], "error: forget class 12 does not exist in mnist"),
        (["unlearn", "--method", "nope"], "error: unknown method 'nope'"),
        (["unlearn", "--checkpoint", "/nonexistent/vae.safetensors"], "vae.safetensors: checkpoint not found"),
        (["unlearn", "--method", "s", "--lr", "-1"], "error: lr must be > 0"),
        (["unlearn", "--forget", "x"], "expected class labels"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, argv, message):
    code, _, err = run([*argv, "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_wrong_checkpoint_shapes_and_no_overwrite(tmp_path, capsys):
    from genunlearn.checkpoints import save_weights

    save_weights(MNISTVAE(hidden=100), tmp_path / "small.safetensors")
    code, _, err = run(
        ["unlearn", "--checkpoint", str(tmp_path / "small.safetensors"), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "shape mismatch for" in err and len(err.strip().splitlines()) == 1
    save_weights(load_model("mnist-vae"), tmp_path / "mine" / "model.safetensors")
    before = (tmp_path / "mine" / "model.safetensors").read_bytes()
    code, _, err = run(
        [
            "unlearn",
            "--checkpoint",
            str(tmp_path / "mine" / "model.safetensors"),
            "--steps",
            "1",
            "--out",
            str(tmp_path / "mine"),
        ],
        capsys,
    )
    assert code == 2 and "refusing to overwrite the input checkpoint" in err
    assert (tmp_path / "mine" / "model.safetensors").read_bytes() == before


def test_unlearn_records_every_option(tmp_path, capsys):
    out_dir = tmp_path / "o"
    argv = [
        "unlearn",
        "--method",
        "s-asc",
        "--ascent-weight",
        "2",
        "--forget-cap",
        "1.2",
        "--precision",
        "bf16",
        "--optimizer",
        "sgd",
        "--loss-reduction",
        "mean",
        "--bn-mode",
        "eval",
        "--steps",
        "2",
        "--no-early-stop",
        "--monitor-samples",
        "32",
        "--forget",
        "7",
        "--seed",
        "3",
        "--quiet",
        "--out",
        str(out_dir),
    ]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    cfg = json.loads((out_dir / "summary.json").read_text())["config"]
    assert (cfg["method"], cfg["ascent_weight"], cfg["forget_cap"], cfg["precision"]) == ("s-asc", 2.0, 1.2, "bf16")
    assert (cfg["optimizer"], cfg["bn_mode"], cfg["seed"]) == ("sgd", "eval", 3)
    assert json.loads((out_dir / "summary.json").read_text())["objective"]["loss_reduction"] == "mean"
