"""The lanes of client placement in process (the fast tier): each item answered exactly once whatever its node does,
against fake streams that answer, refuse or break; the real processes are in tests/test_client_placement.py."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from ringserve.client.digests import DigestFirst
from ringserve.client.errors import InvalidArgument
from ringserve.client.items import ItemCall
from ringserve.client.lanes import Lanes
from ringserve.client.outbox import Outbox
from ringserve.client.placement import Membership
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import inference_pb2 as pb

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


def members(*names: str) -> cpb.MembersReply:
    return cpb.MembersReply(load_factor=1.25, members=[
        cpb.Member(name=n, address=f"127.0.0.1:{9 + i}", weight=1, state=cpb.MEMBER_STATE_SERVING)
        for i, n in enumerate(names)])


def broken(message: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), message)


async def run_call(count: int, node_does) -> tuple[ItemCall, Counter, Counter, Membership, Exception | None]:
    """One try of ``count`` hinted items over the lanes of nodes a, b, c and the router.

    ``node_does(node, index)``: what the node does with its ``index``-th item: "answer", "refuse" (UNAVAILABLE),
    "break" (its stream fails) or "late" (the call's deadline passes). Returns the call, the replies sent per request
    id, how many items each lane answered, the membership and the error the try ended with.
    """
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never dialled: the membership is set by hand below
    membership = Membership(channel, grpc.aio.insecure_channel, interval_s=60)
    membership._apply(members("a", "b", "c"), 0.0)
    requests = [pb.ImageRequest(request_id=str(i), phash_hint=(i * 0x9E3779B97F4A7C15) % 2**64) for i in range(count)]
    call = ItemCall(requests, {r.request_id: b"image" for r in requests}, DigestFirst(None, "router"))
    outbox = Outbox(list(requests), call.outgoing, window=8)
    replies: Counter = Counter()
    answered_by: Counter = Counter()

    async def stream(route, items):
        name = "router" if route is None else route.name
        seen = 0
        async for request, _image in items:
            what = "answer" if name == "router" else node_does(name, seen)
            seen += 1
            if what == "break":
                raise broken(f"{name} is gone")
            if what == "late":
                raise grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata())
            await asyncio.sleep(0)
            replies[request.request_id] += 1
            status = pb.ItemStatus(code=UNAVAILABLE, message=f"{name} drains") if what == "refuse" else None
            if status is None:
                answered_by[name] += 1
            yield pb.ExtractReply(request_id=request.request_id, status=status,
                                  provenance=pb.Provenance(node=name))

    def take(reply) -> None:
        call.take(reply, outbox.answered(reply.request_id))

    async def carry(route, items, ready, on_reply) -> None:
        async for reply in stream(route, items):
            on_reply(reply)

    error = None
    try:
        await Lanes(outbox, membership, carry, take, call.pending, set(),
                    lambda r: r.phash_hint if r.HasField("phash_hint") else None).run()
    except grpc.aio.AioRpcError as exc:
        error = exc
    finally:
        outbox.close()
        await membership.close()
        await channel.close()
    return call, replies, answered_by, membership, error


def test_hinted_items_go_to_their_owners_and_none_through_the_router():
    call, replies, by, membership, error = asyncio.run(run_call(60, lambda node, i: "answer"))
    assert error is None and not call.pending and len(call.done) == 60
    assert set(replies.values()) == {1} and by["router"] == 0 and set(by) == {"a", "b", "c"}
    assert all(call.done[str(i)].provenance.node == membership.ring.owner((i * 0x9E3779B97F4A7C15) % 2**64)
               for i in range(60))  # the window of 8 never passes the floor of 8: every item on its owner
    assert membership.inflight == {}


@pytest.mark.parametrize("failure", ["break", "refuse"])
def test_a_failing_nodes_items_are_answered_once_through_the_router(failure):
    call, _, by, membership, error = asyncio.run(
        run_call(90, lambda node, i: failure if node == "b" and i >= 3 else "answer"))
    assert error is None and not call.pending and len(call.done) == 90  # every item answered
    assert all(call.done[r].status.code == 0 for r in call.done)
    assert by["b"] == 3 and by["router"] > 0  # b answered its first three; what it failed went to the router
    assert sum(by.values()) == 90  # and each item once: no item answered twice
    assert "b" in membership._failed and membership.inflight == {}


def test_the_calls_deadline_ends_the_try_and_leaves_no_load_counted():
    call, _, _, membership, error = asyncio.run(run_call(60, lambda node, i: "late" if node == "a" and i >= 2 else
                                                         "answer"))
    assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # the call's, not a's failure
    assert call.pending and "a" not in membership._failed  # what is left waits for the call's next try, or its end
    assert membership.inflight == {}  # the stopped lanes' items no longer count as load on their nodes


async def test_a_view_whose_new_channels_cannot_all_be_opened_stays_as_it_was():
    # A client's TLS file mid-rotation when a node joins: a half-changed view named nodes without a channel, and
    # placing items on them raised KeyError to every call until the next read.
    def open_channel(address: str) -> grpc.aio.Channel:
        if address.endswith(":12"):
            raise InvalidArgument("the client certificate file cannot be read")
        return grpc.aio.insecure_channel(address)

    membership = Membership(grpc.aio.insecure_channel("127.0.0.1:9"), open_channel, interval_s=60)
    membership._apply(members("a", "b", "c"), 0.0)
    with pytest.raises(InvalidArgument):
        membership._apply(members("b", "c", "d", "e"), 1.0)  # d opens, e (127.0.0.1:12) cannot: neither is taken
    assert set(membership.routes) == set(membership.ring.members) == {"a", "b", "c"}
    assert all(membership.place(key) is not None for key in range(0, 2**64, 2**58))
    await membership.close()
