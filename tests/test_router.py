"""Integration: a real router over real nodes and a real Redis, on loopback."""

from __future__ import annotations

import functools
import json
import signal
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest

from ringserve.client import Client, Overloaded
from ringserve.contract import fingerprint
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import cluster_pb2_grpc as cpb_grpc
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.local.cluster import LocalCluster, LocalTls
from ringserve.local.imagegen import claiming, encode, jpeg, picture
from ringserve.local.processes import NodeProcess, RouterProcess
from tests import certs
from tests.conftest import SMALL_MODEL, extract_one


@pytest.fixture
def cluster(workdir, request, redis_db):
    made: list[LocalCluster] = []

    def make(n: int = 3, router_args=(), node_args=(), redis: bool = True, tls: LocalTls | None = None) -> LocalCluster:
        c = LocalCluster(workdir / request.node.name, redis_db.url if redis else None, [*SMALL_MODEL, *node_args],
                         router_args, tls=tls)
        made.append(c)
        c.add(*[f"node-{i}" for i in range(n)])
        c.start_router()
        return c

    yield make
    for c in made:
        c.stop()


def test_same_image_and_its_reencoding_go_to_the_same_node_and_hit_its_l1(cluster):
    # A deployment that uses perceptual reuse keeps every feature findable by its fingerprint, in L1 too; the
    # verifier's threshold is what these small pictures' re-encodings pass.
    c = cluster(3, node_args=["--cache-perceptual-index", "--cache-verify-min-psnr", "40"])
    # pictures whose re-encoding at another JPEG quality keeps the pHash (where pHash agrees)
    pairs = []
    for seed in range(3000, 3060):
        a, b = jpeg(seed, quality=95), jpeg(seed, quality=80)
        if fingerprint.phash_bytes(a) == fingerprint.phash_bytes(b):
            pairs.append((a, b))
        if len(pairs) == 8:
            break
    assert len(pairs) == 8
    with Client(c.router.target, window=1) as client:
        first = client.extract_detailed([a for a, _ in pairs])
        again = client.extract_detailed([a for a, _ in pairs])
        reencoded = client.extract_detailed([b for _, b in pairs], cache_mode="perceptual", radius=0)
    assert [r.provenance.source for r in first] == ["computed"] * 8
    assert [r.provenance.source for r in again] == ["l1"] * 8
    assert [r.provenance.node for r in again] == [r.provenance.node for r in first]
    assert [r.provenance.node for r in reencoded] == [r.provenance.node for r in first]
    assert all(r.provenance.source == "l1" and r.provenance.perceptual for r in reencoded)
    assert len({r.provenance.node for r in first}) >= 2  # spread over the ring


def test_keys_moved_on_adding_and_removing_a_node_stay_near_one_over_n_plus_one(cluster):
    c = cluster(3)
    rng = np.random.default_rng(0)
    keys = [int(k) for k in rng.integers(0, 2**63, size=1500, dtype=np.int64)]
    before = c.owner(keys)
    c.add("node-3")
    c.router.wait_members(4)
    after = c.owner(keys)
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "node-3" for k in moved)
    assert 0.5 / 4 < len(moved) / len(keys) < 1.6 / 4
    c.nodes.pop("node-3").stop()
    c.write_members()
    c.router.wait_members(3)
    assert c.owner(keys) == before  # removing it moves back exactly its keys


