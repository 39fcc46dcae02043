"""Search end to end: real routers over real nodes and a durable Redis; index, search, delete, restart, roll."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ringserve.client import Client, InvalidArgument, InvalidImage, NotFound, RingserveError, Unavailable
from ringserve.client.search import Indexed
from ringserve.contract import fingerprint
from ringserve.contract.status import code_of
from ringserve.contract.v1 import search_pb2 as spb
from ringserve.contract.v1 import search_pb2_grpc as spb_grpc
from ringserve.local.cluster import LocalCluster
from ringserve.local.imagegen import encode, featureless, jpeg, picture
from ringserve.local.processes import RedisProcess, RouterProcess
from tests.conftest import SMALL_MODEL

PICTURES = [jpeg(picture(7000 + i, (160, 120)), 92) for i in range(12)]
IDS = [f"sku-{i}" for i in range(12)]


def search_cluster(root: Path, redis: RedisProcess, nodes: int = 2, **router: str) -> LocalCluster:
    c = LocalCluster(root, redis.url, SMALL_MODEL,
                     ["--search-redis-url", redis.url, "--search-snapshot-dir", str(root / "views"),
                      "--search-poll-s", "0.02", *[x for k, v in router.items() for x in (f"--{k}", v)]])
    c.add(*[f"node-{i}" for i in range(nodes)])
    c.start_router()
    return c


@pytest.fixture
def durable_redis(tmp_path: Path):
    redis = RedisProcess(tmp_path / "redis", durable=True).start()
    yield redis
    redis.stop()


@pytest.fixture
def made(tmp_path: Path):
    clusters: list[LocalCluster] = []
    yield clusters
    for c in clusters:
        c.stop()


def test_index_search_reindex_and_delete(tmp_path, durable_redis, made):
    c = search_cluster(tmp_path / "c", durable_redis)
    made.append(c)
    with Client(c.router.target) as client:
        indexed = client.index(IDS, PICTURES, collection="catalogue")
        assert all(isinstance(r, Indexed) for r in indexed) and len({r.model_version for r in indexed}) == 1

        found = client.search(collection="catalogue", image=PICTURES[3], k=5)
        assert found.nearest[0].id == "sku-3" and found.nearest[0].score == pytest.approx(1.0, abs=1e-2)
        assert found.nearest[1].score < 0.99  # the model's features for other pictures really differ
        assert client.search(collection="catalogue", id="sku-3", k=3).nearest[0].id == "sku-3"

        # a re-encoding is a near-duplicate by pHash, and its nearest entry by feature
        reencoded = jpeg(picture(7003, (160, 120)), 60)
        distance = fingerprint.hamming(fingerprint.phash_bytes(reencoded), fingerprint.phash_bytes(PICTURES[3]))
        near = client.search(collection="catalogue", image=reencoded, k=1, max_distance=max(distance, 2))
        assert near.nearest[0].id == "sku-3" and "sku-3" in [h.id for h in near.duplicates]
        assert all(h.distance <= max(distance, 2) for h in near.duplicates)

        # flat pictures are low-information: found by feature and by their id, never as anyone's duplicates
        flats = [encode(featureless(k, (160, 120)), "PNG") for k in ("flat-255-255-255", "flat-245-245-245")]
        assert all(isinstance(r, Indexed) for r in client.index(["white", "paper"], flats, collection="catalogue"))
        grey = jpeg(featureless("flat-250-250-250", (160, 120)), 90)
        by_flat = client.search(collection="catalogue", image=grey, k=2, max_distance=16)
        assert by_flat.query_low_information and by_flat.duplicates == []
        assert {h.id for h in by_flat.nearest} == {"white", "paper"}
        by_id = client.search(collection="catalogue", id="white", k=1, max_distance=16)
        assert by_id.query_low_information and by_id.duplicates == [] and by_id.nearest[0].id == "white"
        assert client.delete("catalogue", ["white", "paper"]) == (2, [])

        # re-indexing an id replaces its entry
        other = jpeg(picture(7100, (160, 120)), 92)
        assert isinstance(client.index(["sku-3"], [other], collection="catalogue")[0], Indexed)
        assert client.search(collection="catalogue", image=other, k=1).nearest[0].id == "sku-3"
        assert client.search(collection="catalogue", image=PICTURES[3], k=1).nearest[0].id != "sku-3"
        assert client.describe_collection("catalogue").entries == 12

        # a deleted id is gone, and stays gone
        assert client.delete("catalogue", ["sku-3", "never-indexed"]) == (1, ["never-indexed"])
        with pytest.raises(NotFound, match="sku-3"):
            client.search(collection="catalogue", id="sku-3", k=1)
        assert "sku-3" not in [h.id for h in client.search(collection="catalogue", image=other, k=11).nearest]
        assert client.describe_collection("catalogue").entries == 11


def test_bad_input_gets_clear_errors_and_loses_nothing(tmp_path, durable_redis, made):
    c = search_cluster(tmp_path / "c", durable_redis)
    made.append(c)
    with grpc.insecure_channel(c.router.target) as channel:  # Search says SERVING once its views are loaded
        health = health_pb2_grpc.HealthStub(channel)
        wait_until(lambda: health.Check(health_pb2.HealthCheckRequest(service="ringserve.v1.Search")).status
                   == health_pb2.HealthCheckResponse.SERVING)
    with Client(c.router.target, retries=0) as client:
        results = client.index(["a", "bad", "b"], [PICTURES[0], b"not an image", PICTURES[1]], collection="cat")
        assert isinstance(results[0], Indexed) and isinstance(results[2], Indexed)
        assert isinstance(results[1], InvalidImage)  # its own item fails; the stream went on
        assert client.describe_collection("cat").entries == 2
        with pytest.raises(NotFound, match="no-such"):
            client.search(collection="no-such", image=PICTURES[0], k=3)
        with pytest.raises(NotFound, match="'zzz'"):
            client.search(collection="cat", id="zzz", k=3)
        with pytest.raises(InvalidArgument, match="search-max-k") as over:  # the router's own limit
            client.search(collection="cat", id="a", k=10_000)
        assert not isinstance(over.value, InvalidImage)
        with pytest.raises(InvalidArgument, match="max_distance must be an integer from 0 to 16") as far:
            client.search(collection="cat", id="a", k=1, max_distance=40)  # refused before the call
        assert far.value.argument == "max_distance"
        with pytest.raises(InvalidArgument, match="collection name"):
            client.index(["x"], [PICTURES[2]], collection="no spaces/allowed")
    # The same limits hold for callers that check nothing (another language, a raw stub).
    with grpc.insecure_channel(c.router.target) as channel:
        stub = spb_grpc.SearchStub(channel)
        for request, said in ((spb.SearchRequest(collection="cat", id="a", k=1, max_distance=40), "max_distance"),
                              (spb.SearchRequest(collection="no spaces", id="a", k=1), "collection name")):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Search(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and said in refused.value.details()


def test_a_second_router_sees_the_first_routers_writes(tmp_path, durable_redis, made):
    c = search_cluster(tmp_path / "c", durable_redis)
    made.append(c)
    second = RouterProcess(tmp_path / "second", "router-2", members_file=c.members_file,
                           args=["--members-interval-s", "0.1", "--search-redis-url", durable_redis.url,
                                 "--search-poll-s", "0.02"])
    try:
        second.start()
        second.wait_members(len(c.nodes))
        with Client(c.router.target) as first, Client(second.target) as then:
            first.index(IDS[:4], PICTURES[:4], collection="shared")
            wait_until(lambda: _entries(then, "shared") == 4)
            assert then.search(collection="shared", id="sku-2", k=1).nearest[0].id == "sku-2"
            first.delete("shared", ["sku-2"])
            wait_until(lambda: _entries(then, "shared") == 3)
            with pytest.raises(NotFound):
                then.search(collection="shared", id="sku-2", k=1)
    finally:
        second.stop()


def _entries(client: Client, collection: str) -> int:
    try:
        return client.describe_collection(collection).entries
    except NotFound:
        return -1


def wait_until(condition, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_every_process_restarts_and_nothing_acknowledged_is_lost(tmp_path, made):
    redis = RedisProcess(tmp_path / "redis", durable=True).start()
    port = redis.port
    c = search_cluster(tmp_path / "c", redis)
    try:
        with Client(c.router.target) as client:
            assert all(isinstance(r, Indexed) for r in client.index(IDS, PICTURES, collection="keep"))
            client.delete("keep", ["sku-5"])
        c.stop()
        redis.stop()  # every process down

        redis = RedisProcess(tmp_path / "redis", port=port, durable=True).start()
        c = search_cluster(tmp_path / "c", redis)
        with Client(c.router.target) as client:
            assert client.describe_collection("keep").entries == 11
            for i, item_id in enumerate(IDS):
                if item_id == "sku-5":
                    with pytest.raises(NotFound):
                        client.search(collection="keep", id=item_id, k=1)
                    continue
                assert client.search(collection="keep", image=PICTURES[i], k=1).nearest[0].id == item_id
        assert "loaded from its snapshot" in c.router.log_path.read_text()
    finally:
        c.stop()
        redis.stop()


def test_redis_stopped_mid_write_keeps_every_acknowledged_write_and_searches_go_on(tmp_path, made):
    redis = RedisProcess(tmp_path / "redis", durable=True).start()
    port = redis.port
    c = search_cluster(tmp_path / "c", redis)
    made.append(c)
    images = [jpeg(picture(7300 + i, (96, 72)), 90) for i in range(60)]
    ids = [f"img-{i}" for i in range(60)]
    try:
        with Client(c.router.target, retries=0, window=4) as client:
            client.index(ids[:5], images[:5], collection="live")
            results: list = []
            writer = threading.Thread(target=lambda: results.extend(
                client.index(ids[5:], images[5:], collection="live")))
            writer.start()
            time.sleep(0.3)
            redis.stop()
            writer.join(60)
            ok = [i for i, r in zip(ids[5:], results, strict=True) if isinstance(r, Indexed)]
            refused = [r for r in results if not isinstance(r, Indexed)]
            assert refused and all(isinstance(r, Unavailable) for r in refused), refused[:3]
            # what happened and what to do, once, for a collection that exists
            assert all("index these ids again when Redis is back" in r.message and ".." not in r.message
                       and "did not add the collection" not in r.message for r in refused), refused[:3]
            wait_until(lambda: client.search(collection="live", id="img-1", k=3).stale_ms > 0, 5)
            found = client.search(collection="live", id="img-1", k=3)  # served from the view
            assert found.nearest[0].id == "img-1" and found.stale_ms > 0

            redis = RedisProcess(tmp_path / "redis", port=port, durable=True).start()
            deadline = time.monotonic() + 15
            while client.search(collection="live", id="img-1", k=1).stale_ms > 0:
                assert time.monotonic() < deadline, "the view never heard from Redis again"
                time.sleep(0.1)
            for item_id in ["img-0", *ok]:  # every acknowledged write is there
                assert client.search(collection="live", id=item_id, k=1).nearest[0].id == item_id
            # A refused write was applied whole or not at all (one whose reply Redis never sent may be there);
            # sent again, every item is stored once.
            assert 5 + len(ok) <= client.describe_collection("live").entries <= 60
            again = [i for i, r in zip(ids[5:], results, strict=True) if not isinstance(r, Indexed)]
            with Client(c.router.target) as retrying:  # as callers do: items Redis did not confirm are sent again
                resent = retrying.index(again, [images[ids.index(i)] for i in again], collection="live")
            assert all(isinstance(r, Indexed) for r in resent), [r for r in resent if not isinstance(r, Indexed)][:3]
            assert client.describe_collection("live").entries == 60
            for item_id in again:
                assert client.search(collection="live", id=item_id, k=1).nearest[0].id == item_id
    finally:
        redis.stop()


def test_searches_keep_working_while_the_nodes_roll(tmp_path, durable_redis, made, busy_cores):
    c = search_cluster(tmp_path / "c", durable_redis, nodes=3)
    made.append(c)
    with Client(c.router.target) as client:
        client.index(IDS, PICTURES, collection="roll")
    failures: list[BaseException] = []
    answered = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal answered
        with Client(c.router.target, timeout_s=60) as client:
            i = 0
            while not stop.is_set():
                try:
                    by_image = client.search(collection="roll", image=PICTURES[i % 12], k=1)
                    by_id = client.search(collection="roll", id=IDS[(i + 5) % 12], k=1)
                    assert by_image.nearest[0].id == IDS[i % 12] and by_id.nearest[0].id == IDS[(i + 5) % 12]
                    answered += 2
                except (RingserveError, AssertionError) as exc:
                    failures.append(exc)
                i += 1

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        c.roll()
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:3]
    assert answered > 20


def test_the_three_commands_index_a_folder_resumably_search_and_delete(tmp_path, durable_redis, made, capsys):
    from ringserve.client import cli

    c = search_cluster(tmp_path / "c", durable_redis, nodes=1)
    made.append(c)
    folder = tmp_path / "catalogue"
    (folder / "shoes").mkdir(parents=True)
    for i, data in enumerate(PICTURES[:5]):
        (folder / "shoes" / f"{i}.jpg").write_bytes(data)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    deep = folder / ("d" * 200) / ("e" * 200)  # a relative path of 555 bytes: too long to be an id
    deep.mkdir(parents=True)
    (deep / ("f" * 149 + ".jpg")).write_bytes(PICTURES[6])
    journal = tmp_path / "journal.jsonl"
    target = ["--target", c.router.target]
    args = ["index", str(folder), "--collection", "cli", "--journal", str(journal), "--no-progress", *target]
    assert cli.main(args) == 0
    assert "5 indexed now" in capsys.readouterr().err and len(journal.read_text().splitlines()) == 7
    refused = [json.loads(line) for line in journal.read_text().splitlines() if "an id must be" in line]
    assert len(refused) == 1 and not refused[0]["ok"] and "rename or move the file" in refused[0]["error"]
    assert cli.main(args) == 0  # resumed: nothing left to send
    err = capsys.readouterr().err
    assert "0 indexed now" in err and "7 already answered" in err

    assert cli.main(["search", str(folder / "shoes" / "2.jpg"), "--collection", "cli", "-k", "2", *target]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["id"] == "shoes/2.jpg" and lines[0]["kind"] == "nearest" and len(lines) == 2
    assert cli.main(["delete", "shoes/2.jpg", "--collection", "cli", *target]) == 0
    assert json.loads(capsys.readouterr().out) == {"collection": "cli", "deleted": 1, "missing": []}
    assert cli.main(["search", "--id", "shoes/2.jpg", "--collection", "cli", *target]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_a_collection_of_an_older_model_version_says_so_and_can_be_indexed_again(tmp_path, durable_redis, made):
    from ringserve.client import FailedPrecondition

    c = search_cluster(tmp_path / "c", durable_redis, nodes=1)
    made.append(c)
    with Client(c.router.target) as client:
        old = client.index(IDS[:3], PICTURES[:3], collection="versions")[0].model_version
    c.nodes["node-0"].args.append("--full-decode")  # the decode rule is part of the model version
    c.restart("node-0")
    with Client(c.router.target) as client:
        with pytest.raises(FailedPrecondition, match=old):
            client.search(collection="versions", image=PICTURES[0], k=1)
        refused = client.index(IDS[3:4], PICTURES[3:4], collection="versions")[0]
        assert isinstance(refused, FailedPrecondition) and "--all" in refused.message
        assert client.search(collection="versions", id=IDS[1], k=1).nearest[0].id == IDS[1]  # still served
        assert client.delete("versions", everything=True)[0] == 3
        new = client.index(IDS[:4], PICTURES[:4], collection="versions")
        assert all(isinstance(r, Indexed) for r in new) and new[0].model_version != old
        assert client.search(collection="versions", image=PICTURES[2], k=1).nearest[0].id == IDS[2]
        assert client.describe_collection("versions").model_version == new[0].model_version


def sent_to_index(client: Client) -> Counter:
    """From now on, what ``client``'s Index streams send: items, image bytes and serialised bytes of the requests."""
    sent: Counter = Counter()
    stub = client._client._search._stub
    call = stub.Index

    def counting(source, **kwargs):
        async def requests():
            async for request in source:
                sent["items"] += 1
                sent["images"] += len(request.image)
                sent["bytes"] += request.ByteSize()
                yield request

        return call(requests(), **kwargs)

    stub.Index = counting
    return sent


