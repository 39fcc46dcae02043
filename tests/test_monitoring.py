"""monitoring/: the rules pass promtool's check and unit tests, every alert has a case that fires and one that
does not, the k8s copies are the same rules and dashboard, and against a real Prometheus scraping a real local
cluster: an idle healthy cluster fires nothing, a killed node brings RingserveNodeDown, stopped Redis brings
RingserveRedisBreakerOpen, and every dashboard query names only metrics and labels the cluster exports.

Prometheus and promtool come from Debian's ``prometheus`` package (scripts/setup.sh installs it when run as
root); without them those tests skip, saying so (in CI, with ``CI`` set, they fail). The Prometheus here is a
child process with its own config, storage and loopback port, scraping every second; it loads a copy of the
rules whose ``for`` durations are shortened to FOR_IN_TEST, since the shipped ones are minutes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ringserve.client import Client
from ringserve.local.cluster import LocalCluster
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import PARENT_DEATH_SIGNAL, free_port, guarded
from tests.conftest import SMALL_MODEL
from tests.test_k8s import render
from tests.test_protos import missing

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
RULES = yaml.safe_load((MONITORING / "rules.yaml").read_text())
DASHBOARD = json.loads((MONITORING / "dashboard.json").read_text())
INSTALL = "apt-get install prometheus (Debian's package: the server and promtool; scripts/setup.sh does it as root)"
FOR_IN_TEST = "2s"
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
# Counters that appear in /metrics only once their event happened: their OpenTelemetry names in router/metrics.py,
# and the labels router/main.py and router/servicer.py give them.
EVENT_ONLY = {"ringserve_router_errors_total": ("ringserve.router.errors", {"reason", "type"}),
              "ringserve_router_ejections_total": ("ringserve.router.ejections", {"node"})}


def alerts() -> list[dict]:
    return [r for group in RULES["groups"] for r in group["rules"] if "alert" in r]


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(f"{name} missing: {INSTALL}")  # a skip, or in CI a failure: CI's setup runs as root
    return found


# ---- the rules as code --------------------------------------------------------------------------------------

def test_promtool_checks_the_rules():
    out = subprocess.run([tool("promtool"), "check", "rules", "rules.yaml"], cwd=MONITORING, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass():
    out = subprocess.run([tool("promtool"), "test", "rules", "rules_test.yaml"], cwd=MONITORING, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing():
    cases = yaml.safe_load((MONITORING / "rules_test.yaml").read_text())["tests"]
    fired, quiet = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fired == set(), "alerts without a test where they fire"
    assert names - quiet == set(), "alerts without a test where they do not fire"


def test_every_alert_has_a_for_a_severity_and_a_description():
    for a in alerts():
        assert "for" in a and a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        assert a["annotations"]["summary"] and len(a["annotations"]["description"]) > 60, a["alert"]


def test_the_k8s_copies_are_rendered_from_monitoring():
    out = subprocess.run([sys.executable, str(MONITORING / "render.py"), "--check"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    docs = render("base")
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == RULES  # the same rules, as the prometheus-operator reads them
    (board,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ringserve-dashboard"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"  # the Grafana sidecar's label
    assert json.loads(board["data"]["ringserve.json"]) == DASHBOARD


# ---- what a query reads -------------------------------------------------------------------------------------

GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def reads(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL expression reads (a small tokenizer, not a parser)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, label_replace's arguments
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, $__rate_interval
    labels = {name for body in re.findall(r"\{([^}]*)\}", expr) for name in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body)}
    expr = re.sub(r"\{[^}]*\}", "", expr)
    labels |= {name for body in re.findall(GROUPING, expr) for name in re.findall(r"\w+", body)}
    expr = re.sub(GROUPING, "", expr)
    metrics = set(re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)) - KEYWORDS
    return metrics, labels


def unexported(exprs: list[tuple[str, str]], exported: dict[str, set[str]]) -> list[str]:
    """Every metric or label that (expression, legend) pairs read and ``exported`` (name -> labels) lacks."""
    problems = []
    for expr, legend in exprs:
        metrics, labels = reads(expr)
        known = set(TARGET_LABELS)
        for m in metrics:
            if m not in exported:
                problems.append(f"{expr}: no metric {m}")
            known |= exported.get(m, set())
        labels |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        problems += [f"{expr}: no label {name} on {', '.join(sorted(metrics))}" for name in sorted(labels - known)]
    return problems


def panel_queries() -> list[tuple[str, str]]:
    return [(t["expr"], t.get("legendFormat", "")) for p in DASHBOARD["panels"] for t in p["targets"]]


def test_the_query_check_catches_a_wrong_metric_or_label():
    exported = {"ringserve_requests_total": {"node", "method", "status"}}
    assert unexported([('sum by (node) (rate(ringserve_requests_total{status="OK"}[5m]))', "{{node}}")],
                      exported) == []
    assert reads('histogram_quantile(0.9, sum by (le) (rate(x_bucket{a=~"b|c"}[$__rate_interval]))) / on () y')[0] \
        == {"x_bucket", "y"}
    assert len(unexported([("sum(rate(ringserve_request_total[5m]))", "")], exported)) == 1
    assert len(unexported([("sum by (tier) (rate(ringserve_requests_total[5m]))", "")], exported)) == 1
    assert len(unexported([("sum(rate(ringserve_requests_total[5m]))", "{{model}}")], exported)) == 1


# ---- against a real Prometheus and a real cluster -------------------------------------------------------------

class Prometheus:
    """``prometheus`` as a child process: its own config, temporary storage, a free loopback port."""

    def __init__(self, workdir: Path, targets: dict[str, list[str]]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        quick = json.loads(json.dumps(RULES))
        for a in (r for g in quick["groups"] for r in g["rules"] if "alert" in r):
            a["for"] = FOR_IN_TEST  # the shipped rules wait minutes
        (workdir / "rules.yaml").write_text(yaml.safe_dump(quick))
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": ["rules.yaml"],
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": t}]} for job, t in targets.items()]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(workdir / "prometheus.log", "w")
        argv = [tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={self.url.removeprefix('http://')}"]
        # dies with the test run, as the cluster's processes do, even when pytest is SIGKILLed
        self.proc = subprocess.Popen(guarded(argv) if PARENT_DEATH_SIGNAL else argv, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> dict:
        with urllib.request.urlopen(f"{self.url}{path}?{urllib.parse.urlencode(params)}", timeout=10) as r:
            return json.loads(r.read())["data"]

    def wait(self, what: str, done, timeout_s: float = 90.0):
        """Poll ``done()`` until it returns something true; its value. The error names ``what`` and the log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                found = done()
            except OSError:  # not listening yet
                found = None
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"Prometheus: {what}, not within {timeout_s:.0f}s; see {self.log.name}")

    def up(self) -> int:
        """Targets scraped and up (none at first: Prometheus hands targets to its scrapers after a few seconds)."""
        return sum(t["health"] == "up" for t in self.get("/api/v1/targets")["activeTargets"])

    def alerts(self, state: str | None = None) -> list[dict]:
        return [a for a in self.get("/api/v1/alerts")["alerts"] if state is None or a["state"] == state]

    def evaluated_since(self, wall: float) -> bool:
        """Has every rule group been evaluated after ``wall`` plus the shortened ``for``?"""
        groups = self.get("/api/v1/rules")["groups"]
        since = wall + float(FOR_IN_TEST.removesuffix("s")) + 1
        return bool(groups) and all(_epoch(g["lastEvaluation"]) > since for g in groups)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp.replace("Z", "+00:00"))).timestamp()