@pytest.fixture(scope="module")
def mutual_tls(tmp_path_factory) -> LocalTls:
    """Mutual TLS on every hop of a cluster: one certificate from a CA of its own (tests/certs.py)."""
    root = tmp_path_factory.mktemp("pki")
    cert = certs.make_cert(certs.make_ca(root, "ca"), root, "cluster")
    return LocalTls(cert.ca.cert, cert.cert, cert.key)


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "mutual-tls"])
def test_kill_9_a_node_mid_stream_loses_and_duplicates_nothing(cluster, tls, request):
    c = cluster(3, router_args=["--retry-max-attempts", "3"],
                tls=request.getfixturevalue("mutual_tls") if tls else None)
    images = [jpeg(4000 + i, size=(160, 160)) for i in range(150)]
    replies: list[pb.ExtractReply] = []
    victim = "node-1"
    killed_at = {}

    def requests():
        for i, image in enumerate(images):
            # From item 60 on, kill the victim the moment the router has items waiting on it: a kill
            # between its items would test a clean failover, not the re-sending of items in flight. It is
            # stopped first, so the items the router shows on it are still there when the SIGKILL lands (a
            # node answering 160x160 hits in a millisecond had often answered them by then: no re-send). The
            # kill comes within a few items, well before any hedging bound.
            if i == 60:
                c.nodes[victim].signal(signal.SIGSTOP)
            if i >= 60 and "answered" not in killed_at and (i == 120 or c.members()[victim].inflight > 0):
                c.nodes[victim].kill()
                killed_at["answered"] = len(replies)
                killed_at["item"] = i
            # pace the stream so items are in flight on every node when the kill lands
            while i - len(replies) > 24:
                time.sleep(0.002)
            yield pb.ImageRequest(request_id=str(i), image=image)

    with c.router.channel() as channel:
        for reply in pb_grpc.InferenceStub(channel).Extract(requests(), timeout=180):
            replies.append(reply)
    counts = Counter(r.request_id for r in replies)
    assert len(counts) == 150 and set(counts.values()) == {1}, "lost or duplicated items"
    assert all(r.status.code == 0 for r in replies), [r.status.message for r in replies if r.status.code][:3]
    late = replies[killed_at["answered"] + 30 :]
    assert late and all(r.provenance.node != victim for r in late)
    members = c.members()
    assert members[victim].state != cpb.MEMBER_STATE_SERVING
    # and the router's metrics tell the story
    assert c.router.metric("ringserve_router_placed_total") >= 150
    assert killed_at["item"] < 120, "the victim never had an item in flight: the stream was not paced"
    assert c.router.metric("ringserve_router_retries_total") >= 1
    assert c.router.metric("ringserve_router_members") == 2
    # every item was answered, so no node's in-flight gauge is left counting one
    assert 'node="node-0"' in c.router.metrics_text() and c.router.metric("ringserve_router_inflight", node="node-0") == 0
    # the client library sees no error either
    with Client(c.router.target, tls=c.client_tls) as client:
        assert all(not isinstance(r, Exception) for r in client.extract_detailed(images[:20]))


def test_a_draining_node_is_taken_off_the_ring_without_errors(cluster):
    c = cluster(3, node_args=["--drain-delay-s", "2"])
    images = [jpeg(5000 + i) for i in range(60)]
    with Client(c.router.target) as client:
        client.extract_detailed(images)
        c.nodes["node-2"].signal(15)  # SIGTERM: NOT_SERVING for 2 s, then drain and exit
        deadline = time.monotonic() + 10
        while c.members()["node-2"].state == cpb.MEMBER_STATE_SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "NOT_SERVING" in c.members()["node-2"].reason
        results = client.extract_detailed(images + [jpeg(5100 + i) for i in range(30)])
    assert all(not isinstance(r, Exception) for r in results)
    assert all(r.provenance.node != "node-2" for r in results)
    assert c.nodes["node-2"].proc.wait(30) == 0


