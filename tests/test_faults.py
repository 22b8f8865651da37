"""Issue 18, part 2: disk full, read-only output, an output directory holding another run, pickled checkpoints.

Each failure is one line on stderr with exit status 2, leaves nothing half-written and never touches the input.
The machine's tests run as root (chmod cannot make a directory read-only for root), so the operating system's
errors are simulated where they happen: in the write of a file, or in the first file created in a directory.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import shutil
import tempfile

import pytest
import torch

import genunlearn.checkpoints as ckpts
import genunlearn.outputs as outputs
from genunlearn.checkpoints import load_state, safe_torch_load, save_weights
from genunlearn.errors import CheckpointError, OutputError
from genunlearn.models import MNISTVAE, load_model
from genunlearn.models.registry import bundled_weights
from tests.test_cli import run

TINY = ["--model", "tests.resume_model:factory", "--method", "s", "--batch-size", "8", "--monitor-samples", "16"]


def _tiny(out, *extra):
    return ["unlearn", *TINY, "--steps", "4", "--no-early-stop", "--quiet", "--out", str(out), *extra]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _snapshot(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


# --- an output directory that holds another run ----------------------------------------------------------------


def test_output_directory_of_another_config_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(_tiny(out), capsys)[0] == 0
    before = _snapshot(out)
    code, _, err = run(_tiny(out, "--lr", "0.01"), capsys)
    line = _one_line(err)
    assert code == 2 and "holds another run with a different config ([unlearn] lr: 0.01 here, 0.001 there)" in line
    code, _, err = run(_tiny(out, "--lr", "0.01", "--resume"), capsys)
    assert code == 2 and "different config" in _one_line(err)
    assert _snapshot(out) == before
    code, _, err = run(_tiny(out), capsys)  # the same config, complete
    assert code == 2 and "already holds this run, complete" in _one_line(err)
    assert _snapshot(out) == before
    code, _, err = run(_tiny(out, "--lr", "0.01", "--overwrite"), capsys)
    assert code == 0, err
    assert "lr = 0.01" in (out / "config.toml").read_text()


def test_outputs_without_a_config_are_not_replaced(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"someone's weights")
    (out / "notes.txt").write_text("mine")
    code, _, err = run(_tiny(out), capsys)
    assert code == 2 and "no config.toml" in _one_line(err)
    assert (out / "model.safetensors").read_bytes() == b"someone's weights"
    assert run(_tiny(out, "--overwrite"), capsys)[0] == 0
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite removes only the run's own files


def test_resume_and_overwrite_together_is_an_error(tmp_path, capsys):
    code, _, err = run(_tiny(tmp_path / "r", "--resume", "--overwrite"), capsys)
    assert code == 2 and "contradict" in _one_line(err)


# --- disk full ----------------------------------------------------------------------------------------------------


def _enospc_after(monkeypatch, name: str, fraction: float = 0.5):
    """Writes to files named ``name`` get ``fraction`` of their bytes to disk, then fail with ENOSPC."""
    original = ckpts.atomic_write

    def full(path, writer):
        if path.name != name:
            return original(path, writer)

        def partial(tmp):
            writer(tmp)
            data = open(tmp, "rb").read()
            open(tmp, "wb").write(data[: int(len(data) * fraction)])
            raise OSError(errno.ENOSPC, "No space left on device")

        return original(path, partial)

    monkeypatch.setattr(ckpts, "atomic_write", full)
    import genunlearn.loop as loop

    monkeypatch.setattr(loop, "atomic_write", full)


def test_disk_full_writing_the_weights_is_one_line_and_resumable(tmp_path, capsys, monkeypatch):
    """MNIST VAE from a copy of the bundled weights: the input stays byte-identical whatever fails."""
    src = tmp_path / "input.safetensors"
    shutil.copy(bundled_weights("mnist-vae"), src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "run"
    args = ["unlearn", "--checkpoint", str(src), "--method", "s", "--steps", "3", "--no-early-stop"]
    args += ["--monitor-samples", "16", "--quiet", "--out", str(out)]
    with monkeypatch.context() as mp:
        _enospc_after(mp, "model.safetensors")
        code, _, err = run(args, capsys)
    line = _one_line(err)
    assert code == 2 and f"{out / 'model.safetensors'}: cannot write (No space left on device)" in line
    assert not (out / "model.safetensors").exists() and not (out / "summary.json").exists()
    assert not list(out.glob(".*.tmp"))  # no half-written temporary file either
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    code, _, err = run([*args, "--resume"], capsys)  # space freed: the final checkpoint finishes the run at once
    assert code == 0, err
    assert load_model("mnist-vae", out / "model.safetensors") is not None
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_disk_full_writing_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    original = ckpts.atomic_write

    def full_on_second_checkpoint(path, writer):
        if path.name == "checkpoint.pt":
            calls["n"] += 1
            if calls["n"] == 2:
                raise ckpts.write_error(path, OSError(errno.ENOSPC, "No space left on device"))
        return original(path, writer)

    import genunlearn.loop as loop

    monkeypatch.setattr(loop, "atomic_write", full_on_second_checkpoint)
    code, _, err = run(_tiny(out, "--checkpoint-every", "2"), capsys)
    assert code == 2 and "checkpoint.pt: cannot write (No space left on device)" in _one_line(err)
    from genunlearn.loop import read_checkpoint

    assert read_checkpoint(out / "checkpoint.pt")["step"] == 2


# --- a read-only output directory -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code_", "reason"), [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")]
)
def test_read_only_output_fails_before_any_work(tmp_path, capsys, monkeypatch, code_, reason):
    out = tmp_path / "ro"
    out.mkdir()

    def refuse(*args, **kwargs):
        raise OSError(code_, reason)

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)
    import genunlearn.experiments.session as session

    monkeypatch.setattr(session, "UnlearnSession", lambda *a, **k: pytest.fail("work started before the check"))
    code, _, err = run(_tiny(out), capsys)
    assert code == 2 and f"{out}: cannot write ({reason}); choose a writable --out" in _one_line(err)
    assert list(out.iterdir()) == []


def test_read_only_output_for_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        outputs.tempfile,
        "mkstemp",
        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")),
    )
    code, _, err = run(["train", "vae", "--epochs", "1", "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "Read-only file system" in _one_line(err)


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0, reason="root ignores modes"
)
def test_read_only_output_for_real(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = run(_tiny(out), capsys)
        assert code == 2 and "cannot write" in _one_line(err)
    finally:
        out.chmod(0o755)


def test_atomic_write_error_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.json"
    ckpts.atomic_write_json(target, {"a": 1})

    def failing(tmp):
        open(tmp, "w").write('{"a": 2, "b"')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        ckpts.atomic_write(target, failing)
    assert target.read_text() == '{\n  "a": 1\n}\n' and not list(tmp_path.glob(".*.tmp"))
    assert tempfile.gettempdir()  # (the module stays importable after the monkeypatches elsewhere)


# --- pickled checkpoints ----------------------------------------------------------------------------------------


def _pickled_checkpoint(path):
    """A torch file holding the VAE's weights and, beside them, a Python object (as training scripts often save)."""
    torch.save({"state_dict": MNISTVAE().state_dict(), "args": argparse.Namespace(lr=1e-3)}, path)


