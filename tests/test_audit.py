"""Issue 18, part 1: ``genunlearn audit`` — input search, prior mass, relearning, verdicts, outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy.stats import norm as normal

import genunlearn.experiments.audit as audit_mod
from genunlearn.checkpoints import save_weights
from genunlearn.errors import ConfigError
from genunlearn.eval.attacks import Detector, InputBall, grid_scan, input_search, judge, relearn
from genunlearn.experiments.audit import (
    AuditSettings,
    audit_headline,
    embedding_ball,
    render_audit,
    render_verdict,
    verdict,
)
from genunlearn.report import run_report
from tests.resume_model import TinyVAE
from tests.test_cli import run


class Lift(torch.nn.Module):
    """The identity generator (one parameter, so that it has a device and something to train)."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = torch.nn.Parameter(torch.zeros(2))

    def forward(self, z):
        return z + self.shift


class Linear2(torch.nn.Module):
    """Two classes: logits (0, a . z)."""

    def __init__(self, a) -> None:
        super().__init__()
        self.a = torch.tensor(a)

    def forward(self, x):
        return torch.stack([torch.zeros(len(x)), x @ self.a], 1)


def test_ball_radius_projection_and_grid_mass():
    ball = InputBall.gaussian((2,), 0.999)
    assert ball.radius == pytest.approx(math.sqrt(-2 * math.log(0.001)))
    z = torch.tensor([[0.5, 0.0], [30.0, 40.0]])
    p = ball.project(z)
    assert torch.equal(p[0], z[0]) and p[1].norm() == pytest.approx(ball.radius) and p[1, 0] / p[1, 1] == 0.75
    _, mass, _ = ball.grid(301)
    assert float(mass.sum()) == pytest.approx(0.999, abs=1e-3)
    assert InputBall.gaussian((4, 4)).radius == pytest.approx(math.sqrt(__import__("scipy").stats.chi2.ppf(0.999, 16)))


def test_input_search_finds_the_most_forgotten_input_in_the_ball():
    a = [0.3, 0.4]  # p(forget) = sigmoid(a . z): maximal on the ball's edge in the direction of a (p = 0.865)
    ball = InputBall.gaussian((2,))
    det = Detector("d", Linear2(a), [1])
    other = Detector("o", Linear2([-1.0, 0.0]), [1])
    res = input_search(Lift(), lambda m, z: m(z), ball, det, others=[other], starts=16, steps=100, lr=0.2, seed=1)
    best = res.inputs
    assert torch.allclose(best.norm(dim=1), torch.full((16,), ball.radius), atol=1e-3)
    assert torch.allclose(best / best.norm(dim=1, keepdim=True), torch.tensor([0.6, 0.8]).expand(16, 2), atol=1e-2)
    assert float(res.p["d"].min()) == pytest.approx(1 / (1 + math.exp(-0.5 * ball.radius)), rel=1e-4)
    assert torch.allclose(res.p["o"], torch.sigmoid(-best[:, 0]))  # the other detector judges the same inputs
    assert res.confident(0.85, ["d"]).all() and not res.confident(0.85).any() and not res.confident(0.9, ["d"]).any()


def test_grid_scan_measures_prior_mass():
    ball = InputBall.gaussian((2,))
    det = Detector("d", Linear2([50.0, 0.0]), [1])  # confident (p >= 0.9) where z1 >= logit(0.9) / 50
    scan = grid_scan(Lift(), lambda m, z: m(z), ball, [det], 401)
    t = math.log(9) / 50
    assert scan.confident_mass(0.9) == pytest.approx(normal.sf(t) - 0.0005, abs=2e-3)


