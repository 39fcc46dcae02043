"""The pieces of bench/ that decide what a benchmark measures."""

import io

from PIL import Image

from bench.fidelity import strip_app_segments, variants
from bench.suite import ring_properties
from bench.workload import repeats_workload
from ringserve.contract.images import decode
from ringserve.local.imagegen import jpeg, picture


def test_repeats_workload_has_the_asked_share():
    seq = repeats_workload(5000, 0.92, seed=1)
    distinct = len(set(seq))
    assert 0.90 < 1 - distinct / len(seq) < 0.94
    assert sorted(set(seq)) == list(range(distinct))


def test_metadata_strip_drops_exif_and_keeps_the_pixels():
    original = jpeg(picture(5, (64, 48)), 90, exif=True)
    stripped = strip_app_segments(original)
    assert Image.open(io.BytesIO(original)).getexif() and not Image.open(io.BytesIO(stripped)).getexif()
    assert decode(original).tobytes() == decode(stripped).tobytes()
    assert len(variants(original)) == 12


def test_ring_properties_follow_consistent_hashing():
    rows = ring_properties()["rows"]
    for row in rows:
        assert abs(row["moved_on_add"] - row["ideal_add"]) < 0.05
        assert row["max_over_mean_with_bounded_loads"] <= 1.25 + 1e-9
