"""Reader for the IDX file format (MNIST, Fashion-MNIST, KMNIST, EMNIST ...), raw or gzip.

The format: two zero bytes, a type code, the number of dimensions ``n``, then ``n`` big-endian
uint32 sizes, then the data in C order. Every structural property is validated so that a truncated,
corrupt or wrong file fails with a message that names it.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from genunlearn.errors import DataError

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip stream ({exc})") from None
    return raw


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one IDX file into a numpy array, validating header and size.

    >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])).tolist()
    [7, 8, 9]
    """
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number {data[:4].hex()})")
    type_code, ndim = data[2], data[3]
    if type_code not in _DTYPES:
        raise DataError(f"{name}: unknown IDX element type 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{name}: IDX file with zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(f"{name}: IDX data {kind}: header shape {shape} needs {expected} bytes, file has {actual}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(
    path: str | Path,
    *,
    ndim: int | None = None,
    item_shape: tuple[int, ...] | None = None,
    sha256: str | None = None,
) -> np.ndarray:
    """Read an IDX file (raw or gzip) and check it.

    Args:
        path: the file.
        ndim: expected number of dimensions (3 for images, 1 for labels), or ``None``.
        item_shape: expected shape of one item (e.g. ``(28, 28)``), or ``None``.
        sha256: expected checksum of the file as stored (compressed), or ``None``.

    Raises:
        DataError: with the file's name, if it is missing, corrupt, truncated or of the wrong shape.
    """
    path = Path(path)
    if sha256 is not None:
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise DataError(f"{path}: checksum mismatch (sha256 {digest[:12]}..., expected {sha256[:12]}...)")
    arr = parse_idx(_read_bytes(path), name=str(path))
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f"{path}: expected {ndim} dimensions, found shape {arr.shape}")
    if item_shape is not None and tuple(arr.shape[1:]) != tuple(item_shape):
        raise DataError(f"{path}: expected items of shape {item_shape}, found {tuple(arr.shape[1:])}")
    return arr


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` (uint8 or another IDX type) as an IDX file; gzip if the name ends in ``.gz``."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    codes = {v.newbyteorder("="): k for k, v in _DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"{path}: dtype {array.dtype} cannot be written as IDX")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = array.astype(_DTYPES[code]).tobytes()
    data = header + body
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
