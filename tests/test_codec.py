import numpy as np
import pytest

from ringserve.contract import codec


def test_roundtrip_float16_and_float32():
    for dtype in (np.float16, np.float32):
        v = np.linspace(-3, 3, 576).astype(dtype)
        out = codec.decode(codec.encode(v, "abc123"), "abc123")
        assert out.dtype == dtype and np.array_equal(out, v)


def test_header_is_small_and_payload_raw_little_endian():
    v = np.arange(8, dtype=np.float16)
    blob = codec.encode(v, "v1")
    assert blob.endswith(v.astype("<f2").tobytes())
    assert len(blob) - v.nbytes < 32


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda b: b[:5], "shorter than the header"),
        (lambda b: b"XXX" + b[3:], "bad magic"),
        (lambda b: b[:3] + b"\x09" + b[4:], "format"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "checksum"),
        (lambda b: b[:-2], "checksum"),
        (lambda b: b"", "shorter"),
    ],
)
def test_corrupt_values_are_refused(mutate, reason):
    blob = codec.encode(np.ones(16, np.float16), "v1")
    with pytest.raises(codec.CodecError, match=reason):
        codec.decode(mutate(blob), "v1")


def test_other_model_version_is_refused():
    blob = codec.encode(np.ones(4, np.float16), "old")
    with pytest.raises(codec.CodecError, match="model version"):
        codec.decode(blob, "new")


def test_pickle_is_never_accepted():
    import pickle

    with pytest.raises(codec.CodecError):
        codec.decode(pickle.dumps(np.ones(4)), "v1")


def test_unsupported_dtype_refused_on_encode():
    with pytest.raises(codec.CodecError):
        codec.encode(np.ones(4, np.int64), "v1")
