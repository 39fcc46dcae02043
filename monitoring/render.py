"""Write the k8s base's copies of the rules and the dashboard from the files beside this one.

``monitoring/rules.yaml`` becomes a prometheus-operator ``PrometheusRule`` and ``monitoring/dashboard.json`` a
ConfigMap that Grafana's dashboard sidecar loads (label ``grafana_dashboard: "1"``), both in ``k8s/base``.
Run ``python monitoring/render.py`` after editing either; ``--check`` fails, naming the stale files, where a
copy differs from what it would write (tests/test_monitoring.py runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
BASE = HERE.parent / "k8s" / "base"
RULES, DASHBOARD = HERE / "rules.yaml", HERE / "dashboard.json"
OUTPUTS = {"monitoring-rules.yaml": "rules", "monitoring-dashboard.yaml": "dashboard"}
HEADER = "# Generated from monitoring/{source} by `python monitoring/render.py`: edit that file, not this one.\n"


class _Literal(str):
    """A string written as a YAML block, so the dashboard reads as JSON in the ConfigMap."""


yaml.SafeDumper.add_representer(_Literal, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|"))


def rules() -> str:
    spec = yaml.safe_load(RULES.read_text())
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "ringserve", "labels": {"app.kubernetes.io/name": "ringserve"}}, "spec": spec}
    return HEADER.format(source=RULES.name) + yaml.safe_dump(doc, sort_keys=False, width=120)


def dashboard() -> str:
    text = json.dumps(json.loads(DASHBOARD.read_text()), indent=2) + "\n"
    doc = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "ringserve-dashboard", "labels": {"grafana_dashboard": "1"}},
           "data": {"ringserve.json": _Literal(text)}}
    return HEADER.format(source=DASHBOARD.name) + yaml.safe_dump(doc, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a copy is stale")
    a = parser.parse_args(argv)
    stale = []
    for name, make in OUTPUTS.items():
        path, text = BASE / name, {"rules": rules, "dashboard": dashboard}[make]()
        if path.exists() and path.read_text() == text:
            continue
        stale.append(str(path.relative_to(HERE.parent)))
        if not a.check:
            path.write_text(text)
    if a.check and stale:
        print(f"stale: {', '.join(stale)}: run `python monitoring/render.py` and commit them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
