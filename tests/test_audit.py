"""Issue 18, part 1: ``genunlearn audit`` — input search, prior mass, relearning, verdicts, outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy.stats import norm as normal

import genunlearn.experiments.audit as audit_mod
from genunlearn.checkpoints import save_weights
from genunlearn.eval.attacks import Detector, InputBall, grid_scan, input_search, relearn
from genunlearn.experiments.audit import AuditSettings, audit_headline, render_audit, verdict
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


def test_audit_input_errors_are_one_line(tmp_path, capsys):
    base = ["audit", "--model", "tests.resume_model:factory", "--quiet", "--out", str(tmp_path / "a")]
    code, _, err = run([*base, "--unlearned", "nopath"], capsys)
    assert code == 2 and "NAME=PATH" in err
    code, _, err = run([*base, "--unlearned", f"x={tmp_path / 'missing.safetensors'}"], capsys)
    assert code == 2 and "checkpoint not found" in err and len(err.strip().splitlines()) == 1
