"""Photo-sized JPEGs for the benchmarks: real photos' structure at the sizes people send, each one distinct.

The fidelity study's photos (scikit-image, scikit-learn; about 512 px) are fitted to the
size asked for and saved as JPEG q90, so a 4000x3000 image has a phone photo's size and
JPEG structure (upscaled, so not its fine detail; a sensor's noise is added). Image ``i`` is photo ``i`` modulo their
count, mirrored on alternate rounds, with a small patch of its own colour and place, so
that every ``i`` has its own bytes, digest and features.
"""

from __future__ import annotations

import functools
import random

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ringserve.local.imagegen import jpeg

NOISE_SIGMA = 4.0
# What a results page says of these images.
SOURCE = ("`bench/photos.py`: the fidelity set's real photos (scikit-image, scikit-learn), fitted to the size, JPEG q90, "
          "with sensor noise and a patch of their own, so each has its own bytes")


@functools.cache
def _bases() -> list[Image.Image]:
    from bench.fidelity import photos

    return list(photos().values())


@functools.lru_cache(maxsize=128)
def _fitted(index: int, mirrored: bool, size: tuple[int, int]) -> Image.Image:
    image = ImageOps.fit(_bases()[index], size, Image.Resampling.BICUBIC)
    if mirrored:
        image = ImageOps.mirror(image)
    # A camera's sensor noise, which upscaling lacks: without it a 12 MP JPEG is a quarter of a phone's.
    noise = np.random.default_rng(index).standard_normal((size[1], size[0], 1), dtype=np.float32) * NOISE_SIGMA
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def photo(i: int, size: tuple[int, int] = (640, 480), quality: int = 90) -> bytes:
    """JPEG ``i`` at ``size``: the same ``i`` and size give the same bytes, another ``i`` other bytes."""
    bases = len(_bases())
    image = _fitted(i % bases, (i // bases) % 2 == 1, size).copy()
    rng = random.Random(i)
    w, h = size
    side = max(8, min(w, h) // 10)
    x, y = rng.randrange(w - side), rng.randrange(h - side)
    ImageDraw.Draw(image).rectangle([x, y, x + side, y + side], fill=tuple(rng.randrange(256) for _ in range(3)))
    return jpeg(image, quality)
