#!/usr/bin/env python3
"""Time from process start to the first `/healthz` answer, for every function binary in Knative mode and
for streamgate-local. Prints the median and the worst of N runs in milliseconds.

    tests/bench/startup.py [--bin-dir target/release] [--runs 20]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ["api-auth", "api-upload", "api-videos", "api-playback", "api-chains", "on-upload", "transcode",
             "finalize", "dead-letters", "chain-indexer", "gas-monitor", "tx-tracker", "streamgate-local"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_answer_ms(binary: Path, data_dir: str) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMGATE_"))}
    env |= {"PORT": str(port), "STREAMGATE_ADDR": f"127.0.0.1:{port}", "STREAMGATE_DATA_DIR": data_dir, "RUST_LOG": "warn"}
    url = f"http://127.0.0.1:{port}/healthz"
    started = time.perf_counter()
    process = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return (time.perf_counter() - started) * 1000
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"{binary.name} exited with {process.returncode}")
                time.sleep(0.0005)
    finally:
        process.terminate()
        process.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"{'binary':<18} {'median ms':>10} {'max ms':>8}")
    for name in FUNCTIONS:
        binary = Path(args.bin_dir) / name
        samples = []
        for _ in range(args.runs):
            data_dir = tempfile.mkdtemp(prefix="sg-startup-")
            try:
                samples.append(first_answer_ms(binary, data_dir))
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
        print(f"{name:<18} {statistics.median(samples):>10.1f} {max(samples):>8.1f}")


if __name__ == "__main__":
    main()
