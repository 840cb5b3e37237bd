"""streamgate-release's Lambda calls against the AWS emulator (moto): the live alias's weighted routing
for a canary step, a blue-green switch, rollbacks to the stable and to the version before, and arguments
refused before anything moves. The step-by-step decisions (10 % → 50 % → 100 %, rollback on the error
rate) are unit tests in release/src; moto cannot answer the CloudWatch reads (see below)."""

import io
import os
import subprocess
import threading
import time
import uuid
import zipfile

import pytest

import conftest


@pytest.fixture
def function(aws_stack):
    """A function with versions 1 (live) to 4 published."""
    session, endpoint = aws_stack["session"], aws_stack["endpoint"]
    iam = session.client("iam", endpoint_url=endpoint)
    lam = session.client("lambda", endpoint_url=endpoint)
    name = f"streamgate-api-playback-{uuid.uuid4().hex[:6]}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    for n in range(1, 5):
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("bootstrap", f"#!/bin/sh\n# build {n}\n")
        if n == 1:
            lam.create_function(
                FunctionName=name, Runtime="provided.al2023", Role=role, Handler="bootstrap",
                Code={"ZipFile": archive.getvalue()}, Publish=True, Architectures=["arm64"],
            )
        else:
            lam.update_function_code(FunctionName=name, ZipFile=archive.getvalue())
            assert lam.publish_version(FunctionName=name)["Version"] == str(n)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    return name, lam


def run(aws_stack, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        k: v for k, v in aws_stack["env"].items() if k.startswith("AWS_")
    }
    return subprocess.run(
        [str(conftest.binary("streamgate-release")), *args], env=env, capture_output=True, text=True, timeout=120
    )


FAST = ["--bake", "2s", "--interval", "1s", "--min-requests", "100", "--max-error-rate", "0.01"]


def watched(lam, name: str, action) -> tuple[list, subprocess.CompletedProcess]:
    """Runs `action` while recording every (version, candidate weights) the alias passes through."""
    seen, done = [], threading.Event()

    def look():
        alias = lam.get_alias(FunctionName=name, Name="live")
        step = (alias["FunctionVersion"], alias.get("RoutingConfig", {}).get("AdditionalVersionWeights") or {})
        if not seen or seen[-1] != step:
            seen.append(step)

    def watch():
        while not done.is_set():
            look()
            time.sleep(0.1)
        look()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = action()
    finally:
        done.set()
        watcher.join()
    return seen, result


def test_a_canary_whose_health_cannot_be_read_is_rolled_back(aws_stack, function):
    """The emulator's CloudWatch does not speak the protocol the SDK uses for it (CBOR): health reads fail,
    and after three in a row the candidate loses its traffic, as it would when CloudWatch is unreachable."""
    name, lam = function
    seen, done = watched(lam, name, lambda: run(aws_stack, "canary", "--lambda", name, "--to", "2", *FAST))
    assert done.returncode == 2, done.stderr
    assert "rolled back to 1" in done.stdout and "could not be read 3 times" in done.stdout
    assert ("1", {"2": 0.1}) in seen, seen
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert alias["FunctionVersion"] == "1"
    assert not alias.get("RoutingConfig", {}).get("AdditionalVersionWeights")


def test_a_switch_moves_everything_and_falls_back(aws_stack, function):
    name, lam = function
    seen, done = watched(lam, name, lambda: run(aws_stack, "switch", "--lambda", name, "--to", "4", *FAST))
    assert done.returncode == 2, done.stderr
    assert ("4", {}) in seen, "the switch sent everything to the candidate"
    assert seen[-1] == ("1", {}), seen
    assert lam.get_alias(FunctionName=name, Name="live").get("Description", "") == ""


def test_rollback_ends_a_canary_or_returns_to_the_version_before(aws_stack, function):
    name, lam = function
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"3": 0.5}})
    done = run(aws_stack, "rollback", "--lambda", name)
    assert done.returncode == 0, done.stderr
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert alias["FunctionVersion"] == "1" and not alias.get("RoutingConfig", {}).get("AdditionalVersionWeights")

    # As a finished release leaves it: version 3 live, version 1 noted as the one before.
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="3", Description="streamgate-release previous=1")
    done = run(aws_stack, "rollback", "--lambda", name)
    assert done.returncode == 0 and "rolled back to 1" in done.stdout, done.stderr
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"
    nothing = run(aws_stack, "rollback", "--lambda", name)
    assert nothing.returncode == 64 and "no previous release" in nothing.stderr


def test_bad_arguments_are_refused_before_anything_moves(aws_stack, function):
    name, lam = function
    for args in (["--steps", "50,10,100"], ["--steps", "10,50"], ["--max-error-rate", "2"]):
        done = run(aws_stack, "canary", "--lambda", name, "--to", "2", "--bake", "2s", "--interval", "1s", *args)
        assert done.returncode == 64, (args, done.stderr)
    done = run(aws_stack, "canary", "--lambda", name, "--knative", "x", "--to", "2")
    assert done.returncode == 2 and "cannot be used with" in done.stderr, done.stderr
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"