def test_a_rerun_of_index_over_a_folder_sends_no_image_bytes_and_a_changed_file_goes_again(tmp_path, durable_redis,
                                                                                            made, capsys):
    from ringserve.client import indexing

    c = search_cluster(tmp_path / "c", durable_redis, nodes=1)
    made.append(c)
    folder = tmp_path / "catalogue"
    folder.mkdir()
    for i, data in enumerate(PICTURES[:6]):
        (folder / f"{i}.jpg").write_bytes(data)

    journal = tmp_path / "journal.jsonl"

    def index(again: bool) -> indexing.IndexSummary:
        job = indexing.IndexJobConfig(root=folder, collection="rerun", journal=journal, chunk=4, again=again)
        return indexing.run(client, job, progress=False)

    with Client(c.router.target, digest_first_min_bytes=0) as client:
        sent = sent_to_index(client)
        assert index(again=False).indexed == 6
        assert sent["images"] == sum(map(len, PICTURES[:6])) and sent["items"] == 12  # each named, then its image
        assert index(again=False).skipped == 6  # resumed: all answered
        sent.clear()
        again = index(again=True)  # every image looked at again, the journal's answers set aside
        assert (again.indexed, again.skipped, again.refused, again.retry_later) == (6, 0, 0, 0)
        assert sent["images"] == 0 and sent["items"] == 6 and sent["bytes"] < 100 * 6, sent
        (folder / "3.jpg").write_bytes(PICTURES[9])  # a changed file under the same id
        sent.clear()
        assert index(again=True).indexed == 6
        assert sent["images"] == len(PICTURES[9]) and sent["items"] == 7
        found = client.search(collection="rerun", image=PICTURES[9], k=1).nearest[0]
        assert found.id == "3.jpg" and found.score == pytest.approx(1.0, abs=1e-2)
        assert client.describe_collection("rerun").entries == 6
    assert len(journal.read_text().splitlines()) == 6  # started anew by each pass that looked again

    from ringserve.client import cli

    args = ["index", str(folder), "--collection", "rerun", "--journal", str(journal), "--no-progress", "--again",
            "--target", c.router.target, "--digest-first-min-bytes", "0"]
    assert cli.main(args) == 0
    assert "6 indexed now" in capsys.readouterr().err


