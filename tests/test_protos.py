"""The .proto tree as another language sees it: compiled from ``protos/`` alone, shipped in the wheel, linted
and checked for breaking changes by buf, and used from Node.js by examples/node/client.js."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from ringserve.client import Client
from ringserve.local.imagegen import jpeg, picture
from tests.test_search import search_cluster

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


# --- buf: lint, and breaking changes against the previous commit ---------------------------------------------

BUF = ROOT / "examples" / "node" / "node_modules" / ".bin" / "buf"
LAYOUT = "protos/ringserve/v1"


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the buf that scripts/setup.sh installs with npm; skip (saying how to get it) where it is missing,
    except in CI, whose setup can always install it."""
    if not BUF.exists():
        missing("buf not installed: run scripts/setup.sh with npm on PATH")
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def missing(why: str) -> None:
    """A tool from npm is missing: a skip on a developer's machine, a failure in CI (``CI`` set)."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI installs it: see scripts/setup.sh's output above)")
    pytest.skip(why)


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


def contract_versions() -> list[str]:
    """The commits to compare the .proto files with: every commit that changed them since they were laid out
    under protos/ringserve/v1 (each is a version of ringserve.v1 that callers may have compiled against, and
    v1 never breaks), newest first; HEAD too when the tree's own files differ from it."""
    if git("rev-parse", "--is-inside-work-tree").returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: buf breaking needs the contract's history")
    log = git("log", "--format=%H", "--", LAYOUT)
    versions = [c for c in log.stdout.split() if git("cat-file", "-e", f"{c}:{LAYOUT}").returncode == 0]
    changed = git("status", "--porcelain", "--untracked-files=all", "--", ":(glob)protos/**/*.proto", "buf.yaml")
    if changed.stdout.strip():
        versions.insert(0, "HEAD")
    return list(dict.fromkeys(versions))


@pytest.mark.fast
def test_buf_yaml_lints_the_protos_module_with_standard_rules():
    config = yaml.safe_load((ROOT / "buf.yaml").read_text())
    assert config["version"] == "v2" and config["modules"] == [{"path": "protos"}]
    assert config["lint"]["use"] == ["STANDARD"]


def test_buf_lint_passes():
    out = buf("lint")
    assert out.returncode == 0, f"buf lint (fix the .proto, or add a commented exception to buf.yaml):\n{out.stdout}{out.stderr}"


def test_buf_breaking_against_every_published_version_of_the_contract():
    versions = contract_versions()
    if not versions:
        pytest.skip(f"no commit in this clone has {LAYOUT}/ (a shallow clone?): fetch the history for buf breaking")
    broken = {}
    for version in versions:
        out = buf("breaking", "--against", f".git#ref={version},subdir=protos")
        if out.returncode != 0:
            broken[version[:12]] = out.stdout + out.stderr
    assert not broken, (
        "buf breaking: this change breaks callers compiled against these versions of ringserve.v1; keep field "
        f"numbers, names and types (add new fields instead), or make a new package version: {broken}")


@pytest.mark.parametrize("change", ["renumber", "remove"])
def test_buf_breaking_fails_on_a_renumbered_or_removed_field(tmp_path, change):
    """The check above can fail: the same tree with ImageRequest.image renumbered, or a field removed, is refused."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    for name in PROTO_FILES:
        (tmp_path / "protos" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROTOS / name, tmp_path / "protos" / name)
    inference = tmp_path / "protos" / "ringserve" / "v1" / "inference.proto"
    old, new = {"renumber": ("bytes image = 2;", "bytes image = 19;"),
                "remove": ("uint32 timeout_ms = 8;", "")}[change]
    text = inference.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in inference.proto: update this test's edit"
    inference.write_text(text.replace(old, new))
    assert buf("lint", cwd=tmp_path).returncode == 0  # still a valid tree: only the comparison refuses it
    out = buf("breaking", str(tmp_path), "--against", str(ROOT))
    assert out.returncode != 0 and "ImageRequest" in out.stdout, out.stdout + out.stderr


# --- the Node.js example: Extract and Search from the .proto files alone ------------------------------------------

NODE_EXAMPLE = ROOT / "examples" / "node"


def test_node_client_extracts_and_searches_from_the_protos_alone(tmp_path, redis_db):
    """examples/node/client.js against a real router with Search: one image per Extract message, then Index and
    Search by the same image; its JSON says the model's feature length and the indexed id first."""
    node = shutil.which("node")
    if node is None:
        missing("node not found: install Node.js 18+ (with npm) and run scripts/setup.sh to run examples/node")
    if not (NODE_EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        missing("examples/node/node_modules not installed: run scripts/setup.sh with npm on PATH")
    query = tmp_path / "query.jpg"
    query.write_bytes(jpeg(picture(7300, (160, 120)), 92))
    cluster = search_cluster(tmp_path / "cluster", redis_db, nodes=1)
    try:
        with Client(cluster.router.target) as client:
            dim = client.list_models().models[0].feature_dim
            # other entries first, so that the query's own id coming out on top means something
            others = [f"other-{i}" for i in range(4)]
            client.index(others, [jpeg(picture(7400 + i, (160, 120)), 92) for i in range(4)], collection="node-example")
        out = subprocess.run([node, str(NODE_EXAMPLE / "client.js"), cluster.router.target, str(query),
                              "--collection", "node-example", "--id", "query-1"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out.stdout)
        assert result["feature_length"] == dim and result["dtype"] in ("float16", "float32")
        assert result["provenance"]["node"] == "node-0" and result["provenance"]["source"].startswith("SOURCE_")
        assert result["indexed_id"] == "query-1" and result["top_id"] == "query-1"
        assert result["top_score"] == pytest.approx(1.0, abs=1e-2)
        with Client(cluster.router.target) as client:
            assert client.describe_collection("node-example").entries == 5
    finally:
        cluster.stop()