def test_a_restarted_node_rejoins_at_its_own_arc(cluster):
    c = cluster(3)
    keys = list(range(1, 2**64, 2**64 // 600))
    before = c.owner(keys)
    candidates = {fingerprint.phash_bytes(jpeg(6000 + i)): jpeg(6000 + i) for i in range(40)}
    owners = c.owner(list(candidates))
    image = next(img for key, img in candidates.items() if owners[key] == "node-0")
    with Client(c.router.target) as client:
        assert client.extract_detailed([image])[0].provenance.node == "node-0"
        node = c.nodes["node-0"]
        port = node.port
        node.kill()
        c.router.wait_members(2)
        moved = client.extract_detailed([image])[0]
        assert moved.provenance.node != "node-0" and moved.provenance.source == "l2"
        c.nodes["node-0"] = NodeProcess(c.workdir, "node-0", c.node_cmd(), port=port).start()
        c.router.wait_members(3)
        assert c.owner(keys) == before
        back = client.extract_detailed([image])[0]
        assert back.provenance.node == "node-0" and back.provenance.source == "l2"  # its L1 refills from L2


def test_spoofed_hint_through_the_router_is_answered_correctly(cluster):
    c = cluster(2)
    a, b = jpeg(7000), jpeg(7001)
    with grpc.insecure_channel(c.router.target) as channel:
        send = functools.partial(extract_one, pb_grpc.InferenceStub(channel), mode=pb.CACHE_MODE_PERCEPTUAL)
        truth = send(a, mode=pb.CACHE_MODE_BYPASS)
        send(b)  # b is cached somewhere
        spoofed = send(a, hint=fingerprint.phash_bytes(b))
        assert spoofed.status.code == 0 and spoofed.feature.data == truth.feature.data


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "mutual-tls"])
def test_overload_returns_resource_exhausted_and_nothing_queues_without_bound(cluster, tls, request):
    c = cluster(2, node_args=["--max-inflight", "4", "--max-queue", "2", "--max-batch", "1"],
                tls=request.getfixturevalue("mutual_tls") if tls else None)
    images = [jpeg(8000 + i, size=(224, 224)) for i in range(8)]
    with Client(c.router.target, window=300, tls=c.client_tls) as client:
        results = client.extract_detailed(images * 40, cache_mode="bypass")
    rejected = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if not isinstance(r, Exception)]
    assert rejected and served and len(rejected) + len(served) == 320
    assert "tried" in rejected[0].message  # the router passed it on before giving up


def test_a_hot_image_is_spread_by_bounded_loads(cluster):
    c = cluster(3, router_args=["--load-factor", "1.25"])
    hot = jpeg(9000, size=(224, 224))
    with Client(c.router.target, window=64) as client:
        results = client.extract_detailed([hot] * 150 + [jpeg(9001 + i) for i in range(30)], cache_mode="bypass")
    assert all(not isinstance(r, Exception) for r in results)
    hot_nodes = Counter(r.provenance.node for r in results[:150])
    assert len(hot_nodes) >= 2, hot_nodes  # one hot key did not melt one node


def test_a_trace_spans_router_and_node(cluster, workdir):
    traces = workdir / "traces"
    traces.mkdir(exist_ok=True)
    c = cluster(1, router_args=["--trace-file", str(traces / "router.jsonl")],
                node_args=["--trace-file", str(traces / "node.jsonl")])
    from opentelemetry.sdk.trace import TracerProvider

    caller = TracerProvider().get_tracer("caller")
    with caller.start_as_current_span("caller.request") as root, Client(c.router.target) as client:
        client.extract(encode(picture(9100), "PNG"))
    c.stop()
    router_spans = [json.loads(x) for x in (traces / "router.jsonl").read_text().splitlines()]
    node_spans = [json.loads(x) for x in (traces / "node.jsonl").read_text().splitlines()]
    routed = next(s for s in router_spans if s["name"] == "router.extract")
    served = next(s for s in node_spans if s["name"] == "node.extract")
    # one trace: the caller's span -> the router's item span -> the node's item span -> Redis
    assert routed["context"]["trace_id"] == f"0x{root.get_span_context().trace_id:032x}"
    assert routed["parent_id"] == f"0x{root.get_span_context().span_id:016x}"
    assert served["context"]["trace_id"] == routed["context"]["trace_id"]
    assert served["parent_id"] == routed["context"]["span_id"]
    assert any(s["name"] in ("GET", "SET") or "redis" in json.dumps(s.get("attributes", {})).lower()
               for s in node_spans), "no Redis span in the node's trace"


def test_cluster_members_and_owner_service(cluster):
    c = cluster(2)
    members = c.members()
    assert set(members) == {"node-0", "node-1"}
    assert all(m.state == cpb.MEMBER_STATE_SERVING for m in members.values())
    image = jpeg(9200)
    with grpc.insecure_channel(c.router.target) as channel:
        stub = cpb_grpc.ClusterStub(channel)
        by_image = stub.Owner(cpb.OwnerRequest(image=image))
        by_hash = stub.Owner(cpb.OwnerRequest(phash=fingerprint.phash_bytes(image)))
    assert by_image.owner == by_hash.owner and by_image.phash == fingerprint.phash_bytes(image)
    assert sorted(by_image.order) == ["node-0", "node-1"] and by_image.order[0] == by_image.owner
    with Client(c.router.target) as client:
        assert client.extract_detailed([image])[0].provenance.node == by_image.owner
        assert client.list_models().models[0].name == "mobilenet_v3_small"


