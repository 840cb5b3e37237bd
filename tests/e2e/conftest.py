"""Fixtures for the end-to-end suites: StreamGate's binaries started as real processes."""

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("STREAMGATE_BIN_DIR", ROOT / "target" / "debug"))
EVENTS = Path(__file__).parent / "events"

HTTP_FUNCTIONS = ["api-auth", "api-upload", "api-videos", "api-playback", "api-chains"]
EVENT_FUNCTIONS = ["on-upload", "transcode", "finalize", "dead-letters", "chain-indexer", "gas-monitor", "tx-tracker"]
FUNCTIONS = HTTP_FUNCTIONS + EVENT_FUNCTIONS


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build with `cargo build --workspace` (or set STREAMGATE_BIN_DIR)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event_json(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


class Process:
    """A function binary running as its own process, stopped with SIGTERM."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.stdout_lines.append(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout=10) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.alive():
                self.proc.kill()
                self.proc.wait()

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr else ""


def base_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMGATE_", "K_"))}
    env.update({"STREAMGATE_DATA_DIR": str(tmp_path / "data"), "RUST_LOG": "info"})
    # The suite signs in many wallets a minute, all from loopback; test_limits sets its own limits.
    env["STREAMGATE_RATE_LIMIT_SIGN_IN"] = "1000"
    return env


@pytest.fixture
def knative(tmp_path):
    """Starts a function in Knative mode (HTTP on $PORT) and returns its base URL."""
    started: list[Process] = []

    def start(name: str, extra_env: dict | None = None) -> tuple[str, Process]:
        port = free_port()
        env = base_env(tmp_path / name) | {"PORT": str(port)} | (extra_env or {})
        process = Process([str(binary(name))], env)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{url}/healthz", timeout=1)
                return url, process
            except requests.ConnectionError:
                if not process.alive() or time.monotonic() > deadline:
                    pytest.fail(f"{name} did not start: {process.stderr()}")
                time.sleep(0.02)

    yield start
    for process in started:
        process.terminate()


class RuntimeApi:
    """The Lambda Runtime API (2018-06-01) on loopback: hands invocations to a function and collects its
    answers, as the Lambda service does."""

    def __init__(self):
        self.pending: queue.Queue = queue.Queue()
        self.results: dict[str, tuple[str, object]] = {}
        self.init_errors: list[dict] = []
        self.done = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return raw.decode(errors="replace")

            def _reply(self, status, body=b"", headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != "/2018-06-01/runtime/invocation/next":
                    return self._reply(404)
                request_id, payload = api.pending.get()
                deadline = int((time.time() + 30) * 1000)
                self._reply(
                    200,
                    json.dumps(payload).encode(),
                    {
                        "content-type": "application/json",
                        "lambda-runtime-aws-request-id": request_id,
                        "lambda-runtime-deadline-ms": str(deadline),
                        "lambda-runtime-invoked-function-arn": "arn:aws:lambda:us-east-1:123456789012:function:e2e",
                        "lambda-runtime-trace-id": "Root=1-5f84c7a9-0e5b1e1c5f7b1a2b3c4d5e6f;Sampled=0",
                    },
                )

            def do_POST(self):
                parts = self.path.split("/")
                body = self._body()
                if self.path == "/2018-06-01/runtime/init/error":
                    api.init_errors.append(body)
                elif len(parts) == 6 and parts[3] == "invocation" and parts[5] in ("response", "error"):
                    with api.done:
                        api.results[parts[4]] = (parts[5], body)
                        api.done.notify_all()
                else:
                    return self._reply(404)
                self._reply(202, b'{"status":"OK"}', {"content-type": "application/json"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, payload, timeout=30) -> tuple[str, object]:
        request_id = str(uuid.uuid4())
        self.pending.put((request_id, payload))
        with self.done:
            if not self.done.wait_for(lambda: request_id in self.results, timeout=timeout):
                raise TimeoutError(f"no answer to invocation {request_id}")
            return self.results.pop(request_id)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def lambda_function(tmp_path):
    """Starts a function in Lambda mode against a Runtime API on loopback."""
    started: list[tuple[Process, RuntimeApi]] = []

    def start(name: str, extra_env: dict | None = None) -> tuple[RuntimeApi, Process]:
        api = RuntimeApi()
        env = base_env(tmp_path / name) | (extra_env or {}) | {
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/27/[$LATEST]e2e",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_REGION": "us-east-1",
        }
        process = Process([str(binary(name))], env)
        started.append((process, api))
        return api, process

    yield start
    for process, api in started:
        process.proc.kill()
        process.proc.wait()
        api.close()


CONTRACTS = ROOT / "tests" / "contracts"
ANVIL = CONTRACTS / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


def spawn_local(data: Path, extra_env: dict | None = None) -> tuple[str, Process]:
    """Starts streamgate-local on a free port with its data under `data`; returns its base URL (once it
    serves) and process. The caller stops it."""
    env = base_env(data) | {"STREAMGATE_ADDR": "127.0.0.1:0", "RUST_LOG": "warn"} | (extra_env or {})
    process = Process([str(binary("streamgate-local"))], env)
    deadline = time.monotonic() + 30
    while not process.stdout_lines:
        if not process.alive() or time.monotonic() > deadline:
            pytest.fail(f"streamgate-local did not start: {process.stderr()}")
        time.sleep(0.02)
    return process.stdout_lines[0].strip().rsplit(" ", 1)[-1], process


@pytest.fixture
def start_local(tmp_path):
    """Starts streamgate-local on a free port with a fresh data dir and extra environment; returns its
    base URL and process."""
    started: list[Process] = []

    def start(extra_env: dict | None = None) -> tuple[str, Process]:
        url, process = spawn_local(tmp_path / f"local{len(started)}", extra_env)
        started.append(process)
        return url, process

    yield start
    for process in started:
        assert process.terminate() == 0


@pytest.fixture
def local_server(start_local):
    """streamgate-local with the default configuration; yields its base URL."""
    url, _ = start_local()
    return url


@pytest.fixture
def anvil():
    """A local EVM chain (anvil, chain id 31337); yields its RPC URL and process."""
    if not ANVIL.exists():
        pytest.fail(f"{ANVIL} is missing: run tests/setup")
    port = free_port()
    process = subprocess.Popen([str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)
            if answer.ok:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail("anvil did not start")
        time.sleep(0.05)
    yield url, process
    process.kill()
    process.wait()


def contract_artefact(name: str) -> dict:
    path = CONTRACTS / "build" / f"{name}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: run tests/setup")
    return json.loads(path.read_text())


MOTO_SERVER = ROOT / ".venv" / "bin" / "moto_server"


def paserk_secret() -> str:
    """A fresh Ed25519 session key as a PASERK `k4.secret` (the seed and public key, base64url)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    seed = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    return "k4.secret." + base64.urlsafe_b64encode(seed + public).decode().rstrip("=")


@pytest.fixture(scope="module")
def aws_stack():
    """The AWS API emulator (moto) on loopback with StreamGate's resources: the table (keys, index, TTL),
    the sources and media buckets and the queues. Yields the environment that points a function binary at
    them, and a boto3 session for checking what landed."""
    import boto3

    if not MOTO_SERVER.exists():
        pytest.fail(f"{MOTO_SERVER} is missing: run tests/setup")
    port = free_port()
    process = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{endpoint}/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    suffix = uuid.uuid4().hex[:8]
    names = {"table": f"streamgate-{suffix}", "sources": f"sources-{suffix}", "media": f"media-{suffix}"}
    s3 = session.client("s3", endpoint_url=endpoint)
    for bucket in (names["sources"], names["media"]):
        s3.create_bucket(Bucket=bucket)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)
    attribute = lambda name: {"AttributeName": name, "AttributeType": "S"}  # noqa: E731
    dynamodb.create_table(
        TableName=names["table"],
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[attribute("pk"), attribute("sk"), attribute("gsi1pk"), attribute("gsi1sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "gsi1",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    dynamodb.update_time_to_live(
        TableName=names["table"], TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )
    sqs = session.client("sqs", endpoint_url=endpoint)
    queues = {name: sqs.create_queue(QueueName=f"{name}-{suffix}")["QueueUrl"] for name in ("jobs", "finalize")}
    env = {
        "STREAMGATE_BACKEND": "aws",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "STREAMGATE_TABLE": names["table"],
        "STREAMGATE_SOURCES_BUCKET": names["sources"],
        "STREAMGATE_MEDIA_BUCKET": names["media"],
        "STREAMGATE_JOBS_QUEUE_URL": queues["jobs"],
        "STREAMGATE_FINALIZE_QUEUE_URL": queues["finalize"],
        "STREAMGATE_S3_PATH_STYLE": "true",
        "STREAMGATE_SESSION_KEY": paserk_secret(),
        "RUST_LOG": "warn",
    }
    yield {"env": env, "session": session, "endpoint": endpoint, "names": names}
    process.terminate()
    process.wait()
