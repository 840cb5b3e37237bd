"""Public playback through signed URLs: an upload becomes a ready stream in streamgate-local, its HLS and
DASH manifests are read by independent parsers (m3u8, mpegdash) and played to the end by ffmpeg over
HTTP, and every playlist and segment is refused once its signature is altered, missing or expired. Gated
videos: test_gated_playback.py."""

import json
import subprocess
import time
from pathlib import Path

import m3u8
import pytest
import requests
from mpegdash.parser import MPEGDASHParser
from tusclient import client as tus

from conftest import ROOT
from test_uploads import real_video, wait_for_status
from wallets import ALICE, BOB, bearer, sign_in


def upload_ready_video(url: str, token: str, path: Path, seconds: int = 6, access: dict | None = None) -> str:
    real_video(path, seconds)
    metadata = {"filename": path.name, "title": "Playback"}
    if access:
        metadata["access"] = json.dumps(access)
    uploader = tus.TusClient(f"{url}/v1/uploads", headers=bearer(token)).uploader(
        str(path), chunk_size=8 * 1024 * 1024, metadata=metadata
    )
    uploader.upload()
    video = wait_for_status(url, token, uploader.url, "ready", timeout=180)
    assert video["status"] == "ready", video
    return video["id"]


def frames_played(url: str) -> int:
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", url, "-map", "0:v:0", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return sum(1 for line in done.stdout.splitlines() if not line.startswith("#"))


@pytest.fixture(scope="module")
def ready(tmp_path_factory):
    """streamgate-local with one ready public video; yields (base URL, owner token, video id)."""
    import conftest

    url, process = conftest.spawn_local(tmp_path_factory.mktemp("playback"), {"STREAMGATE_LADDER": "720p,360p"})
    token = sign_in(url, ALICE)
    video_id = upload_ready_video(url, token, tmp_path_factory.mktemp("source") / "talk.mp4")
    yield url, token, video_id
    assert process.terminate() == 0


def test_public_videos_play_through_signed_hls_and_dash(ready):
    url, _, video_id = ready
    answer = requests.get(f"{url}/v1/videos/{video_id}/playback", timeout=10)
    assert answer.status_code == 200, answer.text
    urls = answer.json()
    assert urls["expiresAt"]

    master = m3u8.loads(requests.get(urls["hls"], timeout=10).text, uri=urls["hls"])
    assert master.is_variant
    assert [p.stream_info.resolution for p in master.playlists] == [(1280, 720), (640, 360)]
    for variant in master.playlists:
        info = variant.stream_info
        assert info.bandwidth >= info.average_bandwidth > 0
        assert info.codecs.startswith("avc1.") and info.codecs.endswith("mp4a.40.2")
        assert round(info.frame_rate) == 30
        assert info.audio == "aac"
    assert master.media[0].type == "AUDIO"
    media = m3u8.loads(requests.get(master.playlists[1].absolute_uri, timeout=10).text)
    assert media.is_endlist and media.playlist_type == "vod"
    assert media.segment_map[0].uri == "init.mp4"
    assert abs(sum(s.duration for s in media.segments) - 6) < 0.1

    mpd = MPEGDASHParser.parse(requests.get(urls["dash"], timeout=10).text)
    assert mpd.type == "static"
    video_set, audio_set = mpd.periods[0].adaptation_sets
    assert [r.id for r in video_set.representations] == ["720p", "360p"]
    assert audio_set.representations[0].codecs == "mp4a.40.2"

    # ffmpeg plays both over HTTP to the end: 6 s at 30 fps.
    assert frames_played(urls["hls"]) == 180
    assert frames_played(urls["dash"]) == 180


def test_altered_or_missing_signatures_are_refused(ready):
    url, _, video_id = ready
    hls = requests.get(f"{url}/v1/videos/{video_id}/playback", timeout=10).json()["hls"]
    expires, signature = hls.split("/v1/media/")[1].split("/")[0].split(".")
    segment = hls.replace("master.m3u8", "360p/seg-00000.m4s")
    assert requests.get(segment, timeout=10).status_code == 200
    forged_signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for forged, code in [
        (segment.replace(signature, forged_signature), "signature_invalid"),
        (segment.replace(f"{expires}.", f"{int(expires) + 3600}."), "signature_invalid"),
        (segment.replace(f"{expires}.{signature}", "0"), "signature_missing"),
        (hls.replace(video_id, "0" * 32), "signature_invalid"),
    ]:
        answer = requests.get(forged, timeout=10)
        assert answer.status_code == 403, forged
        assert answer.json()["code"] == code, forged


def test_playback_urls_expire(start_local, tmp_path):
    url, _ = start_local({"STREAMGATE_PLAYBACK_TTL": "2", "STREAMGATE_LADDER": "240p"})
    token = sign_in(url, BOB)
    video_id = upload_ready_video(url, token, tmp_path / "short.mp4", seconds=2)
    hls = requests.get(f"{url}/v1/videos/{video_id}/playback", timeout=10).json()["hls"]
    assert requests.get(hls, timeout=10).status_code == 200
    time.sleep(2.5)
    answer = requests.get(hls, timeout=10)
    assert answer.status_code == 403
    assert answer.json()["code"] == "signature_expired"


def test_unfinished_videos(ready):
    url, owner, _ = ready
    assert requests.get(f"{url}/v1/videos/{'0' * 32}/playback", timeout=10).status_code == 404
    # An upload still under way is not ready.
    created = requests.post(
        f"{url}/v1/uploads",
        headers={"tus-resumable": "1.0.0", "upload-length": "100"} | bearer(owner),
        timeout=10,
    )
    pending = created.headers["location"].rsplit("/", 1)[-1]
    answer = requests.get(f"{url}/v1/videos/{pending}/playback", headers=bearer(owner), timeout=10)
    assert answer.status_code == 409
    assert answer.json()["code"] == "not_ready"


def test_hls_js_plays_it_in_headless_chromium(ready):
    """Debian's Chromium decodes H.264 and AAC: hls.js plays the signed stream in it."""
    url, _, video_id = ready
    hls = requests.get(f"{url}/v1/videos/{video_id}/playback", timeout=10).json()["hls"]
    player = ROOT / "tests" / "clients" / "play-hls.mjs"
    if not Path("/usr/bin/chromium").exists() or not (ROOT / "tests" / "clients" / "node_modules" / "hls.js").exists():
        pytest.fail("Chromium or hls.js is missing: run tests/setup")
    done = subprocess.run(["node", str(player), hls, "--seconds", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] is None, result
    assert result["currentTime"] >= 3
    assert result["levels"] == 2
