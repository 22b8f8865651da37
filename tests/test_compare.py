"""Collateral change (a reusable measure) and the comparison bench end to end on a tiny setting."""

from __future__ import annotations

import json

import pytest
import torch

from genunlearn.errors import ConfigError
from genunlearn.eval.collateral import CollateralChange, histogram_tv, retained_proportions, total_variation


def test_collateral_change_counts_only_inputs_that_were_retained_classes():
    m = CollateralChange(num_classes=4, forget_classes=[1])
    # batch 1: a 0 stays, a 1 becomes 2 (not collateral: it had to change), a 2 becomes 3 (collateral)
    m.update(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 3]))
    # batch 2: a 3 stays, a 1 stays a 1 (not collateral either way)
    m.update(torch.tensor([3, 1]), torch.tensor([3, 1]))
    r = m.compute()
    assert (r["changed"], r["retained_inputs"]) == (1, 3)
    assert r["changed_share"] == pytest.approx(1 / 3)
    assert r["original_counts"] == [1, 2, 1, 1] and r["new_counts"] == [1, 1, 1, 2]
    # retained proportions: original (0, 2, 3) = 1/3 each; new 0: 1/4, 2: 1/4, 3: 2/4
    assert r["retained_tv"] == pytest.approx(0.5 * (abs(1 / 3 - 1 / 4) * 2 + abs(1 / 3 - 1 / 2)))
    m.reset()
    assert m.compute()["changed_share"] is None
    with pytest.raises(ConfigError, match="the inputs must be the same"):
        m.update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ConfigError, match="forget class 7"):
        CollateralChange(num_classes=4, forget_classes=[7])


def test_a_relabelled_copy_changes_everything_and_a_permutation_keeps_the_mix():
    """Every retained input changing class to another retained class: changed share 1, but if the classes are
    only permuted among themselves with equal counts, the retained mix (TV) does not move."""
    orig = torch.tensor([0, 2, 3] * 10)
    perm = torch.tensor([2, 3, 0] * 10)
    m = CollateralChange(num_classes=4, forget_classes=[1])
    m.update(orig, perm)
    r = m.compute()
    assert r["changed_share"] == 1.0 and r["retained_tv"] == pytest.approx(0.0)


