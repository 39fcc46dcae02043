"""The byte format of a cached feature: a small versioned header, then raw values.

Anything read back from a shared cache is untrusted input, so this is a plain
layout parsed with ``struct`` and ``numpy.frombuffer``, never pickle, and every
field is checked before the payload is used.

Layout (little-endian)::

    magic      3s   b"RSF"
    format     u8   FORMAT_VERSION
    dtype      u8   1 = float16, 2 = float32
    ndim       u8   1..MAX_NDIM
    verlen     u8   length of the model version string
    reserved   u8   0
    crc32      u32  of everything after the header's fixed part
    version    verlen bytes, ASCII
    shape      ndim x u32
    payload    prod(shape) values of dtype, C order
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ringserve.contract.errors import ServiceError

MAGIC = b"RSF"
FORMAT_VERSION = 1
MAX_NDIM = 4
MAX_ELEMENTS = 1 << 24

_FIXED = struct.Struct("<3sBBBBBI")
_DTYPES: dict[int, np.dtype] = {1: np.dtype("<f2"), 2: np.dtype("<f4")}
_CODES: dict[str, int] = {"float16": 1, "float32": 2}


class CodecError(ServiceError, ValueError):
    """A cached value that is not a valid feature for the expected model version."""


def encode(vector: np.ndarray, model_version: str) -> bytes:
    """Serialise ``vector`` (float16 or float32) tagged with ``model_version``."""
    dtype_name = np.dtype(vector.dtype).name
    if dtype_name not in _CODES:
        raise CodecError(f"dtype {dtype_name} is not storable; use float16 or float32")
    if not 1 <= vector.ndim <= MAX_NDIM:
        raise CodecError(f"ndim {vector.ndim} outside 1..{MAX_NDIM}")
    version = model_version.encode("ascii")
    if len(version) > 255:
        raise CodecError("model version longer than 255 bytes")
    code = _CODES[dtype_name]
    body = version + struct.pack(f"<{vector.ndim}I", *vector.shape)
    body += np.ascontiguousarray(vector, dtype=_DTYPES[code]).tobytes()
    header = _FIXED.pack(MAGIC, FORMAT_VERSION, code, vector.ndim, len(version), 0, zlib.crc32(body))
    return header + body


def decode(blob: bytes, expected_version: str) -> np.ndarray:
    """Parse a cached value; raise CodecError unless it is intact and of ``expected_version``."""
    if len(blob) < _FIXED.size:
        raise CodecError(f"value of {len(blob)} bytes is shorter than the header")
    magic, fmt, code, ndim, verlen, reserved, crc = _FIXED.unpack_from(blob)
    if magic != MAGIC:
        raise CodecError("bad magic: not a ringserve feature")
    if fmt != FORMAT_VERSION:
        raise CodecError(f"format {fmt} is not {FORMAT_VERSION}")
    if code not in _DTYPES or not 1 <= ndim <= MAX_NDIM or reserved != 0:
        raise CodecError("malformed header")
    body = memoryview(blob)[_FIXED.size :]
    if zlib.crc32(body) != crc:
        raise CodecError("checksum mismatch: value corrupted")
    version = bytes(body[:verlen]).decode("ascii", errors="replace")
    if version != expected_version:
        raise CodecError(f"model version {version!r} is not the expected {expected_version!r}")
    shape_end = verlen + 4 * ndim
    if len(body) < shape_end:
        raise CodecError("truncated shape")
    shape = struct.unpack_from(f"<{ndim}I", body, verlen)
    count = 1
    for dim in shape:
        count *= dim
    dtype = _DTYPES[code]
    if count > MAX_ELEMENTS or len(body) - shape_end != count * dtype.itemsize:
        raise CodecError(f"payload size does not match shape {shape}")
    return np.frombuffer(body, dtype=dtype, count=count, offset=shape_end).reshape(shape).copy()
