"""How good is a perceptual hit? Real photos, their re-encodings, and every Hamming radius.

    python -m bench.fidelity [--models efficientnet_lite0,resnet50]

The cache holds the originals (real photographs shipped by scikit-image and
scikit-learn). Each query is a re-encoding of one of them: JPEG quality 95..40,
resized, slightly cropped, metadata stripped, PNG round-trip. For a radius r a
query hits when some original's pHash is within r bits; the served feature is
that nearest original's. Against the feature the model computes for the query
itself: cosine, and whether the top-1 class agrees. The default radius is the
largest whose hits keep cosine >= 0.99 and the same top-1 in >= 99% of cases.
Writes bench/results/fidelity.{json,md,png} and docs/fidelity.md.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench import report
from ringserve.contract import fingerprint
from ringserve.contract.images import decode
from ringserve.local.imagegen import jpeg

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parents[1] / "docs"
RADII = list(range(0, 13))
RGB_PHOTOS = ["astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket"]
GRAY_PHOTOS = ["camera", "coins", "moon", "page", "text", "clock", "brick", "grass", "gravel"]
MIN_COSINE = 0.99
MIN_AGREEMENT = 0.99


def photos() -> dict[str, Image.Image]:
    from skimage import data

    out = {}
    for name in RGB_PHOTOS + GRAY_PHOTOS:
        array = getattr(data, name)()
        img = Image.fromarray(array).convert("RGB")
        img.thumbnail((512, 512))
        out[name] = img
    try:
        from sklearn.datasets import load_sample_images

        for name, array in zip(("china", "flower"), load_sample_images().images, strict=True):
            img = Image.fromarray(array)
            img.thumbnail((512, 512))
            out[name] = img
    except ImportError:
        print("scikit-learn missing: 2 photos fewer", file=sys.stderr)
    return out


def strip_app_segments(data: bytes) -> bytes:
    """Drop APP1..APP15 segments (EXIF, XMP) from a JPEG without touching the pixels, as exiftool -all= does."""
    out, i = bytearray(data[:2]), 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            break
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if not 0xE1 <= marker <= 0xEF:
            out += data[i : i + 2 + length]
        i += 2 + length
    return bytes(out + data[i:])


def variants(original: bytes) -> dict[str, bytes]:
    img = decode(original)
    w, h = img.size
    out = {f"jpeg q{q}": jpeg(img, q) for q in (95, 85, 75, 60, 50, 40)}
    out["resize 75%"] = jpeg(img.resize((w * 3 // 4, h * 3 // 4), Image.BILINEAR), 90)
    out["resize 50%"] = jpeg(img.resize((w // 2, h // 2), Image.BILINEAR), 90)
    for pct in (2, 5):
        dx, dy = w * pct // 100, h * pct // 100
        out[f"crop {pct}%"] = jpeg(img.crop((dx, dy, w - dx, h - dy)), 90)
    out["metadata strip"] = strip_app_segments(original)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out["png round-trip"] = buf.getvalue()
    return out


@dataclass
class Query:
    photo: int
    variant: str
    data: bytes


def study(model_name: str, originals: list[bytes], queries: list[Query]) -> dict:
    from ringserve.server.models import ModelConfig, load

    model = load(ModelConfig(name=model_name))

    def features(blobs: list[bytes]) -> np.ndarray:
        rows = []
        for i in range(0, len(blobs), 16):
            rows += model.features([model.preprocess(decode(b)) for b in blobs[i : i + 16]])
        return np.stack(rows).astype(np.float32)

    f_orig = features(originals)
    f_query = features([q.data for q in queries])
    top_orig = np.array([int(np.argmax(model.scores(f))) for f in f_orig.astype(model.feature_dtype)])
    top_query = np.array([int(np.argmax(model.scores(f))) for f in f_query.astype(model.feature_dtype)])
    h_orig = [fingerprint.phash_bytes(b) for b in originals]
    rows = []
    for q, fq, tq in zip(queries, f_query, top_query, strict=True):
        hq = fingerprint.phash_bytes(q.data)
        distances = [fingerprint.hamming(hq, h) for h in h_orig]
        nearest = int(np.argmin(distances))
        served = f_orig[nearest]
        cosine = float(served @ fq / (np.linalg.norm(served) * np.linalg.norm(fq) + 1e-12))
        rows.append({"photo": q.photo, "variant": q.variant, "distance": distances[nearest],
                     "nearest": nearest, "cosine": cosine, "same_top1": bool(top_orig[nearest] == tq)})
    table = []
    for r in RADII:
        hits = [x for x in rows if x["distance"] <= r]
        if not hits:
            table.append({"radius": r, "hit_share": 0.0, "hits": 0})
            continue
        cos = np.array([x["cosine"] for x in hits])
        good = [x["cosine"] >= MIN_COSINE and x["same_top1"] for x in hits]
        table.append({
            "radius": r, "hits": len(hits), "hit_share": round(len(hits) / len(rows), 4),
            "mean_cosine": round(float(cos.mean()), 4), "p1_cosine": round(float(np.percentile(cos, 1)), 4),
            "min_cosine": round(float(cos.min()), 4),
            "share_cosine_ok": round(float(np.mean(cos >= MIN_COSINE)), 4),
            "top1_agreement": round(float(np.mean([x["same_top1"] for x in hits])), 4),
            "share_both_ok": round(float(np.mean(good)), 4),
            "wrong_photo": sum(1 for x in hits if x["nearest"] != x["photo"]),
        })
    safe = [t["radius"] for t in table if t["hits"] and t["share_cosine_ok"] >= MIN_AGREEMENT
            and t["top1_agreement"] >= MIN_AGREEMENT]
    # the largest radius such that it and every smaller one is safe
    chosen = None
    for r in RADII:
        if r in safe:
            chosen = r
        else:
            break
    by_variant = {}
    for v in sorted({x["variant"] for x in rows}):
        vs = [x for x in rows if x["variant"] == v]
        by_variant[v] = {"median_distance": float(np.median([x["distance"] for x in vs])),
                         "max_distance": max(x["distance"] for x in vs),
                         "mean_cosine": round(float(np.mean([x["cosine"] for x in vs])), 4)}
    return {"model": model_name, "random_weights": model.random_weights, "queries": len(rows), "table": table,
            "safe_radius": chosen, "by_variant": by_variant}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for res in results:
        t = res["table"]
        label = res["model"] + (" (random)" if res["random_weights"] else "")
        axes[0].plot([x["radius"] for x in t], [x["hit_share"] for x in t], marker="o", label=label)
        axes[1].plot([x["radius"] for x in t if x["hits"]], [x["share_both_ok"] for x in t if x["hits"]],
                     marker="o", label=label)
    axes[0].set(xlabel="Hamming radius (bits)", ylabel="share of re-encodings served", title="Perceptual hit rate")
    axes[1].axhline(MIN_AGREEMENT, color="grey", linestyle="--", linewidth=1)
    axes[1].set(xlabel="Hamming radius (bits)", ylabel="hits with cosine >= 0.99 and same top-1",
                title="Fidelity of a perceptual hit")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(results: list[dict], photo_names: list[str]) -> str:
    lines = ["# Fidelity of perceptual reuse", "",
             f"Generated by `python -m bench.fidelity`. {len(photo_names)} real photographs "
             f"({', '.join(photo_names)}; scikit-image and scikit-learn sample data), downscaled to 512 px and "
             "saved as JPEG q90 with EXIF: the cache. Queries: each photo re-encoded 12 ways (JPEG q95/85/75/60/50/40, "
             "resize 75%/50%, crop 2%/5% per side, metadata strip, PNG round-trip). A query hits at radius r when "
             "the nearest cached pHash is within r bits; the served feature is that photo's. Cosine and top-1 are "
             "against the model's own feature for the query.", ""]
    for res in results:
        lines += [f"## {res['model']}" + (" (random weights: contrast only)" if res["random_weights"] else ""), "",
                  f"Largest safe radius (every radius up to it keeps cosine >= {MIN_COSINE} and the same top-1 in "
                  f">= {MIN_AGREEMENT:.0%} of hits): **{res['safe_radius']}**", "",
                  "| radius | hit share | hits | mean cos | p1 cos | min cos | cos >= 0.99 | same top-1 | both | wrong photo |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for t in res["table"]:
            if not t["hits"]:
                lines.append(f"| {t['radius']} | 0 | 0 | | | | | | | |")
                continue
            lines.append(f"| {t['radius']} | {t['hit_share']:.3f} | {t['hits']} | {t['mean_cosine']:.4f} | "
                         f"{t['p1_cosine']:.4f} | {t['min_cosine']:.4f} | {t['share_cosine_ok']:.3f} | "
                         f"{t['top1_agreement']:.3f} | {t['share_both_ok']:.3f} | {t['wrong_photo']} |")
        lines += ["", "| re-encoding | median pHash distance | max | mean cosine to the original |", "| --- | --- | --- | --- |"]
        for v, s in res["by_variant"].items():
            lines.append(f"| {v} | {s['median_distance']:.0f} | {s['max_distance']} | {s['mean_cosine']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="efficientnet_lite0,resnet50")
    a = p.parse_args(argv)
    named = photos()
    names = list(named)
    originals = [jpeg(img, 90, exif=True) for img in named.values()]
    queries = [Query(i, v, data) for i, orig in enumerate(originals) for v, data in variants(orig).items()]
    print(f"{len(originals)} photos, {len(queries)} re-encodings", flush=True)
    results = []
    for model_name in a.models.split(","):
        print(f"{model_name} ...", flush=True)
        results.append(study(model_name, originals, queries))
    RESULTS.mkdir(exist_ok=True)
    meta = report.provenance(argv, "bench.fidelity")
    (RESULTS / "fidelity.json").write_text(json.dumps({**meta, "models": results}, indent=2) + "\n")
    plot(results, RESULTS / "fidelity.png")
    title, _, rest = markdown(results, names).partition("\n")
    text = f"{title}\n\n{report.header(meta)}{rest}"
    (RESULTS / "fidelity.md").write_text(text)
    (DOCS / "fidelity.md").write_text(text + "\n![fidelity](../bench/results/fidelity.png)\n")
    for res in results:
        print(f"{res['model']}: safe radius {res['safe_radius']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
