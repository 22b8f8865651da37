"""Conditional replacement unlearning on the MNIST DiT through the general engine (issue 12), on a tiny DiT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
from genunlearn.errors import ConfigError
from genunlearn.experiments.session import UnlearnSession
from genunlearn.loop import UnlearnConfig
from genunlearn.models.mnist_dit import MnistDiT
from genunlearn.objectives import ObjectiveConfig
from tests.test_cli import run

ROOT = Path(__file__).resolve().parents[1]


def _session(path, **data):
    return UnlearnSession(
        ModelConfig(name="mnist-dit", checkpoint=str(path), options={"sampler_steps": 2, "guidance_scale": 1.5}),
        DataConfig(**{"forget": (1,), "replace_with": (7,), **data}),
        MonitorConfig(samples=16),
        device="cpu",
        loss_reduction="mean",
    )


def test_replacement_session_data_monitor_and_class_accuracy(tiny_dit):
    s = _session(tiny_dit)
    x_t, y_t = s.retain_data
    x_f, y_f = s.forget_data
    assert set(y_t.tolist()) == {7} and set(y_f.tolist()) == {1} and x_t.shape[1:] == (1, 28, 28)
    mon = s.monitor(0)
    assert mon.forget_classes == (1,) and mon.latents.shape == (16, 1, 28, 28)
    acc = s.class_accuracy(s.fresh_model(), 4)
    assert set(acc["accuracy"]) == {str(c) for c in range(10)} and sum(acc["counts"]["3"]) == 4
    assert s.kept_classes == (0, 2, 3, 4, 5, 6, 7, 8, 9)
    assert s.samples(s.fresh_model(), 9).shape == (9, 1, 28, 28)


@pytest.mark.parametrize("method", ["s", "uno", "uno-fd", "d"])
def test_replacement_methods_run_on_the_dit_and_move_it(tiny_dit, method):
    s = _session(tiny_dit)
    before = torch.cat([p.detach().reshape(-1) for p in s.fresh_model().parameters()])
    cfg = UnlearnConfig(method=method, steps=2, batch_size=8, lr=1e-3, beta_o=1.0, stop_at=None)
    model, res = s.run(cfg, ObjectiveConfig(loss_reduction="mean"), progress=False)
    assert res.steps_run == 2 and not res.diverged
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert not torch.equal(before, after)


def test_second_order_steps_select_the_math_attention_kernel(tiny_dit, monkeypatch):
    """UNO differentiates through the attention's gradient: the loop must select the MATH kernel for it (the
    fused CPU kernel has no second derivative) and leave first-order steps alone."""
    import genunlearn.loop as loop

    seen = []
    real = loop.attention_kernels
    monkeypatch.setattr(loop, "attention_kernels", lambda flag: seen.append(flag) or real(flag))
    s = _session(tiny_dit)
    for method in ("uno-s", "s"):
        seen.clear()
        cfg = UnlearnConfig(method=method, steps=2, batch_size=4, beta_o=1.0, stop_at=None)
        s.run(cfg, ObjectiveConfig(loss_reduction="mean"), progress=False)
        assert seen == ([True, False] if method == "uno-s" else [False, False])
    monkeypatch.setattr(loop, "attention_kernels", lambda flag: real(False))  # what happens without it
    with pytest.raises(RuntimeError, match="derivative"):
        s.run(UnlearnConfig(method="uno", steps=1, batch_size=4, stop_at=None), progress=False)


def test_classifier_assisted_methods_are_refused_on_a_non_differentiable_sampler(tiny_dit):
    s = _session(tiny_dit)
    with pytest.raises(ConfigError, match="differentiable sampler"):
        s.run(UnlearnConfig(method="s-hat", steps=1, stop_at=None), progress=False)


def test_dit_through_the_cli_with_a_config_file(tiny_dit, tmp_path, capsys):
    cfg = tmp_path / "dit.toml"
    cfg.write_text(
        f'[model]\nname = "mnist-dit"\ncheckpoint = "{tiny_dit}"\noptions = {{sampler_steps = 2}}\n'
        '[data]\nforget = [1]\nreplace_with = [7]\n[objective]\nloss_reduction = "mean"\n'
        '[unlearn]\nmethod = "uno"\nsteps = 2\nbatch_size = 4\nlr = 1e-4\nstop_at = 0.0\n[monitor]\nsamples = 8\n'
    )
    code, out, err = run(["unlearn", "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["replace_with"] == [7] and summary["steps_run"] == 2
    assert summary["forget_fraction_initial"] is not None
    from genunlearn.models import load_model

    reloaded = load_model("mnist-dit", tmp_path / "o" / "model.safetensors")  # the config travels with it
    assert isinstance(reloaded, MnistDiT) and reloaded.config.num_layers == 1


def test_selective_amnesia_on_the_dit_through_the_cli(tiny_dit, tmp_path, capsys):
    """`unlearn --method amnesia` on a class-conditional DiT: the session builds SA's diffusion terms (a pool from
    the model's own sampler, its Fisher) and the run completes; the summary records the terms' setup time."""
    argv = ["unlearn", "--model", "mnist-dit", "--checkpoint", str(tiny_dit), "--forget", "1", "--method", "amnesia"]
    argv += ["--steps", "2", "--batch-size", "4", "--fisher-samples", "10", "--monitor-samples", "8", "--no-early-stop"]
    argv += ["--loss-reduction", "mean", "--out", str(tmp_path / "sa"), "--quiet"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "sa" / "summary.json").read_text())
    assert summary["steps_run"] == 2 and summary["forget_fraction_final"] is not None
    assert summary["terms_setup_s"] > 0  # the pool and the Fisher were built


def test_quick_dit_bench_end_to_end_and_resume(tiny_dit, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "mnist-dit", "--quick", "--checkpoint", str(tiny_dit), "--methods", "s,uno", "--steps", "2"]
    argv += ["--monitor-samples", "8", "--class-samples", "2", "--fid-samples", "20", "--sampler-steps", "2"]
    argv += ["--sampler", "ddim", "--guidance", "1.5"]
    code, stdout, err = run([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    assert "replace digit 1 by 7" in stdout and "| UNO |" in stdout and "sampler ddim 2 steps, guidance 1.5" in stdout
    assert "warning: no independent classifier (--independent-classifier): one classifier's readings\n" in err
    assert "independent" not in stdout.split("## Audit")[0]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["sampler"] == "ddim" and results["settings"]["guidance_scale"] == 1.5
    assert {r["method"] for r in results["rows"]} == {"s", "uno"} and results["peak_memory_bytes"] == {}
    for f in ("class_accuracy.png", "forget_label_histograms.png", "forget_fraction.png", "grid-uno.png"):
        assert (out / "figures" / f).is_file(), f
    record = (out / "runs" / "uno" / "seed0.json").read_text()
    code, stdout2, err = run([*argv, "--out", str(out)], capsys)  # resumes from the records
    assert code == 0, err and (out / "runs" / "uno" / "seed0.json").read_text() == record
    assert stdout2.split("Original model")[1] == stdout.split("Original model")[1]
    assert "Audit of the seed-0 models" not in stdout2
    # a resume with other settings refuses the old records (one line), instead of mixing them into the table
    code, _, err = run([*argv, "--lr", "3e-4", "--out", str(out)], capsys)
    assert code == 2 and "lr = 0.0001" in err and "another --out" in err and len(err.strip().splitlines()) == 1
    assert (out / "runs" / "uno" / "seed0.json").read_text() == record
    # an audit of the seed-0 models in OUT/audit (here: the committed one of the real bench) joins the table
    (out / "audit").mkdir()
    shutil.copy(ROOT / "results/mnist-dit/bench-3seeds/audit/audit.json", out / "audit" / "audit.json")
    code, stdout3, err = run([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    section = stdout3[stdout3.index("## Audit of the seed-0 models") :]
    assert "| embedding search |" in section and "Embedding search: the same for 22 starts" in section
    assert "| original | 100.0% | 100.0% | 54.5% | n/a |" in section and "| UNO | 20.5% | 100.0% | 13.6% |" in section
    assert "| Gradient surgery (S) | 0.0% | 90.6% | 18.2% |" in section and (out / "table.md").read_text() == stdout3


def _constant_classifier(path, label, metadata=None):
    """An MNIST classifier file that calls every input ``label`` (fc2 reads nothing but its bias)."""
    from genunlearn.checkpoints import save_weights
    from genunlearn.models import MNISTClassifier

    clf = MNISTClassifier()
    with torch.no_grad():
        clf.fc2.weight.zero_()
        clf.fc2.bias.zero_()
        clf.fc2.bias[label] = 10.0
    return save_weights(clf, path, metadata=metadata)


def test_monitor_and_class_accuracy_read_the_same_samples_with_a_second_classifier(tiny_dit):
    """measure_with / class_accuracies generate once and let every classifier read those very samples: the
    session's own classifier as the 'other' gives back its own reading exactly, a constant one reads its label."""
    from genunlearn.models import MNISTClassifier

    s = _session(tiny_dit)
    model, mon = s.fresh_model(), s.monitor(0)
    calls = []
    generate = mon.generate
    mon.generate = lambda m, z: calls.append(len(z)) or generate(m, z)
    always7 = MNISTClassifier()
    with torch.no_grad():
        always7.fc2.weight.zero_()
        always7.fc2.bias.copy_(torch.nn.functional.one_hot(torch.tensor(7), 10).float())
    own, again, seven = mon.measure_with(model, [s.classifier, always7])
    assert calls == [16]  # one generation for the three readings
    assert again == own and own == mon.measure(model)
    assert seven.class_counts[7] == 16 and seven.fraction == 0.0 and seven.collateral is None
    acc, acc_again, acc7 = s.class_accuracies(model, 3, others=[s.classifier, always7])
    assert acc == acc_again == s.class_accuracy(model, 3)
    assert acc7["accuracy"]["7"] == 1.0 and all(acc7["accuracy"][str(c)] == 0.0 for c in range(10) if c != 7)


