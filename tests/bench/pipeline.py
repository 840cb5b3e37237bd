#!/usr/bin/env python3
"""Upload-complete to `ready` in streamgate-local, beside one plain ffmpeg command that makes the same
ladder with the same preset on the same machine (decoded once, split and scaled per rung, fMP4 HLS).

    tests/bench/pipeline.py [--bin target/release/streamgate-local] [--seconds 60] [--size 1920x1080]
                            [--preset veryfast] [--chunk-seconds 32]

Prints both times and their ratio, the time of every transcoding job (from the server's log), and the
projected time to `ready` for a 10-minute source when N jobs run at once (as Lambda runs them), from the
measured time per second of source.
"""

import argparse
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from wallets import ALICE, sign_in  # noqa: E402

# The default ladder: (name, short side, kb/s at 30 fps).
LADDER = [("1080p", 1080, 5000), ("720p", 720, 2800), ("480p", 480, 1400), ("360p", 360, 800), ("240p", 240, 400)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_source(path: Path, seconds: int, size: str):
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:v", "libx264", "-preset", "veryfast",
         "-b:v", "8M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )


def baseline(source: Path, out: Path, height: int, preset: str) -> float:
    """One ffmpeg command for the whole ladder: decode once, split, scale, encode, fMP4 HLS."""
    rungs = [r for r in LADDER if r[1] <= height]
    graph = f"[0:v]split={len(rungs)}" + "".join(f"[s{k}]" for k in range(len(rungs)))
    for k, (_, side, _) in enumerate(rungs):
        graph += f";[s{k}]scale=-2:{side},setsar=1[v{k}]"
    args = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-filter_complex", graph]
    for k, (name, _, kbps) in enumerate(rungs):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        args += ["-map", f"[v{k}]", "-an", "-c:v", "libx264", "-preset", preset, "-profile:v", "high",
                 "-pix_fmt", "yuv420p", "-b:v", f"{kbps}k", "-maxrate", f"{kbps * 3 // 2}k", "-bufsize", f"{kbps * 2}k",
                 "-g", "120", "-keyint_min", "120", "-sc_threshold", "0", "-force_key_frames", "expr:gte(t,n_forced*4)",
                 "-f", "hls", "-hls_time", "4", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
                 "-hls_segment_filename", str(folder / "seg-%05d.m4s"), str(folder / "index.m3u8")]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    args += ["-map", "0:a:0", "-vn", "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "hls", "-hls_time", "4",
             "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
             "-hls_segment_filename", str(out / "audio" / "seg-%05d.m4s"), str(out / "audio" / "index.m3u8")]
    started = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - started


def streamgate(binary: Path, source: Path, preset: str, chunk_seconds: int, data: str, log: Path) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMGATE_"))}
    env |= {"STREAMGATE_ADDR": f"127.0.0.1:{port}", "STREAMGATE_DATA_DIR": data, "RUST_LOG": "info",
            "STREAMGATE_LOG_FORMAT": "json", "STREAMGATE_X264_PRESET": preset,
            "STREAMGATE_CHUNK_SECONDS": str(chunk_seconds)}
    with open(log, "w") as err:
        process = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "the server did not start"
                time.sleep(0.05)
        token = sign_in(url, ALICE)
        headers = {"tus-resumable": "1.0.0", "authorization": f"Bearer {token}"}
        data_bytes = source.read_bytes()
        created = requests.post(f"{url}/v1/uploads", headers=headers | {"upload-length": str(len(data_bytes))})
        location = created.headers["location"]
        done = requests.patch(location, data=data_bytes, headers=headers | {
            "upload-offset": "0", "content-type": "application/offset+octet-stream"})
        assert done.status_code == 204, done.text
        completed = time.perf_counter()
        video_id = location.rsplit("/", 1)[-1]
        while True:
            video = requests.get(f"{url}/v1/videos/{video_id}", timeout=10).json()
            if video["status"] in ("ready", "failed"):
                break
            time.sleep(0.1)
        assert video["status"] == "ready", video
        return time.perf_counter() - completed
    finally:
        process.terminate()
        process.wait()


def job_times(log: Path) -> dict[str, float]:
    times = {}
    for line in log.read_text().splitlines():
        if "job encoded" in line:
            job = re.search(r'"job":"([^"]+)"', line)
            seconds = re.search(r'"seconds":([0-9.]+)', line)
            if job and seconds:
                times[job.group(1)] = float(seconds.group(1))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "streamgate-local")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--chunk-seconds", type=int, default=32)
    args = parser.parse_args()
    if not args.bin.exists():
        raise SystemExit(f"{args.bin} is missing: cargo build --release -p streamgate-local")
    height = int(args.size.split("x")[1])
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as work:
        work = Path(work)
        source = work / "source.mp4"
        make_source(source, args.seconds, args.size)
        print(f"source: {args.seconds} s {args.size} 30 fps, {source.stat().st_size / 1e6:.1f} MB; "
              f"preset {args.preset}, {os.cpu_count()} cores", flush=True)
        plain = baseline(source, work / "plain", height, args.preset)
        print(f"one ffmpeg command, whole ladder:        {plain:7.1f} s", flush=True)
        log = work / "server.log"
        ours = streamgate(args.bin, source, args.preset, args.chunk_seconds, str(work / "data"), log)
        print(f"streamgate-local, upload complete→ready: {ours:7.1f} s  ({ours / plain:.2f}× the plain command)")
        times = job_times(log)
        video = {k: v for k, v in times.items() if k.startswith("video-")}
        for job in sorted(times, key=lambda j: (j != "audio", int(j.split("-")[1]) if "-" in j else -1)):
            print(f"  {job:10} {times[job]:6.1f} s")
        if video:
            cores = os.cpu_count() or 1
            per_chunk = statistics.median(video.values())
            # The local server ran min(jobs, cores) chunk jobs at once, each on its share of the cores; a
            # worker with all of this machine's cores runs one in about that share of the time.
            alone = per_chunk / min(len(video), cores)
            audio = times.get("audio", 0.0)
            print(f"median chunk job ({args.chunk_seconds} s of source): {per_chunk:.1f} s sharing {cores} cores; "
                  f"about {alone:.1f} s on a worker of its own with {cores} cores")
            chunks = math.ceil(600 / args.chunk_seconds)
            print(f"projected upload complete→ready for a 10-minute source ({chunks} chunk jobs + audio) with N "
                  f"workers of {cores} cores each, as Lambda runs them (plus probe and finalize):")
            audio_10min = audio * 600 / args.seconds
            for workers in (1, 2, 4, 8, chunks):
                waves = math.ceil(chunks / workers)
                # The audio job runs beside the chunk jobs once there is more than one worker.
                total = waves * alone + audio_10min if workers == 1 else max(waves * alone, audio_10min)
                print(f"  {workers:3} workers: {total:7.1f} s")


if __name__ == "__main__":
    main()