def test_histogram_helpers():
    assert histogram_tv([5, 5], [10, 0]) == pytest.approx(0.5)
    p = retained_proportions([2, 6, 2], forget_classes=[1])
    assert p.tolist() == [0.5, 0.0, 0.5]
    assert total_variation(p, torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(0.5)


def test_compare_bench_runs_and_measures_distance_and_collateral(tmp_path, capsys):
    """A tiny comparison on the bundled VAE: the bundled weights stand in for a "retrained" model, so the original's
    distance to it is zero, and a resumed run recomputes nothing."""
    from genunlearn.models.registry import bundled_weights
    from tests.test_cli import run

    out = tmp_path / "cmp"
    argv = [
        "bench", "compare", "--quick", "--methods", "d,gdiff", "--steps", "2", "--fid-samples", "300",
        "--gold-samples", "300", "--retrained", str(bundled_weights("mnist-vae")), "--out", str(out),
    ]  # fmt: skip
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    original = result["references"][0]
    assert original["fid_to_retrained"] == pytest.approx(0.0, abs=1e-3)
    assert original["histogram_tv"] == 0.0 and original["forget_fraction_gap"] == 0.0
    rows = {r["entry"]: r for r in result["rows"]}
    assert set(rows) == {"d", "gdiff"}
    for r in rows.values():
        assert 0 <= r["changed_share"][0] <= 1 and r["fid_to_retrained"][0] > 0
    assert (out / "table.md").read_text().startswith("# mnist-vae, forget 1")
    assert {p.name for p in (out / "figures").iterdir()} >= {"tradeoff.png", "grids.png", "histograms.png"}
    record = out / "runs" / "gdiff" / "seed0.json"
    before = record.stat().st_mtime_ns
    assert run(argv, capsys)[0] == 0
    assert record.stat().st_mtime_ns == before  # resumed: the run and its gold measures were kept


# --- sample-level measures ------------------------------------------------------------------------------------


def test_roc_auc_equals_the_pairwise_definition_with_ties():
    from genunlearn.eval.membership import roc_auc

    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randint(0, 5, (40,), generator=g).float(), torch.randint(0, 4, (70,), generator=g).float()
    pairwise = ((pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()).mean()
    assert roc_auc(pos, neg) == pytest.approx(float(pairwise))
    assert roc_auc(neg, pos) == pytest.approx(1 - float(pairwise))


def test_tpr_at_fpr_uses_the_strictest_threshold_within_the_budget():
    from genunlearn.eval.membership import tpr_at_fpr

    neg = torch.arange(200).float()  # 1% of 200 = 2 negatives may score above the threshold: threshold = 197
    pos = torch.tensor([196.0, 197.0, 198.0, 250.0])
    assert tpr_at_fpr(pos, neg, 0.01) == 0.5
    small = torch.tensor([48.0, 49.0, 50.0, 60.0])
    assert tpr_at_fpr(small, neg[:50], 0.01) == 0.5  # fewer than 100 negatives: FPR 0, threshold = the maximum (49)


def test_lira_and_memorisation_from_reference_models():
    from genunlearn.eval.membership import lira_offline_scores, memorisation_scores

    # 4 reference models x 3 candidates; candidate 0 is fitted much better by the models that trained on it
    ref = torch.tensor([[10.0, 20.0, 30.0], [14.0, 22.0, 30.0], [10.0, 18.0, 31.0], [14.0, 20.0, 29.0]])
    inside = torch.tensor([[True, False, False], [False, True, False], [True, False, False], [False, False, False]])
    mem = memorisation_scores(ref, inside)
    assert mem[0] == pytest.approx(14.0 - 10.0)
    assert mem[1] == pytest.approx((20 + 18 + 20) / 3 - 22)
    assert torch.isnan(mem[2])  # no reference model trained on it
    scores = lira_offline_scores(torch.tensor([12.0, 20.0, 30.0]), ref, ~inside)
    # OUT means: 14, (20 + 18 + 20) / 3, 30; pooled sigma from the OUT residuals
    mu = torch.tensor([14.0, 58 / 3, 30.0])
    resid = torch.cat([torch.tensor([0.0, 0.0]), torch.tensor([20, 18, 20]) - 58 / 3, torch.tensor([0.0, 1, -1, 0])])
    sigma = float((resid.pow(2).sum() / (1 + 2 + 3)) ** 0.5)
    torch.testing.assert_close(scores.float(), ((mu - torch.tensor([12.0, 20.0, 30.0])) / sigma).float())


def test_nearest_similarity_and_share():
    from genunlearn.eval.membership import nearest_similarity, share_at_least

    refs = torch.eye(4)
    samples = torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 0, 0.0]])
    sims = nearest_similarity(samples, refs)
    assert sims.tolist() == pytest.approx([1.0, 2**-0.5, 0.0])
    assert share_at_least(sims, 0.7) == pytest.approx(2 / 3)


def test_vae_nll_is_the_mean_negative_elbo_over_seeded_draws():
    from genunlearn.eval.membership import vae_nll
    from genunlearn.models import MNISTVAE
    from genunlearn.objectives import VAEObjective

    torch.manual_seed(0)
    vae = MNISTVAE(hidden=16).eval()
    x = torch.rand(5, 784)
    obj = VAEObjective("bernoulli")
    a = vae_nll(vae, x, obj.per_example, latent_dim=2, draws=3, seed=4)
    g = torch.Generator().manual_seed(4)
    by_hand = sum(obj.per_example(vae, x, torch.randn(5, 2, generator=g)) for _ in range(3)) / 3
    torch.testing.assert_close(a.float(), by_hand.detach())
    assert torch.equal(a, vae_nll(vae, x, obj.per_example, latent_dim=2, draws=3, seed=4))


