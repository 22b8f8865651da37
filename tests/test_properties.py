"""Property-based tests (hypothesis): the IDX reader, the CelebA loader, run-config parsing and the gradient helpers
(issue 18).

Each property holds for every input hypothesis generates; a failure prints the smallest counterexample. CelebA:
every image id lands in exactly one split, whatever the ids; an attribute split is the exact partition of the
attribute columns; any attribute CSV parses or is one DataError; a truncated image, or a damaged zip, is a DataError
naming the file. ``HYP_N=2000 pytest tests/test_properties.py`` runs more examples per property (default 60).
"""

from __future__ import annotations

import csv
import io
import math
import os
import tomllib
import zipfile
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from genunlearn.config import SECTIONS, RunConfig, _hints, load_config
from genunlearn.data.celeba import CelebA64, _read_attributes, is_test_image
from genunlearn.data.idx import _DTYPES, parse_idx, read_idx, write_idx
from genunlearn.errors import ConfigError, DataError
from genunlearn.methods.gradients import cosine, dot, norm, project_out, unit
from tests.test_celeba import random_jpeg, write_celeba

FAST = settings(
    max_examples=int(os.environ.get("HYP_N", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# --- the IDX reader -----------------------------------------------------------------------------------------------

IDX_DTYPES = [d.newbyteorder("=") for d in _DTYPES.values()]


@st.composite
def idx_arrays(draw):
    dtype = draw(st.sampled_from(IDX_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype, shape, elements={"allow_nan": False} if dtype.kind == "f" else None))


@FAST
@given(arr=idx_arrays(), gz=st.booleans())
def test_idx_roundtrip_any_type_and_shape(tmp_path_factory, arr, gz):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    back = read_idx(path, ndim=arr.ndim, item_shape=arr.shape[1:])
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@FAST
@given(data=st.binary(max_size=64))
def test_idx_parser_never_fails_otherwise_than_with_a_data_error(data):
    try:
        arr = parse_idx(data)
    except DataError:
        return
    assert arr.size * arr.dtype.itemsize + 4 + 4 * arr.ndim == len(data)


@FAST
@given(arr=idx_arrays(), cut=st.integers(min_value=1), extra=st.binary(min_size=1, max_size=8))
def test_idx_truncated_or_padded_files_are_data_errors(arr, cut, extra):
    header = bytes([0, 0, {d: k for k, d in zip(_DTYPES, IDX_DTYPES, strict=True)}[arr.dtype], arr.ndim])
    good = header + np.asarray(arr.shape, ">u4").tobytes() + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    np.testing.assert_array_equal(parse_idx(good), arr)
    with pytest.raises(DataError):
        parse_idx(good[: max(0, len(good) - cut)])
    with pytest.raises(DataError, match="trailing bytes"):
        parse_idx(good + extra)


# --- the CelebA loader (zip of JPEGs + attribute CSV) ---------------------------------------------------------------


JPEG = random_jpeg(np.random.default_rng(0))


def _two_images(root):
    """A CelebA folder of two different JPEGs; returns the folder and the images as the loader reads them."""
    ids = ["000001.jpg", "000002.jpg"]
    write_celeba(
        root,
        attrs=["A"],
        ids=ids,
        values=[[0], [1]],
        members={ids[0]: JPEG, ids[1]: random_jpeg(np.random.default_rng(1))},
    )
    clean = CelebA64(root, split="all", framing="all")
    originals = [clean.image_uint8(k).clone() for k in range(2)]
    clean.close()
    return root, originals


_image_ids = st.lists(st.from_regex(r"[0-9a-z_]{1,10}\.jpg", fullmatch=True), min_size=1, max_size=25, unique=True)


@FAST
@given(ids=_image_ids, framed=st.lists(st.booleans(), min_size=25, max_size=25))
def test_celeba_every_image_is_in_exactly_one_split(tmp_path_factory, ids, framed):
    framings = ["aligned" if f else "detector-crop" for f in framed[: len(ids)]]
    root = tmp_path_factory.mktemp("celeba")
    write_celeba(
        root, attrs=["A"], framings=framings, ids=ids, values=[[0]] * len(ids), members=dict.fromkeys(ids, JPEG)
    )
    for framing in ("aligned", "detector-crop", "all"):
        chosen = [i for i, f in zip(ids, framings, strict=True) if framing == "all" or f == framing]
        got = {}
        for split in ("train", "test", "all"):
            expected = [i for i in chosen if split == "all" or is_test_image(i) == (split == "test")]
            if not expected:
                with pytest.raises(DataError, match="no images with split"):
                    CelebA64(root, split=split, framing=framing)
                got[split] = []
                continue
            got[split] = CelebA64(root, split=split, framing=framing).image_ids
            assert got[split] == expected  # the CSV's order, the hash's choice
        assert sorted(got["train"] + got["test"]) == sorted(got["all"]) == sorted(chosen)
        assert not set(got["train"]) & set(got["test"])


_attribute_table = st.integers(2, 30).flatmap(
    lambda n: hnp.arrays(np.uint8, (n, 3), elements=st.integers(0, 1)).filter(lambda a: 0 < a[:, 0].sum() < n)
)


@FAST
@given(values=_attribute_table, how=st.sampled_from(["any", "all"]), negate=st.booleans())
def test_celeba_attribute_split_is_the_exact_partition_of_the_columns(tmp_path_factory, values, how, negate):
    n = len(values)
    ids = [f"{k:06d}.jpg" for k in range(n)]
    root = tmp_path_factory.mktemp("celeba")
    write_celeba(root, attrs=["A", "B", "C"], ids=ids, values=values, members=dict.fromkeys(ids, JPEG))
    ds = CelebA64(root, split="all", framing="all")
    split = ds.forget_split("A")
    assert torch.equal(split.forget, torch.from_numpy(np.flatnonzero(values[:, 0])))
    assert torch.equal(split.retain, torch.from_numpy(np.flatnonzero(values[:, 0] == 0)))
    b = 1 - values[:, 1] if negate else values[:, 1]
    mask = ds.forget_mask(["A", "~B" if negate else "B"], how)
    expected = (values[:, 0] | b) if how == "any" else (values[:, 0] & b)
    assert torch.equal(mask, torch.from_numpy(expected.astype(bool)))
    assert sorted(torch.cat([split.forget, split.retain]).tolist()) == list(range(n))


_csv_cell = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "", "x", "aligned", "detector-crop", "a.jpg", "1.0"]), st.text(max_size=4)
)


