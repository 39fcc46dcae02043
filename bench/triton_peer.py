"""A Triton Inference Server replica of ringserve's model (pytriton), with Triton's response cache: the peer.

    with triton(work, threads=2, cache_bytes=256 << 20) as replica:
        async with triton_sender(replica.target) as send:
            await send(jpeg_bytes)
        replica.counts()  # {"model_runs": ..., "cache_hits": ..., "requests": ...}

The server runs in a child process (``python -m bench.triton_peer --serve ...``, its own session, killed
on exit), so several replicas can run at once, each with its own ports and work directory. pytriton binds
a Python function to Triton: Triton's dynamic batcher (``max_batch``, ``batch_wait_s``) and its local
response cache (``local,size=cache_bytes``, keyed by a hash of the request's input bytes) are in front of
it. The function decodes the batch's images in a pool of ``decode_threads`` threads, then runs the model
(mobilenet_v3_small, ringserve's own model code, decode and preprocessing) with ``threads`` torch threads.

Calls are concurrent unary gRPC requests: Triton's streaming call fails on cache misses with the cache on
(Triton issue 4362).

Counts: ``model_runs`` is a counter the child keeps in the infer function (images the model computed,
written to ``work/model_runs`` after each batch; Triton 2.41's ``nv_inference_count``, which leaves out
cache hits, gave the same number in a check); ``cache_hits`` and ``requests`` are Triton's own per-model
metrics, counted per request (``nv_cache_num_hits_per_model``, ``nv_inference_request_success``). Its
global cache metrics (``nv_cache_num_hits`` ...) are polled at an interval and lag.

Stopping: SIGTERM to the child's process group; the child leaves pytriton's ``with``, which stops
tritonserver (its own session) and removes the workspace; anything still running from the workspace after
that is killed by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringserve.local.processes import free_port

MODEL = "mobilenet_v3_small"
DIM = 576
NAME = "features"  # the model's name in Triton
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class TritonReplica:
    target: str  # gRPC host:port
    metrics_url: str  # http://127.0.0.1:PORT/metrics
    runs_file: Path | None = None  # the child's model-run counter

    def metrics(self) -> dict[str, float]:
        """Triton's Prometheus samples for this model (label ``model="features"``), by metric name, read now."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or f'model="{NAME}"' not in line:
                continue
            head, _, value = line.rpartition(" ")
            name = head.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
        return out

    def counts(self) -> dict[str, int]:
        """Items the model computed, response-cache hits, and successful requests, read now."""
        m = self.metrics()
        runs = int(m.get("nv_inference_count", 0))
        if self.runs_file is not None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                runs = int(self.runs_file.read_text() or 0)
        return {"model_runs": runs, "cache_hits": int(m.get("nv_cache_num_hits_per_model", 0)),
                "requests": int(m.get("nv_inference_request_success", 0))}


def _python_lib_dir() -> str:
    """pytriton's Python backend stub loads libpython from the system path; a pyenv Python keeps it here."""
    import sysconfig

    return sysconfig.get_config_var("LIBDIR") or ""