def _named(stub, collection: str, item_id: str, blake3_128: bytes, size: int, model: str = "") -> spb.IndexReply:
    request = spb.IndexRequest(request_id="1", collection=collection, id=item_id, model=model)
    request.digest.blake3_128, request.digest.size_bytes = blake3_128, size
    return next(iter(stub.Index(iter([request]), timeout=30)))


def test_a_digest_only_index_item_is_answered_only_for_exactly_the_bytes_held_and_never_writes(tmp_path,
                                                                                               durable_redis, made):
    import redis

    c = search_cluster(tmp_path / "c", durable_redis, nodes=1)
    made.append(c)
    off = RouterProcess(tmp_path / "off", "router-off", members_file=c.members_file,
                        args=["--members-interval-s", "0.1", "--search-redis-url", durable_redis.url,
                              "--no-search-digest-lookups"])
    store = redis.Redis.from_url(durable_redis.url)
    log = "rs:search:{named}:log"
    try:
        off.start()
        off.wait_members(len(c.nodes))
        with Client(c.router.target) as client:
            version = client.index(IDS[:3], PICTURES[:3], collection="named")[0].model_version
        with grpc.insecure_channel(c.router.target) as channel, grpc.insecure_channel(off.target) as other:
            stub, switched_off = spb_grpc.SearchStub(channel), spb_grpc.SearchStub(other)
            key, size = fingerprint.digest(PICTURES[1]), len(PICTURES[1])
            writes = store.xlen(log)
            held = _named(stub, "named", IDS[1], key, size)
            assert held.status.code == 0 and not held.image_required and held.model_version == version
            for asked in (_named(stub, "named", IDS[1], bytes(16), size),  # a made-up digest
                          _named(stub, "named", IDS[1], key, size + 1),  # the right hash of another length
                          _named(stub, "named", IDS[2], key, size),  # another id's bytes
                          _named(stub, "named", "sku-new", key, size),  # an id not held
                          _named(stub, "nowhere", IDS[1], key, size),  # a collection not held
                          _named(stub, "named", IDS[1], key, size, model="another-model"),
                          _named(switched_off, "named", IDS[1], key, size)):  # --no-search-digest-lookups
                assert asked.status.code == 0 and asked.image_required and not asked.model_version, asked
            short = _named(stub, "named", IDS[1], key[:8], size)
            assert code_of(short.status.code) == grpc.StatusCode.INVALID_ARGUMENT and "16-byte" in short.status.message
            assert store.xlen(log) == writes and store.hlen("rs:search:{named}:entries") == 3  # nothing written
            assert not store.exists("rs:search:{nowhere}:meta")
    finally:
        off.stop()


