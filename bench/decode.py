"""What decoding only what is needed costs and keeps: the fingerprint, and a miss's model input.

    python -m bench.decode [--model efficientnet_lite0] [--photos N] [--part all|real|synthetic]
                           [--cache DIR] [--repeats 3] [--threads 1]

Real photos (``--part real``): 35 camera photographs at their native resolution, 2.3 to
20 MP, from Debian's wallpaper packages (bench/realphotos.py fetches them). For each candidate
rule (how far a JPEG miss is decoded, and what is done between the decode and the model's own
transform), each photo's feature through the reduced decode against its feature through the
full decode with the same steps after it: cosine, top-1 agreement, and the time per image of
decode and preprocess. The target: every photo at cosine >= 0.995. Also how far each step
moves the full decode's feature from the model's plain transform.

Synthetic (``--part synthetic``): the fidelity study's photos (``bench.fidelity.photos``: 16 from
scikit-image's data module, and scikit-learn's china and flower when scikit-learn is installed, 18
in all; ``--photos N`` takes the first N) are cropped to 640x480, 1920x1080 and 4000x3000 and
saved as JPEG q90 (the larger ones upscaled from photos of about 512 px: real sizes and real
JPEG structure, not real detail). For each:

1. the fingerprint: version 1 (every pixel decoded) against the current version (a JPEG
   decoded at its smallest DCT scale that keeps 256 px per side): time per image, and the
   Hamming distance between the two hashes of the same bytes;
2. re-encodings (the fidelity study's 12 variants) against their original: the share at
   distance 0 and at distance <= 4, under version 1 and under the current version;
3. a miss's model input through the full decode and through the node's reduced one.

Cosines are truncated to 4 decimals, never rounded up across the 0.995 target. Timings ran on
a shared machine: compare the rules with each other (measured interleaved, same run), not across
runs. Writes bench/results/decode.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench import report
from ringserve.contract import fingerprint
from ringserve.contract.images import decode

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [(640, 480), (1920, 1080), (4000, 3000)]
TARGET = 0.995
# Photo size bands for the cost table, in megapixels.
BANDS = [(2, 3), (4, 5), (6, 10), (10, 14), (15, 21)]


@dataclass(frozen=True)
class Rule:
    """A candidate decode rule: the JPEG's DCT margin over the resize side, and the step before the transform.

    step: "plain" (the model's transform alone, as before), "square" (``models.centre_square`` first:
    the region in real coordinates), "exact" (the same square, boxed with the reduced decode's true extent,
    the full size over the DCT scale, which ``decode()`` does not report today) or "lanczos" (a Lanczos
    resize to the resize side first).
    """

    name: str
    margin: float
    step: str


RULES = [
    Rule("margin 1.5 (before)", 1.5, "plain"),
    Rule("margin 2", 2.0, "plain"),
    Rule("margin 3", 3.0, "plain"),
    Rule("margin 1.5 + Lanczos", 1.5, "lanczos"),
    Rule("margin 2 + Lanczos", 2.0, "lanczos"),
    Rule("margin 1.5 + centre square", 1.5, "square"),
    Rule("margin 1.75 + centre square", 1.75, "square"),
    Rule("margin 2 + centre square", 2.0, "square"),
    Rule("margin 3 + centre square", 3.0, "square"),
    Rule("margin 2 + centre square, exact box", 2.0, "exact"),
]
# A step: (decoded image, the full decode's size) -> the model's input.
Step = Callable[[Image.Image, tuple[int, int]], object]


def per_image_ms(fn, items) -> tuple[float, list]:
    started = time.perf_counter()
    out = [fn(x) for x in items]
    return (time.perf_counter() - started) * 1000 / len(items), out


def phash_v1(data: bytes) -> int:
    return fingerprint.phash(decode(data))


def cos4(x: float) -> str:
    """A cosine to 4 decimals, truncated: 0.99496 prints 0.9949, never 0.9950."""
    return f"{math.floor(x * 1e4) / 1e4:.4f}"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def steps(model) -> dict[str, Step]:
    """Each rule's preprocess after the decode, built from the model's own transform and resize rule."""
    from ringserve.server.models import centre_square, resize_rule

    side, resample = resize_rule(model.transform)

    def lanczos(img: Image.Image) -> Image.Image:
        w, h = img.size
        short, long = min(w, h), max(w, h)
        if short <= side:
            return img
        other = int(side * long / short)  # the size torchvision's Resize computes, so it then leaves the image be
        return img.resize((side, other) if w < h else (other, side), Image.Resampling.LANCZOS)

    def exact(img: Image.Image, full: tuple[int, int]) -> Image.Image:
        scale = 2 ** round(math.log2(full[0] / img.size[0]))  # the DCT scale: 1, 2, 4 or 8
        w, h = full[0] / scale, full[1] / scale  # the decode's true extent: its last column may be a part block
        s = min(w, h)
        return img.resize((side, side), resample, box=((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2))

    return {
        "plain": lambda img, full: model.transform(img),
        "square": lambda img, full: model.transform(centre_square(img, side, resample)),
        "exact": lambda img, full: model.transform(exact(img, full)),
        "lanczos": lambda img, full: model.transform(lanczos(img)),
    }


def real_section(model, cache: Path, repeats: int, progress: Callable[[str], None]) -> dict:
    from bench.realphotos import photos
    from ringserve.server.models import reduced_side, resize_rule

    shots = photos(cache)
    side, _ = resize_rule(model.transform)
    after = steps(model)
    sides = {r.name: reduced_side(side, r.margin) for r in RULES}
    node = next((r.name for r in RULES if r.step == "square" and sides[r.name] == model.decode_side), None)
    progress(f"{len(shots)} real photos; rules: {', '.join(r.name for r in RULES)}")

    # Features: each rule's reduced decode, and the full decode through each step; and each square rule at
    # its weakest point, a copy of the photo whose reduced decode lands exactly on the rule's decode side.
    full_t: dict[str, list] = {k: [] for k in after}
    rule_t: dict[str, list] = {r.name: [] for r in RULES}
    scale: dict[str, list] = {r.name: [] for r in RULES}
    ratio: dict[str, list] = {r.name: [] for r in RULES}
    edge_rules = [r for r in RULES if r.step in ("square", "exact")]
    sizes: list[tuple[int, int]] = []
    edge_t: dict[str, tuple[list, list, list]] = {r.name: ([], [], []) for r in edge_rules}
    for shot in shots:
        full = decode(shot.data)
        sizes.append(full.size)
        for k, fn in after.items():
            full_t[k].append(fn(full, full.size))
        for r in RULES:
            img = decode(shot.data, at_least=sides[r.name])
            scale[r.name].append(round(full.size[0] / img.size[0]))
            ratio[r.name].append(min(img.size) / side)
            rule_t[r.name].append(after[r.step](img, full.size))
        for r in edge_rules:
            copy = at_the_edge(full, sides[r.name])
            if copy is not None:
                ref, red, names = edge_t[r.name]
                whole = decode(copy)
                ref.append(after[r.step](whole, whole.size))
                red.append(after[r.step](decode(copy, at_least=sides[r.name]), whole.size))
                names.append(shot.name)
    feats = {f"full/{k}": np.stack(model.features(v)).astype(np.float32) for k, v in full_t.items()}
    feats |= {r.name: np.stack(model.features(rule_t[r.name])).astype(np.float32) for r in RULES}

    def top1(f: np.ndarray) -> np.ndarray:
        return np.argmax(np.stack(model.scores_batch(list(f))), 1)

    tops = {k: top1(v) for k, v in feats.items()}
    progress("features done; timing")

    # Time per image, decode and preprocess, interleaved so a busy moment on a shared machine hits all alike;
    # the fastest of the repeats, the least disturbed by the others' work. The exact box's full size is
    # given, as decode() would know it.
    timed: dict[str, Callable[[bytes, tuple[int, int]], object]] = {
        "full decode": lambda d, full: model.transform(decode(d))}
    for r in RULES:
        timed[r.name] = (lambda d, full, s=sides[r.name], f=after[r.step]: f(decode(d, at_least=s), full))
    ms: dict[str, list[list[float]]] = {k: [[] for _ in shots] for k in timed}
    for _ in range(repeats):
        for i, shot in enumerate(shots):
            for k, fn in timed.items():
                started = time.perf_counter()
                fn(shot.data, sizes[i])
                ms[k][i].append((time.perf_counter() - started) * 1000)
    per_photo_ms = {k: [min(v) for v in rows] for k, rows in ms.items()}
    before = per_photo_ms[RULES[0].name]

    rules = []
    for r in RULES:
        c = cosines(feats[r.name], feats[f"full/{r.step}"])
        cost = per_photo_ms[r.name]
        rules.append({
            "rule": r.name, "margin": r.margin, "step": r.step, "decode_side": sides[r.name],
            "cosine_min": float(c.min()), "cosine_median": float(np.median(c)),
            "below_target": [shots[i].name for i in np.flatnonzero(c < TARGET)],
            "worst": shots[int(np.argmin(c))].name,
            "top1_agree": int((tops[r.name] == tops[f"full/{r.step}"]).sum()),
            "ms_median": statistics.median(cost), "ms_max": max(cost),
            "vs_before_median": statistics.median(a / b for a, b in zip(cost, before, strict=True)),
            "passes": bool(c.min() >= TARGET), "cosines": [round(float(x), 6) for x in c],
            "scales": scale[r.name], "ms": [round(x, 2) for x in cost],
        })
    for row in rules:
        rs = ratio[row["rule"]]
        row["min_ratio"] = min(rs)
        row["near_margin"] = sum(x < 1.1 * row["decode_side"] / side for x in rs)
        row["ratios"] = [round(x, 3) for x in rs]
    edge = {}
    for r in edge_rules:
        ref, red, names = edge_t[r.name]
        c = cosines(np.stack(model.features(red)).astype(np.float32), np.stack(model.features(ref)).astype(np.float32))
        edge[r.name] = {"photos": len(names), "cosine_min": float(c.min()), "cosine_median": float(np.median(c)),
                        "below_target": [names[i] for i in np.flatnonzero(c < TARGET)],
                        "worst": names[int(np.argmin(c))]}
    passing = sorted((r for r in rules if r["passes"]), key=lambda r: r["ms_median"])

    moved = {}
    for k in ("square", "lanczos"):
        c = cosines(feats[f"full/{k}"], feats["full/plain"])
        moved[k] = {"cosine_min": float(c.min()), "cosine_median": float(np.median(c)),
                    "worst": shots[int(np.argmin(c))].name,
                    "top1_agree": int((tops[f"full/{k}"] == tops["full/plain"]).sum())}

    bands = []
    for lo, hi in BANDS:
        idx = [i for i, s in enumerate(shots) if lo <= s.megapixels < hi]
        if not idx:
            continue
        sizes = sorted({f"{shots[i].size[0]}x{shots[i].size[1]}" for i in idx})
        row = {"band": f"{lo}-{hi} MP", "photos": len(idx), "sizes": sizes}
        for k in ("full decode", RULES[0].name, node or RULES[0].name):
            vals = [per_photo_ms[k][i] for i in idx]
            row[k] = {"median": statistics.median(vals), "max": max(vals)}
        bands.append(row)

    return {
        "photos": [{"name": s.name, "package": s.package, "version": s.version, "path": s.path,
                    "size": list(s.size), "megapixels": round(s.megapixels, 1), "bytes": len(s.data),
                    "licence": s.licence, "author": s.author, "ms_full": round(per_photo_ms["full decode"][i], 2),
                    "progressive": bool(Image.open(io.BytesIO(s.data)).info.get("progressive"))}
                   for i, s in enumerate(shots)],
        "packages": {p: sum(s.package == p for s in shots) for p in dict.fromkeys(s.package for s in shots)},
        "resize_side": side, "repeats": repeats, "target": TARGET, "rules": rules, "node_rule": node,
        "passing": [r["rule"] for r in passing], "full_ms_median": statistics.median(per_photo_ms["full decode"]),
        "step_moves_full": moved, "bands": bands, "at_the_edge": edge,
    }


def at_the_edge(full: Image.Image, decode_side: int, quality: int = 90) -> bytes | None:
    """The photo downscaled (Lanczos) so that its coarsest reduced decode has exactly ``decode_side`` px short side.

    The rule's weakest point: its DCT scale is as coarse as the rule allows and the model's own resize does
    the least. Downscaled, not upscaled, so the detail is the photo's own (denser per pixel, if anything).
    None when the photo is too small to land there at 1/2 or coarser.
    """
    w, h = full.size
    short = min(w, h)
    k = next((k for k in (8, 4, 2) if k * decode_side <= short), None)
    if k is None:
        return None
    f = k * decode_side / short
    size = (k * decode_side, round(h * f)) if w == short else (round(w * f), k * decode_side)
    buf = io.BytesIO()
    full.resize(size, Image.Resampling.LANCZOS).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def synthetic_section(model, count: int, progress: Callable[[str], None]) -> dict:
    from bench.fidelity import photos, variants
    from ringserve.local.imagegen import jpeg

    names = list(photos().items())[:count]
    out: dict = {"photos": len(names), "names": [name for name, _ in names], "decode_side": model.decode_side,
                 "sizes": {}}
    for size in SIZES:
        originals = [jpeg(ImageOps.fit(img, size), 90) for _, img in names]
        v1_ms, v1 = per_image_ms(phash_v1, originals)
        v2_ms, v2 = per_image_ms(fingerprint.phash_bytes, originals)
        shift = [fingerprint.hamming(a, b) for a, b in zip(v1, v2, strict=True)]
        near = {"v1": [], "v2": []}
        for original, h1, h2 in zip(originals, v1, v2, strict=True):
            for data in variants(original).values():
                near["v1"].append(fingerprint.hamming(h1, phash_v1(data)))
                near["v2"].append(fingerprint.hamming(h2, fingerprint.phash_bytes(data)))
        full_ms, full = per_image_ms(lambda d: model.preprocess(decode(d)), originals)
        reduced_ms, reduced = per_image_ms(lambda d: model.preprocess(decode(d, at_least=model.decode_side)), originals)
        a = np.stack(model.features(full)).astype(np.float32)
        b = np.stack(model.features(reduced)).astype(np.float32)
        cosine = cosines(a, b)
        scores_a = np.stack(model.scores_batch(list(a)))
        top_a = np.argmax(scores_a, 1)
        top_b = np.argmax(np.stack(model.scores_batch(list(b))), 1)
        row = {
            "fingerprint_ms_v1": round(v1_ms, 2), "fingerprint_ms_v2": round(v2_ms, 2),
            "fingerprint_speedup": round(v1_ms / v2_ms, 2), "v1_v2_distance_max": max(shift),
            "v1_v2_distance_mean": round(float(np.mean(shift)), 2),
            "variants": len(near["v1"]),
            **{f"{v}_at_0": round(float(np.mean(np.array(d) == 0)), 3) for v, d in near.items()},
            **{f"{v}_within_4": round(float(np.mean(np.array(d) <= 4)), 3) for v, d in near.items()},
            "model_input_ms_full": round(full_ms, 2), "model_input_ms_reduced": round(reduced_ms, 2),
            "model_input_speedup": round(full_ms / reduced_ms, 2),
            "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
            "top1_agreement": round(float(np.mean(top_a == top_b)), 3),
            "top1_changed": [{"photo": names[i][0], "top_score": round(float(scores_a[i].max()), 3)}
                             for i in np.flatnonzero(top_a != top_b)],
        }
        out["sizes"][f"{size[0]}x{size[1]}"] = row
        progress(f"synthetic {size[0]}x{size[1]}: {row}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from bench.realphotos import CACHE

    p = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0", help="model whose features are compared")
    p.add_argument("--photos", type=int, default=None,
                   help="how many of the fidelity photos the synthetic part uses (default all: 18, 16 without scikit-learn)")
    p.add_argument("--part", choices=("all", "real", "synthetic"), default="all", help="which measurements to run")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"where the real photos are unpacked (default {CACHE})")
    p.add_argument("--repeats", type=int, default=5, help="timings per photo and rule (the fastest is kept)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the features do not depend on it)")
    args = p.parse_args(argv)

    import torch

    from ringserve.server.models import ModelConfig, load

    torch.set_num_threads(args.threads)
    model = load(ModelConfig(args.model))

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result: dict = {**report.provenance(argv, "bench.decode"), "model": args.model, "model_version": model.version,
                    "node_decode_side": model.decode_side, "torch_threads": args.threads}
    started = time.perf_counter()
    if args.part in ("all", "real"):
        from bench.realphotos import RealPhotosUnavailable

        try:
            result["real"] = real_section(model, args.cache, args.repeats, progress)
        except RealPhotosUnavailable as exc:
            p.exit(2, f"{p.prog}: {exc}\n")
    if args.part in ("all", "synthetic"):
        result["synthetic"] = synthetic_section(model, args.photos, progress)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(result, indent=1)
    (RESULTS / "decode.json").write_text(_inline_lists(text) + "\n")
    (RESULTS / "decode.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _inline_lists(text: str) -> str:
    """JSON with each list of numbers or names on one line, so a per-photo column is one line, not 35."""
    import re

    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)


def _ms(s: dict) -> str:
    return f"{s['median']:.1f} / {s['max']:.1f}"


def markdown(r: dict) -> str:
    lines = ["# Decoding only what is needed", "", report.header(r),
             f"Model {r['model']} (version {r['model_version']}), the node's reduced decode at >= "
             f"{r['node_decode_side']} px per side; torch on {r['torch_threads']} thread(s). Timings ran on a shared "
             f"2-core machine with other work running: compare rules within this run. Cosines truncated to 4 decimals.",
             ""]
    if "real" in r:
        lines += _real_markdown(r["real"])
    if "synthetic" in r:
        lines += _synthetic_markdown(r["synthetic"])
    return "\n".join(lines) + "\n"


def _real_markdown(x: dict) -> list[str]:
    shots = x["photos"]
    sizes = sorted({tuple(s["size"]) for s in shots}, key=lambda s: s[0] * s[1])
    packages = ", ".join(f"{p} ({n})" for p, n in x["packages"].items())
    mp = [s["megapixels"] for s in shots]
    lines = [
        "## Real photos: the reduced-decode rule", "",
        f"{len(shots)} camera photographs at their native resolution, JPEG as shipped, {min(mp)} to {max(mp)} MP "
        f"(median {statistics.median(mp)} MP), {len(sizes)} sizes from {sizes[0][0]}x{sizes[0][1]} to "
        f"{sizes[-1][0]}x{sizes[-1][1]}, {sum(s['progressive'] for s in shots)} of them progressive (a reduced "
        f"decode saves their inverse DCT, not their entropy decoding): {packages}; listed at the end, fetched by "
        "`bench/realphotos.py`.", "",
        f"Each rule decodes a JPEG at its smallest DCT scale that keeps the decode side per side (the margin "
        f"times the model's resize side, {x['resize_side']} px), then runs its step and the model's transform; it "
        f"is compared with the full decode through the same step and transform. Target: every photo at cosine "
        f">= {x['target']}. ms: decode and preprocess per image, the fastest of {x['repeats']} per photo, then the "
        f"median and the max over photos; the full decode with the plain transform takes {x['full_ms_median']:.1f} "
        "ms (median).", "",
        "| rule | decode side | cosine min | cosine median | photos below target | top-1 agreement "
        "| ms median / max | vs margin 1.5 (median ratio) | passes | photos within 10% of the margin |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rule in x["rules"]:
        mark = " (the node's)" if rule["rule"] == x["node_rule"] else ""
        below = ", ".join(rule["below_target"]) or "none"
        lines.append(
            f"| {rule['rule']}{mark} | {rule['decode_side']} | {cos4(rule['cosine_min'])} ({rule['worst']}) "
            f"| {cos4(rule['cosine_median'])} | {below} | {rule['top1_agree']}/{len(shots)} "
            f"| {rule['ms_median']:.1f} / {rule['ms_max']:.1f} | {rule['vs_before_median']:.2f}x "
            f"| {'yes' if rule['passes'] else 'no'} | {rule['near_margin']} |")
    by_rule = {r["rule"]: r for r in x["rules"]}
    passing = ", ".join(f"{n} ({by_rule[n]['ms_median']:.1f} ms)" for n in x["passing"]) or "none"
    lines += ["", f"Rules that keep every photo at >= {x['target']}, by median ms (a few percent apart is within "
                  f"this machine's noise): {passing}. The node's rule: **{x['node_rule']}**.", ""]
    lines += ["Each centre-square rule at its weakest point: every photo downscaled (Lanczos, JPEG q90) so that its "
              "coarsest reduced decode is exactly the rule's decode side, against the full decode of that copy "
              "(photos too small for that at 1/2 or coarser left out):", "",
              "| rule | photos | cosine min | cosine median | photos below target |", "| --- | --- | --- | --- | --- |"]
    for name, e in x["at_the_edge"].items():
        lines.append(f"| {name} | {e['photos']} | {cos4(e['cosine_min'])} ({e['worst']}) | {cos4(e['cosine_median'])} "
                     f"| {', '.join(e['below_target']) or 'none'} |")
    lines += ["", "The exact box is the centre square boxed with the reduced decode's true extent (the full size "
                  "over the DCT scale: a JPEG whose side is not a multiple of the scale's block ends in a part "
                  "pixel); `decode()` does not report that extent today, so the node boxes the pixels it has.", ""]
    moved = x["step_moves_full"]
    lines += ["How far each step moves the full decode's feature from the plain transform's (the model's "
              "sensitivity to resampling, not an error of either): "
              + "; ".join(f"{k}: cosine min {cos4(m['cosine_min'])} ({m['worst']}), median "
                          f"{cos4(m['cosine_median'])}, top-1 the same on {m['top1_agree']}/{len(shots)}"
                          for k, m in moved.items()) + ".", ""]
    node = x["node_rule"] or x["rules"][0]["rule"]
    before = x["rules"][0]["rule"]
    lines += [f"Cost by photo size, ms per image (median / max): full decode, {before}, {node}.", "",
              "| size | photos | sizes | full decode | " + before + " | " + node + " | ratio of medians |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for b in x["bands"]:
        lines.append(f"| {b['band']} | {b['photos']} | {', '.join(b['sizes'])} | {_ms(b['full decode'])} "
                     f"| {_ms(b[before])} | {_ms(b[node])} | {b[node]['median'] / b[before]['median']:.2f}x |")
    by_name = {r["rule"]: r for r in x["rules"]}
    lines += ["", f"Per photo: DCT scale (1/n), cosine and ms under {before} and {node}.", "",
              "| photo | package | size | scale before / now | cosine before | cosine now | ms full / before / now |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for i, s in enumerate(shots):
        b, n = by_name[before], by_name[node]
        lines.append(f"| {s['name']} | {s['package']} | {s['size'][0]}x{s['size'][1]} "
                     f"| 1/{b['scales'][i]} / 1/{n['scales'][i]} | {cos4(b['cosines'][i])} | {cos4(n['cosines'][i])} "
                     f"| {s['ms_full']:.1f} / {b['ms'][i]:.1f} / {n['ms'][i]:.1f} |")
    lines += ["", "The photos (path inside the package; licence and author as the package's copyright file "
                  "states them):", "",
              "| photo | package (version) | path | size | progressive | licence | author |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in shots:
        lines.append(f"| {s['name']} | {s['package']} ({s['version']}) | `{s['path']}` | {s['size'][0]}x{s['size'][1]} "
                     f"| {'yes' if s['progressive'] else 'no'} | {s['licence']} | {s['author']} |")
    return [*lines, ""]


def _synthetic_names(r: dict) -> list[str]:
    """The fidelity photos a synthetic run used: recorded since issue 20; before, the first r["photos"] in
    bench.fidelity.photos()'s order (scikit-image's, then scikit-learn's two), which is what the run took."""
    if "names" in r:
        return r["names"]
    from bench.fidelity import GRAY_PHOTOS, RGB_PHOTOS

    return [*RGB_PHOTOS, *GRAY_PHOTOS, "china", "flower"][: r["photos"]]


