"""Issue 18, part 2: interrupted runs resume to exactly the uninterrupted result (engine, CLI, SIGKILL, training)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from genunlearn.data.batching import BatchStream
from genunlearn.errors import CheckpointError
from genunlearn.eval.monitor import ForgetMonitor
from genunlearn.loop import Checkpointing, UnlearnConfig, read_checkpoint, unlearn
from genunlearn.methods import METHODS
from genunlearn.objectives import HatTerm, StandardTask
from tests.test_cli import run
from tests.test_correctness import BNDropNet, _mse

TIMES = ("step_time_s", "compute_time_s")
REPO = Path(__file__).resolve().parents[1]


def _problem():
    g = torch.Generator().manual_seed(0)
    retain = torch.randn(20, 7, generator=g)  # 20 examples in batches of 8: a new pass every 2 updates
    forget = torch.randn(12, 7, generator=g) + 1.0
    torch.manual_seed(0)
    model = BNDropNet()  # dropout and a noisy replacement term draw from the global random state
    clf = torch.nn.Linear(3, 2)
    torch.nn.init.normal_(clf.weight, generator=torch.Generator().manual_seed(4))
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(5))
    monitor = ForgetMonitor(generate=lambda m, zz: m(zz), classifier=clf, latents=z, forget_classes=[1], num_classes=2)
    hat = HatTerm(
        generate=lambda m, n: m(torch.randn(n, 4)), classifier=clf, forget_classes=[1], num_classes=2, samples=16
    )
    target = torch.randn(8, 3, generator=torch.Generator().manual_seed(6))

    def replacement(m):
        return ((m(torch.randn(8, 4)) - target) ** 2).sum()

    return model, retain, forget, monitor, hat, replacement


def _run(config, checkpoint=None, wrap=None, datasets=False):
    model, retain, forget, monitor, hat, replacement = _problem()
    if datasets:
        retain, forget = TensorDataset(retain), TensorDataset(forget)
    uses = METHODS[config.method]
    result = unlearn(
        model,
        StandardTask(_mse if not datasets else lambda m, b: _mse(m, b[0])),
        retain,
        forget,
        config,
        hat=hat if uses.uses_classifier else None,
        replacement=replacement if uses.uses_replacement else None,
        terms={"relabel": _relabel} if "relabel" in uses.terms else None,
        monitor=monitor,
        progress=False,
        checkpoint=checkpoint,
    )
    return model, result


def _relabel(m, xb_r, xb_f):
    """A stand-in relabelled-forget term (SalUn's): forget inputs towards noisy other targets (global RNG)."""
    return ((m(xb_f[:, :4]) - xb_f[:, 4:].flip(0) - 0.1 * torch.randn(len(xb_f), 3)) ** 2).mean()


def _untimed(result):
    summary = {k: v for k, v in result.summary().items() if "time" not in k}
    log = [{k: v for k, v in row.items() if k not in TIMES} for row in result.log]
    return summary, log


def _assert_same(a, b):
    (ma, ra), (mb, rb) = a, b
    for (k, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
    assert _untimed(ra) == _untimed(rb)
    assert [r["step"] for r in ra.log] == list(range(ra.steps_run + 1))


def _interrupt_at(monkeypatch, method: str, step: int, action=None):
    """The test hook: the method raises KeyboardInterrupt (mid-update, before the optimizer step) at ``step``."""
    cls = METHODS[method]
    original = cls.compute

    def compute(self, ctx):
        if ctx.step == step:
            if action is None:
                raise KeyboardInterrupt
            action()
        return original(self, ctx)

    monkeypatch.setattr(cls, "compute", compute)


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("s-asc", {"forget_cap": 1.02}),
        ("uno-s-hat", {}),
        ("rep", {}),
        ("uno-fd", {"early_stop": True}),
        ("salun", {"saliency_fraction": 0.3}),  # the mask, prepared once, travels in the checkpoint
        ("ngdiff", {"optimizer": "sgd"}),  # so does the adaptive step size
    ],
)
def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, method, extra):
    config = UnlearnConfig(method=method, steps=11, batch_size=8, beta_o=1.0, beta_h=5.0, stop_at=0.3, early_stop=False)
    config = UnlearnConfig(**{**config.__dict__, **extra})
    reference = _run(config)
    ck = Checkpointing(tmp_path / "ck.pt", every=3)
    assert _untimed(_run(config, ck)[1]) == _untimed(reference[1])  # checkpointing changes nothing
    (tmp_path / "ck.pt").unlink()
    with monkeypatch.context() as mp:
        _interrupt_at(mp, method, 7)
        with pytest.raises(KeyboardInterrupt):
            _run(config, ck)
    saved = read_checkpoint(tmp_path / "ck.pt")
    assert saved["step"] == 6 and not saved["loop"]["finished"]
    _assert_same(_run(config, ck), reference)
    assert read_checkpoint(tmp_path / "ck.pt")["loop"]["finished"]
    _assert_same(_run(config, ck), reference)  # resuming a finished run gives it back without computing