def test_after_a_collection_is_indexed_again_under_a_new_model_version_its_old_ids_miss(tmp_path, durable_redis,
                                                                                        made):
    c = search_cluster(tmp_path / "c", durable_redis, nodes=1)
    made.append(c)
    with Client(c.router.target, digest_first_min_bytes=0) as client:
        old = client.index(IDS[:3], PICTURES[:3], collection="versions")[0].model_version
    c.nodes["node-0"].args.append("--full-decode")  # the decode rule is part of the model version
    c.restart("node-0")
    with Client(c.router.target, digest_first_min_bytes=0) as client, \
            grpc.insecure_channel(c.router.target) as channel:
        stub = spb_grpc.SearchStub(channel)
        assert client.delete("versions", everything=True)[0] == 3
        new = client.index(IDS[:1], PICTURES[:1], collection="versions")[0].model_version
        assert new != old
        kept = _named(stub, "versions", IDS[0], fingerprint.digest(PICTURES[0]), len(PICTURES[0]))
        assert not kept.image_required and kept.model_version == new  # made from these bytes under the new one
        gone = _named(stub, "versions", IDS[1], fingerprint.digest(PICTURES[1]), len(PICTURES[1]))
        assert gone.image_required  # its entry of the old version went with the collection
        sent = sent_to_index(client)
        assert all(isinstance(r, Indexed) and r.model_version == new
                   for r in client.index(IDS[:3], PICTURES[:3], collection="versions"))
        assert sent["images"] == len(PICTURES[1]) + len(PICTURES[2])  # only those not made under the new version
