#!/usr/bin/env python3
"""Search through the HTTP API of streamgate-local over the 100,000-video catalog that
`cargo bench -p common --bench search` builds: latency of `GET /v1/videos?q=…` one request at a time
(first pages, then second pages through `nextCursor`), then the rate with several clients at once.
Queries are typed as a viewer types them: one to three words of a stored video's title or description,
the last cut short.

    cargo bench -p common --bench search        # builds target/search-bench/catalog-100000.db once
    cargo build --release --bin streamgate-local
    tests/bench/search_http.py [--db PATH] [--queries 2000] [--clients 4]

The catalog is copied to a temporary data dir first, so the server's writes never touch it.
"""

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def percentiles(times: list[float]) -> str:
    times = sorted(times)
    at = lambda p: times[round((len(times) - 1) * p)] * 1000  # noqa: E731
    return f"n={len(times)} p50={at(0.5):.2f} ms p90={at(0.9):.2f} ms p99={at(0.99):.2f} ms max={times[-1] * 1000:.2f} ms"


def sample_queries(db: Path, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = connection.execute(
        "SELECT attrs FROM items WHERE sk = 'meta' AND pk >= 'video#' AND pk < 'video$' "
        "ORDER BY random() LIMIT ?",
        (count,),
    ).fetchall()
    queries = []
    for (attrs,) in rows:
        video = json.loads(attrs)
        text = video["title"] if rng.random() < 0.7 else video["description"]
        words = text.lower().split()
        n = min(rng.randint(1, 3), len(words))
        start = rng.randint(0, len(words) - n)
        picked = words[start : start + n]
        picked[-1] = picked[-1][: rng.randint(1, len(picked[-1]))]
        queries.append(" ".join(picked))
    return queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=ROOT / "target" / "search-bench" / "catalog-100000.db")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    binary = ROOT / "target" / "release" / "streamgate-local"
    if not args.db.exists():
        raise SystemExit(f"{args.db} is missing: run `cargo bench -p common --bench search` first")
    if not binary.exists():
        raise SystemExit("build it first: cargo build --release --bin streamgate-local")

    with tempfile.TemporaryDirectory(prefix="search-http-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        shutil.copyfile(args.db, data / "streamgate.db")
        env = {"PATH": "/usr/bin:/bin", "STREAMGATE_DATA_DIR": str(data), "STREAMGATE_ADDR": "127.0.0.1:0", "RUST_LOG": "warn"}
        server = subprocess.Popen([str(binary)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            url = server.stdout.readline().strip().rsplit(" ", 1)[-1]
            queries = sample_queries(data / "streamgate.db", args.queries, seed=11)
            session = requests.Session()
            search = lambda q, **more: session.get(f"{url}/v1/videos", params={"q": q, "limit": 20} | more, timeout=30)  # noqa: E731

            for q in queries[:100]:  # the server's first reads
                search(q)
            first, second, results = [], [], []
            for q in queries:
                started = time.perf_counter()
                answer = search(q)
                first.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
                body = answer.json()
                results.append(len(body["items"]))
                if body["nextCursor"]:
                    started = time.perf_counter()
                    assert search(q, cursor=body["nextCursor"]).status_code == 200
                    second.append(time.perf_counter() - started)
            print(f"catalog {args.db.name}, {len(queries)} queries, {statistics.mean(results):.1f} results a first page")
            print(f"  first pages, one at a time:  {percentiles(first)}")
            print(f"  second pages, one at a time: {percentiles(second)}")

            def client(part: list[str]) -> list[float]:
                own = requests.Session()
                times = []
                for q in part:
                    started = time.perf_counter()
                    assert own.get(f"{url}/v1/videos", params={"q": q, "limit": 20}, timeout=30).status_code == 200
                    times.append(time.perf_counter() - started)
                return times

            parts = [queries[i :: args.clients] for i in range(args.clients)]
            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                times = [t for part in pool.map(client, parts) for t in part]
            elapsed = time.perf_counter() - started
            print(f"  first pages, {args.clients} clients at once: {len(times) / elapsed:.0f} searches/s, {percentiles(times)}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