@contextlib.contextmanager
def triton(work: Path, threads: int, cache_bytes: int, max_batch: int = 16, batch_wait_s: float = 0.005,
           decode_threads: int = 2) -> Iterator[TritonReplica]:
    """Triton with the model bound by pytriton, in a child process; yields the replica once the model is ready."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    grpc_port, http_port, metrics_port = (free_port() for _ in range(3))
    lib = ":".join(filter(None, [_python_lib_dir(), os.environ.get("LD_LIBRARY_PATH")]))
    env = {**os.environ, "LD_LIBRARY_PATH": lib, "OMP_NUM_THREADS": str(threads)}
    runs_file = work / "model_runs"
    runs_file.unlink(missing_ok=True)
    shutil.rmtree(work / "workspace", ignore_errors=True)  # pytriton makes it afresh; one killed leaves it
    log_path = work / "triton.log"
    args = ["--serve", "--work", str(work), "--grpc-port", str(grpc_port), "--http-port", str(http_port),
            "--metrics-port", str(metrics_port), "--threads", str(threads), "--cache-bytes", str(cache_bytes),
            "--max-batch", str(max_batch), "--batch-wait-s", str(batch_wait_s), "--decode-threads", str(decode_threads)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.triton_peer", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        replica = TritonReplica(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{metrics_port}/metrics", runs_file)
        try:
            import tritonclient.grpc as tc

            client = tc.InferenceServerClient(replica.target)
            deadline = time.monotonic() + 180
            while True:
                with contextlib.suppress(Exception):
                    if client.is_model_ready(NAME):
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Triton did not start; see {log_path}:\n" + log_path.read_text()[-3000:])
                time.sleep(0.5)
            client.close()
            yield replica
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the child stops its server (``serve``) and exits
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            _kill_leftovers(work / "workspace")


def _kill_leftovers(workspace: Path, wait_s: float = 30) -> None:
    """tritonserver and its Python backend stub run in a session of their own, started from ``workspace``:
    wait for any still running to end, then kill them (by pid, only ones whose command line names it)."""
    mark = str(workspace).encode()

    def running() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if mark in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
        return pids

    deadline = time.monotonic() + wait_s
    while (pids := running()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def triton_sender(target: str):
    """Yields ``async def send(image: bytes) -> None``: one unary gRPC infer call, its reply's shape asserted."""
    import tritonclient.grpc.aio as tc

    client = tc.InferenceServerClient(target)
    try:
        async def send(image: bytes) -> None:
            tensor = tc.InferInput("image", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
            result = await client.infer(NAME, [tensor])
            assert result.as_numpy(NAME).shape == (1, DIM)

        yield send
    finally:
        await client.close()


def serve(work: Path, grpc_port: int, http_port: int, metrics_port: int, threads: int, cache_bytes: int,
          max_batch: int, batch_wait_s: float, decode_threads: int) -> None:
    """The child: bind the model to a Triton server and serve until killed."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from ringserve.contract.images import decode
    from ringserve.server.models import ModelConfig as RingserveModel
    from ringserve.server.models import load

    # SIGTERM (the parent's stop) leaves through the ``with`` below, which stops tritonserver.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    torch.set_num_threads(threads)
    model = load(RingserveModel(name=MODEL))
    pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")
    runs_file, runs = work / "model_runs", [0]

    def prepare(blob: bytes):
        return model.preprocess(decode(blob, at_least=model.decode_side))

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        tensors = list(pool.map(prepare, [bytes(row[0]) for row in image]))
        features = np.stack(model.features(tensors))
        runs[0] += len(tensors)
        tmp = runs_file.with_suffix(".tmp")
        tmp.write_text(str(runs[0]))
        os.replace(tmp, runs_file)
        return {NAME: features}

    config = TritonConfig(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                          cache_config=[f"local,size={cache_bytes}"], log_verbose=0)
    with Triton(config=config, workspace=work / "workspace") as server:
        server.bind(model_name=NAME, infer_func=infer,
                    inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
                    outputs=[Tensor(name=NAME, dtype=np.float16, shape=(DIM,))],
                    config=ModelConfig(max_batch_size=max_batch, response_cache=True, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=int(batch_wait_s * 1e6))))
        server.serve()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.triton_peer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", required=True, help="run the server (the child process)")
    p.add_argument("--work", type=Path, required=True, help="this replica's work directory")
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--cache-bytes", type=int, default=256 * 1024 * 1024, help="response cache size")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-wait-s", type=float, default=0.005)
    p.add_argument("--decode-threads", type=int, default=2, help="threads that decode a batch's images")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    serve(a.work, a.grpc_port, a.http_port, a.metrics_port, a.threads, a.cache_bytes, a.max_batch, a.batch_wait_s,
          a.decode_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