def test_relearn_adds_the_same_forget_examples_to_every_batch_and_measures_at_k():
    retain, forget = torch.randn(40, 2), torch.randn(6, 2) + 10
    seen = []

    def objective(m, batch):
        seen.append(batch.clone())
        return ((m(batch) - 1) ** 2).mean()

    model = Lift()
    measure = lambda m: {"s": float(m.shift[0].detach())}  # noqa: E731
    out = relearn(model, objective, retain, forget, measure, n_forget=2, steps=4, at=(1, 3), batch_size=8)
    assert sorted(out) == [0, 1, 3] and out[0]["s"] == 0.0 and out[3]["s"] != out[1]["s"]
    assert all(len(b) == 10 for b in seen) and all(torch.equal(b[-2:], seen[0][-2:]) for b in seen)
    assert all((b[-2:] > 5).all() and (b[:-2] < 5).all() for b in seen)
    assert torch.equal(model.shift, torch.zeros(2))  # the audited model is not changed


def _entry(prior, share, mass, retain, forget10):
    rel = {
        "0": {k: {"a": {"mean": retain if k == "100" else 0.0}} for k in ("0", "10", "100")},
        "10": {k: {"a": {"mean": forget10 if k != "0" else 0.0}} for k in ("0", "10", "100")},
    }
    return {
        "prior": {"forget_fraction": {"a": prior}},
        "search": {"confident_share_all": share},
        "grid": {"confident_mass_all": mass},
        "relearn": rel,
    }


def test_verdict_rules():
    s = AuditSettings(relearn_at=(10, 100), relearn_forget=(0, 10))
    good = _entry(0.01, 0.005, 0.002, 0.01, 0.2)
    v = verdict(good, None, s)
    assert v["pass"] and v["checks"]["relearn_forget"]["pass"] is None  # no retrained model: n/a
    assert not verdict(_entry(0.03, 0, 0, 0, 0), None, s)["pass"]  # prior above 2%
    assert not verdict(_entry(0.01, 0.02, 0, 0, 0), None, s)["pass"]  # search share above 1%
    assert not verdict(_entry(0.01, 0, 0.02, 0, 0), None, s)["pass"]  # prior mass above 1%
    assert not verdict(_entry(0.01, 0, 0, 0.05, 0), None, s)["pass"]  # retain-only fine-tuning brings it back
    retrained = _entry(0.0, 0.05, 0.0, 0.0, 0.25)  # a retrained model's search share raises the limit
    v = verdict(_entry(0.01, 0.05, 0.0, 0.0, 0.26), retrained, s)
    assert v["pass"] and v["checks"]["input_search"]["limit"] == pytest.approx(0.06)
    v = verdict(_entry(0.01, 0.0, 0.0, 0.0, 0.30), retrained, s)  # relearns 5 points faster than retrained
    assert not v["pass"] and v["checks"]["relearn_forget"]["value"] == pytest.approx(0.05)
    assert audit_headline({**good, "verdict": verdict(good, None, s)})["relearn_forget"] == 0.2