def test_pickle_is_refused_with_the_reason_unless_allowed(tmp_path, capsys):
    pt = tmp_path / "vae.pt"
    _pickled_checkpoint(pt)
    with pytest.raises(CheckpointError, match="arbitrary code.*--allow-pickle"):
        load_state(pt)
    assert set(load_state(pt, allow_pickle=True)) == set(MNISTVAE().state_dict())
    out = tmp_path / "run"
    args = ["unlearn", "--checkpoint", str(pt), "--method", "s", "--steps", "1", "--monitor-samples", "16"]
    args += ["--quiet", "--out", str(out)]
    code, _, err = run(args, capsys)
    line = _one_line(err)
    assert code == 2 and "holds pickled Python objects" in line and "argparse.Namespace" in line
    assert "--allow-pickle" in line and not (out / "model.safetensors").exists()
    code, _, err = run([*args, "--allow-pickle"], capsys)
    assert code == 0, err


def test_file_format_is_read_from_the_content(tmp_path):
    weights = MNISTVAE().state_dict()
    odd = tmp_path / "weights.pt"  # safetensors content under a torch name
    save_weights(weights, odd)
    assert ckpts.file_format(odd) == "safetensors" and set(load_state(odd)) == set(weights)
    plain = tmp_path / "plain.bin"
    torch.save(weights, plain)  # tensors only: weights_only reads it
    assert ckpts.file_format(plain) == "torch-zip" and set(load_state(plain)) == set(weights)
    legacy = tmp_path / "legacy.pt"
    torch.save(weights, legacy, _use_new_zipfile_serialization=False)
    assert ckpts.file_format(legacy) == "pickle" and set(load_state(legacy)) == set(weights)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_state(garbage)


def test_an_optimizer_state_from_elsewhere_is_refused_on_resume(tmp_path, capsys):
    """A training directory of the old layout whose optimizer.pt holds a pickled object."""
    from genunlearn.train import TrainConfig, train
    from tests.test_data import _write_tiny_dataset

    d = _write_tiny_dataset(tmp_path / "tiny", n_train=40, n_test=8, classes=10)
    cfg = TrainConfig(model="vae", dataset="tiny", data_dir=str(d), epochs=2, batch_size=16, device="cpu")
    out = tmp_path / "t"
    train(cfg, out, progress=False, stop_after=1)
    (out / "checkpoint.pt").unlink()  # as the old code left it: model.safetensors + optimizer.pt + state.json
    torch.save({"state": {}, "param_groups": [], "note": argparse.Namespace(x=1)}, out / "optimizer.pt")
    with pytest.raises(CheckpointError, match="optimizer.pt: holds pickled Python objects"):
        train(cfg, out, progress=False)
    with pytest.raises(CheckpointError, match="file not found"):
        safe_torch_load(tmp_path / "nothing.pt")
