"""What the client accepts as one image or as many, and what it sends for each (no server needed)."""

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from ringserve.client.aio import _is_single
from ringserve.client.inputs import INLINE_DIGEST_BYTES, hint, identify, identify_inline, to_bytes
from ringserve.contract import fingerprint
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


def test_identify_inline_answers_what_identify_would_where_no_decode_is_needed_and_defers_the_rest():
    memo = fingerprint.Memo(16)
    seen, unseen, broken = jpeg(6), jpeg(7), b"nope"
    identify(seen, memo, True, False)  # remembered: its hint is now a digest away
    big = seen + bytes(INLINE_DIGEST_BYTES)  # too long to digest on the loop
    assert seen != unseen and identify(seen, memo, True, False) != identify(unseen, fingerprint.Memo(1), True, False)
    out = identify_inline([seen, unseen, broken, big], memo, True, [False, False, False, False])
    assert out == [identify(seen, memo, True, False), None, None, None]  # unseen and broken would decode
    # digest-first: no decode is ever needed, a hint only from the memo
    named = identify_inline([seen, unseen, broken], memo, True, [True, True, True])
    assert named == [identify(d, memo, True, True) for d in (seen, unseen, broken)]
    assert named[1] == (fingerprint.digest(unseen), None)
    assert identify_inline([seen], memo, False, [False]) == [(None, None)]
    # one call digests at most INLINE_DIGEST_BYTES on the loop; the rest go to threads
    many = [bytes([i]) * (INLINE_DIGEST_BYTES // 4) for i in range(6)]
    out = identify_inline(many, memo, False, [True] * 6)
    assert out[:4] == [(fingerprint.digest(d), None) for d in many[:4]] and out[4:] == [None, None]


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


# ---- arguments checked before the call ------------------------------------------------------------

BAD_SEARCHES = [
    (dict(k=-1), "k", "k must be an integer of 0 or more; got -1"),
    (dict(k=2**40), "k", "k must be an integer"),
    (dict(k=1, max_distance=-2), "max_distance", "from 0 to 16 bits"),
    (dict(k=1, max_distance=17), "max_distance", "from 0 to 16 bits; got 17"),
    (dict(k=0), "k", "ask for something"),
    (dict(k="3"), "k", "got '3'"),
]


@pytest.mark.parametrize(("kwargs", "argument", "says"), BAD_SEARCHES)
def test_a_bad_search_argument_is_refused_before_any_call(kwargs, argument, says):
    from ringserve.client import Client, InvalidArgument, InvalidImage

    with Client("127.0.0.1:9", retries=0, timeout_s=1) as c:  # nothing listens: a call would fail otherwise
        with pytest.raises(InvalidArgument, match=says) as refused:
            c.search("shoes", id="a", **kwargs)
    assert refused.value.argument == argument and not isinstance(refused.value, InvalidImage)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("call", ["index", "search", "delete", "describe"])
def test_bad_collection_names_and_ids_are_refused_before_any_call(call):
    from ringserve.client import Client, InvalidArgument

    with Client("127.0.0.1:9", retries=0, timeout_s=1) as c:
        bad_name = {"index": lambda: c.index(["a"], [b"x"], collection="no spaces"),
                    "search": lambda: c.search("no spaces", id="a"),
                    "delete": lambda: c.delete("no spaces", ["a"]),
                    "describe": lambda: c.describe_collection("no spaces")}[call]
        with pytest.raises(InvalidArgument, match=r"collection name 'no spaces' must be 1 to 128 characters") as e:
            bad_name()
        assert e.value.argument == "collection"
        bad_id = {"index": lambda: c.index(["x" * 513], [b"x"], collection="c"),
                  "search": lambda: c.search("c", id=""),
                  "delete": lambda: c.delete("c", ["ok", ""]),
                  "describe": None}[call]
        if bad_id is not None:
            with pytest.raises(InvalidArgument, match="an id must be a string of 1 to 512 bytes") as e:
                bad_id()
            assert e.value.argument == "id"


def test_bad_extract_options_are_refused_before_any_call():
    from ringserve.client import Client, InvalidArgument

    with Client("127.0.0.1:9", retries=0, timeout_s=1) as c:
        for kwargs, argument in ((dict(top_k=-1), "top_k"), (dict(radius=12), "radius"), (dict(cache_mode="fuzzy"),
                                                                                          "cache_mode")):
            with pytest.raises(InvalidArgument) as e:
                c.classify_detailed([jpeg(1)], **kwargs)
            assert e.value.argument == argument, kwargs


def test_a_servers_refusals_keep_their_types():
    from ringserve.client import errors

    image = errors.from_status(grpc.StatusCode.INVALID_ARGUMENT, "bad image: not an image in an accepted format")
    other = errors.from_status(grpc.StatusCode.INVALID_ARGUMENT, "k must be an integer from 0 to 100")
    assert isinstance(image, errors.InvalidImage) and isinstance(image, errors.InvalidArgument)
    assert isinstance(other, errors.InvalidArgument) and not isinstance(other, errors.InvalidImage)


@pytest.mark.parametrize(("argv", "says"), [
    (["search", "q.jpg", "--collection", "c", "-k", "-1"], "argument -k: k must be an integer of 0 or more; got -1"),
    (["search", "--id", "a", "--collection", "c", "--max-distance", "40"], "from 0 to 16 bits; got 40"),
    (["search", "--id", "a", "--collection", "no spaces"], "collection name 'no spaces' must be"),
    (["classify", "a.jpg", "--top-k", "0"], "top_k must be an integer of 1 or more; got 0"),
    (["extract", "a.jpg", "--timeout-s", "-3"], "must be a number of seconds above 0"),
    (["delete", "--collection", "c", ""], "an id must be a string of 1 to 512 bytes"),
])
def test_the_cli_says_a_bad_argument_in_one_line_and_exits_2(argv, says, capsys):
    from ringserve.client.cli import main

    argv = [*argv, "--target", "127.0.0.1:9", "--timeout-s", "1"] if "--timeout-s" not in argv else [*argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and says in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
