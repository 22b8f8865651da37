"""The general engine (issue 11): data as batches from tensors, datasets, lazy files and loaders; model adapters."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genunlearn.adapters import ModelAdapter
from genunlearn.data.batching import LazyTensorFiles, infinite_batches, stream_generators
from genunlearn.errors import ConfigError, DataError
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.objectives import StandardTask, batch_inputs, batch_labels
from tests.conftest import TinyNet


def _xy(m, batch):
    x = batch_inputs(batch)
    return ((m(x[:, :4]) - x[:, 4:]) ** 2).mean()


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 7, generator=g), torch.randn(32, 7, generator=g) + 1.0


def _run(retain, forget, method="uno-s", steps=6, **kw):
    torch.manual_seed(0)
    model = TinyNet()
    cfg = UnlearnConfig(method=method, steps=steps, batch_size=8, stop_at=None, seed=3)
    unlearn(model, StandardTask(_xy), retain, forget, cfg, progress=False, **kw)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_tensor_dataset_and_lazy_files_give_the_tensor_run(tmp_path):
    r, f = _data()
    base = _run(r, f)
    assert torch.equal(base, _run(TensorDataset(r), TensorDataset(f)))
    paths = []
    for name, data in (("r", r), ("f", f)):
        for i, row in enumerate(data):
            p = tmp_path / f"{name}{i}.pt"
            torch.save(row.clone(), p)
            paths.append(str(p))
    lazy_r, lazy_f = LazyTensorFiles(paths[:64]), LazyTensorFiles(paths[64:])
    assert torch.equal(base, _run(lazy_r, lazy_f))
    assert torch.equal(base, _run(lazy_r, lazy_f, num_workers=1))  # workers prefetch; the order is the sampler's


def test_tuple_and_dict_batches():
    r, f = _data()
    y_r, y_f = torch.zeros(64, dtype=torch.long), torch.ones(32, dtype=torch.long)
    base = _run(r, f)
    assert torch.equal(base, _run(TensorDataset(r, y_r), TensorDataset(f, y_f)))

    class DictSet(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i], "y": self.y[i]}

    assert torch.equal(base, _run(DictSet(r, y_r), DictSet(f, y_f)))
    batch = next(infinite_batches(DictSet(r, y_r), 4, torch.Generator().manual_seed(0)))
    assert batch_inputs(batch).shape == (4, 7) and batch_labels(batch).tolist() == [0, 0, 0, 0]


def test_a_data_loader_is_used_as_is_and_restarted():
    r, f = _data()
    loader = DataLoader(TensorDataset(f), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = infinite_batches(loader, 999, torch.Generator())
    seen = [next(batches)[0] for _ in range(9)]  # 4 batches per pass: the loader is restarted twice
    assert all(b.shape == (8, 7) for b in seen)
    w = _run(r, loader, steps=5)
    assert torch.isfinite(w).all()


def test_streams_are_seeded_and_independent():
    a1, b1 = stream_generators(0)
    a2, _ = stream_generators(0)
    assert torch.equal(torch.randperm(10, generator=a1), torch.randperm(10, generator=a2))
    assert not torch.equal(torch.randperm(50, generator=a1), torch.randperm(50, generator=b1))
    r, f = _data()
    assert not torch.equal(_run(r, f), _run(f, r))


def test_empty_or_unsized_data_is_a_clear_error():
    r, f = _data()
    with pytest.raises(DataError, match="empty forget set"):
        _run(r, TensorDataset(f[:0]))

    class NoLen(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.zeros(7)

    with pytest.raises(DataError, match="__len__"):
        _run(r, NoLen())


class Pipeline(torch.nn.Module):
    """A generator with a frozen 'encoder' (with BatchNorm) and a trainable 'denoiser' (with BatchNorm and dropout)."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6))
        self.denoiser = torch.nn.Sequential(
            torch.nn.Linear(6, 6), torch.nn.BatchNorm1d(6), torch.nn.Dropout(0.5), torch.nn.Linear(6, 3)
        )

    def forward(self, x):
        return self.denoiser(torch.tanh(self.encoder(x)))


def test_adapter_freezes_parts_and_applies_policies_to_the_trainable_part():
    r, f = _data()
    torch.manual_seed(0)
    model = Pipeline()
    model.encoder.train()
    model.denoiser.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def objective(m, batch):
        seen.append((m.encoder.training, m.encoder[1].training, m.denoiser[1].training, m.denoiser[2].training))
        return _xy(m, batch)

    adapter = ModelAdapter(model, frozen=["encoder"])
    cfg = UnlearnConfig(method="s", steps=3, batch_size=8, stop_at=None, bn_mode="train", dropout="eval")
    unlearn(adapter, StandardTask(objective), r, f, cfg, progress=False)
    assert set(seen) == {(False, False, True, False)}  # frozen: eval; BN: train; dropout: off
    after = model.state_dict()
    for k in before:
        changed = not torch.equal(before[k], after[k])
        assert changed == k.startswith("denoiser"), k  # the frozen encoder: parameters and BN statistics kept
    assert model.encoder.training and not model.denoiser.training  # the caller's modes come back
    assert all(p.requires_grad for p in model.parameters())  # frozen flags restored


def test_adapter_trainable_filter_and_errors():
    model = Pipeline()
    adapter = ModelAdapter(model, trainable=lambda name, p: name.endswith("weight"))
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    assert [id(p) for p in adapter.trainable_parameters()] == [id(p) for p in weights]
    with pytest.raises(ConfigError, match="not found"):
        ModelAdapter(model, frozen=["vae"])
    r, f = _data()
    with pytest.raises(ConfigError, match="no trainable parameters"):
        unlearn(
            ModelAdapter(model, frozen=["encoder", "denoiser"]),
            StandardTask(_xy),
            r,
            f,
            UnlearnConfig(method="s", steps=1),
            progress=False,
        )