def _synthetic_markdown(r: dict) -> list[str]:
    names = _synthetic_names(r)
    sklearn = [n for n in names if n in ("china", "flower")]
    if sklearn:
        source = f"{len(names) - len(sklearn)} from scikit-image's data module and scikit-learn's {' and '.join(sklearn)}"
    else:
        source = "all from scikit-image's data module (scikit-learn, whose china and flower would make 18, was not installed)"
    lines = [
        "## Synthetic: the fidelity photos fitted to three sizes", "",
        f"{r['photos']} photos, {source}: {', '.join(names)}. Each, about 512 px, is cropped and scaled to each size "
        f"({', '.join(r['sizes'])}) and saved as JPEG q90 (upscaled: not real detail): "
        f"{r['photos']} images per size. Fingerprint v1 "
        f"decodes every pixel, the current version at >= {fingerprint.DECODE_SIDE} px; model input through the "
        f"full decode and the node's reduced one (>= {r['decode_side']} px per side).", "",
        "| size | fingerprint v1 / current ms | speed-up | v1-current distance (max, mean) | re-encodings at 0: v1 / "
        "current | within 4: v1 / current | model input full / reduced ms | speed-up | cosine (min, mean) "
        "| top-1 agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, s in r["sizes"].items():
        lines.append(
            f"| {size} | {s['fingerprint_ms_v1']} / {s['fingerprint_ms_v2']} | {s['fingerprint_speedup']}x "
            f"| {s['v1_v2_distance_max']}, {s['v1_v2_distance_mean']} | {s['v1_at_0']} / {s['v2_at_0']} "
            f"| {s['v1_within_4']} / {s['v2_within_4']} | {s['model_input_ms_full']} / {s['model_input_ms_reduced']} "
            f"| {s['model_input_speedup']}x | {cos4(s['cosine_min'])}, {cos4(s['cosine_mean'])} "
            f"| {s['top1_agreement']} |")
    changed = [f"{c['photo']} at {size} (top score {c['top_score']})" for size, s in r["sizes"].items()
               for c in s.get("top1_changed", [])]
    if changed:
        lines += ["", f"Top-1 changed on: {', '.join(changed)}."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
