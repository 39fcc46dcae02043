"""`ringserve batch`: a folder tree into Parquet, bad files as rows, resumable after an interrupt."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

from ringserve.client import Client
from ringserve.client.batch import BatchConfig, done_paths, load_features, run
from ringserve.local.imagegen import jpeg


def make_tree(root, n: int) -> list[str]:
    paths = []
    for i in range(n):
        sub = root / f"shelf-{i % 3}" / ("deep" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"item-{i:03d}.jpg"
        path.write_bytes(jpeg(30_000 + i, size=(96, 96)))
        paths.append(path.relative_to(root).as_posix())
    (root / "shelf-0" / "notes.txt").write_text("not an image and not named like one: skipped")
    (root / "shelf-1" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "shelf-2" / "cut.png").write_bytes(jpeg(1)[:200])
    return paths


def test_batch_writes_every_image_lists_bad_files_and_skips_finished_work(nodes, tmp_path):
    node = nodes("a")
    root, out = tmp_path / "photos", tmp_path / "features.parquet"
    good = make_tree(root, 25)
    with Client(node.target) as client:
        first = run(client, BatchConfig(root=root, out=out, chunk=8), progress=False)
        again = run(client, BatchConfig(root=root, out=out, chunk=8), progress=False)
    assert (first.found, first.done, first.errors, first.skipped) == (27, 27, 2, 0)
    assert (again.done, again.skipped) == (0, 27)
    table = pq.read_table(out)
    assert sorted(table.column("path").to_pylist()) == sorted([*good, "shelf-1/broken.jpg", "shelf-2/cut.png"])
    bad = {r["path"]: r["error"] for r in table.to_pylist() if not r["ok"]}
    assert "INVALID_ARGUMENT" in bad["shelf-1/broken.jpg"] and "not an image" in bad["shelf-1/broken.jpg"]
    assert "truncated" in bad["shelf-2/cut.png"]
    paths, features = load_features(out)
    assert sorted(paths) == sorted(good) and features.shape == (25, 576)
    with Client(node.target) as client:
        direct = client.extract(str(root / paths[0]))
    assert abs(features[0] - direct.astype("float32")).max() == 0


def test_batch_resumes_after_an_interrupt_without_redoing_or_repeating(nodes, tmp_path):
    node = nodes("a", "--max-batch", "1")
    root, out = tmp_path / "photos", tmp_path / "out"
    good = make_tree(root, 60)
    cmd = [sys.executable, "-m", "ringserve.client.cli", "batch", str(root), "--out", str(out), "--chunk", "4",
           "--target", node.target, "--no-progress"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.exists() and len(list(out.glob("part-*.parquet"))) >= 2):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "resume" in err
    partial = done_paths(out)
    assert 0 < len(partial) < 62
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(partial)} already done" in rerun.stderr
    rows = pq.read_table(out).column("path").to_pylist()
    assert len(rows) == len(set(rows)) == 62  # nothing done twice, nothing missing
    assert set(good) <= set(rows)
    assert not list(out.glob(".part-*"))  # no half-written part left behind
