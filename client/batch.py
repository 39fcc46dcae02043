"""Bulk jobs: every image under a folder through the cluster, into a resumable Parquet dataset.

The output is a folder of Parquet part files, one per chunk of images, each
written to a temporary name and renamed when complete, so an interrupted job
leaves only whole parts behind; a re-run reads the paths already written and
sends only the rest. A file that cannot be read or is not an image becomes a
row with its reason, never a failed job. Needs the ``batch`` extra (pyarrow, tqdm).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringserve.client.errors import RingserveError
from ringserve.client.sync import Client
from ringserve.contract.images import SUFFIXES


@dataclass(frozen=True)
class BatchConfig:
    root: Path
    out: Path
    # "extract" (feature vectors) or "classify" (top-k classes)
    kind: str = "extract"
    top_k: int = 5
    # Images per stream and per part file: the unit of progress that survives an interrupt.
    chunk: int = 256


@dataclass
class BatchSummary:
    found: int = 0
    skipped: int = 0
    done: int = 0
    errors: int = 0
    seconds: float = 0.0


def find_images(root: Path) -> list[str]:
    """Relative POSIX paths of every file with an image suffix under ``root``, sorted."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if Path(name).suffix.lower() in SUFFIXES:
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def done_paths(out: Path) -> set[str]:
    """Paths already written by earlier runs."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in sorted(out.glob("part-*.parquet")):
        done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
    return done


def load_features(out: Path) -> tuple[list[str], np.ndarray]:
    """(paths, (N, D) float32 array) of every successful extract row of a batch output."""
    import pyarrow.parquet as pq

    table = pq.read_table(out, columns=["path", "ok", "feature"])
    rows = [(p, f) for p, ok, f in zip(*(table.column(c).to_pylist() for c in ("path", "ok", "feature")), strict=True)
            if ok]
    return [p for p, _ in rows], np.array([f for _, f in rows], dtype=np.float32)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _schema(kind: str):
    import pyarrow as pa

    common = [("path", pa.string()), ("ok", pa.bool_()), ("error", pa.string()), ("source", pa.string()),
              ("node", pa.string()), ("model", pa.string()), ("model_version", pa.string())]
    if kind == "extract":
        return pa.schema([*common, ("feature", pa.list_(pa.float32()))])
    return pa.schema([*common, ("classes", pa.list_(pa.string())), ("indices", pa.list_(pa.int32())),
                      ("scores", pa.list_(pa.float32()))])


def _row(path: str, kind: str, result) -> dict:
    row: dict = {"path": path, "ok": not isinstance(result, (RingserveError, OSError)), "error": None,
                 "source": None, "node": None, "model": None, "model_version": None}
    if kind == "extract":
        row["feature"] = None
    else:
        row.update(classes=None, indices=None, scores=None)
    if isinstance(result, RingserveError):
        row["error"] = f"{result.code.name}: {result.message}"
    elif isinstance(result, OSError):
        row["error"] = f"unreadable: {result}"
    else:
        p = result.provenance
        row.update(source=p.source, node=p.node, model=p.model, model_version=p.model_version)
        if kind == "extract":
            row["feature"] = result.vector.astype(np.float32).tolist()
        else:
            row.update(classes=result.names, indices=[int(i) for i in result.indices],
                       scores=[float(s) for s in result.scores])
    return row


def run(client: Client, config: BatchConfig, progress: bool = True) -> BatchSummary:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    if config.kind not in ("extract", "classify"):
        raise ValueError("kind must be extract or classify")
    config.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    found = find_images(config.root)
    done = done_paths(config.out)
    todo = [p for p in found if p not in done]
    summary = BatchSummary(found=len(found), skipped=len(found) - len(todo))
    schema = _schema(config.kind)
    bar = tqdm(total=len(found), initial=summary.skipped, unit="img", disable=not progress, file=sys.stderr,
               desc=config.kind, smoothing=0.1)
    try:
        for chunk in _chunks(todo, config.chunk):
            payloads: list[bytes] = []
            unreadable: dict[int, OSError] = {}
            for i, path in enumerate(chunk):
                try:
                    payloads.append((config.root / path).read_bytes())
                except OSError as exc:
                    unreadable[i] = exc
                    payloads.append(b"")
            sendable = [i for i in range(len(chunk)) if i not in unreadable]
            if config.kind == "extract":
                results = client.extract_detailed([payloads[i] for i in sendable])
            else:
                results = client.classify_detailed([payloads[i] for i in sendable], top_k=config.top_k)
            by_index = dict(zip(sendable, results, strict=True)) | unreadable
            rows = [_row(path, config.kind, by_index[i]) for i, path in enumerate(chunk)]
            summary.errors += sum(1 for r in rows if not r["ok"])
            summary.done += len(rows)
            tmp = config.out / f".part-{uuid.uuid4().hex}.tmp"
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
            tmp.rename(config.out / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet")
            bar.update(len(chunk))
            bar.set_postfix(errors=summary.errors)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - started
    return summary