def test_independent_classifier_bn1_follows_its_file_and_defaults_to_applied(tmp_path):
    """bn1: as given, else as the file records, else applied (a file that records nothing: the UNO authors')."""
    from genunlearn.experiments.dit_bench import DiTBenchSettings, resolve_independent

    plain = _constant_classifier(tmp_path / "plain.safetensors", 7)
    no_bn = _constant_classifier(tmp_path / "nobn.safetensors", 7, {"build_options": {"use_bn": False}})
    s = resolve_independent(DiTBenchSettings(independent_classifier=str(plain)))
    assert s.independent_classifier_bn is True and len(s.independent_classifier_sha256) == 64
    assert resolve_independent(DiTBenchSettings(independent_classifier=str(no_bn))).independent_classifier_bn is False
    given = DiTBenchSettings(independent_classifier=str(plain), independent_classifier_bn=False)
    assert resolve_independent(given).independent_classifier_bn is False
    assert resolve_independent(DiTBenchSettings()) == DiTBenchSettings()
    with pytest.raises(ConfigError, match="not found"):
        resolve_independent(DiTBenchSettings(independent_classifier=str(tmp_path / "missing.safetensors")))
    with pytest.raises(ConfigError, match="--independent-classifier"):
        resolve_independent(DiTBenchSettings(independent_classifier_bn=True))


