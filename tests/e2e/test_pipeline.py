"""The pipeline in streamgate-local as a process: killed with SIGKILL in the middle of transcoding, it
resumes on restart and the video still becomes ready."""

import os
import signal
import time

import requests
from tusclient import client as tus

from conftest import Process, base_env, binary, free_port
from test_uploads import real_video, wait_for_status
from wallets import ALICE, bearer, sign_in


def start(env: dict) -> Process:
    process = Process([str(binary("streamgate-local"))], env)
    deadline = time.monotonic() + 30
    while not process.stdout_lines:
        assert process.alive() and time.monotonic() < deadline, process.stderr()
        time.sleep(0.02)
    return process


def test_a_server_killed_mid_job_still_makes_the_video_ready(tmp_path):
    port = free_port()
    env = base_env(tmp_path) | {
        "STREAMGATE_ADDR": f"127.0.0.1:{port}",
        "RUST_LOG": "warn",
        # Several slow chunk jobs, one at a time, so that the kill lands in the middle of them.
        "STREAMGATE_CHUNK_SECONDS": "4",
        "STREAMGATE_WORKERS": "1",
        "STREAMGATE_LADDER": "720p,360p",
        "STREAMGATE_X264_PRESET": "slow",
    }
    url = f"http://127.0.0.1:{port}"
    server = start(env)
    token = sign_in(url, ALICE)
    path = tmp_path / "long.mp4"
    real_video(path, seconds=16)
    uploader = tus.TusClient(f"{url}/v1/uploads", headers=bearer(token)).uploader(
        str(path), chunk_size=8 * 1024 * 1024, metadata={"filename": "long.mp4"}
    )
    uploader.upload()
    video_id = uploader.url.rsplit("/", 1)[-1]

    # Kill it once some jobs are done and others are not.
    deadline = time.monotonic() + 120
    while True:
        video = requests.get(f"{url}/v1/videos/{video_id}", timeout=10).json()
        if 0 < video["progress"] < 60 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert video["status"] == "processing" and 0 < video["progress"] < 100, video
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()

    server = start(env)
    video = wait_for_status(url, token, uploader.url, "ready", timeout=300)
    assert video["status"] == "ready", video
    assert video["progress"] == 100
    playback = requests.get(f"{url}/v1/videos/{video_id}/playback", timeout=10).json()
    assert requests.get(playback["hls"], timeout=10).status_code == 200
    assert server.terminate() == 0