def test_audit_command_end_to_end(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "u"
    code, _, err = run(
        [
            *("unlearn", "--model", "tests.resume_model:factory", "--forget", "1", "--method", "s", "--steps", "3"),
            *("--batch-size", "8", "--monitor-samples", "16", "--quiet", "--out", str(run_dir)),
        ],
        capsys,
    )
    assert code == 0, err
    torch.manual_seed(7)
    save_weights(TinyVAE(), tmp_path / "retrained.safetensors")
    save_weights(torch.nn.Linear(6, 3), tmp_path / "independent.safetensors")
    out = tmp_path / "audit"
    args = ["audit", "--model", "tests.resume_model:factory", "--forget", "1", "--unlearned", f"s={run_dir}"]
    args += ["--retrained", str(tmp_path / "retrained.safetensors")]
    args += ["--independent-classifier", str(tmp_path / "independent.safetensors"), "--starts", "6"]
    args += ["--search-steps", "4", "--grid", "15", "--relearn-at", "1,2", "--relearn-forget", "0,2"]
    args += ["--relearn-seeds", "1", "--quiet", "--out", str(out)]
    code, text, err = run(args, capsys)
    assert code == 0, err
    assert "original" in text and "reference" in text
    data = json.loads((out / "audit.json").read_text())
    assert [m["name"] for m in data["models"]] == ["original", "s", "retrained"]
    s = data["models"][1]
    assert s["run"]["method"] == "s" and s["run"]["steps_run"] == 3 and len(s["checkpoint"]["sha256"]) == 64
    assert set(s["verdict"]["checks"]) == {"prior", "input_search", "prior_mass", "relearn_retain", "relearn_forget"}
    assert s["verdict"]["checks"]["relearn_forget"]["pass"] is not None  # a retrained model was given
    assert [d["name"] for d in data["detectors"]] == ["attacked", "independent"]
    assert 0 <= data["detectors"][0]["on_forget_set"]["confident_share"] <= 1
    assert data["provenance"]["command"]["line"].startswith("genunlearn audit")
    assert (out / "audit.md").read_text() == render_audit(data)
    assert (out / "figures" / "best_samples.png").stat().st_size > 0 and (out / "figures" / "prior_mass.png").exists()
    assert run_report(tmp_path, check=True) == []  # genunlearn report regenerates audit.md from audit.json
    code, _, err = run(args, capsys)
    assert code == 2 and "already holds an audit" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(audit_mod, "audit_model", lambda *a, **k: pytest.fail("--resume recomputed a model"))
    code, _, err = run([*args, "--resume"], capsys)
    assert code == 0, err
    assert json.loads((out / "audit.json").read_text())["models"][1]["search"] == s["search"]
    # the limits only judge: other limits reuse the measured models and change the verdicts' limits
    code, _, err = run([*args, "--resume", "--fraction-limit", "0.5", "--share-limit", "0.3"], capsys)
    assert code == 0, err
    data = json.loads((out / "audit.json").read_text())
    assert data["models"][1]["verdict"]["checks"]["prior"]["limit"] == 0.5
    assert (
        data["settings"]["share_margin"] == 0.3 and "Limits: forget fractions < 50.0%" in (out / "audit.md").read_text()
    )


def test_rejudge_applies_new_limits_to_the_measured_numbers(tmp_path, capsys, monkeypatch):
    torch.manual_seed(3)
    save_weights(TinyVAE(), tmp_path / "u.safetensors")
    out = tmp_path / "a"
    args = [
        "audit",
        "--model",
        "tests.resume_model:factory",
        "--forget",
        "1",
        "--unlearned",
        f"u={tmp_path}/u.safetensors",
    ]
    args += ["--starts", "4", "--search-steps", "2", "--grid", "9", "--relearn-at", "1", "--relearn-forget", "0"]
    args += ["--relearn-seeds", "1", "--prior-samples", "32", "--quiet", "--out", str(out)]
    code, _, err = run(args, capsys)
    assert code == 0, err
    data = json.loads((out / "audit.json").read_text())
    monkeypatch.setattr(audit_mod, "audit_model", lambda *a, **k: pytest.fail("re-judging measured again"))
    code, text, err = run(["audit", "--rejudge", "--share-limit", "1", "--why", "FPR 15%", "--out", str(out)], capsys)
    assert code == 0, err
    assert "u                unlearned" in text
    new = json.loads((out / "audit.json").read_text())
    check = new["models"][1]["verdict"]["checks"]["input_search"]
    assert check["limit"] == 1 and check["pass"]  # every share is <= 100%
    assert new["models"][1]["search"] == data["models"][1]["search"]  # nothing measured again
    s = AuditSettings(**{**new["settings"], "relearn_at": (1,), "relearn_forget": (0,)})
    assert all(m["verdict"] == json.loads(json.dumps(verdict(m, None, s))) for m in new["models"])
    assert new["rejudged"]["measured_with"] == {"share_margin": 0.01, "fraction_threshold": 0.02}
    md = (out / "audit.md").read_text()
    assert md == render_audit(new) and "the audit was run with 2.0% / 1.0%: FPR 15%" in md
    assert run_report(tmp_path, check=True) == []
    # a second re-judging keeps the limits the audit was measured with
    code, _, err = run(["audit", "--rejudge", "--fraction-limit", "0.5", "--out", str(out)], capsys)
    assert code == 0, err
    again = json.loads((out / "audit.json").read_text())
    assert again["rejudged"]["measured_with"]["fraction_threshold"] == 0.02
    assert again["settings"]["fraction_threshold"] == 0.5 and again["settings"]["share_margin"] == 1
    for bad, msg in (
        (["--starts", "4"], "--rejudge measures nothing"),
        ([], "needs --fraction-limit and/or --share-limit"),
        (["--fraction-limit", "0"], "fraction limit must lie in (0, 1]"),
    ):
        code, _, err = run(["audit", "--rejudge", *bad, "--out", str(out)], capsys)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run(["audit", "--rejudge", "--fraction-limit", "0.1", "--out", str(tmp_path / "none")], capsys)
    assert code == 2 and "no audit to re-judge" in err


def test_audit_input_errors_are_one_line(tmp_path, capsys):
    base = ["audit", "--model", "tests.resume_model:factory", "--quiet", "--out", str(tmp_path / "a")]
    code, _, err = run([*base, "--unlearned", "nopath"], capsys)
    assert code == 2 and "NAME=PATH" in err
    code, _, err = run([*base, "--unlearned", f"x={tmp_path / 'missing.safetensors'}"], capsys)
    assert code == 2 and "checkpoint not found" in err and len(err.strip().splitlines()) == 1


# --- class-conditional models (the MNIST DiT) --------------------------------------------------------------------


def _load_dit(path):
    from genunlearn.models import load_model

    return load_model("mnist-dit", str(path), device="cpu")


class Bright(torch.nn.Module):
    """Two classes of images: logits (0, 20 * (mean pixel - 0.5))."""

    def forward(self, x):
        s = 20 * (x.reshape(len(x), -1).mean(1) - 0.5)
        return torch.stack([torch.zeros_like(s), s], 1)


def test_class_embedding_override_equals_the_label_and_the_search_stays_in_its_ball(tiny_dit):
    from genunlearn.models.mnist_dit import sample

    dit = _load_dit(tiny_dit).eval()
    with torch.no_grad():  # the tiny model barely listens to its label: make the condition matter
        for block in dit.transformer.transformer_blocks:
            block.norm1.emb.class_embedder.embedding_table.weight.mul_(30)
            block.norm1.linear.weight.mul_(5)
    for p in dit.parameters():
        p.requires_grad_(False)
    labels = torch.tensor([1, 3, 7, 1])
    noise = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    kw = {"steps": 3, "guidance_scale": 2.0, "sampler": "dpm++"}
    emb = dit.label_embedding(labels)
    assert emb.shape == (4, 1, 16)
    same = sample(dit, labels, noise, class_embedding=emb, **kw)
    assert torch.allclose(same, sample(dit, labels, noise, **kw), atol=1e-6)  # the hook reproduces the labels
    other = sample(dit, labels, noise, class_embedding=dit.label_embedding(torch.tensor([0, 0, 0, 0])), **kw)
    assert not torch.allclose(other, same, atol=1e-4)

    det = Detector("bright", Bright(), [1])
    radius = float(dit.label_embedding(torch.arange(10)).reshape(10, -1).norm(dim=1).max())
    ball = InputBall(tuple(emb.shape[1:]), radius)
    generate = lambda m, e: sample(m, labels, noise, class_embedding=e, grad=True, **kw)  # noqa: E731
    before = judge(dit, generate, emb, [det])["bright"]
    res = input_search(dit, generate, ball, det, steps=6, lr=0.5, batch_size=4, init=emb)
    assert len(res.inputs) == 4 and float(res.inputs.reshape(4, -1).norm(dim=1).max()) <= radius * (1 + 1e-5)
    assert (res.p["bright"] > before + 0.01).all()  # every start found a brighter (more "forgotten") sample


def test_embedding_search_refuses_an_unconditional_model():
    class Unconditional:
        conditional_sampler = False
        bundle = type("B", (), {"sampler": object()})()

    with pytest.raises(ConfigError, match="class-conditional"):
        embedding_ball(Unconditional(), Lift(), AuditSettings())


def test_relearn_counts_the_examples_of_an_x_y_pair():
    x, y = torch.randn(5, 2), torch.ones(5, dtype=torch.long)
    objective = lambda m, b: ((m(b[0]) - b[1].unsqueeze(1)) ** 2).mean()  # noqa: E731
    measure = lambda m: {"s": float(m.shift[0].detach())}  # noqa: E731
    retain = (torch.randn(20, 2), torch.zeros(20, dtype=torch.long))
    out = relearn(Lift(), objective, retain, (x, y), measure, n_forget=3, steps=2, at=(2,), batch_size=4)
    assert sorted(out) == [0, 2]
    with pytest.raises(ConfigError, match="forget set holds 5"):
        relearn(Lift(), objective, retain, (x, y), measure, n_forget=6, steps=1, at=(1,), batch_size=4)


def test_conditional_replacement_audit_end_to_end(tiny_dit, tmp_path, capsys):
    from genunlearn.models.registry import bundled_weights

    dit, path = _load_dit(tiny_dit), tiny_dit
    unlearned = tmp_path / "u.safetensors"
    with torch.no_grad():
        moved = __import__("copy").deepcopy(dit)
        for p in moved.parameters():
            p.add_(0.01)
    save_weights(moved, unlearned, metadata={"build_options": __import__("dataclasses").asdict(dit.config)})
    out = tmp_path / "audit"
    args = ["audit", "--model", "mnist-dit", "--checkpoint", str(path), "--forget", "1", "--replace-with", "7"]
    args += ["--unlearned", f"u={unlearned}", "--independent-classifier", str(bundled_weights("mnist-classifier"))]
    args += ["--sampler-steps", "2", "--guidance", "1.5", "--starts", "2", "--search-steps", "1"]
    args += ["--embedding-starts", "3", "--prior-samples", "6", "--relearn-at", "1", "--relearn-forget", "0,2"]
    args += ["--relearn-seeds", "1", "--quiet", "--out", str(out)]
    code, text, err = run(args, capsys)
    assert code == 0, err
    assert "not implemented" not in err + text
    data = json.loads((out / "audit.json").read_text())
    u = data["models"][1]
    assert set(u["verdict"]["checks"]) == {
        *("prior", "input_search", "embedding_search", "prior_mass", "relearn_retain", "relearn_forget")
    }
    assert u["grid"] is None and u["verdict"]["checks"]["prior_mass"]["pass"] is None  # no grid for 784-d noise
    assert u["ball"]["shape"] == [1, 28, 28] and u["prior"]["target"] == 7
    assert set(u["prior"]["target_fraction"]) == {"attacked", "independent"}
    e = u["embedding_search"]
    assert e["start_labels"] == [1, 0, 2] and e["shape"] == [1, 16] and e["starts"] == 3
    labels = torch.arange(10)
    assert e["radius"] == pytest.approx(float(moved.label_embedding(labels).reshape(10, -1).norm(dim=1).max()))
    assert all(b["norm"] <= e["radius"] * (1 + 1e-5) for b in e["best"])
    assert data["settings"]["embedding_radius"] == 1.0 and "2 steps" in data["title"]
    md = (out / "audit.md").read_text()
    assert md == render_audit(data) and "## Class-embedding search" in md and "target 7" in md
    assert "| embedding search |" in render_verdict(data)
    assert (out / "figures" / "best_embedding_samples.png").stat().st_size > 0
