"""The reduced decode's rule: the model sees the same region at any DCT scale, and the rule is in the version.

A 1334x1025 JPEG decoded at 1/2 is 667x513 (the last row half a block): torchvision's Resize(256)
makes the full decode 333 px wide and the reduced one 332, so the crop of one is scaled and placed
apart from the other's (0.6 px here, a pixel on a 6028x3391 photo, where it cost cosine 0.993:
bench/results/decode.md). The centre square is boxed in real coordinates, so it may move only by
the part block's share of a pixel.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from torchvision import transforms as T

from ringserve.contract.images import decode
from ringserve.server import models
from tests import testmodel

pytestmark = pytest.mark.fast

SIZE = (1334, 1025)  # 256 * 1334 / 1025 = 333.2, and 256 * 667 / 513 = 332.9
SIDE = 256


def _edge_jpeg() -> tuple[bytes, float]:
    """Black left of a vertical edge, white right of it, inside the centre crop; and the edge's x."""
    w, h = SIZE
    edge = w / 2 + h / 8
    img = Image.new("L", SIZE, 0)
    ImageDraw.Draw(img).rectangle((round(edge), 0, w, h), fill=255)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue(), edge


def _edge_at(img: Image.Image) -> float:
    """Where a dark-to-light edge sits along the middle row, to a fraction of a pixel (the row's dark area)."""
    row = np.asarray(img.convert("L"), dtype=np.float64)[img.size[1] // 2] / 255.0
    return float(len(row) - row.sum())


def test_the_centre_square_is_the_same_region_at_any_dct_scale():
    data, _ = _edge_jpeg()
    full, reduced = decode(data), decode(data, at_least=512)
    assert reduced.size == (667, 513)  # 1/2, its last row half a block
    square = [_edge_at(models.centre_square(img, SIDE, Image.Resampling.BILINEAR)) for img in (full, reduced)]
    assert abs(square[0] - square[1]) < 0.25  # the part block's centre offset, not a pixel
    plain = T.Compose([T.Resize(SIDE), T.CenterCrop(224)])
    before = [_edge_at(plain(img)) for img in (full, reduced)]
    assert abs(before[0] - before[1]) > 0.4  # why the step exists: resize-then-crop moved it 0.6 px


def test_the_centre_square_keeps_the_region_of_resize_then_crop():
    data, edge = _edge_jpeg()
    img = decode(data)
    w, h = img.size
    expected = (edge - (w - h) / 2) * SIDE / h  # the edge's place in the shorter side's centred square
    assert _edge_at(models.centre_square(img, SIDE, Image.Resampling.BILINEAR)) == pytest.approx(expected, abs=0.5)
    assert models.centre_square(models.centre_square(img, SIDE, Image.Resampling.BILINEAR), SIDE,
                                Image.Resampling.BILINEAR).size == (SIDE, SIDE)


def test_the_rule_is_the_models_resize_and_is_part_of_the_version(monkeypatch):
    config = models.ModelConfig(testmodel.NAME, weights=testmodel.weights_file())
    model = models.load(config)
    assert model.square == (256, Image.Resampling.BILINEAR)  # torchvision's ImageClassification: 256, bilinear
    assert model.decode_side == models.reduced_side(256) == 512  # DECODE_MARGIN 2 x the resize side
    full = models.load(models.ModelConfig(testmodel.NAME, weights=testmodel.weights_file(), full_decode=True))
    assert full.square == model.square and full.decode_side is None  # --full-decode changes only the decode
    monkeypatch.setattr(models, "DECODE_MARGIN", 1.5)
    assert models.reduced_side(256) == 384
    assert len({model.version, full.version, models.load(config).version}) == 3
    unsquared = models.Model(model.name, model.backbone, model.head, model.transform, model.class_names,
                             model.input_size, model.device, "float16", False, decode_side=model.decode_side)
    assert unsquared.version != model.version  # the centre square is part of the rule too
