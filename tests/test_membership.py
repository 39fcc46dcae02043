import asyncio

import pytest

from ringserve.router.membership.base import Member, MembershipError, parse_member, parse_members
from ringserve.router.membership.dns import DnsSource
from ringserve.router.membership.file import FileSource
from ringserve.router.membership.static import StaticSource


def test_parse_forms_and_errors():
    assert parse_member("node-0=10.0.0.1:50051") == Member("node-0", "10.0.0.1:50051", 1)
    assert parse_member("node-1=h:1*3").weight == 3
    assert parse_member("h:1") == Member("h:1", "h:1", 1)
    assert [m.name for m in parse_members("b=h:2, a=h:1 # comment\n\n")] == ["a", "b"]
    for bad in ("node=nohost", "x=h:1*0", "x=h:1*z", "=h:1"):
        with pytest.raises(MembershipError):
            parse_member(bad)
    with pytest.raises(MembershipError, match="duplicate"):
        parse_members("a=h:1,a=h:2")


async def test_static_yields_once():
    agen = StaticSource([Member("b", "h:2"), Member("a", "h:1")]).watch()
    assert [m.name for m in await agen.__anext__()] == ["a", "b"]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(agen.__anext__(), 0.1)


async def test_file_source_follows_changes_and_keeps_last_good_list(tmp_path):
    path = tmp_path / "members"
    path.write_text("a=h:1\n")
    agen = FileSource(path, interval_s=0.02).watch()
    assert [m.name for m in await agen.__anext__()] == ["a"]
    path.write_text("this is not a member list")
    path.write_text("a=h:1\nb=h:2\n")
    assert [m.name for m in await asyncio.wait_for(agen.__anext__(), 2)] == ["a", "b"]
    path.write_text("garbage")
    await asyncio.sleep(0.1)
    path.write_text("b=h:2\n")
    assert [m.name for m in await asyncio.wait_for(agen.__anext__(), 2)] == ["b"]


@pytest.fixture
def dns_server():
    """A real DNS server on loopback (dnslib) answering SRV and A records we control."""
    from dnslib import QTYPE, RR, SRV, A, DNSLabel
    from dnslib.server import BaseResolver, DNSServer

    from ringserve.local.processes import free_port

    records = {"pods": ["web-0", "web-1"]}

    class Resolver(BaseResolver):
        def resolve(self, request, handler):
            reply = request.reply()
            qname = request.q.qname
            if request.q.qtype == QTYPE.SRV and str(qname).startswith("_grpc._tcp.web"):
                for pod in records["pods"]:
                    target = DNSLabel(f"{pod}.web.default.svc.cluster.local")
                    reply.add_answer(RR(qname, QTYPE.SRV, rdata=SRV(0, 1, 50051, target), ttl=5))
            elif request.q.qtype == QTYPE.A and str(qname).startswith("web.default"):
                for i, _ in enumerate(records["pods"]):
                    reply.add_answer(RR(qname, QTYPE.A, rdata=A(f"10.0.0.{i + 1}"), ttl=5))
            return reply

    port = free_port()
    server = DNSServer(Resolver(), port=port, address="127.0.0.1")
    server.start_thread()
    yield port, records
    server.stop()


async def test_dns_srv_gives_pod_names_and_follows_scale(dns_server):
    port, records = dns_server
    source = DnsSource("_grpc._tcp.web.default.svc.cluster.local", interval_s=0.05,
                       nameserver="127.0.0.1", nameserver_port=port)
    agen = source.watch()
    first = await asyncio.wait_for(agen.__anext__(), 5)
    assert [m.name for m in first] == ["web-0", "web-1"]
    assert first[0].address == "web-0.web.default.svc.cluster.local:50051"
    records["pods"] = ["web-0", "web-1", "web-2"]
    second = await asyncio.wait_for(agen.__anext__(), 5)
    assert [m.name for m in second] == ["web-0", "web-1", "web-2"]


async def test_dns_a_records_use_addresses(dns_server):
    port, _ = dns_server
    source = DnsSource("web.default.svc.cluster.local", port=7000, nameserver="127.0.0.1", nameserver_port=port)
    members = await source.resolve()
    assert [m.address for m in members] == ["10.0.0.1:7000", "10.0.0.2:7000"]
