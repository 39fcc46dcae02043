"""What decoding only what is needed costs and keeps: the fingerprint, and a miss's model input.

    python -m bench.decode [--model efficientnet_lite0] [--photos 18]

The fidelity study's real photos (scikit-image, scikit-learn) are cropped to 640x480,
1920x1080 and 4000x3000 and saved as JPEG q90 (the larger ones are upscaled from
photos of about 512 px: real sizes and real JPEG structure, not real detail). For each:

1. the fingerprint: version 1 (every pixel decoded) against version 2 (a JPEG decoded at
   its smallest DCT scale that keeps 256 px per side): time per image, and the Hamming
   distance between the two hashes of the same bytes;
2. re-encodings (the fidelity study's 12 variants) against their original: the share at
   distance 0 and at distance <= 4, under version 1 and under version 2;
3. a miss's model input through the full decode and through the reduced one (1.5 times the
   model's own resize side): time per image, cosine between the two features, top-1 agreement.

Writes bench/results/decode.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import ImageOps

from bench.fidelity import photos, variants
from ringserve.contract import fingerprint
from ringserve.contract.images import decode
from ringserve.local.imagegen import jpeg

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [(640, 480), (1920, 1080), (4000, 3000)]


def per_image_ms(fn, items) -> tuple[float, list]:
    started = time.perf_counter()
    out = [fn(x) for x in items]
    return (time.perf_counter() - started) * 1000 / len(items), out


def phash_v1(data: bytes) -> int:
    return fingerprint.phash(decode(data))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0", help="model whose features are compared")
    p.add_argument("--photos", type=int, default=18, help="how many of the fidelity photos to use")
    args = p.parse_args(argv)

    from ringserve.server.models import ModelConfig, load

    model = load(ModelConfig(args.model))
    names = list(photos().items())[: args.photos]
    result: dict = {"model": args.model, "decode_side": model.decode_side, "photos": len(names), "sizes": {},
                    "machine": f"{platform.machine()}, {platform.python_version()}",
                    "commit": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                                             text=True).stdout.strip(),
                    "command": f"python -m bench.decode --model {args.model} --photos {args.photos}"}
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
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        top_a = np.argmax(np.stack(model.scores_batch(list(a))), 1)
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
            "cosine_min": round(float(cosine.min()), 4), "cosine_mean": round(float(cosine.mean()), 4),
            "top1_agreement": round(float(np.mean(top_a == top_b)), 3),
        }
        result["sizes"][f"{size[0]}x{size[1]}"] = row
        print(f"{size[0]}x{size[1]}: {row}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decode.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "decode.md").write_text(report(result))
    return 0


def report(r: dict) -> str:
    lines = [
        "# Decoding only what is needed", "",
        f"`{r['command']}` at commit {r['commit']} ({r['machine']}); {r['photos']} photos per size, JPEG q90. "
        f"Model {r['model']}, reduced decode at >= {r['decode_side']} px per side.", "",
        "| size | fingerprint v1 / v2 ms | speed-up | v1-v2 distance (max, mean) | re-encodings at 0: v1 / v2 "
        "| within 4: v1 / v2 | model input full / reduced ms | speed-up | cosine (min, mean) | top-1 agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, s in r["sizes"].items():
        lines.append(
            f"| {size} | {s['fingerprint_ms_v1']} / {s['fingerprint_ms_v2']} | {s['fingerprint_speedup']}x "
            f"| {s['v1_v2_distance_max']}, {s['v1_v2_distance_mean']} | {s['v1_at_0']} / {s['v2_at_0']} "
            f"| {s['v1_within_4']} / {s['v2_within_4']} | {s['model_input_ms_full']} / {s['model_input_ms_reduced']} "
            f"| {s['model_input_speedup']}x | {s['cosine_min']}, {s['cosine_mean']} | {s['top1_agreement']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
