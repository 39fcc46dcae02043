"""The wire contract: committed stubs are current, and the client needs no torch."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from ringserve.contract import generate

ROOT = Path(__file__).resolve().parents[1]


def test_committed_stubs_match_the_proto_files(tmp_path):
    written = generate.generate(tmp_path)
    assert written
    for path in written:
        committed = ROOT / "protos" / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} missing: run python -m ringserve.contract.generate"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.name} is stale against the .proto files: run python -m ringserve.contract.generate"
        )


def test_client_imports_and_calls_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import ringserve.client, ringserve.contract.codec, ringserve.contract.fingerprint\n"
        "from ringserve.client import Client\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_bare_install_does_not_depend_on_torch_or_redis():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bare = " ".join(project["dependencies"]).lower()
    assert "torch" not in bare and "redis" not in bare
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["server"])


def test_item_status_and_source_numbers_read_both_ways():
    import grpc

    from ringserve.contract.status import code_of, error_reply, source_name
    from ringserve.contract.v1 import inference_pb2 as pb

    assert [source_name(s) for s in (pb.SOURCE_L1, pb.SOURCE_L2, pb.SOURCE_COMPUTED)] == ["l1", "l2", "computed"]
    assert code_of(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(999) is grpc.StatusCode.UNKNOWN
    reply = error_reply(pb.ExtractReply, pb.ImageRequest(request_id="7"), grpc.StatusCode.NOT_FOUND, "no model x")
    assert reply.request_id == "7" and code_of(reply.status.code) is grpc.StatusCode.NOT_FOUND