@FAST
@given(
    header=st.lists(st.sampled_from(["image_id", "source", "framing", "A", "B", "A", " "]), max_size=6),
    rows=st.lists(st.lists(_csv_cell, max_size=6), max_size=5),
)
def test_celeba_attribute_csv_parses_or_is_one_data_error(tmp_path_factory, header, rows):
    path = tmp_path_factory.mktemp("csv") / "attributes.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    try:
        names, ids, _, framings, values = _read_attributes(path)
    except DataError:
        return
    assert header[:3] == ["image_id", "source", "framing"] and names == header[3:]
    assert len(ids) == len(set(ids)) == values.shape[0] > 0 and values.shape[1] == len(names)
    assert set(np.unique(values)) <= {0, 1} and set(framings) <= {"aligned", "detector-crop"}


@FAST
@given(cut=st.integers(0, len(JPEG) - 1))
def test_celeba_truncated_images_are_data_errors_naming_them(tmp_path_factory, cut):
    ids = ["000001.jpg", "000002.jpg"]
    root = tmp_path_factory.mktemp("celeba")
    write_celeba(root, attrs=["A"], ids=ids, values=[[0], [1]], members={ids[0]: JPEG, ids[1]: JPEG[:cut]})
    ds = CelebA64(root, split="all", framing="all")
    assert ds[0][0].shape == (3, 64, 64)
    with pytest.raises(DataError, match="000002.jpg") as info:
        ds[1]
    assert "\n" not in str(info.value)


@FAST
@given(flips=st.lists(st.integers(0, 10_000), min_size=1, max_size=4))
def test_celeba_a_damaged_zip_is_a_data_error_or_reads_the_exact_images(tmp_path_factory, flips):
    """Bytes flipped anywhere in images.zip (disk damage): the zip's structure and CRC-32 catch it, or it missed
    the images. (A JPEG damaged *before* it was zipped can decode into a partly grey image: libjpeg only warns.)"""
    root, originals = _two_images(tmp_path_factory.mktemp("celeba"))
    raw = bytearray((root / "images.zip").read_bytes())
    for k in flips:
        raw[k % len(raw)] ^= 0xFF
    (root / "images.zip").write_bytes(bytes(raw))
    try:
        ds = CelebA64(root, split="all", framing="all")
        images = [ds.image_uint8(k) for k in range(2)]
    except DataError as exc:
        assert "images.zip" in str(exc) and "\n" not in str(exc)
        return
    assert all(torch.equal(a, b) for a, b in zip(images, originals, strict=True))


