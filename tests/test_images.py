import io

import numpy as np
import pytest
from PIL import Image

from ringserve.contract import fingerprint
from ringserve.contract.images import ImageError, ImageLimits, container_dimensions, decode
from ringserve.local.imagegen import claiming, encode, jpeg, picture, png_bomb


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF", "HEIF"])
def test_accepted_formats_decode_to_rgb(fmt):
    data = encode(picture(1), fmt)
    img = decode(data)
    assert img.mode == "RGB" and img.size == (128, 96)
    # the same picture whatever the container: its pHash stays close to the lossless one
    assert fingerprint.hamming(fingerprint.phash(img), fingerprint.phash_bytes(encode(picture(1), "PNG"))) <= 6


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_avif_and_heic_limits_are_read_from_the_header_before_decoding(fmt):
    data = encode(picture(1), fmt)
    assert container_dimensions(data) == [(128, 96)]
    with pytest.raises(ImageError, match="60000x60000 pixels is over the limit"):
        decode(claiming(data, 60_000, 60_000))
    with pytest.raises(ImageError, match="200x100 pixels is over the limit"):
        decode(claiming(data, 200, 100), ImageLimits(max_pixels=19_999))  # the header alone decides
    assert container_dimensions(jpeg(1)) == []


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, not an image", "not an image"),
        (jpeg(1)[:400], "truncated"),
        (png_bomb(), "decompression bomb|over the limit"),
        (png_bomb(9000, 9000), "over the limit"),
        (encode(Image.new("RGB", (17000, 2)), "PNG"), "over the limit"),
    ],
    ids=["empty", "not-image", "truncated", "bomb", "too-many-pixels", "too-wide"],
)
def test_bad_input_says_why(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode(data)


def test_byte_limit():
    with pytest.raises(ImageError, match="bytes is over the limit"):
        decode(jpeg(1), ImageLimits(max_bytes=100))


def test_exif_orientation_is_applied():
    img = picture(2, (64, 32))
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(buf, format="JPEG", exif=exif)
    assert decode(buf.getvalue()).size == (32, 64)


def test_phash_is_stable_across_reencoding_and_far_across_pictures():
    a = fingerprint.phash_bytes(jpeg(3, quality=95))
    assert fingerprint.hamming(a, fingerprint.phash_bytes(jpeg(3, quality=60))) <= 6
    assert fingerprint.hamming(a, fingerprint.phash_bytes(jpeg(4))) > 12
    assert 0 <= a < 2**64


def test_a_large_jpeg_is_decoded_only_as_far_as_asked_and_keeps_its_fingerprint():
    big = jpeg(picture(7, (2000, 1500)), 90)
    assert decode(big).size == (2000, 1500)
    reduced = decode(big, at_least=256)
    assert reduced.size == (500, 375)  # 1/4 in the DCT: the smallest scale with both sides >= 256 (1/8 gives 250)
    assert decode(big, at_least=600).size == (1000, 750)
    assert decode(encode(picture(7, (2000, 1500)), "PNG"), at_least=256).size == (2000, 1500)  # only JPEGs shrink
    full = fingerprint.phash(decode(big))
    assert fingerprint.hamming(full, fingerprint.phash_bytes(big)) <= 4


def test_the_memo_decodes_each_distinct_image_once(monkeypatch):
    calls = []
    a, b, c = jpeg(1), jpeg(2), jpeg(3)
    real = {x: fingerprint.phash_bytes(x) for x in (a, b)}
    of_bytes = fingerprint.of_bytes
    monkeypatch.setattr(fingerprint, "of_bytes", lambda data, limits=ImageLimits(): calls.append(1) or of_bytes(data))
    memo = fingerprint.Memo(size=2)
    assert [memo.phash_bytes(x) for x in (a, a, b, a)] == [real[a], real[a], real[b], real[a]]
    assert len(calls) == 2 and memo.hits == 2
    memo.phash_bytes(c)  # the least recently used (b) leaves
    memo.phash_bytes(b)
    assert len(calls) == 4 and len(memo) == 2


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16"])
def test_a_fingerprint_decodes_a_large_png_only_as_far_as_it_needs(mode):
    """What cannot be reduced while decoding is shrunk right after, before any copy: a router fingerprinting
    large PNGs keeps no full-size copies, and the pHash is the full decode's, or within a bit or two."""
    img = picture(5, (2000, 1500))
    if mode == "I;16":  # 16-bit grey, as a scanner writes it: 0..65535
        img = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    else:
        img = img.convert(mode)
    data = encode(img, "PNG")
    reduced = decode(data, at_least=256, reduce_all=True)
    assert reduced.mode == "RGB" and reduced.size == (400, 300)  # by 5: the largest factor keeping 256 a side
    assert decode(data, at_least=256).size == (2000, 1500)  # the model's decode keeps every pixel
    lo, hi = decode(data).convert("L").getextrema()
    assert hi - lo > 150  # 16-bit grey scaled to 8 bits, not clipped to white
    assert fingerprint.hamming(fingerprint.phash_bytes(data), fingerprint.phash(decode(data))) <= 2