def test_router_without_serving_nodes_waits_then_says_which_nodes_it_tried(workdir, tmp_path):
    from ringserve.client import DeadlineExceeded, Unavailable

    members = tmp_path / "members"
    members.write_text("ghost=127.0.0.1:1\n")
    router = RouterProcess(tmp_path, members_file=members, args=["--drain-delay-s", "0", "--retry-budget-s", "0.5"]).start()
    try:
        # no deadline: re-sent for the router's retry budget, then UNAVAILABLE that says why
        with Client(router.target, retries=0, timeout_s=None) as client:
            result = client.extract_detailed([jpeg(1)])[0]
        assert isinstance(result, Unavailable), result
        assert "no serving node" in result.message and "retry budget of 0.5 s" in result.message
        # a deadline shorter than the budget: DEADLINE_EXCEEDED from the router, before the caller's own fires
        with Client(router.target, retries=0, timeout_s=0.3) as client:
            result = client.extract_detailed([jpeg(2)])[0]
        assert isinstance(result, DeadlineExceeded) and "no serving node" in result.message, result
        # alive, but not ready: readiness (the Inference service) says NOT_SERVING without nodes
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(router.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service="")).status == 1
            assert health.Check(health_pb2.HealthCheckRequest(service="ringserve.v1.Inference")).status == 2
    finally:
        router.stop()


def _paced_stream(target: str, images: list[bytes], every_s: float, timeout_s: float) -> tuple[list, dict[str, float]]:
    """Send one image every ``every_s`` on one raw stream; the replies, and each item's send time."""
    sent: dict[str, float] = {}

    def requests():
        for i, image in enumerate(images):
            sent[str(i)] = time.monotonic()
            yield pb.ImageRequest(request_id=str(i), image=image)
            time.sleep(every_s)

    with grpc.insecure_channel(target) as channel:
        replies = [(time.monotonic(), r) for r in pb_grpc.InferenceStub(channel).Extract(requests(), timeout=timeout_s)]
    return replies, sent


def test_items_wait_while_the_only_node_restarts_and_are_served_within_their_deadline(cluster, busy_cores):
    c = cluster(1)
    images = [jpeg(9500 + i) for i in range(400)]
    outcome: list[tuple[list, dict[str, float]]] = []
    caller = threading.Thread(target=lambda: outcome.append(_paced_stream(c.router.target, images, 0.02, 120)))
    caller.start()
    time.sleep(1.0)
    away = time.monotonic()
    # drain, exit, model load, back on the ring: seconds with no node at all, while every core is busy. The
    # backlog then reaches the node at most --max-node-inflight at a time (it once overflowed the batcher).
    c.restart("node-0")
    back = time.monotonic()
    caller.join(150)
    replies, sent = outcome[0]
    counts = Counter(r.request_id for _, r in replies)
    assert len(counts) == len(images) and set(counts.values()) == {1}, "lost or duplicated items"
    assert all(r.status.code == 0 for _, r in replies), [r.status.message for _, r in replies if r.status.code][:3]
    # items sent while no node was on the ring waited at the router and were served once it came back
    waited = [(t, r) for t, r in replies if away + 0.5 < sent[r.request_id] < back - 0.5]
    assert waited and all(t >= back - 0.5 for t, _ in waited)
    assert c.router.metric("ringserve_router_errors_total") == 0


def test_every_node_frozen_past_the_deadline_is_deadline_exceeded_naming_the_nodes(cluster):
    import signal

    from ringserve.client import DeadlineExceeded

    c = cluster(2)
    for node in c.nodes.values():
        node.signal(signal.SIGSTOP)  # alive to TCP and to health, answering nothing
    try:
        with Client(c.router.target, retries=0, timeout_s=1.5) as client:
            results = client.extract_detailed([jpeg(9600 + i) for i in range(4)])
    finally:
        for node in c.nodes.values():
            node.signal(signal.SIGCONT)
    assert all(isinstance(r, DeadlineExceeded) for r in results), results
    assert all("tried node-" in r.message and "did not answer in time" in r.message for r in results), results