def test_celeba_every_damaged_zip_header_byte_is_a_data_error_or_harmless(tmp_path):
    """Each byte of the zip's headers and directory flipped in turn (the hypothesis test above mostly hits image
    data): unsupported 'versions' and compression methods were tracebacks before (NotImplementedError)."""
    root, originals = _two_images(tmp_path / "c")
    good = (root / "images.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        data = set()
        for info in zf.infolist():
            start = info.header_offset + 30 + len(info.filename) + len(info.extra)
            data.update(range(start, start + info.compress_size))
    headers = [k for k in range(len(good)) if k not in data]
    assert 150 < len(headers) < 400
    outcomes = {"error": 0, "same": 0}
    for k in headers:
        raw = bytearray(good)
        raw[k] ^= 0xFF
        (root / "images.zip").write_bytes(bytes(raw))
        try:
            ds = CelebA64(root, split="all", framing="all")
            images = [ds.image_uint8(i) for i in range(2)]
            ds.close()
        except DataError:
            outcomes["error"] += 1
            continue
        assert all(torch.equal(a, b) for a, b in zip(images, originals, strict=True)), f"byte {k}"
        outcomes["same"] += 1
    assert outcomes["error"] > 0 and outcomes["same"] > 0  # both kinds of damage occur


# --- config parsing -----------------------------------------------------------------------------------------------

_KEYS = {name: [f.name for f in fields(cls)] for name, cls in SECTIONS.items()}
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 12), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
_sections = st.dictionaries(
    st.one_of(st.sampled_from(list(SECTIONS)), st.text(max_size=6)),
    st.dictionaries(
        st.one_of(st.sampled_from(sorted({k for ks in _KEYS.values() for k in ks})), st.text(max_size=6)),
        _values,
        max_size=4,
    ),
    max_size=4,
)


@FAST
@given(data=_sections)
def test_any_config_table_is_a_valid_config_or_one_config_error(data):
    try:
        cfg = RunConfig.from_dict(data, source="t.toml").validate()
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    for section in cfg.to_dict().values():  # what was accepted is a finite, typed value
        for v in section.values():
            assert not (isinstance(v, float) and math.isnan(v))
    assert RunConfig.from_dict(tomllib.loads(cfg.to_toml())) == _as_written(cfg)  # and it writes and reads back


def _as_written(cfg: RunConfig) -> RunConfig:
    """``stop_at = None`` (no threshold) is written as its equivalent 0.0: TOML has no null."""
    return cfg if cfg.unlearn.stop_at is not None else replace(cfg, unlearn=replace(cfg.unlearn, stop_at=0.0))


def _valid_value(tp, name, section=""):
    from genunlearn.config import _base_type

    base, optional = _base_type(tp)
    # fields whose name another section uses with another meaning are keyed "section.name"
    qualified = {
        "adapter.kind": st.sampled_from(["none", "lora"]),
        "adapter.rank": st.integers(1, 256),
        "adapter.dropout": st.floats(0, 1, exclude_max=True),
        "adapter.target_modules": st.lists(
            st.sampled_from(["all", "decoder.0", "to_q", "decoder.*", "enc_mu"]), min_size=1, max_size=3
        ).map(tuple),
        "adapter.trainable": st.just(()),  # patterns need kind none: a valid config cannot draw it independently
    }
    if f"{section}.{name}" in qualified:
        s = qualified[f"{section}.{name}"]
        return st.one_of(st.none(), s) if optional else s
    choices = {
        "method": st.sampled_from(["uno", "s", "rep", "s-hat", "uno-fd", "gdiff", "salun", "siss"]),
        "optimizer": st.sampled_from(["adam", "sgd"]),
        "bn_mode": st.sampled_from(["train", "eval", "batch"]),
        "dropout": st.sampled_from(["train", "eval"]),
        "orthogonality": st.sampled_from(["cos", "dot"]),
        "precision": st.sampled_from(["fp32", "bf16"]),
        "loss_reduction": st.sampled_from(["sum", "mean"]),
        "hat_kind": st.sampled_from(["bernoulli", "reference", "uniform-kl"]),
        "mode": st.sampled_from(["eval", "train"]),
        "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:1"]),
        "forget": st.lists(st.integers(0, 9), min_size=1, max_size=3).map(tuple),
        "replace_with": st.just(()),
        "forget_attr": st.lists(st.sampled_from(["Male", "Eyeglasses", "Smiling"]), max_size=2).map(tuple),
        "attr_mode": st.sampled_from(["any", "all"]),
        "stop_at": st.floats(0, 1),
        "saliency_fraction": st.floats(1e-6, 1),
        "siss_mixture": st.floats(1e-6, 1 - 1e-6),
        "steps": st.integers(0, 10**6),
        "batch_size": st.integers(2, 4096),
        "samples": st.integers(1, 10**5),
    }
    if name in choices:
        s = choices[name]
    elif base is bool:
        s = st.booleans()
    elif base is int:
        s = st.integers(0, 10**6)
    elif base is float:
        s = st.floats(1e-12, 1e12)
    elif base is str:
        s = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=10)
    elif typing_origin(base) is tuple:
        s = st.lists(st.integers(0, 9), max_size=3).map(tuple)
    else:
        s = st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.integers(-5, 5), max_size=2)
    return st.one_of(st.none(), s) if optional else s