def test_dit_bench_with_an_independent_classifier(tiny_dit, tmp_path, capsys):
    """--independent-classifier re-reads the final samples of the original and of each run: a "classifier" that
    always says 7 reads 100% target and 0% forget class where the bundled one reads otherwise; the table gets
    its columns; a resume with another classifier file, or without one, is refused; the same file elsewhere
    resumes."""
    always7 = _constant_classifier(tmp_path / "always7.safetensors", 7)
    out = tmp_path / "bench"
    argv = ["bench", "mnist-dit", "--quick", "--checkpoint", str(tiny_dit), "--methods", "s", "--steps", "2"]
    argv += ["--monitor-samples", "8", "--class-samples", "2", "--fid-samples", "0", "--sampler-steps", "2"]
    argv += ["--out", str(out)]
    code, stdout, err = run([*argv, "--independent-classifier", str(always7)], capsys)
    assert code == 0, err
    assert "no independent classifier" not in err
    assert "| 1 -> 1 after, independent | 1 -> 7 after, independent | accuracy, other classes, independent |" in stdout
    assert f"Independent classifier `{always7}`" in stdout and "bn1 applied" in stdout
    results = json.loads((out / "results.json").read_text())
    settings, original, (row,) = results["settings"], results["original"], results["rows"]
    assert settings["independent_classifier"] == str(always7) and settings["independent_classifier_bn"] is True
    assert settings["independent_classifier_sha256"] == results["independent_classifier"]["sha256"]
    assert (original["forget_fraction_independent"], original["target_share_independent"]) == (0.0, 1.0)
    assert original["accuracy_other_classes_independent"] == 0.0 and original["target_share"] < 1.0
    record = json.loads((out / "runs" / "s" / "seed0.json").read_text())
    inputs = record["provenance"]["inputs"]
    assert inputs["independent_classifier"]["sha256"] == settings["independent_classifier_sha256"]
    assert (record["forget_fraction_final_independent"], record["target_share_final_independent"]) == (0.0, 1.0)
    assert record["accuracy_other_classes_final_independent"] == 0.0
    assert record["class_counts_final_independent"][7] == 8
    assert record["target_share_final"] < 1.0  # the bundled classifier, same samples, reads otherwise
    for key in ("forget_fraction_final", "target_share_final", "accuracy_other_classes_final"):
        mean, std = row[f"{key}_independent"]
        assert 0.0 <= mean <= 1.0 and std == 0.0
    assert "| 0.000 (0.000) | 1.000 (0.000) | 0.000 (0.000) | — |" in stdout  # the independent columns, then FID
    # another classifier file (always 1), or none, is refused before any work; the same file elsewhere resumes
    always1 = _constant_classifier(tmp_path / "always1.safetensors", 1)
    code, _, err = run([*argv, "--independent-classifier", str(always1)], capsys)
    assert code == 2 and "independent_classifier_sha256" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(argv, capsys)
    assert code == 2 and "independent_classifier_sha256" in err and len(err.strip().splitlines()) == 1
    moved = shutil.copy(always7, tmp_path / "elsewhere.safetensors")
    code, stdout2, err = run([*argv, "--independent-classifier", str(moved)], capsys)
    assert code == 0, err
    assert stdout2.split("| method |")[1] == stdout.split("| method |")[1]