def send(client: Client, seeds: range) -> None:
    client.extract_detailed([jpeg(seed) for seed in seeds])


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[tuple[LocalCluster, Prometheus]]:
    tool("promtool"), tool("prometheus")
    workdir = tmp_path_factory.mktemp("monitoring")
    with LocalCluster(workdir / "cluster", node_args=SMALL_MODEL, embedded_redis=True) as cluster:
        cluster.add("node-0", "node-1")
        cluster.start_router("--search-redis-url", cluster.redis_url)
        with Client(cluster.router.target) as client:
            send(client, range(9000, 9016))
            send(client, range(9000, 9016))  # hits: every tier and batch metric has a series
            client.index([f"id-{i}" for i in range(4)], [jpeg(9000 + i) for i in range(4)], collection="ops")
        targets = {"ringserve-node": [f"127.0.0.1:{n.metrics_port}" for n in cluster.nodes.values()],
                   "ringserve-router": [f"127.0.0.1:{cluster.router.metrics_port}"]}
        prometheus = Prometheus(workdir / "prometheus", targets)
        try:
            prometheus.wait("every target up", lambda: prometheus.up() == sum(map(len, targets.values())))
            yield cluster, prometheus
        finally:
            prometheus.stop()


def test_an_idle_healthy_cluster_fires_nothing(live):
    _, prometheus = live
    began = time.time()
    prometheus.wait("the rules evaluated over the scraped cluster", lambda: prometheus.evaluated_since(began))
    members = prometheus.get("/api/v1/query", query="ringserve_router_members")["result"]
    assert [r["value"][1] for r in members] == ["2"]  # the rules had the cluster's series to look at
    assert prometheus.alerts() == []


