"""``ringserve status`` against a real router and real nodes, over the router's gRPC port alone; and
``Ring.shares``, the arc share it shows, against the ring's own owners."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter

import pytest

from ringserve.client import Client
from ringserve.contract.ring import Ring
from ringserve.local.cluster import LocalCluster, LocalTls
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import free_port
from tests.conftest import SMALL_MODEL
from tests.test_router import mutual_tls  # noqa: F401 (a fixture)

IMAGES = [jpeg(7100 + i) for i in range(12)]


def status(target: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringserve.client.cli", "status", "--target", target, *args],
                          capture_output=True, text=True, timeout=timeout_s)


def test_shares_are_the_rings_own_owners():
    ring = Ring({"a": 1, "b": 1, "c": 2})
    shares = ring.shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    owners = Counter(ring.owner(k * 0x9E3779B97F4A7C15 % (1 << 64)) for k in range(20_000))  # other keys
    for name, share in shares.items():
        assert share == pytest.approx(owners[name] / 20_000, abs=0.02), name
    assert shares["c"] > shares["a"] and shares["c"] > shares["b"]  # twice the weight, about twice the arcs
    assert Ring({}).shares() == {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("status"), node_args=SMALL_MODEL) as c:
        c.add("node-0", "node-1")
        c.start_router()
        yield c


def test_status_shows_members_shares_and_the_hit_ratio_the_callers_saw(cluster):
    with Client(cluster.router.target) as client:
        answers = [*client.extract_detailed(IMAGES), *client.extract_detailed(IMAGES)]
    seen = Counter((a.provenance.model_version, a.provenance.source) for a in answers)
    out = status(cluster.router.target, "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    nodes = {n["name"]: n for n in shown["nodes"]}
    assert set(nodes) == {"node-0", "node-1"} and all(n["state"] == "serving" for n in nodes.values())
    assert sum(n["arc_share"] for n in nodes.values()) == pytest.approx(1.0)
    assert all(n["arc_share"] > 0.2 for n in nodes.values())
    assert sum(n["placed"] for n in nodes.values()) >= len(answers)
    assert sum(n["load_share"] for n in nodes.values()) == pytest.approx(1.0)
    (version,) = shown["model_versions"]
    # every item the callers got is counted once, under the tier and model version the callers saw
    assert version["items"] == len(answers) == sum(seen.values())
    for (model_version, tier), count in seen.items():
        assert version["model_version"] == model_version
        assert version["tiers"][tier] == pytest.approx(count / len(answers))
    assert version["hit_ratio"] == pytest.approx((seen[model_version, "l1"] + seen[model_version, "l2"])
                                                 / len(answers))
    assert seen[model_version, "l1"] >= len(IMAGES)  # the second pass: each image on its owner's L1

    screen = status(cluster.router.target)
    assert screen.returncode == 0, screen.stderr
    assert "2 of 2 nodes serving" in screen.stdout
    for name in ("node-0", "node-1", version["model_version"]):
        assert name in screen.stdout


def test_watch_redraws_until_interrupted(cluster):
    cmd = [sys.executable, "-m", "ringserve.client.cli", "status", "--target", cluster.router.target, "--watch",
           "--json", "--interval-s", "0.1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all(line["router"] == "router" and len(line["nodes"]) == 2 for line in lines)


def test_a_target_that_is_not_a_router_is_named(cluster):
    node = status(cluster.nodes["node-0"].target)
    assert node.returncode == 1
    assert "serves no Cluster service" in node.stderr and "--target" in node.stderr
    nobody = status(f"127.0.0.1:{free_port()}", "--timeout-s", "5")
    assert nobody.returncode == 1
    assert "cannot reach a router" in nobody.stderr and "--target" in nobody.stderr


def test_a_stopped_node_is_shown_off_the_ring_with_its_arc_on_the_other(cluster):
    cluster.nodes["node-1"].kill()
    try:
        with Client(cluster.router.target) as client:
            client.extract(IMAGES[:2])  # the router learns of it by its health watch or a failed item
        cluster.router.wait_members(1)
        out = status(cluster.router.target, "--json")
        assert out.returncode == 0, out.stderr
        nodes = {n["name"]: n for n in json.loads(out.stdout)["nodes"]}
        assert nodes["node-1"]["state"] != "serving" and nodes["node-1"]["arc_share"] == 0.0
        assert nodes["node-1"]["reason"]
        assert nodes["node-0"]["state"] == "serving" and nodes["node-0"]["arc_share"] == 1.0
        screen = status(cluster.router.target)
        assert "1 of 2 nodes serving" in screen.stdout
    finally:
        cluster.nodes["node-1"].stop(5)


def test_status_reaches_a_router_that_serves_mutual_tls(tmp_path, mutual_tls: LocalTls):  # noqa: F811
    with LocalCluster(tmp_path, node_args=SMALL_MODEL, tls=mutual_tls) as c:
        c.add("node-0")
        c.start_router()
        plain = status(c.router.target, "--timeout-s", "5")
        assert plain.returncode == 1 and "--tls-ca-file" in plain.stderr
        files = ["--tls-ca-file", str(mutual_tls.ca_file), "--tls-cert-file", str(mutual_tls.cert_file),
                 "--tls-key-file", str(mutual_tls.key_file)]
        out = status(c.router.target, "--json", *files)
        assert out.returncode == 0, out.stderr
        assert [n["state"] for n in json.loads(out.stdout)["nodes"]] == ["serving"]
        unreadable = status(c.router.target, *files[:2], "--tls-cert-file", str(tmp_path / "none.pem"),
                            *files[4:])
        assert unreadable.returncode == 1 and "none.pem" in unreadable.stderr