def test_peak_live_tensor_bytes_counts_what_a_step_allocates():
    from genunlearn.eval.memory import peak_live_tensor_bytes

    def step():
        a = torch.ones(1_000_000)  # 4 MB alive together with b
        b = a * 2
        return b.sum()

    peak = peak_live_tensor_bytes(step)
    assert 8_000_000 <= peak < 12_000_000


@pytest.mark.parametrize("method", ["s", "uno", "uno-fd"])
def test_gradient_checkpointing_gives_the_same_step(tiny_dit, method):
    """diffusers' non-reentrant checkpointing recomputes block activations in the backward pass; the methods'
    directions (UNO's double backward included) must not change."""
    weights = []
    for ckpt in (False, True):
        s = UnlearnSession(
            ModelConfig(name="mnist-dit", checkpoint=str(tiny_dit), options={"gradient_checkpointing": ckpt}),
            DataConfig(forget=(1,), replace_with=(7,)),
            MonitorConfig(samples=4),
            device="cpu",
        )
        assert s.fresh_model().transformer.gradient_checkpointing == ckpt
        cfg = UnlearnConfig(method=method, steps=1, batch_size=4, beta_o=1.0, stop_at=None, optimizer="sgd", lr=0.1)
        model, _ = s.run(cfg, ObjectiveConfig(loss_reduction="mean"), monitor=None, progress=False)
        weights.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-6, atol=1e-8)