def test_every_dashboard_query_names_what_the_cluster_exports(live):
    cluster, _ = live
    exported: dict[str, set[str]] = {}
    for process in (cluster.router, *cluster.nodes.values()):
        for family in text_string_to_metric_families(process.metrics_text()):
            for sample in family.samples:
                exported.setdefault(sample.name, set()).update(sample.labels)
    assert unexported(panel_queries(), exported) == []
    # the rules too; the counters that appear only after their event are declared where the router counts
    source = (ROOT / "router" / "metrics.py").read_text()
    declared = {name: labels for name, (otel, labels) in EVENT_ONLY.items() if f'"{otel}"' in source}
    rule_exprs = [(r["expr"], "") for g in RULES["groups"] for r in g["rules"]]
    recorded = {r["record"]: {"tier", "method", "node", "model_version", "role"} for g in RULES["groups"]
                for r in g["rules"] if "record" in r}
    assert unexported(rule_exprs, {**exported, **declared, **recorded}) == []


def firing(prometheus: Prometheus, name: str, since: float) -> dict | None:
    for a in prometheus.alerts("firing"):
        if a["labels"]["alertname"] == name:
            assert _epoch(a["activeAt"]) >= since - 1, a  # active because of the fault, not before it
            return a
    return None


def test_a_killed_node_brings_node_down_firing(live):
    cluster, prometheus = live
    killed = time.time()
    cluster.nodes["node-1"].kill()
    alert = prometheus.wait("RingserveNodeDown firing", lambda: firing(prometheus, "RingserveNodeDown", killed))
    print(f"\nRingserveNodeDown firing {time.time() - killed:.1f}s after kill -9 (for: {FOR_IN_TEST}, scrape 1s):\n"
          f"{json.dumps(alert, indent=1)}")
    assert alert["labels"]["router"] == "router" and alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == "1 node(s) known to router router are off its ring"


def test_stopping_redis_brings_the_breaker_alert(live):
    cluster, prometheus = live
    stopped = time.time()
    cluster.redis.stop(10)
    seeds = iter(range(20_000, 30_000, 4))

    def fired() -> dict | None:
        with Client(cluster.router.target) as client:  # new images: L1 misses that ask L2
            send(client, range(next(seeds), next(seeds)))
        return firing(prometheus, "RingserveRedisBreakerOpen", stopped)

    alert = prometheus.wait("RingserveRedisBreakerOpen firing", fired, timeout_s=120)
    print(f"\nRingserveRedisBreakerOpen firing {time.time() - stopped:.1f}s after Redis stopped:\n"
          f"{json.dumps(alert, indent=1)}")
    assert alert["labels"]["node"] in cluster.nodes and alert["labels"]["severity"] == "warning"
