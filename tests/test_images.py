import io

import pytest
from PIL import Image

from ringserve.contract import fingerprint
from ringserve.contract.images import ImageError, ImageLimits, decode
from tests.imagegen import encode, jpeg, picture, png_bomb


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_accepted_formats_decode_to_rgb(fmt):
    img = decode(encode(picture(1), fmt))
    assert img.mode == "RGB" and img.size == (128, 96)


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