def test_sample_unlearning_bench_audits_original_unlearned_and_shadow_attacks(tmp_path, capsys):
    """--forget-ids: the classifier-free methods unlearn 20 specific images; the audit (ELBO gap, both attacks,
    nearest-neighbour share) is computed for the original and each run. A shadow "run" here is the bundled model
    with a record claiming it left out half of the forget images (plumbing only)."""
    import shutil

    from genunlearn.models.registry import bundled_weights
    from tests.test_cli import run

    ids = tmp_path / "forget.txt"
    ids.write_text("\n".join(str(i) for i in range(0, 2000, 100)))
    half = tmp_path / "half.txt"
    half.write_text("\n".join(str(i) for i in range(0, 2000, 200)))
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    shutil.copy(bundled_weights("mnist-vae"), shadow / "model.safetensors")
    (shadow / "record.json").write_text(json.dumps({"complete": True, "config": {"exclude_ids": str(half)}}))
    out = tmp_path / "samples"
    argv = [
        "bench", "compare", "--quick", "--forget-ids", str(ids), "--methods", "d,rep", "--steps", "2",
        "--fid-samples", "200", "--gold-samples", "200", "--shadows", str(shadow), "--out", str(out),
    ]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    assert result["forget_set_size"] == 20 and result["shadows"][0]["trained_on"] == 60000 - 10
    original = result["references"][0]
    assert original["elbo_gap"][0] is not None and 0 <= original["lira_auc"][0] <= 1
    assert [r["entry"] for r in result["rows"]] == ["rep", "d"]
    assert (out / "table.md").read_text().count("\n| ") == 4  # header, original, two methods
    code, _, err = run([*argv[:-2], "--methods", "h", "--out", str(out)], capsys)
    assert code == 2 and "do not apply to sample unlearning" in err


def test_sample_overview_orders_sets_averages_retrained_and_marks_damaged_models(tmp_path):
    """The overview over forget sets: sets ordered by kind then size, the retrained cell is the mean of the
    retrained models, a model whose retained FID exceeds 1.5x the original's is marked (and diverged seeds), other
    folders ignored."""
    from genunlearn.errors import ConfigError
    from genunlearn.experiments.samples import collect, overview_figure, render_overview

    def row(entry, gap, auc, fid, family="", label=None):
        return {"entry": entry, "label": label or entry, "family": family, "elbo_gap": [gap, 0.0],
                "lira_auc": [auc, 0.0], "loss_threshold_auc": [auc, 0.0], "fid_retain": [fid, 0.0]}  # fmt: skip

    def write(name, size, retrained_gaps):
        refs = [row("original", 10.0, 0.60, 10.0)]
        refs += [row(f"retrained-{i}", g, 0.50 + i / 100, 10.0) for i, g in enumerate(retrained_gaps)]
        data = {
            "kind": "samples", "forget_set_size": size, "references": refs,
            "settings": {"test_candidates": 100, "seeds": 2, "steps": 5},
            "rows": [row("rep", 4.0, 0.55, 12.0, "genunlearn", "REP: latent replacement"),
                     row("a", -30.0, 0.30, 16.0, "paper", "Gradient ascent (A)")],
        }  # fmt: skip
        data["rows"][1]["diverged"] = 1
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(data))

    with pytest.raises(ConfigError, match="no sample-level results"):
        collect(tmp_path)
    write("random-100", 100, [1.0, 2.0])
    write("random-10", 10, [0.0])
    write("memorised-10", 10, [3.0])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps({"kind": "compare"}))
    found = collect(tmp_path)
    assert [n for n, _ in found] == ["memorised-10", "random-10", "random-100"]
    lines = render_overview(found).splitlines()
    assert lines[2] == "| model | memorised-10 (10) | random-10 (10) | random-100 (100) |"
    cells = {ln.split(" | ")[0].strip("| "): ln.split(" | ")[1:] for ln in lines[4:]}
    assert cells["retrained without them"][2].startswith("1.5 · 0.505")  # mean of the two retrained models
    assert cells["REP"][0] == "4.0 · 0.550"  # FID 12 <= 1.5 x 10: not marked
    assert cells["Gradient ascent (A)"][0] == "-30.0 · 0.300 ✗ ⚠1"  # FID 16 > 15: damaged; one seed diverged
    overview_figure(tmp_path / "figures" / "overview.png", found)
    assert (tmp_path / "figures" / "overview.png").stat().st_size > 10_000


