"""Uploads with clients written by others: tuspy and tus-js-client upload, stop mid-way and resume, against
streamgate-local and against api-upload on the cloud adapters (S3 and DynamoDB on the AWS emulator); direct
multipart uploads through signed part URLs; a client cut off mid-chunk and two clients racing on one
upload over real sockets."""

import base64
import copy
import hashlib
import json
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from cloudevents.core.bindings.http import to_binary_event
from tusclient import client as tus

from conftest import ROOT, event_json, paserk_secret
from test_runtime import cloud_event, post_event, sqs_record
from wallets import ALICE, BOB, bearer, sign_in

MIB = 1024 * 1024
CLIENTS = ROOT / "tests" / "clients"


def video_file(path: Path, size: int, seed: int = 1) -> bytes:
    """`size` bytes that differ everywhere, so a misplaced chunk changes the digest."""
    block = hashlib.sha256(str(seed).encode()).digest()
    data = bytearray()
    counter = 0
    while len(data) < size:
        data += hashlib.sha256(block + counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    data = bytes(data[:size])
    path.write_bytes(data)
    return data


def video_of(url: str, token: str, upload_url: str) -> dict:
    video_id = upload_url.rstrip("/").rsplit("/", 1)[-1]
    answer = requests.get(f"{url}/v1/videos/{video_id}", headers=bearer(token), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def head(upload_url: str, token: str) -> requests.Response:
    return requests.head(upload_url, headers={"tus-resumable": "1.0.0"} | bearer(token), timeout=10)


def tuspy_stop_and_resume(endpoint: str, token: str, path: Path, chunk: int, stop_at: int, checksum=False) -> str:
    client = tus.TusClient(endpoint, headers=bearer(token))
    metadata = {"filename": path.name, "filetype": "video/mp4", "title": "Resumed"}
    first = client.uploader(str(path), chunk_size=chunk, metadata=metadata, upload_checksum=checksum)
    first.upload(stop_at=stop_at)
    assert first.offset == stop_at
    assert first.url.startswith(endpoint), first.url

    # A new uploader, as after a restart, learns the offset from the server and finishes.
    again = tus.TusClient(endpoint, headers=bearer(token))
    resumed = again.uploader(str(path), url=first.url, chunk_size=chunk, upload_checksum=checksum)
    assert resumed.offset == stop_at
    resumed.upload()
    assert resumed.offset == path.stat().st_size
    return first.url


def real_video(path: Path, seconds: int = 8) -> bytes:
    """A real clip, large enough for several parts: 720p at a high bitrate, with sound."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
         "-b:v", "12M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )
    return path.read_bytes()


def test_tuspy_stops_and_resumes(local_server, tmp_path):
    token = sign_in(local_server, ALICE)
    path = tmp_path / "clip.mp4"
    data = real_video(path)
    assert len(data) > 8 * MIB
    url = tuspy_stop_and_resume(f"{local_server}/v1/uploads", token, path, chunk=2 * MIB, stop_at=6 * MIB)
    video = video_of(local_server, token, url)
    assert video["status"] in ("processing", "failed")
    assert video["title"] == "Resumed"
    assert video["owner"] == ALICE.address
    assert video["source"] == {
        "filename": "clip.mp4",
        "contentType": "video/mp4",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    # Only the owner sees the source.
    public = requests.get(f"{local_server}/v1/videos/{video['id']}", timeout=5).json()
    assert public["source"] is None
    assert head(url, token).headers["upload-offset"] == str(len(data))
    # on-upload probes the finished source and plans it.
    deadline = time.monotonic() + 30
    while video["durationSeconds"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        video = video_of(local_server, token, url)
    assert video["status"] in ("processing", "ready"), video["error"]
    assert (video["width"], video["height"]) == (1280, 720)
    assert abs(video["durationSeconds"] - 8) < 0.2
    # Then transcode and finalize make it a stream, never upscaled.
    video = wait_for_status(local_server, token, url, "ready", timeout=180)
    assert video["status"] == "ready", video
    assert video["progress"] == 100
    assert [r["name"] for r in video["renditions"]] == ["720p", "480p", "360p", "240p"]


def test_a_text_file_is_refused_after_upload(local_server, tmp_path):
    token = sign_in(local_server, BOB)
    path = tmp_path / "notes.mp4"
    path.write_text("These are meeting notes, not a video.\n" * 80_000)
    url = tuspy_stop_and_resume(f"{local_server}/v1/uploads", token, path, chunk=MIB, stop_at=MIB)
    video = wait_for_status(local_server, token, url, "failed")
    assert video["error"]["code"] == "unsupported_media", video["error"]
    # Others learn the code alone; the detail, which may quote ffprobe, is the owner's.
    seen = requests.get(f"{local_server}/v1/videos/{video['id']}", timeout=5).json()
    assert seen["error"] == {"code": "unsupported_media", "detail": "the video could not be processed"}
    assert video["error"]["detail"] != seen["error"]["detail"]


def test_tuspy_with_checksums(local_server, tmp_path):
    token = sign_in(local_server, ALICE)
    path = tmp_path / "checked.mp4"
    data = video_file(path, 3 * MIB, seed=2)
    url = tuspy_stop_and_resume(f"{local_server}/v1/uploads", token, path, MIB, 2 * MIB, checksum=True)
    assert video_of(local_server, token, url)["source"]["sha256"] == hashlib.sha256(data).hexdigest()


def node_upload(*args: str) -> dict:
    script = CLIENTS / "tus-upload.mjs"
    if not (CLIENTS / "node_modules" / "tus-js-client").exists():
        pytest.fail("tus-js-client is missing: run tests/setup")
    done = subprocess.run(["node", str(script), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tus_js_client_stops_and_resumes(local_server, tmp_path):
    token = sign_in(local_server, BOB)
    path = tmp_path / "browser.mp4"
    data = video_file(path, 9 * MIB + 77, seed=3)
    common = ["--endpoint", f"{local_server}/v1/uploads", "--file", str(path), "--token", token]
    stopped = node_upload(*common, "--chunk-size", str(MIB), "--stop-after", str(4 * MIB))
    assert not stopped["done"]
    assert head(stopped["url"], token).headers["upload-offset"] == str(stopped["offset"])
    finished = node_upload(*common, "--chunk-size", str(MIB), "--resume", stopped["url"])
    assert finished["done"] and finished["url"] == stopped["url"]
    assert video_of(local_server, token, finished["url"])["source"]["sha256"] == hashlib.sha256(data).hexdigest()


def create_upload(url: str, token: str, length: int) -> str:
    answer = requests.post(
        f"{url}/v1/uploads",
        headers={"tus-resumable": "1.0.0", "upload-length": str(length)} | bearer(token),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return answer.headers["location"]


def raw_patch(upload_url: str, token: str, offset: int, declared: int, body: bytes) -> socket.socket:
    """Starts a PATCH over a socket of its own, declaring `declared` bytes and sending `body`."""
    target = urlparse(upload_url)
    connection = socket.create_connection((target.hostname, target.port), timeout=10)
    request = (
        f"PATCH {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\nTus-Resumable: 1.0.0\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    connection.sendall(request + body)
    return connection


def status_of(connection: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = connection.recv(4096)
        if not chunk:
            break
        answer += chunk
    connection.close()
    return int(answer.split(b" ", 2)[1])


def wait_for_offset(upload_url: str, token: str, wanted, timeout=10) -> int:
    deadline = time.monotonic() + timeout
    while True:
        offset = int(head(upload_url, token).headers["upload-offset"])
        if wanted(offset) or time.monotonic() > deadline:
            return offset
        time.sleep(0.05)


def test_a_client_cut_off_mid_chunk_resumes_from_what_was_kept(local_server, tmp_path):
    token = sign_in(local_server, ALICE)
    path = tmp_path / "flaky.mp4"
    data = video_file(path, 12 * MIB, seed=4)
    upload_url = create_upload(local_server, token, len(data))
    # Declare all 12 MiB (parts of 5 and 7 MiB), send 6 MiB and vanish: the whole first part is kept.
    connection = raw_patch(upload_url, token, 0, len(data), data[: 6 * MIB])
    time.sleep(0.3)
    connection.close()
    offset = wait_for_offset(upload_url, token, lambda o: o > 0)
    assert offset == 5 * MIB
    # The next write at another offset is refused; at the reported one it is taken.
    wrong = requests.patch(
        upload_url,
        data=data[:MIB],
        headers={"tus-resumable": "1.0.0", "upload-offset": "0", "content-type": "application/offset+octet-stream"}
        | bearer(token),
        timeout=10,
    )
    assert wrong.status_code == 409
    assert wrong.json()["code"] == "upload_offset_mismatch"
    resumed = tus.TusClient(f"{local_server}/v1/uploads", headers=bearer(token)).uploader(
        str(path), url=upload_url, chunk_size=2 * MIB
    )
    assert resumed.offset == offset
    resumed.upload()
    assert video_of(local_server, token, upload_url)["source"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_two_clients_racing_on_one_upload(local_server):
    token = sign_in(local_server, ALICE)
    upload_url = create_upload(local_server, token, 2 * MIB)
    first = raw_patch(upload_url, token, 0, MIB, b"a" * (MIB // 2))
    time.sleep(0.3)
    second = raw_patch(upload_url, token, 0, MIB, b"b" * MIB)
    assert status_of(second) == 409
    first.sendall(b"a" * (MIB // 2))
    assert status_of(first) == 204
    assert head(upload_url, token).headers["upload-offset"] == str(MIB)


def test_other_wallets_cannot_touch_an_upload(local_server):
    alice, bob = sign_in(local_server, ALICE), sign_in(local_server, BOB)
    upload_url = create_upload(local_server, alice, 10)
    assert head(upload_url, bob).status_code == 403
    assert requests.delete(upload_url, headers={"tus-resumable": "1.0.0"} | bearer(bob), timeout=5).status_code == 403
    assert head(upload_url, alice).status_code == 200
    assert requests.post(f"{local_server}/v1/uploads", headers={"tus-resumable": "1.0.0"}, timeout=5).status_code == 401


def direct_upload(api: str, token: str, data: bytes) -> dict:
    created = requests.post(
        f"{api}/v1/uploads/multipart",
        json={"filename": "big.mp4", "size": len(data), "contentType": "video/mp4", "title": "Direct"},
        headers=bearer(token),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return created.json()


def put_parts(created: dict, data: bytes) -> list[dict]:
    size = created["partSize"]
    parts = []
    for part in created["parts"]:
        start = (part["partNumber"] - 1) * size
        answer = requests.put(
            part["url"], data=data[start : start + size], headers={"content-type": "application/octet-stream"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        parts.append({"partNumber": part["partNumber"], "etag": answer.headers["etag"]})
    return parts


def test_direct_multipart_upload(local_server):
    token = sign_in(local_server, ALICE)
    data = bytes(range(256)) * (70 * 1024)  # 17.5 MiB
    created = direct_upload(local_server, token, data)
    assert len(created["parts"]) == 3
    url = created["parts"][0]["url"]
    forged = url.replace("signature=", "signature=0")
    assert requests.put(forged, data=b"x", timeout=5).status_code == 403
    parts = put_parts(created, data)
    done = requests.post(
        f"{local_server}/v1/uploads/multipart/{created['videoId']}/complete",
        json={"parts": parts},
        headers=bearer(token),
        timeout=30,
    )
    assert done.status_code == 200, done.text
    # The bytes did not pass through api-upload: on-upload reads them for the digest as processing starts
    # (and may have done so already), then refuses them, as they are no video.
    digest = hashlib.sha256(data).hexdigest()
    assert done.json()["source"]["sha256"] in (None, digest)
    assert done.json()["status"] in ("processing", "failed")
    # The refusal and the digest are written as each finishes, in either order.
    deadline = time.monotonic() + 20
    while True:
        video = video_of(local_server, token, created["videoId"])
        if video["source"]["sha256"] is not None and video["status"] == "failed":
            break
        assert time.monotonic() < deadline, video
        time.sleep(0.2)
    assert (video["status"], video["source"]["sha256"]) == ("failed", digest)


def test_expired_part_urls_are_refused(start_local):
    url, _ = start_local({"STREAMGATE_UPLOAD_URL_TTL": "1"})
    token = sign_in(url, ALICE)
    created = direct_upload(url, token, b"x" * 1000)
    time.sleep(2.1)
    answer = requests.put(created["parts"][0]["url"], data=b"x" * 1000, timeout=5)
    assert answer.status_code == 403
    assert answer.json()["code"] == "signature_expired"


# The same clients against api-upload on the cloud adapters: S3 multipart uploads and DynamoDB state on the
# AWS emulator, chunks under S3's 5 MiB part minimum buffered as tail objects.


@pytest.fixture
def cloud(aws_stack, knative):
    env = aws_stack["env"] | {"STREAMGATE_DOMAIN": "streamgate.test"}
    auth, _ = knative("api-auth", env)
    upload, _ = knative("api-upload", env)
    videos, _ = knative("api-videos", env)
    return {"auth": auth, "upload": upload, "videos": videos, **aws_stack}


def cloud_sign_in(cloud, account) -> str:
    """Signs in at api-auth, which expects messages for the configured domain."""
    from wallets import message, sign, verify

    text = message(cloud["auth"], account, domain="streamgate.test", uri="https://streamgate.test/login")
    answer = verify(cloud["auth"], text, sign(account, text))
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def test_tuspy_on_the_cloud_adapters(cloud, tmp_path):
    token = cloud_sign_in(cloud, ALICE)
    path = tmp_path / "cloud.mp4"
    data = video_file(path, 11 * MIB + 5, seed=5)
    url = tuspy_stop_and_resume(f"{cloud['upload']}/v1/uploads", token, path, chunk=MIB, stop_at=7 * MIB)
    video_id = url.rsplit("/", 1)[-1]
    s3 = cloud["session"].client("s3", endpoint_url=cloud["endpoint"])
    bucket = cloud["names"]["sources"]
    stored = s3.get_object(Bucket=bucket, Key=f"sources/{video_id}")["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"uploads/{video_id}/").get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    video = video_of(cloud["videos"], token, url)
    assert video["source"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_tus_js_client_on_the_cloud_adapters(cloud, tmp_path):
    token = cloud_sign_in(cloud, BOB)
    path = tmp_path / "cloud-js.mp4"
    data = video_file(path, 6 * MIB + 1, seed=6)
    common = ["--endpoint", f"{cloud['upload']}/v1/uploads", "--file", str(path), "--token", token]
    stopped = node_upload(*common, "--chunk-size", str(2 * MIB), "--stop-after", str(2 * MIB))
    finished = node_upload(*common, "--chunk-size", str(2 * MIB), "--resume", stopped["url"])
    assert finished["done"]
    video = video_of(cloud["videos"], token, finished["url"])
    assert video["source"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_direct_multipart_on_the_cloud_adapters(cloud, lambda_function):
    token = cloud_sign_in(cloud, ALICE)
    data = bytes(range(256)) * (40 * 1024 + 3)  # 10 MiB and a little
    created = direct_upload(cloud["upload"], token, data)
    assert created["parts"][0]["url"].startswith(cloud["endpoint"]), "presigned by the S3 SDK"
    parts = put_parts(created, data)
    done = requests.post(
        f"{cloud['upload']}/v1/uploads/multipart/{created['videoId']}/complete",
        json={"parts": parts},
        headers=bearer(token),
        timeout=30,
    )
    assert done.status_code == 200, done.text
    assert done.json()["source"]["sha256"] is None, "read by on-upload, not within the request"
    s3 = cloud["session"].client("s3", endpoint_url=cloud["endpoint"])
    head = s3.head_object(Bucket=cloud["names"]["sources"], Key=f"sources/{created['videoId']}")
    assert head["ContentLength"] == len(data)

    # The object's storage event, as S3 gives it to on-upload on Lambda: the digest is read from S3, and
    # the bytes, which are no video, refused.
    notification = copy.deepcopy(event_json("s3-object-created.json"))
    notification["Records"][0]["s3"]["bucket"]["name"] = cloud["names"]["sources"]
    notification["Records"][0]["s3"]["object"]["key"] = f"sources/{created['videoId']}"
    notification["Records"][0]["s3"]["object"]["size"] = len(data)
    api, _ = lambda_function("on-upload", cloud["env"])
    kind, _ = api.invoke(notification)
    assert kind == "response"
    video = video_of(cloud["videos"], token, created["videoId"])
    assert video["source"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert video["status"] == "failed"


# On Lambda, function URLs carry binary bodies base64-encoded in an event of at most 6 MB: chunks stop at
# 4 MiB, and smaller chunks wait in tail objects until a 5 MiB part fills up.

LAMBDA_REQUEST_LIMIT = 6 * 1024 * 1024


def function_url_event(method: str, path: str, headers: dict, body: bytes = b"") -> dict:
    event = copy.deepcopy(event_json("function-url-healthz.json"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["headers"] |= {name.lower(): value for name, value in headers.items()}
    if body:
        event["headers"]["content-length"] = str(len(body))
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
    return event


def lambda_call(api, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, dict]:
    event = function_url_event(method, path, headers, body)
    assert len(json.dumps(event)) < LAMBDA_REQUEST_LIMIT, "the request would not fit in a Lambda invocation"
    kind, response = api.invoke(event)
    assert kind == "response", response
    return response["statusCode"], {k.lower(): v for k, v in (response.get("headers") or {}).items()}


def test_tus_through_lambda_function_urls(lambda_function, knative, tmp_path):
    # One installation: the functions share a session key and, as they would a table, a data directory.
    installation = {"STREAMGATE_SESSION_KEY": paserk_secret(), "STREAMGATE_DATA_DIR": str(tmp_path / "installation")}
    auth, _ = knative("api-auth", installation)
    token = sign_in(auth, ALICE)
    api, process = lambda_function("api-upload", installation)
    tus_headers = {"tus-resumable": "1.0.0", "authorization": f"Bearer {token}"}

    status, headers = lambda_call(api, "OPTIONS", "/v1/uploads", {})
    assert status == 204, headers
    chunk_limit = int(headers["streamgate-max-chunk-size"])
    assert chunk_limit == 4 * MIB

    path = tmp_path / "lambda.mp4"
    data = video_file(path, 9 * MIB + 100, seed=7)
    status, headers = lambda_call(api, "POST", "/v1/uploads", tus_headers | {"upload-length": str(len(data))})
    assert status == 201
    location = headers["location"]
    assert location.startswith("https://abcdefghij.lambda-url.us-east-1.on.aws/v1/uploads/"), location
    upload_path = urlparse(location).path

    patch = tus_headers | {"content-type": "application/offset+octet-stream"}
    status, _ = lambda_call(api, "PATCH", upload_path, patch | {"upload-offset": "0"}, data[: chunk_limit + 1])
    assert status == 413
    offset = 0
    while offset < len(data):
        body = data[offset : offset + chunk_limit]
        status, headers = lambda_call(api, "PATCH", upload_path, patch | {"upload-offset": str(offset)}, body)
        assert status == 204
        offset += len(body)
        assert headers["upload-offset"] == str(offset)
    status, headers = lambda_call(api, "HEAD", upload_path, tus_headers)
    assert status == 200
    assert headers["upload-offset"] == str(len(data))
    assert headers["cache-control"] == "no-store"
    assert process.alive()
    # Each invocation waited for its hashing and saved the state in the record for the next: the digest
    # recorded at the end is the whole file's.
    videos, _ = knative("api-videos", installation)
    assert video_of(videos, token, location)["source"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_capabilities_and_cors(local_server):
    discovery = requests.options(f"{local_server}/v1/uploads", timeout=5)
    assert discovery.status_code == 204
    assert discovery.headers["tus-version"] == "1.0.0"
    assert "creation-with-upload" in discovery.headers["tus-extension"]
    # A browser's preflight gets CORS, and the tus headers are exposed to the page.
    preflight = requests.options(
        f"{local_server}/v1/uploads",
        headers={"origin": "https://app.example", "access-control-request-method": "PATCH"},
        timeout=5,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "upload-offset" in preflight.headers["access-control-allow-headers"]


def patch_once(upload_url: str, token: str, offset: int, body: bytes) -> requests.Response:
    return requests.patch(
        upload_url,
        data=body,
        headers={"tus-resumable": "1.0.0", "upload-offset": str(offset), "content-type": "application/offset+octet-stream"}
        | bearer(token),
        timeout=10,
    )


def wait_for_status(api: str, token: str, upload_url: str, status: str, timeout=20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        video = video_of(api, token, upload_url)
        if video["status"] == status or time.monotonic() > deadline:
            return video
        time.sleep(0.2)


def test_abandoned_uploads_expire_locally(start_local):
    url, _ = start_local({"STREAMGATE_UPLOAD_EXPIRY": "1", "STREAMGATE_SCHEDULE_INTERVAL": "1"})
    token = sign_in(url, ALICE)
    upload_url = create_upload(url, token, 10 * MIB)
    assert patch_once(upload_url, token, 0, b"x" * MIB).status_code == 204
    video = wait_for_status(url, token, upload_url, "failed")
    assert video["status"] == "failed"
    assert video["error"]["code"] == "upload_expired"
    gone = head(upload_url, token)
    assert gone.status_code == 410


def test_abandoned_uploads_expire_on_the_cloud_adapters(aws_stack, knative):
    env = aws_stack["env"] | {"STREAMGATE_DOMAIN": "streamgate.test", "STREAMGATE_UPLOAD_EXPIRY": "1"}
    cloud = {"auth": knative("api-auth", env)[0], **aws_stack}
    upload = knative("api-upload", env)[0]
    videos = knative("api-videos", env)[0]
    on_upload = knative("on-upload", env)[0]
    token = cloud_sign_in(cloud, BOB)
    upload_url = create_upload(upload, token, 10 * MIB)
    # A part, then a tail object: both must go.
    assert patch_once(upload_url, token, 0, b"y" * (6 * MIB)).status_code == 204
    assert patch_once(upload_url, token, 6 * MIB, b"z" * MIB).status_code == 204
    s3 = aws_stack["session"].client("s3", endpoint_url=aws_stack["endpoint"])
    bucket = aws_stack["names"]["sources"]
    video_id = upload_url.rsplit("/", 1)[-1]
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"uploads/{video_id}/").get("KeyCount") == 1
    time.sleep(1.5)
    # The schedule's tick, as Knative's PingSource sends it.
    tick = cloud_event("dev.knative.sources.ping", None, content_type=None)
    assert post_event(on_upload, to_binary_event(tick)).status_code == 202
    video = video_of(videos, token, upload_url)
    assert video["status"] == "failed"
    assert video["error"]["code"] == "upload_expired"
    assert head(upload_url, token).status_code == 410
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"uploads/{video_id}/").get("KeyCount") == 0
    pending = [u for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) if video_id in u["Key"]]
    assert pending == []


def test_a_source_whose_processing_was_given_up_fails_on_the_cloud_adapters(cloud, lambda_function):
    # An upload that landed: its video is processing, and its storage event is what on-upload could not
    # handle. Lambda keeps such an event in the failed-events queue, whose consumer is dead-letters.
    token = cloud_sign_in(cloud, BOB)
    upload_url = create_upload(cloud["upload"], token, 3)
    assert patch_once(upload_url, token, 0, b"abc").status_code == 204
    assert video_of(cloud["videos"], token, upload_url)["status"] == "processing"
    video_id = upload_url.rsplit("/", 1)[-1]
    notification = copy.deepcopy(event_json("s3-object-created.json"))
    notification["Records"][0]["s3"]["bucket"]["name"] = cloud["names"]["sources"]
    notification["Records"][0]["s3"]["object"]["key"] = f"sources/{video_id}"

    api, process = lambda_function("dead-letters", cloud["env"])
    failed_event, noise = sqs_record(json.dumps(notification)), sqs_record("not a letter")
    kind, response = api.invoke({"Records": [failed_event, noise]})
    assert (kind, response) == ("response", {"batchItemFailures": []})

    video = video_of(cloud["videos"], token, upload_url)
    assert video["status"] == "failed"
    assert video["error"]["code"] == "processing_failed"
    assert process.alive()
