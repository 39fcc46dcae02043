"""The verifier of a near match: a small colour thumbnail of what the model sees, kept beside each feature.

A pHash says two images share a layout; it cannot say whether the model will answer them alike (a JPEG
q30 re-encoding lands at distance 0 and changes the top-1 a third of the time; a recolouring of the same
design shares the pHash and has another answer). Before a near match is served, the thumbnail of the
request's own decode is compared with the one stored beside the cached feature, and the match is served
only when they agree within ``PolicyConfig.verify_min_psnr`` (docs/fidelity.md: what each threshold gave).

Why this one: on the study's 121 photos (bench/fidelity.py, docs/fidelity.md) it was the candidate that
kept cosine >= 0.99 on every serve with no other picture served, for 0.003 of a model run and 768 bytes
per entry; larger thumbnails, SSIM and Lab distance served no more safely, and the backbone's first
blocks cost more than the target allows. No cheap verifier keeps the top-1 in 0.99 on efficientnet_lite0:
the variants within cosine 0.99 of their original keep it in only 0.895.

The thumbnail covers the region the model's transform keeps (its centre crop of the centre square), so
a crop that changes what the model sees changes the thumbnail too.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ringserve.server.errors import CorruptValue

SIDE = 16
CHANNELS = 3
BYTES = SIDE * SIDE * CHANNELS
# The score of two identical thumbnails (PSNR is infinite there).
SAME = 99.0
# The threshold of a FeatureCache made without one; a node's is PolicyConfig.verify_min_psnr (the same).
DEFAULT_MIN_PSNR = 60.0


def region(size: tuple[int, int], fraction: float) -> tuple[float, float, float, float]:
    """The centred square of the shorter side, shrunk to ``fraction`` of it: what a Resize-then-CenterCrop keeps."""
    w, h = size
    s = min(w, h) * fraction
    return ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)


def thumbnail(image: Image.Image, fraction: float = 1.0, side: int = SIDE) -> np.ndarray:
    """The ``side`` x ``side`` RGB thumbnail (uint8) of ``image``'s model region, box-filtered (every pixel counts)."""
    small = image.convert("RGB").resize((side, side), Image.Resampling.BOX, box=region(image.size, fraction))
    return np.asarray(small, dtype=np.uint8)


def of_image(image: Image.Image, fraction: float = 1.0) -> bytes:
    """The verifier stored beside a feature: ``thumbnail`` as ``BYTES`` raw bytes."""
    return thumbnail(image, fraction).tobytes()


def score(a: bytes, b: bytes) -> float:
    """How alike two verifiers are: the PSNR of their thumbnails in dB, ``SAME`` for identical ones.

    Raises:
        CorruptValue: either is not ``BYTES`` long (a value read back from Redis is untrusted).
    """
    if len(a) != BYTES or len(b) != BYTES:
        raise CorruptValue(f"verifier of {len(a)} and {len(b)} bytes; expected {BYTES}")
    diff = np.frombuffer(a, np.uint8).astype(np.float32) - np.frombuffer(b, np.uint8).astype(np.float32)
    mse = float(np.mean(diff * diff))
    return SAME if mse == 0 else min(SAME, 10 * math.log10(255.0**2 / mse))
