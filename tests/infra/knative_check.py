#!/usr/bin/env python3
"""Checks knative/: each overlay is built as kustomize builds it (with `kustomize` or `kubectl kustomize`
when one is installed, else by the small builder below, which applies what these overlays use:
namespace, images, strategic-merge patches and JSON patches with targets); core kinds in the result are
validated against the Kubernetes schemas (kubernetes-validate, strict); Knative kinds are checked for
what the cluster would refuse or what StreamGate needs (one Service per function with probes on /healthz,
resources, a locked-down container, sane autoscaling, traffic adding up to 100 %, every event function
subscribed through a Trigger whose route some source feeds or a Subscription to a Channel something
dead-letters into, dead-letter sinks that exist, no Subscription dead-lettering or replying into the Channel
it reads)."""

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
KNATIVE = ROOT / "knative"
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").exists())
CORE_KINDS = {"ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "Namespace"}
failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def merge(into: dict, patch: dict) -> dict:
    """A strategic merge as these manifests need it: maps merge, lists are replaced."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def json_patch(doc: dict, operations: list[dict]) -> None:
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if operation["op"] in ("add", "replace"):
            node[last] = operation["value"]
        elif operation["op"] == "remove":
            del node[last]
        else:
            raise ValueError(f"unsupported JSON patch op {operation['op']}")


def build(directory: Path) -> list[dict]:
    """kustomize build, for the features these kustomizations use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            docs += build(path)
        elif path.exists():
            docs += load(path)
        else:
            fail(str(directory.relative_to(ROOT)), f"resource {resource} does not exist")
    for pair in kustomization.get("labels", []):
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(pair.get("pairs", {}))
    if "namespace" in kustomization:
        for doc in docs:
            doc.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        matched = False
        for doc in docs:
            for container in containers(doc):
                name, _, _ = container["image"].partition(":")
                if name == image["name"]:
                    matched = True
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', 'latest')}"
        if not matched:
            fail(str(directory.relative_to(ROOT)), f"image {image['name']} is used by no container")
    for patch in kustomization.get("patches", []):
        if "path" in patch:
            for change in load(directory / patch["path"]):
                targets = [d for d in docs if (d["kind"], d["metadata"]["name"]) == (change["kind"], change["metadata"]["name"])]
                if not targets:
                    fail(str(directory.relative_to(ROOT)), f"patch {patch['path']} matches no resource")
                for target in targets:
                    merge(target, change)
        else:
            selector = patch.get("target", {})
            operations = yaml.safe_load(patch["patch"])
            matched = [
                d
                for d in docs
                if all(
                    d.get("kind") == selector.get("kind", d.get("kind"))
                    and d.get("apiVersion", "").split("/")[0] == selector.get("group", d.get("apiVersion", "").split("/")[0])
                    and d["metadata"]["name"] == selector.get("name", d["metadata"]["name"])
                    for _ in [0]
                )
            ]
            if not matched:
                fail(str(directory.relative_to(ROOT)), f"a JSON patch's target {selector} matches nothing")
            for doc in matched:
                json_patch(doc, operations)
    return docs


def containers(doc: dict) -> list[dict]:
    if doc.get("kind") != "Service" or not doc.get("apiVersion", "").startswith("serving.knative.dev"):
        return []
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def kustomize_build(directory: Path) -> list[dict] | None:
    """The real kustomize's output, when a kustomize is installed (and KNATIVE_CHECK_BUILTIN is unset)."""
    if os.environ.get("KNATIVE_CHECK_BUILTIN"):
        return None
    for command in (["kustomize", "build"], ["kubectl", "kustomize"]):
        if shutil.which(command[0]):
            done = subprocess.run(command + [str(directory)], capture_output=True, text=True)
            if done.returncode != 0:
                fail(str(directory.relative_to(ROOT)), f"{' '.join(command)} failed: {done.stderr.strip()}")
                return []
            return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return None


def check(where: str, docs: list[dict]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        name = doc.get("metadata", {}).get("name")
        if not name:
            fail(where, f"a {doc.get('kind')} without a name")
            continue
        by_kind.setdefault(doc["kind"], {})[name] = doc
        if doc["kind"] in CORE_KINDS:
            try:
                kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
            except kubernetes_validate.ValidationError as err:
                fail(where, f"{doc['kind']} {name}: {err.message}")

    services = by_kind.get("Service", {})
    if sorted(services) != FUNCTIONS:
        fail(where, f"Services {sorted(services)} differ from the workspace's functions {FUNCTIONS}")
    accounts = by_kind.get("ServiceAccount", {})
    config_maps = by_kind.get("ConfigMap", {})
    for name, service in services.items():
        template = service["spec"]["template"]
        spec = template["spec"]
        annotations = template.get("metadata", {}).get("annotations", {})
        event = service["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "events"
        (container,) = spec["containers"] if len(spec["containers"]) == 1 else (None,)
        if container is None:
            fail(where, f"{name} must have exactly one container")
            continue
        if not container["image"].split(":")[0].endswith(f"/{name}") and container["image"].split(":")[0] != f"streamgate/{name}":
            fail(where, f"{name} runs the image {container['image']}")
        for probe in ("readinessProbe", "livenessProbe"):
            if container.get(probe, {}).get("httpGet", {}).get("path") != "/healthz":
                fail(where, f"{name} needs a {probe} on /healthz")
        resources = container.get("resources", {})
        if not {"cpu", "memory"} <= set(resources.get("requests", {})) or "memory" not in resources.get("limits", {}):
            fail(where, f"{name} needs cpu and memory requests and a memory limit")
        security = container.get("securityContext", {})
        for key, want in [("runAsNonRoot", True), ("allowPrivilegeEscalation", False), ("readOnlyRootFilesystem", True)]:
            if security.get(key) is not want:
                fail(where, f"{name}: securityContext.{key} must be {want}")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(where, f"{name} must drop every capability")
        if spec.get("serviceAccountName") not in accounts:
            fail(where, f"{name} runs as {spec.get('serviceAccountName')}, which is not defined")
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef", {}).get("name")
            if ref and ref not in config_maps:
                fail(where, f"{name} reads the missing ConfigMap {ref}")
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef", {})
            if ref and ref.get("name") != "streamgate-secrets":
                fail(where, f"{name} reads the Secret {ref.get('name')}")
        if not isinstance(spec.get("containerConcurrency"), int) or spec["containerConcurrency"] < 0:
            fail(where, f"{name}: containerConcurrency must be a whole number")
        if annotations.get("autoscaling.knative.dev/class") not in ("kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"):
            fail(where, f"{name}: unknown autoscaling class")
        try:
            low = int(annotations["autoscaling.knative.dev/min-scale"])
            high = int(annotations["autoscaling.knative.dev/max-scale"])
            target = float(annotations["autoscaling.knative.dev/target"])
            if not (0 <= low <= high and high > 0 and target > 0):
                fail(where, f"{name}: scale bounds {low}..{high} or target {target} make no sense")
            if event and low != 0:
                fail(where, f"{name} handles events and should scale to zero (min-scale 0)")
        except (KeyError, ValueError) as err:
            fail(where, f"{name}: autoscaling annotations missing or not numbers ({err})")
        traffic = service["spec"].get("traffic", [])
        if sum(t.get("percent", 0) for t in traffic) != 100:
            fail(where, f"{name}: traffic percentages add up to {sum(t.get('percent', 0) for t in traffic)}")
        tags = [t["tag"] for t in traffic if "tag" in t]
        if len(tags) != len(set(tags)):
            fail(where, f"{name}: traffic tags repeat")

    brokers = by_kind.get("Broker", {})
    channels = {**by_kind.get("InMemoryChannel", {}), **by_kind.get("Channel", {})}
    dead_lettered = set()

    def dead_letter_ok(owner: str, delivery: dict) -> None:
        sink = delivery.get("deadLetterSink", {}).get("ref", {})
        if sink.get("name") not in channels:
            fail(where, f"{owner} has no dead-letter sink that exists")
        dead_lettered.add(sink.get("name"))

    for name, broker in brokers.items():
        dead_letter_ok(f"Broker {name}", broker.get("spec", {}).get("delivery", {}))
    routes_fed = set()
    for kind in ("IntegrationSource", "PingSource"):
        for name, source in by_kind.get(kind, {}).items():
            sink = source["spec"].get("sink", {}).get("ref", {})
            if sink.get("kind") != "Broker" or sink.get("name") not in brokers:
                fail(where, f"{kind} {name} does not feed an existing Broker")
            route = source["spec"].get("ceOverrides", {}).get("extensions", {}).get("streamgateroute")
            if not route:
                fail(where, f"{kind} {name} does not mark its events with streamgateroute")
            routes_fed.add(route)
    subscribed = set()
    for name, trigger in by_kind.get("Trigger", {}).items():
        spec = trigger["spec"]
        if spec.get("broker") not in brokers:
            fail(where, f"Trigger {name} names the missing Broker {spec.get('broker')}")
        subscriber = spec.get("subscriber", {}).get("ref", {})
        if subscriber.get("kind") != "Service" or subscriber.get("name") not in services:
            fail(where, f"Trigger {name} delivers to no StreamGate Service")
        subscribed.add(subscriber.get("name"))
        route = spec.get("filter", {}).get("attributes", {}).get("streamgateroute")
        if route not in routes_fed:
            fail(where, f"Trigger {name} filters on route {route}, which no source feeds")
        dead_letter_ok(f"Trigger {name}", spec.get("delivery", {}))
    # A Channel's consumers (the dead letters'): what they fail on must not come back into the Channel.
    for name, subscription in by_kind.get("Subscription", {}).items():
        spec = subscription["spec"]
        channel = spec.get("channel", {}).get("name")
        if channel not in channels:
            fail(where, f"Subscription {name} reads the missing Channel {channel}")
        elif channel not in dead_lettered:
            fail(where, f"Subscription {name} reads the Channel {channel}, which nothing dead-letters into")
        subscriber = spec.get("subscriber", {}).get("ref", {})
        if subscriber.get("kind") != "Service" or subscriber.get("name") not in services:
            fail(where, f"Subscription {name} delivers to no StreamGate Service")
        subscribed.add(subscriber.get("name"))
        for field, target in [("delivery.deadLetterSink", spec.get("delivery", {}).get("deadLetterSink", {})), ("reply", spec.get("reply", {}))]:
            if target.get("ref", {}).get("name") == channel:
                fail(where, f"Subscription {name}'s {field} loops back into the Channel {channel} it reads")
    events = {n for n, s in services.items() if s["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "events"}
    if events - subscribed:
        fail(where, f"event functions without a Trigger or Subscription: {sorted(events - subscribed)}")


def main() -> int:
    base = KNATIVE / "base"
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    for path in sorted(base.rglob("*.yaml")):
        relative = str(path.relative_to(base))
        if relative != "kustomization.yaml" and relative not in listed:
            fail("knative/base", f"{relative} is not in kustomization.yaml")
    overlays = sorted(p for p in (KNATIVE / "overlays").iterdir() if (p / "kustomization.yaml").exists())
    for directory in [base, *overlays]:
        where = str(directory.relative_to(ROOT))
        built = kustomize_build(directory)
        how = "kustomize" if built is not None else "the built-in builder"
        docs = built if built is not None else build(directory)
        check(where, docs)
        print(f"knative: {where}: {len(docs)} resources built with {how}")
    for message in failures:
        print(f"knative: {message}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
