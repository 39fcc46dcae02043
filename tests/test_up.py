"""The README's first command: a whole local cluster, sample photos through it, nothing left behind."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests import testmodel


def test_ringserve_up_runs_a_cluster_and_shows_every_tier(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "ringserve.local.up", "--nodes", "2", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout
    # "(perceptual, d=": an item of pass 4 served by a near match, not only the pass's title
    for expected in ("computed", " l1 ", " l2 ", "(perceptual, d=", "Egyptian cat", "espresso", "summary:"):
        assert expected in text, (expected, text[-3000:])
    assert not _leftovers(tmp_path), f"processes left behind: {_leftovers(tmp_path)}"


def test_ringserve_up_help_says_what_it_starts_and_what_stops_it():
    out = subprocess.run([sys.executable, "-m", "ringserve.local.up", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for expected in ("redis-server", "--nodes nodes", "Search service", "WORKDIR/search-views",
                     "collections live in that Redis", "SIGTERM", "SIGHUP", "SIGINT", "128 + the signal",
                     "parent-death signal"):
        assert expected in text, (expected, out.stdout)


def _leftovers(workdir: Path) -> list[psutil.Process]:
    """Live processes whose command line or working directory is under ``workdir``."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if str(workdir) in " ".join(p.info["cmdline"] or []) or str(workdir) in (p.info["cwd"] or ""):
            found.append(p)
    return found


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie; ``is_running`` also compares the start time, so a reused pid is not it."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _listening_ports(procs: list[psutil.Process]) -> set[int]:
    ports = set()
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            ports |= {c.laddr.port for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    return ports


def _listened_on(ports: set[int]) -> set[int]:
    """Those of ``ports`` a socket still listens on (connections left in TIME_WAIT by a kill do not count)."""
    return {c.laddr.port for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in ports}


SIGNALS = {
    "SIGTERM": (signal.SIGTERM, False),
    "SIGHUP": (signal.SIGHUP, False),
    "SIGINT": (signal.SIGINT, False),
    "SIGINT-ignored-at-start": (signal.SIGINT, True),
    "SIGKILL": (signal.SIGKILL, False),
}


@pytest.mark.parametrize("case", list(SIGNALS))
def test_ringserve_up_kept_up_leaves_nothing_running_after_a_signal(case, tmp_path):
    """``ringserve-up --keep`` (one node, the small test model) gets a stop signal once it is up: every process it
    started is gone within a bounded time and their ports are free; a handled signal exits 128 + its number."""
    sig, ignore_sigint = SIGNALS[case]
    workdir = tmp_path / "cluster"
    command = [sys.executable, "-m", "ringserve.local.up", "--nodes", "1", "--keep", "--workdir", str(workdir),
               "--model", f"{testmodel.NAME}={testmodel.weights_file()}"]
    if ignore_sigint:
        # As a background job of a non-interactive shell starts it (`ringserve-up --keep &`); exec keeps SIG_IGN.
        trap = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]
        premise = subprocess.run([*trap, sys.executable, "-c", "import signal as s; print(s.getsignal(s.SIGINT) == s.SIG_IGN)"],
                                 capture_output=True, text=True, timeout=60)
        assert premise.stdout.strip() == "True", premise
        command = [*trap, *command]
    log = tmp_path / "ringserve-up.out"
    with open(log, "wb") as out:
        starter = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 150
        while "kept up:" not in log.read_text(errors="replace"):
            assert starter.poll() is None, f"ringserve-up exited with {starter.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"ringserve-up not up after 150 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        # Walked by parent pid before the signal: the children run in their own sessions, not its group.
        started = psutil.Process(starter.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()[:3]) for p in started)
        assert len(started) >= 3 and "redis-server" in names, names  # Redis, node-0, the router
        ports = _listening_ports(started)
        assert len(ports) >= 3, ports

        began = time.monotonic()
        starter.send_signal(sig)
        try:
            code = starter.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ringserve-up still running 60 s after {case}:\n{log.read_text()[-2000:]}")
        deadline = time.monotonic() + 15
        # A killed process shows as a zombie while its other threads still exit and its sockets are still open.
        while (any(_alive(p) for p in started) or _listened_on(ports)) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [f"{p.pid} {' '.join(p.cmdline()[:4])}" for p in started if _alive(p)]
        assert not left, f"left running {time.monotonic() - began:.1f} s after {case} (exit {code}): {left}"
        assert not _leftovers(workdir), _leftovers(workdir)
        assert not _listened_on(ports), f"ports still listened on after {case}: {sorted(_listened_on(ports))}"
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), (code, log.read_text()[-2000:])
    finally:
        for p in [*started, *_leftovers(workdir)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)


def test_ringserve_up_runs_mutual_tls_on_every_hop_when_given_certificates(tmp_path):
    from tests import certs

    cert = certs.make_cert(certs.make_ca(tmp_path / "pki", "ca"), tmp_path / "pki", "local")
    out = subprocess.run(
        [sys.executable, "-m", "ringserve.local.up", "--nodes", "1", "--workdir", str(tmp_path / "up"),
         "--tls-ca-file", str(cert.ca.cert), "--tls-cert-file", str(cert.cert), "--tls-key-file", str(cert.key)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "(mutual TLS on every hop)" in out.stdout and "summary:" in out.stdout
    logs = {p.name: p.read_text() for p in (tmp_path / "up").glob("*.log")}
    assert "(mutual TLS)" in logs["node-0.log"] and "(mutual TLS)" in logs["router.log"], list(logs)
    half = subprocess.run([sys.executable, "-m", "ringserve.local.up", "--tls-ca-file", str(cert.ca.cert)],
                          capture_output=True, text=True, timeout=60)
    assert half.returncode == 2 and "give --tls-ca-file, --tls-cert-file and --tls-key-file together" in half.stderr
