#!/usr/bin/env python3
"""Throughput and peak memory of a tus upload through streamgate-local, beside the reference Node server
(@tus/server with its file store), with the same client on the same machine.

The client is one keep-alive HTTP connection (`http.client`) sending PATCHes of `--chunk` bytes from
memory, so the servers, not the client's disk or its HTTP library, set the pace. Each server runs in its
own process with a fresh data directory on the same disk; its peak resident memory (VmHWM) is read when
the upload is done. Sizes are run in turn, so "memory flat in the file size" shows as equal peaks for the
small and the large file. Each run also prints how much the machine's page cache grew during the upload
(the bytes a server left cached; other processes move it too).

    tests/bench/tus_upload.py [--bin target/release/streamgate-local] [--sizes-mib 256,1024]
                              [--chunk-mib 5] [--runs 5]

StreamGate runs twice: with STREAMGATE_SYNC_WRITES=false, the durability @tus/server's file store has (it
never calls fsync), and with the default, which waits for the disk before a finished upload becomes
visible. Prints one line per server, size and run, then the medians and the ratios.
"""

import argparse
import base64
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from wallets import ALICE, sign_in  # noqa: E402

MIB = 1024 * 1024
# streamgate: objects visible once in the page cache, as @tus/server's file store (which never syncs);
# streamgate+fsync: the default, each finished object on disk before it becomes visible.
SERVERS = ["streamgate", "streamgate+fsync", "@tus/server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen):
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.options(url, timeout=1)
            return
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server at {url} did not start")
            time.sleep(0.05)


def page_cache_mib() -> float:
    """The machine's page cache (`Cached` in /proc/meminfo), in MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Cached:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def upload(endpoint: str, headers: dict, size: int, chunk: bytes) -> float:
    """Uploads `size` bytes in PATCHes of `chunk`; returns the seconds from creation to the last answer.

    The client is the standard library's `http.client` on one keep-alive connection: it adds ~0.1 ms
    of its own to each call, where `requests` adds ~0.5 ms, a time in which neither server does any work
    and which would count against the faster one most."""
    target = urlsplit(endpoint)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
    connection.connect()
    # Headers and body go out in two writes: without this the body's last segment could wait for an ACK.
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    metadata = "filename " + base64.b64encode(b"bench.mp4").decode()
    tus = {"Tus-Resumable": "1.0.0"} | headers

    def call(method: str, path: str, expected: int, body=None, extra=None) -> http.client.HTTPResponse:
        connection.request(method, path, body=body, headers=tus | (extra or {}))
        answer = connection.getresponse()
        text = answer.read()
        assert answer.status == expected, (answer.status, text[:2000])
        return answer

    started = time.perf_counter()
    created = call("POST", target.path, 201, extra={"Upload-Length": str(size), "Upload-Metadata": metadata})
    location = urlsplit(urljoin(endpoint, created.headers["location"])).path
    offset = 0
    view = memoryview(chunk)
    while offset < size:
        body = view[: min(len(chunk), size - offset)]
        answer = call(
            "PATCH",
            location,
            204,
            body=body,
            extra={"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        )
        offset = int(answer.headers["upload-offset"])
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def run_streamgate(binary: Path, size: int, chunk: bytes, sync: bool) -> tuple[float, float, float]:
    data = tempfile.mkdtemp(prefix="bench-streamgate-", dir=ROOT / "target")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMGATE_"))}
    env |= {"STREAMGATE_ADDR": f"127.0.0.1:{port}", "STREAMGATE_DATA_DIR": data, "RUST_LOG": "warn"}
    # The storage event of the finished upload stays queued: no pipeline runs during the measurement.
    env |= {"STREAMGATE_WORKERS": "1", "STREAMGATE_SYNC_WRITES": "true" if sync else "false"}
    process = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/v1/uploads", process)
        token = sign_in(url, ALICE)
        cached = page_cache_mib()
        seconds = upload(f"{url}/v1/uploads", {"authorization": f"Bearer {token}"}, size, chunk)
        return seconds, peak_rss_mib(process.pid), page_cache_mib() - cached
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(data, ignore_errors=True)


def run_reference(size: int, chunk: bytes) -> tuple[float, float, float]:
    data = tempfile.mkdtemp(prefix="bench-tus-node-", dir=ROOT / "target")
    port = free_port()
    script = ROOT / "tests" / "clients" / "tus-reference-server.mjs"
    process = subprocess.Popen(
        ["node", str(script), "--port", str(port), "--dir", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/files"
    try:
        wait_for(url, process)
        cached = page_cache_mib()
        seconds = upload(url, {}, size, chunk)
        return seconds, peak_rss_mib(process.pid), page_cache_mib() - cached
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(data, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "streamgate-local")
    parser.add_argument("--sizes-mib", default="256,1024")
    parser.add_argument("--chunk-mib", type=float, default=5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not args.bin.exists():
        raise SystemExit(f"{args.bin} is missing: cargo build --release -p streamgate-local")
    if not (ROOT / "tests" / "clients" / "node_modules" / "@tus" / "server").exists():
        raise SystemExit("@tus/server is missing: run tests/setup")
    chunk = os.urandom(int(args.chunk_mib * MIB))
    sizes = [int(s) * MIB for s in args.sizes_mib.split(",")]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for run in range(args.runs):
        for size in sizes:
            # Alternate the servers so that drift in the machine's load hits both alike.
            for name in SERVERS:
                measure = {
                    "streamgate": lambda: run_streamgate(args.bin, size, chunk, sync=False),
                    "streamgate+fsync": lambda: run_streamgate(args.bin, size, chunk, sync=True),
                    "@tus/server": lambda: run_reference(size, chunk),
                }[name]
                # Start each run with nothing left for the disk to write from the one before.
                os.sync()
                seconds, peak, cached = measure()
                results.setdefault((name, size), []).append((seconds, peak))
                print(f"run {run + 1} {name:16} {size // MIB:5} MiB: {size / MIB / seconds:7.1f} MiB/s, "
                      f"{seconds:6.2f} s, peak RSS {peak:6.1f} MiB, page cache {cached:+7.0f} MiB", flush=True)
    print()
    print(f"medians over {args.runs} runs, {args.chunk_mib:g} MiB chunks:")
    for size in sizes:
        rates = {}
        for name in SERVERS:
            runs = results[(name, size)]
            rate = statistics.median(size / MIB / s for s, _ in runs)
            peak = statistics.median(p for _, p in runs)
            rates[name] = rate
            print(f"  {name:16} {size // MIB:5} MiB: {rate:7.1f} MiB/s, peak RSS {peak:6.1f} MiB")
        for name in SERVERS[:2]:
            print(f"  {name} / @tus/server at {size // MIB} MiB: {rates[name] / rates['@tus/server']:.2f}x")


if __name__ == "__main__":
    main()
