"""The fingerprint on real pictures: what it marks low-information, and how near re-encodings land.

    python -m bench.fingerprint [--max-side 0]

1. Structure (``fingerprint.of_image(...).structure``, the pHash's coefficients clear of their median)
   of every real photo the project can get (``bench.realphotos``: Debian's wallpaper packages at
   native sizes; the fidelity study's scikit-image and scikit-learn photos; ``ringserve-up``'s samples)
   and of pictures with almost none (flat colours, gradients, near-empty scans, made here): how many
   of each are marked low-information. The goal is every featureless one and no photo.
2. Re-encodings of the real photos at their native sizes (the fidelity study's variants: JPEG 95..40,
   resizes, crops, metadata strip, PNG; the byte limit lifted, as a lossless PNG of a 19 MP photo is over
   the service's 20 MB): the share at Hamming distance 0, <= 2 and <= 4 from the original.
3. Transparency: each real photo cut out (an ellipse in its alpha channel, the colour under the
   transparent part black as many encoders store it) and sent again as people do (saved again as PNG,
   as WebP lossless and lossy, resized, and flattened onto white as a JPEG, as a shop exports it):
   distances under the rule before fingerprint version 3 (alpha dropped) and after (alpha composited).

Writes bench/results/fingerprint.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from bench import realphotos, report
from bench.fidelity import photos as fidelity_photos
from bench.fidelity import variants
from ringserve.contract import fingerprint
from ringserve.contract.images import ImageLimits, decode
from ringserve.local.imagegen import encode, featureless, jpeg

RESULTS = Path(__file__).resolve().parent / "results"
FEATURELESS = ["flat-255-255-255", "flat-0-0-0", "flat-128-128-128", "flat-200-30-30", "flat-30-90-200",
               "hgradient", "vgradient", "radial", "scan"]
RADII = (0, 2, 4)
# A lossless PNG of a 19 MP photo is over the service's 20 MB image limit; the study measures the hash.
LIMITS = ImageLimits(max_bytes=256 * 1024 * 1024)


def real_pictures(max_side: int) -> dict[str, tuple[str, bytes]]:
    """name -> (source, encoded bytes): the Debian photos as shipped (or fitted to ``max_side``), and the rest."""
    out: dict[str, tuple[str, bytes]] = {}
    for p in realphotos.photos():
        data = p.data
        if max_side and max(p.size) > max_side:
            img = decode(data)
            img.thumbnail((max_side, max_side))
            data = jpeg(img, 92)
        out[p.name] = (f"{p.package} {p.size[0]}x{p.size[1]}", data)
    for name, img in fidelity_photos().items():
        out[name] = (f"fidelity study {img.size[0]}x{img.size[1]}", jpeg(img, 95))
    from importlib.resources import files

    for f in sorted(files("ringserve.local").joinpath("samples").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".jpg"):
            out[f"sample {f.name}"] = ("ringserve-up sample", f.read_bytes())
    return out


def phash_before(data: bytes) -> int:
    """The pHash as fingerprint version 2 made it: the same decode, alpha dropped instead of composited."""
    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        img.draft("RGB", (fingerprint.DECODE_SIDE, fingerprint.DECODE_SIDE))
    img.load()
    return fingerprint.phash(ImageOps.exif_transpose(img).convert("RGB"))


def cutout(data: bytes, side: int = 1200) -> Image.Image:
    """The photo (fitted to ``side``) inside an ellipse of alpha 255, the rest transparent over black."""
    img = decode(data)
    img.thumbnail((side, side))
    mask = Image.new("L", img.size, 0)
    w, h = img.size
    ImageDraw.Draw(mask).ellipse([w * 0.12, h * 0.08, w * 0.88, h * 0.92], fill=255)
    rgba = Image.new("RGBA", img.size, (0, 0, 0, 0))
    rgba.paste(img, mask=mask)
    return rgba


def cutout_variants(rgba: Image.Image) -> dict[str, bytes]:
    w, h = rgba.size
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return {
        "png saved again": encode(rgba, "PNG", optimize=True),
        "webp lossless": encode(rgba, "WEBP", lossless=True),
        "webp q80": encode(rgba, "WEBP", quality=80),
        "png resized 75%": encode(rgba.resize((w * 3 // 4, h * 3 // 4), Image.Resampling.BILINEAR), "PNG"),
        "jpeg on white": jpeg(white, 90),
    }


def shares(distances: list[int]) -> dict[str, float]:
    return {f"<= {r}": round(sum(d <= r for d in distances) / len(distances), 4) for r in RADII}


def measure(max_side: int) -> dict:
    pictures = real_pictures(max_side)
    structure = {}
    for name, (source, data) in pictures.items():
        structure[name] = {"source": source, "structure": fingerprint.of_bytes(data).structure}
    flat = {k: fingerprint.of_bytes(jpeg(featureless(k, (640, 480)))).structure for k in FEATURELESS}
    print(f"structure: {len(structure)} real pictures, {len(flat)} featureless", flush=True)

    by_variant: dict[str, list[int]] = defaultdict(list)
    for i, (name, (_, data)) in enumerate(pictures.items()):
        original = fingerprint.phash_bytes(data)
        for variant, blob in variants(data).items():
            by_variant[variant].append(fingerprint.hamming(original, fingerprint.phash_bytes(blob, LIMITS)))
        print(f"re-encodings {i + 1}/{len(pictures)} {name}", flush=True)

    alpha: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"before": [], "after": []})
    for _, data in pictures.values():
        rgba = cutout(data)
        png = encode(rgba, "PNG")
        before, after = phash_before(png), fingerprint.phash_bytes(png)
        for variant, blob in cutout_variants(rgba).items():
            alpha[variant]["before"].append(fingerprint.hamming(before, phash_before(blob)))
            alpha[variant]["after"].append(fingerprint.hamming(after, fingerprint.phash_bytes(blob)))
    print("cut-outs done", flush=True)
    real = [s["structure"] for s in structure.values()]
    return {
        "min_structure": fingerprint.MIN_STRUCTURE, "structure_margin": fingerprint.STRUCTURE_MARGIN,
        "real": structure, "featureless": flat,
        "real_low_information": sorted(n for n, s in structure.items() if s["structure"] < fingerprint.MIN_STRUCTURE),
        "featureless_low_information": sorted(k for k, s in flat.items() if s < fingerprint.MIN_STRUCTURE),
        "real_structure": {"min": min(real), "median": statistics.median(real), "max": max(real)},
        "reencodings": {v: {"n": len(d), "max": max(d), **shares(d)} for v, d in by_variant.items()},
        "cutouts": {v: {side: {"n": len(d), "max": max(d), **shares(d)} for side, d in sides.items()}
                    for v, sides in alpha.items()},
    }


def write(result: dict, meta: dict, max_side: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fingerprint.json").write_text(json.dumps({"meta": meta, **result}, indent=1) + "\n")
    real = result["real"]
    sources = defaultdict(int)
    for s in real.values():
        sources[s["source"].split(" ")[0] if "fidelity" not in s["source"] else "fidelity study"] += 1
    rs = result["real_structure"]
    lines = [
        "# The fingerprint on real pictures", "", report.header(meta), "",
        f"Pictures: {len(real)} real photos and rich graphics ("
        + ", ".join(f"{n} from {src}" for src, n in sorted(sources.items()))
        + "; the Debian ones at their native sizes" + (f", fitted to {max_side} px" if max_side else "")
        + "), and 9 featureless pictures made here (flat colours, horizontal, vertical and radial gradients, "
        "a near-empty scan; 640x480 JPEG). Low-information: structure below "
        f"{result['min_structure']} (coefficients at least {result['structure_margin']:.0f} from the median).", "",
        "## Low-information", "",
        "| pictures | marked low-information | structure (min / median / max) |", "| --- | --- | --- |",
        f"| real photos and graphics | {len(result['real_low_information'])} of {len(real)} "
        f"{result['real_low_information'] or ''} | {rs['min']} / {rs['median']} / {rs['max']} |",
        f"| featureless | {len(result['featureless_low_information'])} of {len(result['featureless'])} | "
        + " / ".join(str(v) for v in (min(result["featureless"].values()),
                                      int(statistics.median(result["featureless"].values())),
                                      max(result["featureless"].values()))) + " |", "",
        "Featureless, each: " + ", ".join(f"{k} {v}" for k, v in result["featureless"].items()) + ".", "",
        "## Re-encodings of the real photos (distance to the original's pHash)", "",
        "| variant | n | share at 0 | <= 2 | <= 4 | max |", "| --- | --- | --- | --- | --- | --- |",
        *[f"| {v} | {r['n']} | {r['<= 0']:.4f} | {r['<= 2']:.4f} | {r['<= 4']:.4f} | {r['max']} |"
          for v, r in result["reencodings"].items()], "",
        "## Cut-outs sent again, before (alpha dropped) and after (alpha composited over white)", "",
        "| variant | n | before: at 0 / <= 4 / max | after: at 0 / <= 4 / max |", "| --- | --- | --- | --- |",
        *[f"| {v} | {s['after']['n']} | {s['before']['<= 0']:.4f} / {s['before']['<= 4']:.4f} / {s['before']['max']} | "
          f"{s['after']['<= 0']:.4f} / {s['after']['<= 4']:.4f} / {s['after']['max']} |"
          for v, s in result["cutouts"].items()],
    ]
    (RESULTS / "fingerprint.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-side", type=int, default=0,
                        help="fit the Debian photos to this many pixels a side first (0: native sizes, the default)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results as it is")
    args = parser.parse_args(argv)
    result = measure(args.max_side)
    print(json.dumps({k: result[k] for k in ("real_low_information", "featureless_low_information", "real_structure",
                                             "reencodings", "cutouts")}, indent=1))
    if not args.no_write:
        write(result, report.provenance(argv, "bench.fingerprint"), args.max_side)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