def typing_origin(tp):
    import typing

    return typing.get_origin(tp)


@st.composite
def valid_configs(draw):
    parts = {}
    for name, cls in SECTIONS.items():
        hints = _hints(cls)
        chosen = draw(st.lists(st.sampled_from(_KEYS[name]), unique=True))
        kwargs = {k: draw(_valid_value(hints[k], k, name)) for k in chosen}
        parts[name] = cls(**kwargs)
    return RunConfig(**parts)


@FAST
@given(cfg=valid_configs())
def test_a_valid_config_survives_its_toml_file(tmp_path_factory, cfg):
    try:
        cfg.validate()
    except ConfigError:
        assume(False)
    path = tmp_path_factory.mktemp("cfg") / "run.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == _as_written(cfg)
    assert load_config(None, {s: dict(v) for s, v in cfg.to_dict().items()}) == cfg


# --- gradient helpers -------------------------------------------------------------------------------------------

# entries: zero, or sign x mantissa x 2^e with |entry| in [2^-60, 2^101): scaled by up to 1e8 either way they stay
# normal float32 numbers, while norms and dot products range far beyond float32 (overflow and underflow paths)
_mag = st.one_of(
    st.just(0.0),
    st.builds(
        lambda m, e, sign: float(np.float32(sign * m * 2.0**e)),
        st.floats(1.0, 2.0, exclude_max=True),
        st.integers(-60, 100),
        st.sampled_from([-1.0, 1.0]),
    ),
)


@st.composite
def grads(draw, shapes=None):
    shapes = shapes or draw(st.lists(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4), min_size=1, max_size=3))
    return [torch.tensor(draw(hnp.arrays(np.float32, s, elements=_mag))) for s in shapes], shapes


@st.composite
def grad_pairs(draw):
    a, shapes = draw(grads())
    b, _ = draw(grads(shapes))
    return a, b


def _flat(g):
    return torch.cat([t.reshape(-1) for t in g]).double()


@FAST
@given(pair=grad_pairs())
def test_cosine_lies_in_minus_one_one_and_matches_float64(pair):
    a, b = pair
    c = float(cosine(a, b))
    assert -1.0 <= c <= 1.0
    fa, fb = _flat(a), _flat(b)
    if fa.norm() > 0 and fb.norm() > 0:
        assert c == pytest.approx(float(fa @ fb / (fa.norm() * fb.norm())), abs=1e-5)
    else:
        assert c == 0.0


@FAST
@given(g=grads(), s=st.floats(-1e6, 1e6).filter(lambda v: v != 0))
def test_cosine_of_parallel_gradients_is_exactly_within_one(g, s):
    a, _ = g
    b = [x * s for x in a]
    assume(all(torch.isfinite(x).all() for x in b) and float(_flat(b).norm()) > 0)
    c = float(cosine(a, b))
    assert -1.0 <= c <= 1.0 and abs(c) == pytest.approx(1.0, abs=1e-5)


@FAST
@given(pair=grad_pairs(), s=st.floats(1e-8, 1e8), t=st.floats(1e-8, 1e8))
def test_cosine_and_projection_are_scale_invariant(pair, s, t):
    a, b = pair
    a2, b2 = [x * s for x in a], [x * t for x in b]
    assert all(torch.isfinite(x).all() for x in a2 + b2)
    assert float(cosine(a2, b2)) == pytest.approx(float(cosine(a, b)), abs=1e-5)
    p, p2 = _flat(project_out(a, b)), _flat(project_out(a, b2))  # the reference's length does not matter
    assert torch.allclose(p, p2, rtol=1e-4, atol=1e-5 * float(_flat(a).norm()))


@FAST
@given(pair=grad_pairs())
def test_projection_is_orthogonal_and_finite(pair):
    g, ref = pair
    p = project_out(g, ref)
    assert all(torch.isfinite(x).all() for x in p)
    fp, fr, fg = _flat(p), _flat(ref), _flat(g)
    if fr.norm() > 0:
        assert abs(float(fp @ fr)) <= 1e-5 * float(fg.norm()) * float(fr.norm()) + 1e-30
    assert float(fp.norm()) <= float(fg.norm()) * (1 + 1e-5) + 1e-30  # a projection never lengthens


@FAST
@given(g=grads())
def test_norm_and_unit_never_overflow(g):
    g, _ = g
    n = float(norm(g))
    exact = float(_flat(g).norm())
    assert math.isfinite(n) and n == pytest.approx(exact, rel=1e-5)
    u, _ = unit(g)
    assert all(torch.isfinite(x).all() for x in u)
    if exact > 0:
        assert float(dot(u, u)) == pytest.approx(1.0, abs=1e-5)
