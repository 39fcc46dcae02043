"""What the client accepts as one image or as many, and what it sends for each (no server needed)."""

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from ringserve.client.aio import _is_single
from ringserve.client.inputs import hint, to_bytes
from ringserve.local.imagegen import jpeg, picture


def test_single_or_many():
    img = picture(1)
    for single in ("a.jpg", Path("a.jpg"), b"bytes", bytearray(b"x"), img, np.zeros((4, 4, 3), np.uint8)):
        assert _is_single(single)
    for many in (["a.jpg"], ("a.jpg", "b.jpg"), (p for p in ["a.jpg"]), {"a.jpg"}):
        assert not _is_single(many)


def test_inputs_become_bytes_and_pixels_travel_losslessly(tmp_path):
    data = jpeg(3)
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    assert to_bytes(path) == data and to_bytes(str(path)) == data and to_bytes(memoryview(data)) == data
    img = picture(4)
    sent = Image.open(io.BytesIO(to_bytes(img)))
    assert sent.format == "PNG" and sent.tobytes() == img.tobytes()
    assert Image.open(io.BytesIO(to_bytes(np.asarray(img)))).tobytes() == img.tobytes()
    with pytest.raises(TypeError, match="cannot send"):
        to_bytes(42)


def test_hint_is_none_for_bytes_that_do_not_decode():
    assert hint(b"nope") is None
    assert isinstance(hint(jpeg(5)), int)


def test_a_stream_whose_status_the_core_lost_may_be_re_sent_but_a_server_error_may_not():
    from grpc.aio import AioRpcError, Metadata

    from ringserve.client.errors import may_resend

    def failed(code: grpc.StatusCode, details: str) -> AioRpcError:
        return AioRpcError(code, Metadata(), Metadata(), details)

    assert may_resend(failed(grpc.StatusCode.UNAVAILABLE, "node a is draining"))
    # what grpc's asyncio core says when the caller writes on a call a draining node already ended
    assert may_resend(failed(grpc.StatusCode.INTERNAL, "Internal error from Core"))
    assert not may_resend(failed(grpc.StatusCode.INTERNAL, "node a failed on this item: KeyError"))
    assert not may_resend(failed(grpc.StatusCode.INVALID_ARGUMENT, "bad image"))
