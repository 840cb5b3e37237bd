#!/usr/bin/env python3
"""Checks terraform/ without Terraform itself: every file parses (python-hcl2); the module deploys every
function of the workspace under its own name; no function role grants a wildcard action; every variable
has a description and a type, and every output a description; every checkov skip carries a reason; then
checkov scans it all and must find nothing."""

import json
import re
import subprocess
import sys
from pathlib import Path

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULE = TERRAFORM / "modules" / "streamgate"
failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)


def one(value):
    """python-hcl2 wraps some values in one-element lists."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def blocks(parsed: dict, kind: str) -> list[dict]:
    return parsed.get(kind, [])


def main() -> int:
    parsed: dict[Path, dict] = {}
    for path in sorted(TERRAFORM.rglob("*.tf")):
        try:
            with path.open() as file:
                parsed[path] = hcl2.load(file)
        except Exception as err:  # noqa: BLE001 (any parse failure is reported)
            fail(f"{path.relative_to(ROOT)} does not parse: {err}")
    if failures:
        return report()

    # One kebab-case name per function: the workspace's function folders are the module's functions.
    functions = {p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").exists()}
    declared = {}
    grants = {}
    for path, content in parsed.items():
        for local in blocks(content, "locals"):
            if "functions" in local and path.parent == MODULE:
                declared = one(local["functions"])
            if "grants" in local:
                grants = one(local["grants"])
    if set(declared) != functions:
        fail(f"the module's functions {sorted(declared)} differ from the workspace's {sorted(functions)}")
    if set(grants) != set(declared):
        fail(f"iam.tf grants {sorted(grants)} differ from the functions {sorted(declared)}")

    # Least privilege: no wildcard action in what a function's role is granted.
    for name, statements in grants.items():
        for statement in statements if isinstance(statements, list) else [statements]:
            actions = statement.get("actions", [])
            for action in actions if isinstance(actions, list) else [actions]:
                if "*" in str(action):
                    fail(f"{name}'s role grants the wildcard action {action}")
    for path, content in parsed.items():
        for data in blocks(content, "data"):
            for kind, named in data.items():
                if kind != "aws_iam_policy_document":
                    continue
                for doc_name, doc in named.items():
                    if doc_name == "kms":
                        continue  # a key policy, not a role's: its account statement is AWS's default
                    statements = list(doc.get("statement", []))
                    for dynamic in doc.get("dynamic", []):
                        statements += [one(d.get("content")) for d in dynamic.values()]
                    for statement in statements:
                        if one(statement.get("effect", "Allow")) == "Deny":
                            continue  # denying every action is as narrow as it gets
                        text = json.dumps(statement.get("actions", []))
                        for action in re.findall(r'"([a-z0-9-]+:[A-Za-z*]*\*[A-Za-z*]*)"', text):
                            fail(f"{path.relative_to(ROOT)}: policy {doc_name} allows the wildcard action {action}")

    for path, content in parsed.items():
        for variable in blocks(content, "variable"):
            for name, body in variable.items():
                if "description" not in body or "type" not in body:
                    fail(f"{path.relative_to(ROOT)}: variable {name} needs a description and a type")
        for output in blocks(content, "output"):
            for name, body in output.items():
                if "description" not in body:
                    fail(f"{path.relative_to(ROOT)}: output {name} needs a description")

    for path in sorted(TERRAFORM.rglob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.search(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?", line)
            if match and not (match.group(2) or "").strip():
                fail(f"{path.relative_to(ROOT)}:{number}: the skip of {match.group(1)} gives no reason")

    checkov = Path(sys.executable).parent / "checkov"
    scan = subprocess.run(
        [str(checkov), "-d", str(TERRAFORM), "--framework", "terraform", "--quiet", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
    )
    try:
        results = json.loads(scan.stdout)
    except json.JSONDecodeError:
        fail(f"checkov did not answer in JSON: {scan.stderr[-2000:]}")
        return report()
    for result in results if isinstance(results, list) else [results]:
        summary = result.get("summary", {})
        for check in result.get("results", {}).get("failed_checks", []):
            fail(f"checkov {check['check_id']} ({check['check_name']}) on {check['resource']} in {check['file_path']}")
        print(f"checkov: {summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed, {summary.get('skipped', 0)} skipped with reasons")
    return report()


def report() -> int:
    for message in failures:
        print(f"terraform: {message}", file=sys.stderr)
    if not failures:
        print(f"terraform: {len(list(TERRAFORM.rglob('*.tf')))} files parse and pass the checks")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
