"""What a non-editable install gets: the wheel carries the sample photos, and ringserve-up finds them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["astronaut.jpg", "chelsea.jpg", "coffee-recompressed.jpg", "coffee.jpg", "rocket.jpg"]


def run(*argv: str, cwd: Path) -> str:
    out = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_the_wheel_ships_the_sample_photos_and_ringserve_up_finds_them_from_anywhere(tmp_path):
    source = tmp_path / "source"  # setuptools builds in its source folder: a copy keeps the checkout clean
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                 "bench", "tests", "k8s", "docs"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
        str(source), cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("ringserve-*.whl"))
    venv = tmp_path / "scratch"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel),
        cwd=tmp_path)
    # The dependencies come from this environment's site-packages, added as a plain path: its .pth files (the
    # editable install of this checkout) are not run there, so ringserve itself is the wheel's alone.
    scratch_site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                            cwd=tmp_path).strip())
    (scratch_site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "usage: ringserve-up" in run(str(venv / "bin" / "ringserve-up"), "--help", cwd=elsewhere)
    found = run(str(python), "-c", "from ringserve.local import up; print(up.SAMPLES); "
                "print(*sorted(p.name for p in up._images(up.SAMPLES)))", cwd=elsewhere).splitlines()
    assert Path(found[0]).is_relative_to(venv) and found[1].split() == PHOTOS