@pytest.mark.parametrize("threads", [4])
def test_many_caller_streams_share_the_node_links(cluster, threads):
    c = cluster(2)
    errors = []

    def caller(k: int) -> None:
        try:
            with Client(c.router.target) as client:
                out = client.extract([jpeg(9300 + 10 * k + i) for i in range(10)])
                assert out.shape == (10, 576)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    ts = [threading.Thread(target=caller, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_the_callers_deadline_reaches_the_node(cluster):
    from ringserve.client import DeadlineExceeded

    c = cluster(1, node_args=["--max-batch", "1"])
    images = [jpeg(9400 + i, size=(224, 224)) for i in range(120)]
    with Client(c.router.target, timeout_s=1.0, window=120, retries=0) as client:
        results = client.extract_detailed(images, cache_mode="bypass")
    assert any(isinstance(r, DeadlineExceeded) for r in results)
    node = c.nodes["node-0"]
    deadline = time.monotonic() + 20
    while node.metric("ringserve_requests_total", status="DEADLINE_EXCEEDED") == 0:
        assert time.monotonic() < deadline, "the node never saw the caller's deadline"
        time.sleep(0.2)


def test_avif_and_heic_are_served_end_to_end_and_a_header_that_lies_is_refused(cluster):
    from ringserve.client.inputs import hint

    c = cluster(2)
    photos = [encode(picture(9700), "AVIF"), encode(picture(9701), "HEIF"), encode(picture(9700), "PNG")]
    assert [hint(p) for p in photos] == [fingerprint.phash_bytes(p) for p in photos]  # the client's hints
    with Client(c.router.target) as client:
        hinted = client.extract_detailed(photos)
        unhinted = client.extract_detailed(photos, hints=False, cache_mode="bypass")  # the router fingerprints
    assert all(not isinstance(r, Exception) for r in hinted + unhinted), hinted + unhinted
    keys = [fingerprint.phash_bytes(p) for p in photos]
    owners = c.owner(keys)
    assert [r.provenance.node for r in unhinted] == [owners[k] for k in keys]
    avif, heic, png = (r.vector.astype(np.float32) for r in hinted)

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cosine(avif, png) > 0.9 and cosine(avif, heic) < cosine(avif, png)  # the same picture, another one
    lying = claiming(photos[1], 60_000, 60_000)
    with grpc.insecure_channel(c.router.target) as channel:
        reply = extract_one(pb_grpc.InferenceStub(channel), lying, mode=pb.CACHE_MODE_EXACT)
    assert reply.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "60000x60000 pixels is over the limit" in reply.status.message


def test_a_node_frozen_under_load_holds_no_item_for_long_and_loses_or_duplicates_nothing(cluster):
    import signal

    from ringserve.local.load import LoadGenerator

    # The per-try bound follows the misses' p99, which on a loaded 2-core machine reaches 0.7-0.8 s (a bound of
    # up to --hedge-max-s, 2 s): an item on the frozen node would wait that out before its silence is judged
    # (issue 17's open item). Capped here at 0.5 s, so the test holds the stall rule itself to the 1.5 s below.
    c = cluster(3, router_args=["--hedge-max-s", "0.5"])
    images = [jpeg(9700 + i) for i in range(90)]
    load = LoadGenerator(c.router.target, images, streams=4, window=8).start()
    time.sleep(4.0)  # every image computed once, then mostly hits: the router has learnt the nodes' latency
    frozen_at = time.monotonic()
    c.nodes["node-1"].signal(signal.SIGSTOP)  # alive to TCP and to its health watch, answering nothing
    try:
        time.sleep(4.0)
    finally:
        c.nodes["node-1"].signal(signal.SIGCONT)
    time.sleep(1.0)
    report = load.stop()
    assert report.stream_errors == [] and report.lost == 0 and report.duplicates == 0
    assert report.failed == 0, report.codes()
    during = [o for o in report.outcomes if o.sent >= frozen_at]
    assert during and report.latency_ms(100, frozen_at) < 1500, report.summary()  # not the 4 s freeze
    assert c.router.metric("ringserve_router_hedges_total", reason="stalled") >= 1
    assert any(o.node == "node-1" for o in report.outcomes if o.sent < frozen_at)  # it had its share before
