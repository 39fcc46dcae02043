"""Continuous load from several caller streams, counting every item's fate.

Each stream is one long bidirectional call with a bounded window of items in
flight, so a reply can be matched to its send time (latency), and a missing or
repeated reply is seen for what it is (lost, duplicated). Used to prove that
rolling restarts and scaling lose nothing (tests, ``ringserve-up --roll``).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from ringserve.contract.status import source_name
from ringserve.contract.tls import ClientTls, channel
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc


@dataclass
class Outcome:
    image: int
    sent: float
    answered: float
    code: int
    node: str
    source: str
    message: str = ""


@dataclass
class LoadReport:
    sent: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    duplicates: int = 0
    stream_errors: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return len(self.outcomes)

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if o.code != 0)

    def latency_ms(self, q: float, since: float = 0.0, until: float = float("inf")) -> float:
        values = [(o.answered - o.sent) * 1000 for o in self.outcomes if since <= o.sent <= until]
        return float(np.percentile(values, q)) if values else float("nan")

    def codes(self) -> Counter:
        return Counter(o.code for o in self.outcomes)

    def summary(self) -> str:
        return (f"{self.sent} items sent, {self.answered} answered, {self.failed} failed, {self.lost} lost, "
                f"{self.duplicates} duplicated; latency p50 {self.latency_ms(50):.1f} ms, "
                f"p99 {self.latency_ms(99):.1f} ms")


class LoadGenerator:
    """``start()`` opens ``streams`` calls that send random images until ``stop()``; over TLS per ``tls``."""

    def __init__(self, target: str, images: Sequence[bytes], streams: int = 4, window: int = 8,
                 hints: Sequence[int] | None = None, seed: int = 0, tls: ClientTls | None = None) -> None:
        self.target = target
        self.tls = tls
        self.images = list(images)
        self.hints = list(hints) if hints is not None else None
        self.streams = streams
        self.window = window
        self.seed = seed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Per stream, the ids sent and the ids answered: what is in the first and not the second is open.
        self._books: dict[int, tuple[dict[str, tuple[int, float]], set[str]]] = {}
        self._lock = threading.Lock()
        self.report = LoadReport()

    def start(self) -> LoadGenerator:
        for k in range(self.streams):
            t = threading.Thread(target=self._run, args=(k,), name=f"load-{k}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout_s: float = 60.0) -> LoadReport:
        """Stop sending, and wait up to ``timeout_s`` in all for every stream's last replies.

        A stream still open then is named in ``stream_errors`` with its count of unanswered items (they
        count as lost), so a hung stream fails a test with a reason instead of hanging it.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for k, t in enumerate(self._threads):
                if t.is_alive():
                    self.report.stream_errors.append(
                        f"stream {k}: still open {timeout_s:.0f}s after stop() with "
                        f"{len(self._books[k][0]) - len(self._books[k][1])} items unanswered")
        return self.report

    def _run(self, k: int) -> None:
        rng = random.Random(self.seed * 1000 + k)
        window = threading.Semaphore(self.window)
        sent: dict[str, tuple[int, float]] = {}
        answered: set[str] = set()
        with self._lock:
            self._books[k] = (sent, answered)

        def requests():
            i = 0
            while not self._stop.is_set():
                if not window.acquire(timeout=0.1):
                    continue
                index = rng.randrange(len(self.images))
                rid = f"{k}-{i}"
                i += 1
                request = pb.ImageRequest(request_id=rid, image=self.images[index])
                if self.hints is not None:
                    request.phash_hint = self.hints[index]
                with self._lock:
                    sent[rid] = (index, time.monotonic())
                    self.report.sent += 1
                yield request

        with channel(self.target, tls=self.tls) as open_channel:
            try:
                for reply in pb_grpc.InferenceStub(open_channel).Extract(requests()):
                    now = time.monotonic()
                    window.release()
                    with self._lock:
                        if reply.request_id in answered:
                            self.report.duplicates += 1
                            continue
                        answered.add(reply.request_id)
                        index, t0 = sent[reply.request_id]
                        self.report.outcomes.append(Outcome(
                            index, t0, now, reply.status.code, reply.provenance.node,
                            source_name(reply.provenance.source), reply.status.message))
            except grpc.RpcError as exc:
                with self._lock:
                    self.report.stream_errors.append(f"stream {k}: {exc.code().name}: {exc.details()}")
