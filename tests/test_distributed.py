"""Data parallelism on torch.distributed (issue 16): 2 gloo processes on CPU give the single-process run.

Each rank holds its half of every batch; the result after several updates must equal the single-process run on
the union of the batches (relative 1e-5), for S, UNO, UNO-S, UNO-FD and rep (and UNO^ with a classifier term),
with sum- and mean-reduced losses and the random draws inside the losses (reparameterisation noise, rep's latent
samples, the classifier term's samples).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from genunlearn.distributed import BatchPart, holding, per_example_randint, per_example_randn_like
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.objectives import HatTerm, LatentReplacement, StandardTask, VAEObjective
from tests.test_cli import run

# (method, loss reduction): both reductions are covered; the hat methods' classifier term is computed whole by
# every rank (same random state) and weighted 1/W
CASES = [("s", "sum"), ("uno", "sum"), ("uno-s", "mean"), ("uno-fd", "sum"), ("rep", "mean"), ("uno-hat", "sum")]
STEPS = 4
# gradient-sized all-reduces per update: S two, UNO three (g_r, g_f, the Hessian-vector products) ...
GRADIENT_ALLREDUCES = {"s": [2] * 4, "uno": [3] * 4, "uno-s": [3, 2, 3, 2], "uno-fd": [4] * 4, "rep": [2] * 4}
GRADIENT_ALLREDUCES["uno-hat"] = [4] * 4  # g_r, g_f, the classifier term's gradient, the Hessian-vector products


class TinyVAE(nn.Module):
    """A small VAE without BatchNorm (BatchNorm in train mode normalises per rank: not the single-process run)."""

    def __init__(self, d: int = 12, latent: int = 2) -> None:
        super().__init__()
        self.latent_dim = latent
        self.enc = nn.Sequential(nn.Linear(d, 10), nn.Tanh(), nn.Linear(10, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, 10), nn.Tanh(), nn.Linear(10, d))

    def encode(self, x):
        h = self.enc(x)
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def decode_logits(self, z):
        return self.dec(z)

    def decode(self, z):
        return torch.sigmoid(self.dec(z))


class LinearClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(x)


def _data():
    g = torch.Generator().manual_seed(0)
    retain = torch.rand(40, 12, generator=g)
    forget = (torch.rand(20, 12, generator=g) * 0.5).round()
    return retain, forget


def run_cases(data_parallel: bool) -> dict:
    retain, forget = _data()
    out = {}
    for method, reduction in CASES:
        torch.manual_seed(1)
        model = TinyVAE()
        rep = None
        if method == "rep":
            rep = LatentReplacement.for_vae(copy.deepcopy(model), retain, forget, samples=8, reduction=reduction)
        hat = None
        if method.endswith("-hat"):
            hat = HatTerm(
                generate=lambda m, n: m.decode(torch.randn(n, 2)),
                classifier=LinearClassifier(),
                forget_classes=[1],
                num_classes=3,
                samples=16,
            )
        cfg = UnlearnConfig(method=method, steps=STEPS, lr=1e-2, batch_size=8, beta_o=10.0, beta_h=5.0, stop_at=None)
        result = unlearn(
            model,
            StandardTask(VAEObjective("bernoulli", reduction)),
            retain,
            forget,
            cfg,
            replacement=rep,
            hat=hat,
            progress=False,
            data_parallel=data_parallel,
        )
        rows = result.log[1:]
        out[method] = {
            "params": [p.detach().clone() for p in model.parameters()],
            "loss_r": [r["loss_r"] for r in rows],
            "cos2": [r.get("cos2", 0.0) for r in rows],
            "grad_allreduces": [r.get("comm_grad_allreduces", 0) for r in rows],
        }
    return out


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(run_cases(True), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _close(a: torch.Tensor | float, b: torch.Tensor | float) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm()) <= 1e-5 * max(float(b.norm()), 1e-12)


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_run(tmp_path):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(2)]
    single = run_cases(False)
    for method, _ in CASES:
        dp0, dp1, ref = ranks[0][method], ranks[1][method], single[method]
        # the replicas are bit-identical, and equal to the single-process run on the union of the batches
        assert all(torch.equal(a, b) for a, b in zip(dp0["params"], dp1["params"], strict=True)), method
        moved = [not torch.equal(a, b) for a, b in zip(ref["params"], TinyVAE().parameters(), strict=True)]
        assert any(moved)
        for a, b in zip(dp0["params"], ref["params"], strict=True):
            assert _close(a, b), (method, float((a - b).abs().max()))
        assert _close(dp0["loss_r"], ref["loss_r"]), (method, dp0["loss_r"], ref["loss_r"])  # global values
        assert _close(dp0["cos2"], ref["cos2"]), method
        assert dp0["grad_allreduces"] == GRADIENT_ALLREDUCES[method], method


def _refusal_worker(rank: int, world: int, init_file: str, out: str) -> None:
    from genunlearn.config import RunConfig
    from genunlearn.distributed import on_main
    from genunlearn.errors import GenUnlearnError, OutputError
    from genunlearn.experiments.session import run_to_dir
    from genunlearn.loop import Checkpointing

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    seen = []
    try:
        retain, forget = _data()
        cfg = UnlearnConfig(method="s", steps=2, batch_size=8, stop_at=None)
        attempts = [
            lambda: unlearn(
                TinyVAE(),
                StandardTask(VAEObjective()),
                retain,
                forget,
                cfg,
                progress=False,
                checkpoint=Checkpointing(f"{out}.ck{rank}"),
            ),
            lambda: run_to_dir(RunConfig(), f"{out}.run", resume=True),
            # the peer methods' extra terms are not split over the ranks
            lambda: run_to_dir(RunConfig(unlearn=UnlearnConfig(method="salun")), f"{out}.run"),
            # a refusal on rank 0 (the rank that checks the output folder) reaches every rank, as one line
            lambda: on_main(lambda: (_ for _ in ()).throw(OutputError("rank 0 refused"))),
        ]
        for attempt in attempts:
            try:
                attempt()
                seen.append("no error")
            except GenUnlearnError as exc:
                seen.append(f"{type(exc).__name__}: {exc}")
        torch.save(seen, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_resuming_or_checkpointing_a_data_parallel_run_is_refused_on_every_rank(tmp_path):
    """Checkpoints (issue 18) and the peer methods' terms are single-process: a data-parallel run refuses them
    with one line, on all ranks."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_refusal_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(2)]
    assert ranks[0] == ranks[1]
    checkpoint, resume, peer, refusal = ranks[0]
    assert checkpoint.startswith("ConfigError: data-parallel runs cannot be checkpointed or resumed")
    assert resume.startswith("ConfigError: --resume is not supported for data-parallel (torchrun) runs")
    assert peer.startswith("ConfigError: method 'salun' (extra terms or a one-off preparation) does not run data")
    assert refusal == "OutputError: rank 0 refused"
    assert all("\n" not in m for m in ranks[0])
    assert not (tmp_path / "out.run").exists()  # refused before any output