def test_mnist_dit_without_bundled_weights_or_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    import genunlearn.models.builtin as builtin

    monkeypatch.setattr(builtin, "bundled_weights", lambda name: tmp_path / f"{name}.safetensors")
    code, _, err = run(["unlearn", "--model", "mnist-dit", "--forget", "1", "--replace-with", "7",
                        "--out", str(tmp_path / "o"), "--quiet"], capsys)  # fmt: skip
    assert code == 2 and "genunlearn train dit" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_dit_bench_with_a_lora_adapter_changes_only_the_adapted_layers(tiny_dit, tmp_path, capsys):
    from genunlearn.checkpoints import load_state

    out = tmp_path / "bench"
    argv = ["bench", "mnist-dit", "--quick", "--checkpoint", str(tiny_dit), "--methods", "s", "--steps", "2"]
    argv += ["--monitor-samples", "8", "--class-samples", "2", "--fid-samples", "0", "--sampler-steps", "2"]
    argv += ["--lr", "1e-2", "--lora-rank", "2", "--lora-targets", "to_q,to_k", "--out", str(out)]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "LoRA rank 2 on to_q,to_k (peft, base frozen; measured merged)" in stdout
    before, after = load_state(tiny_dit), load_state(out / "runs" / "s" / "seed0.safetensors")
    assert set(after) == set(before)  # merged: a plain checkpoint of the model
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("to_q.weight", "to_k.weight")) for k in changed), changed
    code, _, err = run([*argv[:-4], "--lora-rank", "4", "--out", str(out)], capsys)  # other rank: refused
    assert code == 2 and "lora_rank = 2" in err
    code, _, err = run(argv, capsys)  # the same settings resume (the targets come back from JSON as a list)
    assert code == 0, err


