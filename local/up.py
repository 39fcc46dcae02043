"""ringserve-up: a whole ringserve cluster on this machine, and sample images sent through it.

It starts, each as a child process logging into --workdir (default: a new temporary folder):
  - redis-server on a free loopback port, durable (an append-only file fsynced on every write, in
    WORKDIR/redis), unless --redis-url names a Redis to use instead. It is the nodes' shared cache
    (L2) and the store of record of the search collections.
  - --nodes nodes (node-0, node-1, ...) serving --model, each on a free loopback port.
  - a router over those nodes, on --port (default: a free one), that also serves the Search service
    (ringserve index/search/delete --target ROUTER): its collections live in that Redis, its views'
    snapshots in WORKDIR/search-views.

Then it sends the photos in --images twice (computed, then L1 hits), restarts node-0 (its keys come
back from Redis), sends the same pictures as PNG under the perceptual policy, and prints where every
answer came from. --roll instead rolls every node under continuous load.

What stops it: the end of the demo (unless --keep), or SIGINT (Ctrl-C), SIGTERM or SIGHUP (timeout,
systemd, docker stop, a closed terminal). Everything it started is then stopped cleanly (SIGTERM;
the router, then each node drains, then Redis) and killed if not gone within 15 s (Redis 5 s); a
second signal kills at once. It exits with 128 + the signal's number (130, 143, 129). SIGINT stops
it even when started with SIGINT ignored (a background job of a script); SIGHUP ignored by nohup
stays ignored. On Linux its children die with it even when it is killed outright (SIGKILL, the OOM
killer): each carries a parent-death signal. Elsewhere those would be left running.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ringserve.client import Client
from ringserve.client.errors import RingserveError
from ringserve.contract.images import SUFFIXES
from ringserve.contract.tls import ClientTls
from ringserve.local.cluster import LocalCluster, LocalTls
from ringserve.local.load import LoadGenerator
from ringserve.local.processes import LocalError, RouterProcess, Stopped, scratch_dir, stop_on_signals
from ringserve.runtime.redisconn import redacted

SAMPLES = Path(__file__).resolve().parent / "samples"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ringserve-up", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0",
                   help="model to serve (efficientnet_lite0 has real ImageNet weights; others start random)")
    p.add_argument("--redis-url", help="use this Redis instead of starting an embedded one")
    p.add_argument("--images", type=Path, default=SAMPLES, help="folder of images to send")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes behind the router")
    p.add_argument("--port", type=int, default=0, help="router port (default: a free one)")
    p.add_argument("--workdir", type=Path, help="where logs go (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true",
                   help="after the demo, keep the cluster up until Ctrl-C, SIGTERM or SIGHUP")
    p.add_argument("--tls-ca-file", type=Path, help="mutual TLS on every hop: the CA that signs --tls-cert-file")
    p.add_argument("--tls-cert-file", type=Path, help="the certificate every node and the router serve with and "
                   "call with (serverAuth and clientAuth, for localhost and 127.0.0.1)")
    p.add_argument("--tls-key-file", type=Path, help="the key of --tls-cert-file")
    p.add_argument("--roll", action="store_true",
                   help="instead of the demo passes: continuous load while every node rolls over (SIGTERM, "
                   "drain, restart under the same name), then scale N -> N+2 -> N; report failures and p99")
    return p


def _images(folder: Path) -> list[Path]:
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in SUFFIXES)
    if not files:
        raise LocalError(f"no images in {folder}: pass --images DIR with JPEG/PNG/... files")
    return files


def _reencode(path: Path) -> bytes:
    """The same picture as a service that converts uploads sends it: other bytes (PNG), the same pixels. A lossy
    re-save (JPEG q95, a resize) falls short of the verifier's 60 dB and is computed (docs/fidelity.md)."""
    img = Image.open(path).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _report(title: str, names: list[str], results: list, seconds: float, tiers: Counter) -> None:
    print(f"\n{title}  ({len(names)} images in {seconds * 1000:.0f} ms)")
    print(f"  {'image':<36} {'top class':<28} {'score':>6}  {'served from':<22} node")
    for name, r in zip(names, results, strict=True):
        if isinstance(r, RingserveError):
            print(f"  {name:<36} FAILED: {r}")
            tiers["error"] += 1
            continue
        p = r.provenance
        where = p.source + (f" (perceptual, d={p.distance})" if p.perceptual else "")
        tiers[p.source] += 1
        print(f"  {name:<36} {r.names[0][:28]:<28} {r.scores[0]:>6.3f}  {where:<22} {p.node}")