def test_mean_std_leaves_out_non_finite_values_of_diverged_runs():
    """A diverged run's NaN or infinity (e.g. the negative ELBO of a model that overflows) is left out of the mean
    and standard deviation instead of crashing the aggregate (statistics.stdev raises on infinity)."""
    from genunlearn.experiments.compare import _mean_std

    assert _mean_std([1.0, float("inf"), float("nan"), 3.0, None]) == [2.0, 2**0.5]
    assert _mean_std([float("-inf"), None]) == [None, None]
    assert _mean_std([4.0]) == [4.0, 0.0]


def test_compare_re_measures_records_read_with_another_independent_forward(tmp_path):
    """Final-model measures are stale when the retrained models, the independent classifier's file or its bn1 use
    changed; records from before bn1 use was recorded were read with bn1 skipped (the authors' forward)."""
    from types import SimpleNamespace

    from genunlearn.experiments.audit import independent_bn
    from genunlearn.experiments.compare import _gold_stale

    gold = SimpleNamespace(retrained=[{"sha256": "r"}], independent_id={"sha256": "c", "use_bn": True})
    fresh = {"retrained_sha256": ["r"], "independent": {"sha256": "c", "use_bn": True}, "measured": {}}
    assert not _gold_stale({"gold": fresh}, gold)
    assert _gold_stale({"gold": None}, gold)
    assert _gold_stale({"gold": {**fresh, "retrained_sha256": ["other"]}}, gold)
    assert _gold_stale({"gold": {**fresh, "independent": {"sha256": "c", "use_bn": False}}}, gold)
    assert _gold_stale({"gold": {**fresh, "independent": {"sha256": "x", "use_bn": True}}}, gold)
    assert _gold_stale({"gold": {**fresh, "independent": None}}, gold)
    legacy = {"retrained_sha256": ["r"], "measured": {"forget_fraction_independent": 0.1}}
    assert _gold_stale({"gold": legacy}, gold)  # read with bn1 skipped
    assert not _gold_stale(
        {"gold": legacy}, SimpleNamespace(retrained=gold.retrained, independent_id={"sha256": "c", "use_bn": False})
    )
    no_clf = SimpleNamespace(retrained=gold.retrained, independent_id=None)
    assert not _gold_stale({"gold": {"retrained_sha256": ["r"], "measured": {}}}, no_clf)
    assert _gold_stale({"gold": fresh}, no_clf)
    # bn1 use: asked for, else recorded in the file, else applied (a file without a record)
    from genunlearn.models.registry import bundled_weights

    bundled = bundled_weights("mnist-classifier")
    assert independent_bn(bundled, False) is False
    assert independent_bn(bundled) is True  # recorded: trained with bn1
    bare = tmp_path / "bare.safetensors"
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(bundled)), str(bare))  # the weights without genunlearn's metadata
    assert independent_bn(bare) is True
    skipped = tmp_path / "skipped.safetensors"  # a file that records bn1 skipped is read that way
    save_file(load_file(str(bundled)), str(skipped), metadata={"build_options": json.dumps({"use_bn": False})})
    assert independent_bn(skipped) is False
    with pytest.raises(ConfigError, match="not found"):
        independent_bn(tmp_path / "missing.safetensors")
