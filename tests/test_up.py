"""The README's first command: a whole local cluster, sample photos through it, nothing left behind."""

import subprocess
import sys

import psutil


def test_ringserve_up_runs_a_cluster_and_shows_every_tier(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "ringserve.local.up", "--nodes", "2", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout
    for expected in ("computed", " l1 ", " l2 ", "perceptual", "Egyptian cat", "espresso", "summary:"):
        assert expected in text, (expected, text[-3000:])
    leftovers = [p for p in psutil.process_iter(["cmdline", "cwd"])
                 if str(tmp_path) in " ".join(p.info["cmdline"] or []) or str(tmp_path) in (p.info["cwd"] or "")]
    assert not leftovers, f"processes left behind: {leftovers}"