def test_a_rank_draws_its_rows_of_the_global_batch_noise():
    x = torch.zeros(6, 3)
    torch.manual_seed(5)
    whole = torch.randn_like(torch.zeros(10, 3)), torch.randint(0, 7, (10,))
    torch.manual_seed(5)
    with holding(BatchPart(4, 10, 10)):
        part = per_example_randn_like(x), per_example_randint(0, 7, 6)
    assert torch.equal(part[0], whole[0][4:]) and torch.equal(part[1], whole[1][4:])


USER_MODEL = textwrap.dedent(
    """
    import torch
    import genunlearn as gu
    from tests.test_distributed import TinyVAE, _data


    class Threshold(torch.nn.Module):
        def forward(self, x):
            m = x.mean(1)
            return torch.stack([m, 0.55 - m], 1) * 50


    def factory(context=None):
        retain, forget = _data()
        torch.manual_seed(1)
        return gu.ModelBundle(
            model=TinyVAE(),
            objective=gu.VAEObjective("bernoulli", context.loss_reduction if context else "sum"),
            sampler=gu.LatentSampler((2,)),
            classifier=Threshold(),
            num_classes=2,
            data=gu.TrainingData(torch.cat([retain, forget]), [0] * 40 + [1] * 20),
            replacement_likelihood="bernoulli",
        )
    """
)


@pytest.mark.slow
def test_torchrun_runs_the_cli_unchanged_and_only_rank_0_writes(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny_dp_model.py").write_text(USER_MODEL)
    repo = Path(__file__).resolve().parents[1]
    import genunlearn

    # the user's module, the tests, and the genunlearn under test (not whichever one the venv installed)
    path = [str(tmp_path), str(repo), str(Path(genunlearn.__file__).resolve().parents[1])]
    path += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    args = ["unlearn", "--model", "tiny_dp_model:factory", "--forget", "1", "--method", "uno", "--steps", "3"]
    args += ["--batch-size", "8", "--lr", "0.01", "--beta-o", "10", "--monitor-samples", "64", "--stop-at", "0"]
    args += ["--quiet"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    res = subprocess.run(
        [*torchrun, "-m", "genunlearn", *args, "--out", "dp"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("outputs in dp/") == 1  # rank 0 alone reports (and writes)
    monkeypatch.chdir(tmp_path)  # the single-process run, in this process
    code, _, err = run([*args, "--out", "sp"], capsys)
    assert code == 0, err
    dp, sp = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("dp", "sp"))
    assert dp["data_parallel"] == {"world_size": 2, "backend": "gloo"} and sp["data_parallel"] is None
    assert dp["steps_run"] == sp["steps_run"] == 3
    assert dp["forget_fraction_final"] == sp["forget_fraction_final"]
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "dp" / "model.safetensors"), load_file(tmp_path / "sp" / "model.safetensors")
    assert a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    header = (tmp_path / "dp" / "log.csv").read_text().splitlines()[0]
    assert "comm_grad_allreduces" in header


def test_a_data_loader_cannot_be_split():
    from genunlearn.data.batching import infinite_batches
    from genunlearn.errors import DataError

    loader = torch.utils.data.DataLoader(torch.zeros(4, 2), batch_size=2)
    with pytest.raises(DataError, match="cannot be split"):
        next(infinite_batches(loader, 2, torch.Generator(), part=(0, 1)))


def test_sharded_trainable_parameters_are_refused_not_silently_zero(tmp_path):
    """FSDP shards (DTensor) are out of torch.autograd.grad's reach: the engine says so instead of using zeros."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from genunlearn.errors import ConfigError

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        model = TinyVAE()
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
        retain, forget = _data()
        cfg = UnlearnConfig(method="s", steps=1, batch_size=8, stop_at=None)
        with pytest.raises(ConfigError, match="sharded"):
            unlearn(model, StandardTask(VAEObjective()), retain, forget, cfg, progress=False)
    finally:
        dist.destroy_process_group()
