"""One side of ``bench.ab``: the hot path's cost per item, every part in this one process.

    python bench/edge_cost.py [--images 256] [--rounds 8] [--window 32]

Run by ``bench.ab`` with another commit's code on ``PYTHONPATH``, so it uses only what every
commit since the edge was written has: the test fakes (a node around a fake model, a router
over it on loopback gRPC) and ``item(request, method, parent, deadline)``. Measures, on L1 hits
only (the model runs only to fill L1 first):

- node: a node's item in process (edge, cache path, reply; no gRPC), microseconds per item;
- router: a router's item with the caller's hint, through its link to the node (gRPC on loopback,
  ``--window`` items at once), microseconds of wall time per item;
- end to end: Extract streams of ``--images`` items through the router's own gRPC server,
  items per second.

Prints one JSON object. A file run by path, not a module: it must not import ``bench`` (the other
commit's tree may have none of it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time


async def measure(images: int, rounds: int, window: int) -> dict[str, float]:
    from ringserve.contract import fingerprint
    from ringserve.contract.images import ImageLimits
    from ringserve.contract.v1 import inference_pb2 as pb
    from ringserve.local.imagegen import jpeg
    from ringserve.runtime.edge import EXTRACT
    from tests.fakes import FakeModel, extract, node_servicer, router_servicer, serving, start_batchers

    node = node_servicer(FakeModel())
    start_batchers(node)
    data = [jpeg(i) for i in range(images)]
    hints = [fingerprint.of_bytes(d, ImageLimits()).phash for d in data]

    def requests(hinted: bool) -> list[list[pb.ImageRequest]]:
        # Fresh messages per round: a router takes the image out of the item it forwards.
        return [[pb.ImageRequest(request_id=f"{r}-{i}", image=d, **({"phash_hint": h} if hinted else {}))
                 for i, (d, h) in enumerate(zip(data, hints, strict=True))] for r in range(rounds)]

    for request in requests(False)[0]:  # every image into L1
        await node.item(request, EXTRACT, None, None)
    batches = requests(False)
    started = time.perf_counter()
    for batch in batches:
        for request in batch:
            await node.item(request, EXTRACT, None, None)
    node_us = (time.perf_counter() - started) / (rounds * images) * 1e6

    async with serving(node) as node_target:
        router = await router_servicer({"n0": node_target})
        gate = asyncio.Semaphore(window)

        async def one(request: pb.ImageRequest) -> None:
            async with gate:
                reply = await router.item(request, EXTRACT, None, None)
                assert reply.status.code == 0, reply.status

        await asyncio.gather(*(one(r) for r in requests(True)[0]))  # links open, warm
        batches = requests(True)
        started = time.perf_counter()
        for batch in batches:
            await asyncio.gather(*(one(r) for r in batch))
        router_us = (time.perf_counter() - started) / (rounds * images) * 1e6
        async with serving(router) as target:
            await extract(target, data[:window])
            started = time.perf_counter()
            for _ in range(rounds):
                replies = await extract(target, data)
                assert all(r.status.code == 0 for r in replies.values())
            e2e = rounds * images / (time.perf_counter() - started)
        await router.registry.close()
    import ringserve.runtime.edge as edge

    return {"node_us": node_us, "router_us": router_us, "e2e_items_s": e2e, "code": edge.__file__}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/edge_cost.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--window", type=int, default=32)
    a = p.parse_args(argv)
    sys.path.insert(1, os.getcwd())  # the tree whose tests/fakes.py to use: the one this runs in
    print(json.dumps(asyncio.run(measure(a.images, a.rounds, a.window))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
