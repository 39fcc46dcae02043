"""The .proto tree as another language sees it: compiled from ``protos/`` alone, shipped in the wheel."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
PROTO_FILES = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))


@pytest.mark.fast
def test_every_proto_lies_at_the_path_its_package_names():
    """buf's layout rule, and what lets ``-I protos`` resolve every import: package a.b -> protos/a/b/x.proto."""
    assert PROTO_FILES, f"no .proto files under {PROTOS}"
    for name in PROTO_FILES:
        text = (PROTOS / name).read_text()
        package = next(line.split()[1].rstrip(";") for line in text.splitlines() if line.startswith("package "))
        assert Path(name).parent.as_posix() == package.replace(".", "/"), (
            f"{name} declares package {package}: move it to protos/{package.replace('.', '/')}/")
        for line in text.splitlines():
            if line.startswith("import "):
                imported = line.split('"')[1]
                assert imported.startswith("google/protobuf/") or (PROTOS / imported).is_file(), (
                    f"{name} imports {imported}, which is not a path under protos/")


@pytest.mark.fast
def test_protoc_compiles_every_file_from_protos_alone(tmp_path):
    """``protoc -Iprotos`` (plus protoc's own well-known types) over the whole tree, as any other language would."""
    from grpc_tools import protoc

    well_known = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={tmp_path}", f"--descriptor_set_out={tmp_path / 'set.pb'}",
            *PROTO_FILES]
    assert protoc.main(args) == 0, f"protoc -Iprotos failed on {PROTO_FILES} (see its message above)"
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*_pb2.py")} == {
        n.removesuffix(".proto") + "_pb2.py" for n in PROTO_FILES}


@pytest.mark.fast
def test_stub_imports_are_rewritten_to_the_installed_package():
    from ringserve.contract import generate

    generated = ("from ringserve.v1 import inference_pb2 as ringserve_dot_v1_dot_inference__pb2\n"
                 "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'ringserve.v1.search_pb2', _globals)\n")
    assert generate.rewrite(generated) == (
        "from ringserve.contract.v1 import inference_pb2 as ringserve_dot_v1_dot_inference__pb2\n"
        "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'ringserve.contract.v1.search_pb2', _globals)\n")
    with pytest.raises(RuntimeError, match="rewrite"):
        generate.rewrite("import ringserve.v1.inference_pb2\n")


@pytest.mark.fast
def test_the_wheel_ships_every_proto_file():
    """pyproject's package-data must name the .proto files at their paths, or the wheel leaves them out."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["ringserve.contract"] == "protos"
    globs = setuptools["package-data"]["ringserve.contract"]
    missing = [n for n in PROTO_FILES if not any(fnmatch.fnmatchcase(n, g) for g in globs)]
    assert not missing, f"{missing} not in [tool.setuptools.package-data] ringserve.contract {globs}: add their folder"