def run(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        print("ringserve-up: --nodes must be at least 1", file=sys.stderr)
        return 2
    tls_files = (args.tls_ca_file, args.tls_cert_file, args.tls_key_file)
    if any(tls_files) and not all(tls_files):
        print("ringserve-up: give --tls-ca-file, --tls-cert-file and --tls-key-file together (or none: plaintext)",
              file=sys.stderr)
        return 2
    tls = LocalTls(*tls_files) if all(tls_files) else None
    workdir = args.workdir or scratch_dir("ringserve-up-")
    files = _images(args.images)
    cluster = None
    try:
        if not args.redis_url:
            print("starting embedded redis-server ...", flush=True)
        cluster = LocalCluster(workdir, args.redis_url, embedded_redis=True, tls=tls,
                               # a deployment that shows perceptual reuse (pass 4) keeps every fingerprint
                               node_args=["--models", args.model, "--drain-delay-s", "0.5", "--metrics-port", "0",
                                          "--cache-perceptual-index"])
        _start(cluster, args, workdir)
        if args.roll:
            return _roll(cluster, files)
        _demo(cluster, files)
        return _keep(cluster.router, tls) if args.keep else 0
    except (LocalError, RuntimeError) as exc:
        print(f"ringserve-up: {exc}", file=sys.stderr)
        return 1
    except Stopped as stopped:
        print(f"\nringserve-up: {stopped}, stopping everything it started ...", flush=True)
        raise
    finally:
        if cluster is not None:
            cluster.stop()


def _start(cluster: LocalCluster, args: argparse.Namespace, workdir: Path) -> None:
    """The nodes, then the router that also serves search, each reported as it comes up."""
    cluster.on_event = lambda message: print(f"  {message}", flush=True)
    print(f"starting {args.nodes} nodes with {args.model} (loading the model takes a few seconds) ...", flush=True)
    cluster.add(*[f"node-{i}" for i in range(args.nodes)])
    router = cluster.start_router("--search-redis-url", cluster.redis_url, "--search-snapshot-dir",
                                  str(workdir / "search-views"), port=args.port or None, metrics_port=0)
    hops = "mutual TLS on every hop" if cluster.tls is not None else "plaintext"
    print(f"router up at {router.target} over {args.nodes} nodes ({hops}); Redis at {redacted(cluster.redis_url)}; "
          f"logs in {workdir}")


def _demo(cluster: LocalCluster, files: list[Path]) -> None:
    """Four passes through the router: cold, L1, after a node's restart (L2), the pictures as PNG (perceptual)."""
    tiers: Counter = Counter()
    per_node: Counter = Counter()
    names = [f.name for f in files]

    def send(title: str, images: list, labels: list[str], **options) -> None:
        started = time.perf_counter()
        with Client(cluster.router.target, tls=cluster.client_tls or ClientTls()) as client:
            results = client.classify_detailed(images, top_k=3, **options)
        _report(title, labels, results, time.perf_counter() - started, tiers)
        per_node.update(r.provenance.node for r in results if not isinstance(r, RingserveError))

    send("pass 1: cold caches, each photo computed on the node that owns its pHash", files, names)
    send("pass 2: the same bytes again", files, names)
    print("\nrestarting node-0 (SIGTERM: drain, flush L2 writes; same name, so the same arc; empty L1) ...", flush=True)
    cluster.restart("node-0")
    send("pass 3: after the restart", files, names)
    send("pass 4: the same pictures as PNG (other bytes, the same pixels), perceptual policy",
         [_reencode(f) for f in files], [f"{n} (as PNG)" for n in names], cache_mode="perceptual")
    total = sum(tiers.values())
    print("\nsummary: " + ", ".join(f"{k} {v}/{total}" for k, v in sorted(tiers.items()))
          + "; per node: " + ", ".join(f"{k} {v}" for k, v in sorted(per_node.items())))


def _keep(router: RouterProcess, tls: LocalTls | None) -> int:
    """--keep: wait for a stop signal (which unwinds ``run``); the router exiting on its own is a failure."""
    flags = "" if tls is None else (f" --tls-ca-file {tls.ca_file} --tls-cert-file {tls.cert_file} "
                                    f"--tls-key-file {tls.key_file}")
    print(f"\nkept up: ringserve classify FILE --target {router.target}{flags}   (Ctrl-C or SIGTERM to stop)",
          flush=True)
    while router.running:
        time.sleep(0.5)
    print(f"ringserve-up: the router exited (code {router.proc.returncode}); its log: {router.log_path}", file=sys.stderr)
    return 1


def _roll(cluster: LocalCluster, files: list[Path]) -> int:
    """Continuous load while every node rolls over, then 3 -> 5 -> 3; prints what the callers saw."""
    images = [f.read_bytes() for f in files] + [_reencode(f) for f in files]
    n = len(cluster.nodes)
    print(f"\nload: 4 streams, 8 items in flight each, over {len(images)} images; rolling {n} nodes, "
          f"then scaling {n} -> {n + 2} -> {n}", flush=True)
    load = LoadGenerator(cluster.router.target, images, streams=4, window=8, tls=cluster.client_tls).start()
    time.sleep(1.0)
    started = time.monotonic()
    cluster.roll()
    rolled = time.monotonic()
    cluster.scale(n + 2)
    cluster.scale(n)
    time.sleep(1.0)
    report = load.stop()
    print(f"\n{report.summary()}")
    print(f"during the roll ({rolled - started:.1f} s): p50 {report.latency_ms(50, started, rolled):.1f} ms, "
          f"p99 {report.latency_ms(99, started, rolled):.1f} ms")
    by_node = Counter(o.node for o in report.outcomes)
    print("served per node: " + ", ".join(f"{k} {v}" for k, v in sorted(by_node.items())))
    ok = report.lost == 0 and report.duplicates == 0 and report.failed == 0 and not report.stream_errors
    print("no item failed, lost or duplicated" if ok else f"PROBLEMS: {report.codes()} {report.stream_errors}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The process owner, so it takes the stop signals: any of them unwinds ``run`` through its ``finally``,
    which stops the cluster outside the handler, then ends here as 128 + the signal's number."""
    args = build_parser().parse_args(argv)
    with stop_on_signals():
        try:
            return run(args)
        except Stopped as stopped:
            return int(stopped.code)


if __name__ == "__main__":
    sys.exit(main())