def test_first_sigint_finishes_the_update_saves_and_stops(tmp_path, monkeypatch):
    config = UnlearnConfig(method="s-asc", steps=9, batch_size=8, stop_at=None, forget_cap=1.02)
    reference = _run(config, datasets=True)  # the Dataset path: a DataLoader over the resumable sampler
    ck = Checkpointing(tmp_path / "ck.pt", every=0)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup / a background job
    with monkeypatch.context() as mp:
        _interrupt_at(mp, "s-asc", 4, action=lambda: signal.raise_signal(signal.SIGINT))
        with pytest.raises(KeyboardInterrupt, match="after update 5"):
            _run(config, ck, datasets=True)
    assert read_checkpoint(tmp_path / "ck.pt")["step"] == 5
    assert signal.getsignal(signal.SIGINT) is before  # the run put the caller's handler back
    _assert_same(_run(config, ck, datasets=True), reference)
    _assert_same(_run(config), reference)  # and the tensor path gives the same run (no hidden global draw)


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    ck = Checkpointing(tmp_path / "ck.pt", every=2)
    _run(UnlearnConfig(method="s", steps=3, batch_size=8, stop_at=None), ck)
    with pytest.raises(CheckpointError, match="different engine config.*lr"):
        _run(UnlearnConfig(method="s", steps=3, batch_size=8, stop_at=None, lr=0.1), ck)


def test_batch_stream_position_is_exact_across_passes():
    data = torch.arange(10)
    a = BatchStream(data, 4, torch.Generator().manual_seed(3))  # 2 batches per pass, 2 examples left out
    [next(a) for _ in range(5)]
    state = a.state_dict()
    rest = [next(a) for _ in range(6)]
    b = BatchStream(data, 4, torch.Generator().manual_seed(99))
    b.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(rest, [next(b) for _ in range(6)], strict=True))


# --- the command line -------------------------------------------------------------------------------------------


