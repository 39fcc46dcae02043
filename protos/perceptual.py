"""The perceptual hash of a decoded picture, and how much of it rests on structure.

Below ``contract.images`` and ``contract.fingerprint`` alike: decoding composites alpha
over the background on which the picture keeps its structure (``images.flatten``), and
the fingerprint of bytes decodes them first, so the rule on pixels lives here and
imports neither.

A 64-bit DCT perceptual hash (pHash). It says something only about an image with
structure: its 64 bits compare 64 low-frequency DCT coefficients of a 32x32 grey
thumbnail with their median; in a flat colour, a gradient or a near-empty scan almost
every coefficient sits at the median, so those bits are noise and two unrelated such
images land a few bits apart. ``structure`` counts the coefficients clear of the median;
below ``MIN_STRUCTURE`` an image is *low-information*: never served by perceptual reuse,
never a near-duplicate, though its exact bytes are cached as any other's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fftpack
from PIL import Image

_THUMB = 32  # the grey thumbnail the DCT runs on (imagehash's hash_size 8 x highfreq_factor 4)
_LOW = 8  # the top-left 8x8 coefficients are the hash
# A coefficient counts as structure when it is at least this far from the median (scipy's unnormalised
# DCT: about a quarter of a grey level of amplitude in its basis pattern). Chosen on data (docs/design.md,
# "Low-information images"): flat colours 1, gradients 5-9, radial gradients 16-18, near-empty scans 1-5,
# every real photo and rich graphic measured 32 or more.
STRUCTURE_MARGIN = 256.0
MIN_STRUCTURE = 24


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """An image's pHash, and how many of its 64 bits rest on structure rather than noise."""

    phash: int
    structure: int

    @property
    def low_information(self) -> bool:
        """Too little structure for the pHash to say which picture this is: no perceptual match either way."""
        return self.structure < MIN_STRUCTURE


def of_image(image: Image.Image) -> Fingerprint:
    """The fingerprint of an already decoded image; its pHash is bit for bit imagehash's ``phash``."""
    grey = image.convert("L").resize((_THUMB, _THUMB), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:_LOW, :_LOW].ravel()
    median = np.median(low)
    value = 0
    for bit in low > median:
        value = (value << 1) | int(bit)
    return Fingerprint(value, int(np.count_nonzero(np.abs(low - median) >= STRUCTURE_MARGIN)))
