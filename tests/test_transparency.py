"""Images as people send them: transparent cut-outs and logos, and pictures with too little structure.

Alpha is composited over one background before anything sees the image (``images.flatten``);
an image whose pHash rests on noise is low-information and never matched perceptually.
"""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from ringserve.contract import fingerprint
from ringserve.contract.images import decode, flatten
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.local.imagegen import alpha_shape, encode, featureless, jpeg, picture
from ringserve.search.store import Entry, Meta, decode_entry, encode_entry
from ringserve.search.view import CollectionView
from ringserve.server.settings import PolicyConfig
from tests.fakes import FakeModel, MemoryL2, node_servicer, start_batchers
from tests.test_inprocess import one

WHITE, BLACK = (255, 255, 255), (0, 0, 0)
FEATURELESS = ["flat-255-255-255", "flat-0-0-0", "flat-128-128-128", "flat-200-30-30", "hgradient", "vgradient",
               "radial", "scan"]


def spread(img: Image.Image) -> int:
    """Difference between the darkest and the lightest grey level: 0 for a blank image."""
    lo, hi = img.convert("L").getextrema()
    return hi - lo


# ---- transparency ------------------------------------------------------------------------------


@pytest.mark.parametrize("under", [WHITE, BLACK], ids=["white-under", "black-under"])
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "AVIF", "HEIF", "TIFF"])
def test_a_shape_drawn_only_in_alpha_is_not_blank(fmt: str, under: tuple[int, int, int]) -> None:
    data = encode(alpha_shape("disc", under), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    img = decode(data)
    assert img.mode == "RGB" and spread(img) > 200
    assert not fingerprint.of_image(img).low_information


def test_dropping_alpha_would_have_made_it_blank() -> None:
    """The failure this guards against, shown on the same image: convert("RGB") keeps only the colour."""
    shape = alpha_shape("disc", WHITE)
    assert spread(shape.convert("RGB")) == 0
    assert spread(flatten(shape)) > 200


@pytest.mark.parametrize("mode", ["LA", "P", "L-with-transparency", "RGB-with-transparency"])
def test_every_way_png_and_gif_say_transparent_is_flattened(mode: str) -> None:
    shape = alpha_shape("bar", BLACK)
    if mode == "LA":
        img, fmt = shape.convert("LA"), "PNG"
    elif mode == "P":  # a palette with a transparent index, as GIFs carry it; both colours (near) black
        img, fmt = Image.new("P", shape.size, 0), "GIF"
        img.putpalette([0, 0, 0, 1, 1, 1])
        img.paste(1, mask=shape.getchannel("A"))
        img.info["transparency"] = 0
    elif mode == "L-with-transparency":  # a tRNS grey level instead of an alpha band
        grey = Image.new("L", shape.size, 0)
        grey.paste(255, mask=Image.eval(shape.getchannel("A"), lambda a: 255 - a))
        img, fmt = grey, "PNG"
        img.info["transparency"] = 255
    else:
        rgb = Image.new("RGB", shape.size, (0, 0, 0))
        rgb.paste((255, 0, 255), mask=Image.eval(shape.getchannel("A"), lambda a: 255 - a))
        img, fmt = rgb, "PNG"
        img.info["transparency"] = (255, 0, 255)
    params = {"transparency": img.info["transparency"]} if "transparency" in img.info else {}
    decoded = decode(encode(img, fmt, **params))
    assert decoded.mode == "RGB" and spread(decoded) > 200
    # the transparent part is white: the background for anything but a near-white picture
    assert decoded.getpixel((decoded.width - 1, 0)) == WHITE


def test_alpha_goes_over_white_and_a_near_white_picture_over_black() -> None:
    dark = flatten(alpha_shape("disc", BLACK))
    assert dark.getpixel((0, 0)) == WHITE and dark.getpixel((57, 48)) == BLACK
    light = flatten(alpha_shape("disc", WHITE))  # a white logo made for dark pages
    assert light.getpixel((0, 0)) == BLACK and light.getpixel((57, 48)) == WHITE
    # half-transparent pixels are blended with the background, not thresholded
    half = Image.new("RGBA", (8, 8), (0, 0, 0, 128))
    assert flatten(half).getpixel((0, 0)) == (127, 127, 127)
    # nothing visible at all: plain white, and low-information
    empty = flatten(Image.new("RGBA", (64, 48), (10, 200, 30, 0)))
    assert spread(empty) == 0 and empty.getpixel((0, 0)) == WHITE


@pytest.mark.parametrize("lift", [190, 200, 210, 220])
def test_a_light_cut_out_keeps_its_background_through_re_encodings(lift: int) -> None:
    """A light picture (mean luma near 90 % of white) with a soft edge, saved again as people do: every copy
    goes over the same background, so the copies stay near each other (a rule on mean luma flipped some)."""
    from PIL import ImageFilter

    light = Image.eval(picture(11, (256, 192)), lambda v: lift + v * (255 - lift) // 255)
    mask = Image.new("L", light.size, 0)
    mask.paste(255, (40, 30, 216, 162))
    cut = light.convert("RGBA")
    cut.putalpha(mask.filter(ImageFilter.GaussianBlur(12)))
    copies = [encode(cut, "PNG"), encode(cut, "WEBP", quality=50), encode(cut, "WEBP", quality=90),
              encode(cut.resize((128, 96)), "PNG")]
    corners = {decode(c).getpixel((0, 0)) for c in copies}
    assert corners == {WHITE}, corners
    hashes = [fingerprint.phash_bytes(c) for c in copies]
    assert max(fingerprint.hamming(hashes[0], h) for h in hashes) <= 6


def test_two_different_alpha_only_shapes_get_different_phashes() -> None:
    hashes = {(s, u): fingerprint.phash_bytes(encode(alpha_shape(s, u), "PNG"))
              for s in ("disc", "bar", "ring") for u in (WHITE, BLACK)}
    for u in (WHITE, BLACK):
        for a, b in (("disc", "bar"), ("disc", "ring"), ("bar", "ring")):
            assert fingerprint.hamming(hashes[(a, u)], hashes[(b, u)]) > 12, (a, b, u)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_an_opaque_image_decodes_as_before(fmt: str) -> None:
    """Opaque images, alpha band or not, give exactly what convert("RGB") gave: their answers do not move."""
    data = encode(picture(7), fmt)
    before = Image.open(io.BytesIO(data))
    before.load()
    assert np.array_equal(np.asarray(decode(data)), np.asarray(before.convert("RGB")))
    opaque_rgba = picture(7).convert("RGBA")  # an alpha band that is 255 everywhere
    assert np.array_equal(np.asarray(flatten(opaque_rgba)), np.asarray(picture(7)))


# ---- the fingerprint -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_the_phash_is_bit_for_bit_imagehashs(seed: int) -> None:
    img = decode(jpeg(seed, size=(320, 240)))
    ours = fingerprint.of_image(img).phash
    theirs = int(str(imagehash.phash(img, hash_size=8)), 16)
    assert ours == theirs


@pytest.mark.parametrize("kind", FEATURELESS)
def test_featureless_pictures_are_low_information(kind: str) -> None:
    found = fingerprint.of_bytes(jpeg(featureless(kind, (320, 240))))
    assert found.low_information, (kind, found.structure)


def test_photos_and_ordinary_pictures_are_not_low_information() -> None:
    from importlib.resources import files

    samples = [p.read_bytes() for p in files("ringserve.local").joinpath("samples").iterdir() if p.name.endswith(".jpg")]
    assert len(samples) >= 5
    structures = [fingerprint.of_bytes(s).structure for s in samples] + [
        fingerprint.of_bytes(jpeg(i)).structure for i in range(50)]
    assert min(structures) >= fingerprint.MIN_STRUCTURE + 8, structures  # well clear of the line, not on it


def test_featureless_pictures_would_have_matched_each_other() -> None:
    """Why the guard exists: unrelated flat pictures and gradients land a few bits apart."""
    hashes = [fingerprint.phash_bytes(jpeg(featureless(k, (320, 240)))) for k in FEATURELESS]
    close = sum(fingerprint.hamming(a, b) <= 8 for i, a in enumerate(hashes) for b in hashes[i + 1:])
    assert close >= 5


# ---- the node: never served by a near match, never serving one ---------------------------------


async def test_a_low_information_image_is_never_served_nor_serves_a_near_match() -> None:
    l2 = MemoryL2()
    node = node_servicer(FakeModel(), l2=l2, policy=PolicyConfig(verify_min_psnr=40))  # small pictures' threshold
    start_batchers(node)
    perceptual = {"cache_policy": pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL, max_distance=8)}
    white, grey = (jpeg(featureless(k, (320, 240))) for k in ("flat-255-255-255", "flat-250-250-250"))
    assert fingerprint.hamming(fingerprint.phash_bytes(white), fingerprint.phash_bytes(grey)) <= 8
    first = await one(node, white, **perceptual)
    assert first.provenance.source == pb.SOURCE_COMPUTED and first.provenance.low_information
    second = await one(node, grey, **perceptual)  # within radius of the first, yet computed: noise matched noise
    assert second.provenance.source == pb.SOURCE_COMPUTED and not second.provenance.perceptual
    assert second.provenance.low_information
    assert not l2.fingerprints and all(":x:" in key for key in l2.values)  # only exact keys written
    again = await one(node, white, **perceptual)  # its own bytes still hit
    assert again.provenance.source == pb.SOURCE_L1
    # and a structured image with a near match is still served by it
    await one(node, jpeg(3, quality=95), **perceptual)
    near = await one(node, jpeg(3, quality=60), **perceptual)
    assert near.provenance.perceptual and not near.provenance.low_information


# ---- search: a low-information entry or query lists no near-duplicates --------------------------


def test_low_information_entries_are_never_near_duplicates_and_say_so() -> None:
    meta = Meta("m", "v1", 8)
    rng = np.random.default_rng(0)
    vec = [rng.standard_normal(8).astype(np.float16) for _ in range(3)]
    view = CollectionView("c", meta)
    view.add([Entry("flat", 5, vec[0], low_information=True), Entry("photo", 5 ^ 0b11, vec[1]),
              Entry("far", (2**64 - 1) ^ 5, vec[2])])
    assert [h.id for h in view.duplicates(5, 8, 10)] == ["photo"]
    assert view.entry("flat").low_information and not view.entry("photo").low_information
    assert view.nearest(vec[0], 1)[0].id == "flat"  # still found by its feature
    view.delete(["flat"])
    view.add([Entry("flat", 5, vec[0], low_information=True)])  # removed and put again without error
    assert [h.id for h in view.duplicates(5, 8, 10)] == ["photo"]


def test_a_saved_view_keeps_its_low_information_entries_out(tmp_path) -> None:
    meta = Meta("m", "v1", 8)
    vec = np.ones(8, dtype=np.float16)
    view = CollectionView("c", meta)
    view.add([Entry("flat", 5, vec, low_information=True), Entry("photo", 5, -vec)])
    view.save(tmp_path / "c")
    loaded = CollectionView.load(tmp_path / "c")
    assert [h.id for h in loaded.duplicates(5, 0, 10)] == ["photo"] and loaded.entry("flat").low_information


def test_an_entry_keeps_its_flag_in_the_store_and_old_entries_still_read() -> None:
    vec = np.arange(8, dtype=np.float16)
    for flag in (False, True):
        back = decode_entry("x", encode_entry(Entry("x", 77, vec, flag), "v1"), "v1")
        assert back.phash == 77 and back.low_information is flag and np.array_equal(back.feature, vec)
    from ringserve.contract import codec
    from ringserve.search import store

    old = store._PHASH.pack(77) + codec.encode(vec, "v1")  # written before the flag existed
    back = decode_entry("x", old, "v1")
    assert back.phash == 77 and not back.low_information and np.array_equal(back.feature, vec)


async def test_a_low_information_query_lists_no_duplicates_whatever_the_index_holds() -> None:
    """The query side of the guard, alone: an index that would list a structured entry near the query's
    noise-like pHash is not even asked, and the reply says why."""
    from ringserve.contract.v1 import search_pb2 as spb
    from ringserve.runtime.streams import ItemStreams
    from ringserve.search.config import SearchConfig
    from ringserve.search.servicer import Feature, SearchServicer
    from ringserve.search.view import Hit

    asked: list[str] = []

    class Index:
        async def meta(self, collection):
            return Meta("m", "v1", 8)

        async def nearest(self, collection, vector, k, phash):
            return [Hit("photo", 0.5, 3)]

        async def duplicates(self, collection, phash, max_distance, limit):
            asked.append(collection)
            return [Hit("photo", 0.95, 3)]

        def stale_ms(self):
            return 0

    async def features(image, model):
        return Feature(np.ones(8, np.float16), 5, "m", "v1", low_information=image == b"flat")

    servicer = SearchServicer(Index(), features, SearchConfig(), ItemStreams("test"))
    flat = await servicer._search(spb.SearchRequest(collection="c", image=b"flat", k=1, max_distance=16))
    assert flat.query_low_information and list(flat.duplicates) == [] and asked == []
    photo = await servicer._search(spb.SearchRequest(collection="c", image=b"photo", k=1, max_distance=16))
    assert not photo.query_low_information and [h.id for h in photo.duplicates] == ["photo"]