def _cli_args(out, *extra):
    return [
        "unlearn",
        "--model",
        "tests.resume_model:factory",
        "--method",
        "s-asc",
        "--forget-cap",
        "1.01",
        "--steps",
        "8",
        "--batch-size",
        "8",
        "--no-early-stop",
        "--monitor-samples",
        "64",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def _outputs(out):
    summary = json.loads((out / "summary.json").read_text())
    keep = {
        k: v
        for k, v in summary.items()
        if "time" not in k and k not in ("provenance", "command", "resumed_from_update")
    }
    log = [line.split(",") for line in (out / "log.csv").read_text().splitlines()]
    timed = [i for i, c in enumerate(log[0]) if c in TIMES]
    log = [[v for i, v in enumerate(row) if i not in timed] for row in log]
    return load_file(str(out / "model.safetensors")), keep, log


def _assert_same_outputs(a, b):
    wa, sa, la = _outputs(a)
    wb, sb, lb = _outputs(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sa == sb and la == lb


def test_cli_interrupt_then_resume_equals_uninterrupted(tmp_path, capsys, monkeypatch):
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert run(_cli_args(ref), capsys)[0] == 0
    with monkeypatch.context() as mp:
        _interrupt_at(mp, "s-asc", 5)
        code, _, err = run([*_cli_args(out), "--checkpoint-every", "2"], capsys)
    assert code == 130 and "--resume` continues from the checkpoint of update 4" in err
    assert not (out / "summary.json").exists() and not (out / "model.safetensors").exists()
    code, _, err = run(_cli_args(out), capsys)
    assert code == 2 and "holds an unfinished run of this config" in err and len(err.strip().splitlines()) == 1
    code, out_text, err = run([*_cli_args(out), "--resume"], capsys)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["resumed_from_update"] == 4
    assert not (out / "checkpoint.pt").exists()
    _assert_same_outputs(out, ref)
    code, out_text, _ = run([*_cli_args(out), "--resume"], capsys)  # complete: reported, nothing recomputed
    assert code == 0 and "status" in out_text


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path, capsys):
    """A real SIGKILL of a subprocess mid-run (its steps slowed down by a sleep that changes no number)."""
    out, ref = tmp_path / "killed", tmp_path / "ref"
    args = ["--model", "tests.resume_model:factory", "--method", "uno", "--steps", "40", "--batch-size", "8"]
    args += ["--no-early-stop", "--monitor-samples", "32", "--quiet", "--checkpoint-every", "3"]
    env = {**os.environ, "RESUME_MODEL_SLEEP": "0.03", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genunlearn.cli", "unlearn", *args, "--out", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        time.sleep(0.05)  # somewhere in the next updates, possibly while a checkpoint is being written
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    step = read_checkpoint(out / "checkpoint.pt")["step"]
    assert 3 <= step < 40
    assert run(["unlearn", *args, "--out", str(out), "--resume"], capsys)[0] == 0
    assert run(["unlearn", *args, "--out", str(ref)], capsys)[0] == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from_update"] == step
    assert not list(out.glob(".*.tmp"))
    _assert_same_outputs(out, ref)


# --- genunlearn train ---------------------------------------------------------------------------------------------


def _train_cfg(d):
    from genunlearn.train import TrainConfig

    return TrainConfig(model="vae", dataset="tiny", data_dir=str(d), epochs=3, batch_size=16, device="cpu")


def _weights(path):
    return load_file(str(path / "model.safetensors"))


@pytest.fixture
def tiny_train(tmp_path):
    from genunlearn.train import train
    from tests.test_data import _write_tiny_dataset

    d = _write_tiny_dataset(tmp_path / "tiny", n_train=40, n_test=8, classes=10)
    train(_train_cfg(d), tmp_path / "ref", progress=False)
    return d, _weights(tmp_path / "ref")


def test_train_interrupted_mid_epoch_resumes_to_the_same_weights(tmp_path, monkeypatch, tiny_train):
    import genunlearn.train as tr

    d, ref = tiny_train
    calls = {"n": 0}
    original = tr.vae_loss

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2 of 3 (3 batches per epoch), mid-epoch
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(tr, "vae_loss", interrupting)
        with pytest.raises(KeyboardInterrupt):
            tr.train(_train_cfg(d), tmp_path / "a", progress=False)
    tr.train(_train_cfg(d), tmp_path / "a", progress=False)
    got = _weights(tmp_path / "a")
    assert all(torch.equal(got[k], ref[k]) for k in ref)


@pytest.mark.parametrize("write", [0, 1, 2])
def test_train_killed_between_its_files_resumes_to_the_same_weights(tmp_path, monkeypatch, tiny_train, write):
    """A kill after any of the per-epoch writes (checkpoint, weights, state) must not pair files of two epochs."""
    import genunlearn.checkpoints as ckpts

    d, ref = tiny_train
    calls = {"n": 0}
    original = ckpts.atomic_write

    def dying(path, writer):
        result = original(path, writer)
        calls["n"] += 1
        if calls["n"] == 3 + write + 1:  # epoch 2's writes (3 per epoch): die right after one of them
            raise KeyboardInterrupt
        return result

    import genunlearn.train as tr

    with monkeypatch.context() as mp:
        mp.setattr(ckpts, "atomic_write", dying)
        mp.setattr(tr, "atomic_write", dying)
        with pytest.raises(KeyboardInterrupt):
            tr.train(_train_cfg(d), tmp_path / "a", progress=False)
    tr.train(_train_cfg(d), tmp_path / "a", progress=False)
    got = _weights(tmp_path / "a")
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_train_refuses_to_restart_over_a_run_without_overwrite(tmp_path, capsys, tiny_train):
    d, _ = tiny_train
    base = ["train", "vae", "--dataset", "tiny", "--data-dir", str(d), "--epochs", "1", "--out", str(tmp_path / "r")]
    assert run(base, capsys)[0] == 0
    code, _, err = run([*base, "--no-resume"], capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert run([*base, "--no-resume", "--overwrite"], capsys)[0] == 0
