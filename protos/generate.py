"""Regenerate the Python stubs from the .proto files under ``protos/ringserve/``.

The .proto files lie at the paths their packages name (``ringserve/v1/*.proto`` under
``protos/``, buf's layout), so any protoc compiles them with ``-I protos`` alone. The stubs are
committed so that a plain install needs no protoc; a test regenerates them into a temporary folder
and fails when the committed ones are stale. Run after editing a .proto:
``python -m ringserve.contract.generate``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS = ("v1",)
# protoc names a stub's Python module after its .proto path (ringserve/v1/x.proto -> ringserve.v1.x_pb2), but the
# stubs are installed as ringserve.contract.v1 (protos/v1/): the cross-file imports (search_pb2 -> inference_pb2,
# the _grpc stubs -> their _pb2) and the module name given to the generated classes are rewritten to it.
_IMPORT = re.compile(r"^from ringserve\.(v\d+) import ", re.MULTILINE)
_MODULE = re.compile(r"'ringserve\.(v\d+\.\w+_pb2)'")
_LEFT = re.compile(r"^(from|import) ringserve\.v\d+\b", re.MULTILINE)


def rewrite(text: str) -> str:
    """Point a generated stub's imports of ``ringserve.vN`` at the installed ``ringserve.contract.vN``."""
    text = _IMPORT.sub(r"from ringserve.contract.\1 import ", text)
    text = _MODULE.sub(r"'ringserve.contract.\1'", text)
    if left := _LEFT.search(text):
        raise RuntimeError(f"protoc wrote an import this generator does not rewrite: {left.group(0)!r}; "
                           "extend protos/generate.py's rewrite() to map it to ringserve.contract")
    return text


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto into ``out_dir/<version>/``; returns the files written."""
    from grpc_tools import protoc  # dev-only dependency

    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for version in VERSIONS:
            protos = sorted((HERE / "ringserve" / version).glob("*.proto"))
            if not protos:
                raise RuntimeError(f"no .proto files in {HERE / 'ringserve' / version}")
            args = [
                "protoc",
                f"-I{HERE}",
                f"-I{Path(protoc.__file__).parent / '_proto'}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                *[p.relative_to(HERE).as_posix() for p in protos],
            ]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {[p.name for p in protos]}")
            gen = Path(tmp) / "ringserve" / version
            dest = out_dir / version
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted(gen.iterdir()):
                (dest / f.name).write_text(rewrite(f.read_text()))
                written.append(dest / f.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the stubs into (default: protos/, "
                        "the installed ringserve.contract)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
