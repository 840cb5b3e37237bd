#!/usr/bin/env python3
"""Checks infra/ and the CloudWatch dashboard: every metric a Grafana panel, a Prometheus rule or the
dashboard asks for is one the functions export (as named in the Rust sources; histograms as their
_bucket/_sum/_count series), expressions balance their brackets, rules have what Alertmanager routes on
(severity, summary) and valid durations, and the Grafana dashboard's panels are laid out on its grid."""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")


def exported() -> dict[str, str]:
    """Metric names the code records, by kind (counter, gauge, histogram): through the `metrics` macros,
    or `KeptCounter`s (counters registered once)."""
    names: dict[str, str] = {}
    macros = re.compile(r'(counter|gauge|histogram)!\(\s*"(streamgate_[a-z0-9_]+)"')
    kept = re.compile(r'KeptCounter::new\(\s*"(streamgate_[a-z0-9_]+)"')
    for directory in ("common/src", "functions", "local/src"):
        for path in (ROOT / directory).rglob("*.rs"):
            text = path.read_text()
            for kind, name in macros.findall(text):
                names[name] = kind
            for name in kept.findall(text):
                names[name] = "counter"
    return names


def series(metrics: dict[str, str]) -> set[str]:
    names = set()
    for name, kind in metrics.items():
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


def check_expr(where: str, expr: str, known: set[str]) -> None:
    for name in set(re.findall(r"\bstreamgate_[a-z0-9_]+\b", expr)):
        if name not in known:
            fail(where, f"{name} is not a metric the functions export")
    depth = 0
    for char in expr:
        depth += {"(": 1, ")": -1, "[": 1, "]": -1, "{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        fail(where, f"unbalanced brackets in {expr!r}")
    if "streamgate_" not in expr:
        fail(where, "an expression on none of StreamGate's metrics")


def main() -> int:
    metrics = exported()
    known = series(metrics)
    if len(metrics) < 10:
        fail("sources", f"only {len(metrics)} metrics found in the Rust sources")

    rules_path = ROOT / "infra" / "prometheus" / "alerts.yaml"
    rules = yaml.safe_load(rules_path.read_text())
    names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            where = f"{rules_path.relative_to(ROOT)}: {rule.get('alert', '?')}"
            if rule.get("alert") in names:
                fail(where, "alert name repeats")
            names.add(rule.get("alert"))
            check_expr(where, rule.get("expr", ""), known)
            if "for" in rule and not re.fullmatch(r"\d+[smhd]", str(rule["for"])):
                fail(where, f"invalid duration {rule['for']!r}")
            if rule.get("labels", {}).get("severity") not in ("page", "ticket", "info"):
                fail(where, "severity must be page, ticket or info")
            if not rule.get("annotations", {}).get("summary"):
                fail(where, "needs a summary annotation")

    dashboard_path = ROOT / "infra" / "grafana" / "streamgate.json"
    dashboard = json.loads(dashboard_path.read_text())
    ids = set()
    for panel in dashboard["panels"]:
        where = f"{dashboard_path.relative_to(ROOT)}: {panel['title']}"
        if panel["id"] in ids:
            fail(where, "panel id repeats")
        ids.add(panel["id"])
        grid = panel["gridPos"]
        if grid["x"] + grid["w"] > 24:
            fail(where, "panel runs past the 24-column grid")
        refs = [t["refId"] for t in panel["targets"]]
        if len(refs) != len(set(refs)):
            fail(where, "refIds repeat")
        for target in panel["targets"]:
            check_expr(where, target["expr"], known)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    if "datasource" not in variables:
        fail(str(dashboard_path.relative_to(ROOT)), "needs a datasource variable")

    # The CloudWatch dashboard's StreamGate-namespace metrics (Embedded Metric Format names are the same).
    alarms = (ROOT / "terraform" / "modules" / "streamgate" / "alarms.tf").read_text()
    for name in re.findall(r'\["StreamGate", "([a-z0-9_]+)"', alarms):
        if name not in metrics:
            fail("terraform CloudWatch dashboard", f"{name} is not a metric the functions export")

    for message in failures:
        print(f"observability: {message}", file=sys.stderr)
    if not failures:
        print(f"observability: {len(names)} alert rules and {len(ids)} panels use only the {len(metrics)} exported metrics")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