def test_dit_bench_trainable_label_embeddings_moves_only_the_forget_and_target_rows(tiny_dit, tmp_path, capsys):
    """Surgical replacement (--trainable class_embedder): the other labels' embedding rows, the null row and every
    other weight stay bit for bit, so the other labels generate exactly what they did."""
    from genunlearn.checkpoints import load_state

    out = tmp_path / "bench"
    argv = ["bench", "mnist-dit", "--quick", "--checkpoint", str(tiny_dit), "--methods", "s", "--steps", "2"]
    argv += ["--monitor-samples", "8", "--class-samples", "2", "--fid-samples", "0", "--sampler-steps", "2"]
    argv += ["--lr", "1e-2", "--trainable", "class_embedder", "--out", str(out)]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "only the parameters class_embedder select trained" in stdout
    before, after = load_state(tiny_dit), load_state(out / "runs" / "s" / "seed0.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith("class_embedder.embedding_table.weight") for k in changed), changed
    for k in changed:
        rows = (before[k] != after[k]).any(1).nonzero().flatten().tolist()
        assert rows == [1, 7], (k, rows)
    code, _, err = run([*argv[:-2], "--lora-rank", "2", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "does not combine with --lora-rank" in err


def test_dit_bench_cli_passes_sampler_guidance_and_no_memory(monkeypatch, tmp_path, capsys):
    import genunlearn.experiments.dit_bench as dit_bench

    seen = {}

    def fake(out, *, settings, checkpoint, methods, device):
        seen["settings"] = settings
        return {"table": "t"}

    monkeypatch.setattr(dit_bench, "run_dit_bench", fake)
    argv = ["bench", "mnist-dit", "--sampler", "ddim", "--guidance", "3", "--no-memory", "--preserve-weight", "0.5",
            "--out", str(tmp_path)]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    s = seen["settings"]
    assert (s.sampler, s.guidance_scale, s.measure_memory, s.seeds) == ("ddim", 3.0, False, 3)
    assert s.preserve_weight == 0.5 and s.preserve_target == "data"
    code, _, err = run(["bench", "mnist-dit", "--preserve-weight", "1", "--preserve-target", "original",
                        "--out", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0, err
    assert seen["settings"].preserve_target == "original" and not seen["settings"].early_stop
    code, _, err = run(["bench", "mnist-dit", "--early-stop", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert seen["settings"].early_stop
    code, _, _ = run(["bench", "mnist-dit", "--out", str(tmp_path)], capsys)
    assert code == 0 and seen["settings"].measure_memory and seen["settings"].sampler == "dpm++"
    assert seen["settings"].preserve_weight == 0


def test_preserve_weight_adds_the_other_labels_to_the_retain_loss(tiny_dit):
    """--preserve-weight: the retain loss also descends the other labels' denoising loss on their own data (the
    paper's L^R sees labels 1 and 7 only); weight 0 is exactly the paper's; class unlearning refuses it."""
    s = _session(tiny_dit)
    model = s.fresh_model()
    x_t = s.retain_data[0][:6], s.retain_data[1][:6]
    losses = {}
    for w in (0.0, 1.0, 3.0):
        torch.manual_seed(5)
        losses[w] = float(s.task(ObjectiveConfig(loss_reduction="mean", preserve_weight=w)).retain_loss(model, x_t))
    extra = losses[1.0] - losses[0.0]
    assert extra > 0 and losses[3.0] - losses[0.0] == pytest.approx(3 * extra, rel=1e-4)
    # the drawn examples come from the other labels only, as many as the retain batch
    drawn = []
    task = s.task(ObjectiveConfig(loss_reduction="mean", preserve_weight=1.0))
    real = task.conditional_loss
    object.__setattr__(task, "conditional_loss", lambda m, x, c: drawn.append(c.clone()) or real(m, x, c))
    task.retain_loss(model, x_t)
    assert [len(c) for c in drawn] == [6, 6, 6]
    assert set(drawn[0].tolist()) == {1} and set(drawn[1].tolist()) == {7}
    assert not set(drawn[2].tolist()) & {1, 7} and set(drawn[2].tolist()) <= set(range(10))
    # the plain engine runs with it, and a class-unlearning session refuses it
    cfg = UnlearnConfig(method="d", steps=2, batch_size=4, lr=1e-3, stop_at=None)
    _, res = s.run(cfg, ObjectiveConfig(loss_reduction="mean", preserve_weight=1.0), progress=False)
    assert res.steps_run == 2 and not res.diverged
    plain = _session(tiny_dit, replace_with=())
    with pytest.raises(ConfigError, match="replace-with"):
        plain.task(ObjectiveConfig(preserve_weight=1.0))


def test_preserve_target_original_holds_the_other_labels_to_the_frozen_original(tiny_dit):
    """--preserve-target original: the other labels' term is 0 while the model is the original (a distillation),
    grows once the model moves, and runs through the engine; without a preserve weight it is refused."""
    s = _session(tiny_dit)
    model = s.fresh_model()
    x_t = s.retain_data[0][:6], s.retain_data[1][:6]
    objective = ObjectiveConfig(loss_reduction="mean", preserve_weight=1.0, preserve_target="original")
    paper = ObjectiveConfig(loss_reduction="mean")
    torch.manual_seed(5)
    with_term = float(s.task(objective).retain_loss(model, x_t))
    torch.manual_seed(5)
    without = float(s.task(paper).retain_loss(model, x_t))
    assert with_term == pytest.approx(without, rel=1e-6)  # at the original the distillation adds nothing
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(5)
    with_term = float(s.task(objective).retain_loss(model, x_t))
    torch.manual_seed(5)
    without = float(s.task(paper).retain_loss(model, x_t))
    assert with_term > without
    cfg = UnlearnConfig(method="s", steps=2, batch_size=4, lr=1e-3, stop_at=None)
    _, res = s.run(cfg, objective, progress=False)
    assert res.steps_run == 2 and not res.diverged
    with pytest.raises(ConfigError, match="preserve_weight > 0"):
        ObjectiveConfig(preserve_target="original").validate()
    with pytest.raises(ConfigError, match="'data' or 'original'"):
        ObjectiveConfig(preserve_weight=1.0, preserve_target="teacher").validate()


def test_every_committed_dit_bench_record_was_made_with_its_folders_settings():
    """The committed DiT benches resume cleanly: each per-seed record names the settings of its folder's
    results.json (up to the seed count and the memory switch), so no table mixes runs of other settings."""
    from genunlearn.experiments.dit_bench import check_resumed, settings_from
    from genunlearn.experiments.records import read_seed_record

    folders = sorted(p.parent / "results.json" for p in (ROOT / "results" / "mnist-dit").glob("*/runs"))
    assert len(folders) >= 4
    for results in folders:
        settings = settings_from(json.loads(results.read_text()))
        records = sorted(results.parent.glob("runs/*/seed*.json"))
        assert records, results
        for path in records:
            check_resumed(read_seed_record(path), settings, path)


def test_the_curve_figure_takes_runs_stopped_at_different_updates(tmp_path):
    """--early-stop leaves curves of different lengths (monitored every few updates, None in between)."""
    from genunlearn.experiments.dit_figures import curves

    recs = {
        "s": [
            {"curve": {"forget_fraction": [1.0, None, 0.5, None, 0.01]}},
            {"curve": {"forget_fraction": [1.0, None, 0.01]}},
        ]
    }
    curves(tmp_path / "c.png", recs, 0.02)
    assert (tmp_path / "c.png").stat().st_size > 0


def test_dit_bench_measures_every_run_against_a_retrained_model(tiny_dit, tmp_path, capsys):
    """--retrained: the retrained model measured like the original, and every run's distance to it (kept-label FID
    between the two models' samples from identical noises, TV between their forget-label class histograms). The
    original itself as the "retrained" model is at distance 0; a different model is not, and the TV in a record is
    the TV of the two histograms that results.json holds. A record made without --retrained is not resumed with."""
    from genunlearn.checkpoints import read_metadata, save_weights
    from genunlearn.eval.collateral import histogram_tv
    from genunlearn.models import load_model

    other = load_model("mnist-dit", tiny_dit, device="cpu")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    other_path = save_weights(other, tmp_path / "other.safetensors", metadata=read_metadata(tiny_dit))
    argv = ["bench", "mnist-dit", "--quick", "--checkpoint", str(tiny_dit), "--methods", "s", "--steps", "2"]
    argv += ["--monitor-samples", "16", "--class-samples", "2", "--fid-samples", "40", "--sampler-steps", "2"]
    code, stdout, err = run([*argv, "--retrained", str(tiny_dit), "--out", str(tmp_path / "same")], capsys)
    assert code == 0, err
    assert "| original (before unlearning) |" in stdout and "| retrained without label 1 (gold) |" in stdout
    same = json.loads((tmp_path / "same" / "results.json").read_text())
    assert same["original"]["to_retrained"] == {"tv_forget_label_to_retrained": 0.0, "fid_kept_to_retrained": 0.0}
    assert same["retrained"]["class_counts"] == same["original"]["class_counts"]
    code, stdout, err = run([*argv, "--retrained", str(other_path), "--out", str(tmp_path / "other")], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "other" / "results.json").read_text())
    assert res["original"]["to_retrained"]["fid_kept_to_retrained"] > 0
    assert res["retrained_file"]["sha256"] != same["retrained_file"]["sha256"]
    rec = json.loads((tmp_path / "other" / "runs" / "s" / "seed0.json").read_text())
    assert rec["fid_kept_to_retrained"] > 0
    # seed 0: the run's final histogram and the retrained model's, on the same monitor noises
    expected = histogram_tv(rec["class_counts_final"], res["retrained"]["class_counts"])
    assert rec["tv_forget_label_to_retrained"] == pytest.approx(expected)
    assert "FID kept classes to retrained | label 1 histogram TV to retrained |" in stdout
    for figure in ("distance_to_retrained.png", "grid-retrained.png", "forget_label_histograms.png"):
        assert (tmp_path / "other" / "figures" / figure).is_file(), figure
    missing = ["--retrained", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "x")]
    code, _, err = run([*argv, *missing], capsys)
    assert code == 2 and "retrained model not found" in err and len(err.strip().splitlines()) == 1
    code, _, err = run([*argv, "--out", str(tmp_path / "other")], capsys)  # without --retrained: refused
    assert code == 2 and "retrained" in err and "another --out" in err
