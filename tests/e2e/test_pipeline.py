"""The pipeline in streamgate-local as a process: killed with SIGKILL in the middle of transcoding, it
resumes on restart and the video still becomes ready."""

import os
import signal
import subprocess
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


def test_the_pipeline_on_the_cloud_adapters(aws_stack, knative, tmp_path):
    """Every function as its own process in Knative mode on S3, SQS and DynamoDB (moto), with the events a
    Knative broker would deliver relayed as CloudEvents: upload, probe, transcode, finalize, then playback
    whose segments redirect to presigned S3 URLs."""
    import hashlib

    from cloudevents.core.bindings.http import to_binary_event

    from test_runtime import cloud_event, post_event

    env = aws_stack["env"] | {
        "STREAMGATE_DOMAIN": "streamgate.test",
        "STREAMGATE_URL_SIGNING_KEY": hashlib.sha256(b"e2e").hexdigest(),
        "STREAMGATE_LADDER": "360p,240p",
        "STREAMGATE_X264_PRESET": "ultrafast",
    }
    url = {name: knative(name, env)[0] for name in
           ["api-auth", "api-upload", "api-videos", "api-playback", "on-upload", "transcode", "finalize"]}
    from test_uploads import cloud_sign_in

    token = cloud_sign_in({"auth": url["api-auth"]}, ALICE)
    path = tmp_path / "cloud.mp4"
    real_video(path, seconds=4)
    uploader = tus.TusClient(f"{url['api-upload']}/v1/uploads", headers=bearer(token)).uploader(
        str(path), chunk_size=8 * 1024 * 1024, metadata={"filename": "cloud.mp4"}
    )
    uploader.upload()
    video_id = uploader.url.rsplit("/", 1)[-1]

    # The bucket's notification, as the S3 source of Knative Eventing relays it.
    notification = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:CompleteMultipartUpload",
                                 "s3": {"bucket": {"name": aws_stack["names"]["sources"]},
                                        "object": {"key": f"sources/{video_id}"}}}]}
    stored = post_event(url["on-upload"], to_binary_event(cloud_event("com.amazonaws.s3.ObjectCreated", notification)))
    assert stored.status_code == 202, stored.text

    # Queue messages, as the SQS source relays them.
    sqs = aws_stack["session"].client("sqs", endpoint_url=aws_stack["endpoint"])

    def relay(queue_url: str, function: str) -> int:
        relayed = 0
        while True:
            batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = batch.get("Messages", [])
            if not messages:
                return relayed
            for message in messages:
                body = {"MessageId": message["MessageId"], "Body": message["Body"]}
                answer = post_event(url[function], to_binary_event(cloud_event("aws.sqs.message", body)))
                assert answer.status_code == 202, answer.text
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                relayed += 1

    assert relay(env["STREAMGATE_JOBS_QUEUE_URL"], "transcode") == 2  # one chunk and the audio
    assert relay(env["STREAMGATE_FINALIZE_QUEUE_URL"], "finalize") == 1
    video = requests.get(f"{url['api-videos']}/v1/videos/{video_id}", timeout=10).json()
    assert video["status"] == "ready", video

    playback = requests.get(f"{url['api-playback']}/v1/videos/{video_id}/playback", timeout=10).json()
    segment = playback["hls"].replace("master.m3u8", "360p/seg-00000.m4s")
    redirect = requests.get(segment, allow_redirects=False, timeout=10)
    assert redirect.status_code == 302
    assert redirect.headers["location"].startswith(aws_stack["endpoint"]), "presigned by the S3 SDK"
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", playback["hls"], "-map", "0:v:0", "-f", "null", "-"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
