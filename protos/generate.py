"""Regenerate the Python stubs from the .proto files next to this module.

The stubs are committed so that a plain install needs no protoc; a test
regenerates them into a temporary folder and fails when the committed ones are
stale. Run after editing a .proto: ``python -m ringserve.contract.generate``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The .proto files live in protos/v1 on disk but are compiled as
# ringserve/contract/v1/*.proto, so the generated imports name the installed package.
VIRTUAL_ROOT = "ringserve/contract"
VERSIONS = ("v1",)


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto into ``out_dir/<version>/``; returns the files written."""
    from grpc_tools import protoc  # dev-only dependency

    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for version in VERSIONS:
            protos = sorted((HERE / version).glob("*.proto"))
            args = [
                "protoc",
                f"-I{VIRTUAL_ROOT}/{version}={HERE / version}",
                f"-I{Path(protoc.__file__).parent / '_proto'}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                *[f"{VIRTUAL_ROOT}/{version}/{p.name}" for p in protos],
            ]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {[p.name for p in protos]}")
            gen = Path(tmp) / VIRTUAL_ROOT / version
            dest = out_dir / version
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted(gen.iterdir()):
                shutil.copyfile(f, dest / f.name)
                written.append(dest / f.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: next to the .proto files)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
