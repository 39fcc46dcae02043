"""Verified perceptual reuse (issue 21): a near match is served only when its verifier agrees.

Real nodes with the small test model, and the session's Redis for L2; the verifier's own rules and the
pointer's format in process.
"""

from __future__ import annotations

import grpc
import pytest
import redis as redis_py
from PIL import Image

from ringserve.contract import fingerprint
from ringserve.contract.images import decode
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.local.imagegen import encode, featureless, jpeg, picture
from ringserve.server import verifier
from ringserve.server.errors import CorruptValue
from ringserve.server.keys import Namespace, exact_digest
from ringserve.server.l2 import Pointer
from tests.conftest import extract_one

RADIUS = 8
MIN_PSNR = "40"  # the flag's value here, so that a recalibrated default does not change what these tests mean


def recoloured(image: Image.Image) -> Image.Image:
    """Another picture of the same layout: its chroma inverted, its luminance (and so its pHash) kept."""
    y, cb, cr = image.convert("YCbCr").split()
    return Image.merge("YCbCr", (y, cb.point(lambda v: 255 - v), cr.point(lambda v: 255 - v))).convert("RGB")


def design(seed: int) -> tuple[bytes, bytes, bytes]:
    """An original, a re-encoding of it, and a recolouring of it sharing its pHash."""
    image = picture(seed, (256, 192))
    original, reencoded, recolour = jpeg(image, 95), jpeg(image, 85), jpeg(recoloured(image), 95)
    target = fingerprint.phash_bytes(original)
    assert fingerprint.hamming(fingerprint.phash_bytes(recolour), target) == 0  # the pHash cannot tell them apart
    assert fingerprint.hamming(fingerprint.phash_bytes(reencoded), target) <= RADIUS
    return original, reencoded, recolour


def ask(stub: pb_grpc.InferenceStub, image: bytes) -> pb.ExtractReply:
    reply = extract_one(stub, image, pb.CACHE_MODE_PERCEPTUAL, max_distance=RADIUS)
    assert reply.status.code == 0, reply.status.message
    return reply


def test_a_node_serves_a_verified_re_encoding_and_computes_a_recolouring_or_a_low_information_image(nodes):
    node = nodes("a", "--cache-verify-min-psnr", MIN_PSNR)
    original, reencoded, recolour = design(2)
    flat = encode(featureless("hgradient", (256, 192)), "PNG")
    with grpc.insecure_channel(node.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        first = ask(stub, original)
        assert first.provenance.source == pb.SOURCE_COMPUTED and not first.provenance.verified
        near = ask(stub, reencoded)
        assert near.provenance.source == pb.SOURCE_L1 and near.provenance.perceptual and near.provenance.verified
        assert near.provenance.verifier_score >= float(MIN_PSNR) and near.feature.data == first.feature.data
        other = ask(stub, recolour)  # same pHash, another picture: computed, its own feature
        assert other.provenance.source == pb.SOURCE_COMPUTED and not other.provenance.perceptual
        assert other.feature.data != first.feature.data
        assert ask(stub, flat).provenance.low_information
        again = ask(stub, jpeg(decode(flat), 95))  # the same gradient re-encoded: its thumbnail would pass
        assert again.provenance.source == pb.SOURCE_COMPUTED and again.provenance.low_information
        assert not again.provenance.perceptual


def test_a_second_node_verifies_near_matches_from_l2_and_never_serves_an_entry_without_a_verifier(nodes, redis_db):
    args = ("--redis-url", redis_db.url, "--cache-verify-min-psnr", MIN_PSNR)
    a, b = nodes("a", *args), nodes("b", *args)
    original, reencoded, recolour = design(4)
    old, old_reencoded, _ = design(2)
    r = redis_py.Redis(port=redis_db.port)
    with grpc.insecure_channel(a.target) as ca, grpc.insecure_channel(b.target) as cb:
        stub_a, stub_b = pb_grpc.InferenceStub(ca), pb_grpc.InferenceStub(cb)
        first, _ = ask(stub_a, original), ask(stub_a, old)
        ns = Namespace(first.provenance.model, first.provenance.model_version)
        pointer = ns.perceptual(fingerprint.phash_bytes(old))
        assert _eventually(lambda: r.get(pointer)), "node a wrote no fingerprint"
        # The earlier layout: a bare digest, no verifier. Redis holds the feature it names.
        r.set(pointer, Pointer(exact_digest(old)).encode())
        assert r.exists(ns.exact(exact_digest(old)))
        assert _eventually(lambda: r.get(ns.perceptual(fingerprint.phash_bytes(original))))
        near = ask(stub_b, reencoded)  # b's L1 is empty: the near match comes from L2, verified
        assert near.provenance.source == pb.SOURCE_L2 and near.provenance.verified
        assert near.provenance.verifier_score >= float(MIN_PSNR) and near.feature.data == first.feature.data
        # Computed: a recolouring would overwrite the pointer both share, so it goes after the re-encoding.
        other = ask(stub_b, recolour)
        assert other.provenance.source == pb.SOURCE_COMPUTED and not other.provenance.perceptual
        unverified = ask(stub_b, old_reencoded)  # within the radius of an entry stored without a verifier
        assert unverified.provenance.source == pb.SOURCE_COMPUTED and not unverified.provenance.perceptual


def _eventually(check, timeout_s: float = 10.0):
    """``check()`` once it is truthy (L2 writes land in the background), or its last value."""
    import time

    deadline = time.monotonic() + timeout_s
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def test_the_verifier_scores_what_the_model_sees_and_refuses_a_value_that_is_not_one():
    image = picture(7, (256, 192))
    same = verifier.of_image(image, 0.875)
    assert len(same) == verifier.BYTES and verifier.score(same, verifier.of_image(image, 0.875)) == verifier.SAME
    assert verifier.score(same, verifier.of_image(recoloured(image), 0.875)) < 20
    assert verifier.score(same, verifier.of_image(decode(jpeg(image, 85)), 0.875)) > 40
    with pytest.raises(CorruptValue):
        verifier.score(same, same[:-1])


def test_a_pointer_carries_its_verifier_and_an_earlier_bare_digest_has_none():
    digest = exact_digest(b"some image bytes")
    thumb = bytes(range(256)) * 3
    assert Pointer.decode(Pointer(digest, thumb).encode()) == Pointer(digest, thumb)
    assert Pointer.decode(digest.encode()) == Pointer(digest, None)
    with pytest.raises(CorruptValue):
        Pointer.decode(b"RSP\x07" + digest.encode())
