"""The catalog (`api-videos`): search by words and by owner, owner-only edits and deletes, with the
clear problems bad input gets. streamgate-local on embedded storage, then the cloud adapters (DynamoDB and
S3 on the AWS emulator) with api-upload and api-videos as Knative services."""

import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from tusclient import client as tus

from test_playback import upload_ready_video
from test_uploads import cloud, cloud_sign_in, create_upload, head, video_file  # noqa: F401 (fixture)
from wallets import ALICE, BOB, bearer, sign_in

PASS_NFT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def search(url: str, token: str | None = None, **params) -> requests.Response:
    return requests.get(f"{url}/v1/videos", params=params, headers=bearer(token) if token else {}, timeout=10)


def found(url: str, q: str, **params) -> list[str]:
    answer = search(url, q=q, **params)
    assert answer.status_code == 200, answer.text
    return [video["id"] for video in answer.json()["items"]]


def patch(url: str, video_id: str, token: str | None, body) -> requests.Response:
    headers = bearer(token) if token else {}
    return requests.patch(f"{url}/v1/videos/{video_id}", json=body, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """streamgate-local with two ready videos of Alice's; yields (URL, data dir, Alice's token, Bob's
    token, [lisbon, market] ids). Chain 31337 is configured (its node is not running), so rules can name it."""
    import conftest

    data = tmp_path_factory.mktemp("catalog")
    settings = {"STREAMGATE_LADDER": "360p", "STREAMGATE_RPC_31337": "http://127.0.0.1:9"}
    url, process = conftest.spawn_local(data, settings)
    alice, bob = sign_in(url, ALICE), sign_in(url, BOB)
    source = tmp_path_factory.mktemp("sources")
    lisbon = upload_ready_video(url, alice, source / "lisbon.mp4", seconds=2)
    assert patch(url, lisbon, alice, {"title": "Café tour in Lisbon", "description": "Pastéis at dawn"}).ok
    market = upload_ready_video(url, alice, source / "market.mp4", seconds=2)
    assert patch(url, market, alice, {"title": "Night market food tour", "tags": ["Street food"]}).ok
    yield url, data / "data", alice, bob, [lisbon, market]
    assert process.terminate() == 0


def test_search_folds_case_and_accents_and_ranks_by_matches(catalog):
    url, _, _, _, (lisbon, market) = catalog
    assert found(url, "cafe") == [lisbon]
    assert found(url, "CAFÉ TO") == [lisbon, market], "the last word is matched as a prefix; both words rank first"
    assert found(url, "pasteis") == [lisbon], "descriptions are searched"
    assert found(url, "street") == [market], "tags are searched"
    assert found(url, "tour") == [market, lisbon], "newest first among equals"
    assert found(url, "tour cafe") == [lisbon, market], "more matching words rank first"
    assert found(url, "tour ") == [market, lisbon]
    assert found(url, "tourism ") == []
    assert found(url, "zebra") == []


def test_listings_page_with_cursors_and_check_their_parameters(catalog):
    url, _, alice, _, (lisbon, market) = catalog
    first = search(url, q="tour", limit=1).json()
    assert [v["id"] for v in first["items"]] == [market]
    assert first["items"][0].get("source") is None, "listings do not show source files"
    second = search(url, q="tour", limit=1, cursor=first["nextCursor"]).json()
    assert [v["id"] for v in second["items"]] == [lisbon]
    assert second["nextCursor"] is None

    for params, code in [
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "101"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"owner": "alice"}, "invalid_owner"),
        ({"q": "x" * 201}, "invalid_query"),
        ({"q": " ".join("abcdefghi")}, "invalid_query"),
        ({"sort": "views"}, "invalid_query"),
        ({"cursor": "garbage"}, "invalid_cursor"),
        ({"q": "cafe", "cursor": first["nextCursor"]}, "invalid_cursor"),
    ]:
        answer = search(url, **params)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == code, params

    # An owner sees their unfinished uploads too; others see ready videos only.
    unfinished = create_upload(url, alice, 1000).rstrip("/").rsplit("/", 1)[-1]
    owner = ALICE.address.lower()
    mine = [v["id"] for v in search(url, alice, owner=owner).json()["items"]]
    assert mine[0] == unfinished and set(mine) >= {lisbon, market}
    theirs = [v["id"] for v in search(url, owner=owner).json()["items"]]
    assert unfinished not in theirs and set(theirs) >= {lisbon, market}
    paged, cursor = [], None
    while True:
        page = search(url, alice, owner=owner, limit=1, **({"cursor": cursor} if cursor else {})).json()
        paged += [v["id"] for v in page["items"]]
        if not (cursor := page["nextCursor"]):
            break
    assert paged == mine, "pages of one item give the same listing"
    assert requests.delete(f"{url}/v1/videos/{unfinished}", headers=bearer(alice), timeout=10).status_code == 204


def test_only_the_owner_edits_and_edits_are_checked(catalog):
    url, _, alice, bob, (lisbon, _) = catalog
    assert patch(url, lisbon, None, {"title": "Mine now"}).status_code == 401
    answer = patch(url, lisbon, bob, {"title": "Mine now"})
    assert answer.status_code == 403 and answer.json()["code"] == "not_owner"
    answer = patch(url, "not-an-id", alice, {"title": "x"})
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_id"
    answer = patch(url, "0" * 32, alice, {"title": "x"})
    assert answer.status_code == 404

    for body, code in [
        ({"title": "t" * 201}, "invalid_metadata"),
        ({"title": "  "}, "invalid_metadata"),
        ({"description": "d" * 5001}, "invalid_metadata"),
        ({"tags": [f"t{n}" for n in range(21)]}, "invalid_metadata"),
        ({"tags": ["t" * 41]}, "invalid_metadata"),
        ({"owner": ALICE.address}, "malformed_json"),
        ({"status": "ready"}, "malformed_json"),
        ({"access": {"type": "token", "chainId": 424242, "contract": PASS_NFT, "standard": "erc721"}}, "invalid_access"),
        ("[]", "malformed_json"),
    ]:
        answer = patch(url, lisbon, alice, body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["code"] == code, (body, answer.json())
    video = requests.get(f"{url}/v1/videos/{lisbon}", timeout=10).json()
    assert video["title"] == "Café tour in Lisbon", "refused edits change nothing"

    edited = patch(url, lisbon, alice, {"title": "Tram 28 in Lisbon", "tags": ["trams", "Trams", "Portugal"]})
    assert edited.status_code == 200, edited.text
    assert edited.json()["tags"] == ["trams", "Portugal"]
    assert found(url, "cafe") == [], "the old title's words are gone from search"
    assert found(url, "tram 28") == [lisbon]
    assert found(url, "portug") == [lisbon]
    assert patch(url, lisbon, alice, {"title": "Café tour in Lisbon", "tags": []}).ok


def test_a_ready_video_made_gated_gets_its_encrypted_copy(catalog):
    url, _, alice, bob, (_, market) = catalog
    rule = {"type": "token", "chainId": 31337, "contract": PASS_NFT, "standard": "erc721"}
    answer = patch(url, market, alice, {"access": rule})
    assert answer.status_code == 200, answer.text
    access = answer.json()["access"]
    assert (access["type"], access["chainId"], access["contract"], access["standard"]) == (
        "token",
        31337,
        PASS_NFT,
        "erc721",
    )
    deadline = time.monotonic() + 60
    while not requests.get(f"{url}/v1/videos/{market}", timeout=10).json().get("encryptedHls"):
        assert time.monotonic() < deadline, "finalize did not make the encrypted copy"
        time.sleep(0.2)
    playback = requests.get(f"{url}/v1/videos/{market}/playback", headers=bearer(alice), timeout=10)
    assert playback.status_code == 200 and playback.json()["hlsEncrypted"], playback.text
    assert requests.get(f"{url}/v1/keys/{market}", headers=bearer(alice), timeout=10).status_code == 200
    assert requests.get(f"{url}/v1/videos/{market}/playback", timeout=10).status_code == 401
    assert found(url, "night market") == [market], "gated videos are still listed"
    assert patch(url, market, alice, {"access": {"type": "public"}}).ok
    assert requests.get(f"{url}/v1/videos/{market}/playback", timeout=10).status_code == 200


def test_delete_takes_everything_and_only_the_owner_may(catalog):
    url, data_dir, alice, bob, (lisbon, _) = catalog
    stored = [p for p in Path(data_dir).rglob("*") if p.is_file() and lisbon in str(p)]
    assert len(stored) > 5, "the source and the media are on disk"
    answer = requests.delete(f"{url}/v1/videos/{lisbon}", headers=bearer(bob), timeout=10)
    assert answer.status_code == 403 and answer.json()["code"] == "not_owner"
    assert requests.delete(f"{url}/v1/videos/{lisbon}", timeout=10).status_code == 401
    assert requests.delete(f"{url}/v1/videos/{lisbon}", headers=bearer(alice), timeout=10).status_code == 204
    assert requests.get(f"{url}/v1/videos/{lisbon}", timeout=10).status_code == 404
    assert requests.get(f"{url}/v1/videos/{lisbon}/playback", timeout=10).status_code == 404
    assert found(url, "lisbon") == []
    assert lisbon not in [v["id"] for v in search(url, alice, owner=ALICE.address).json()["items"]]
    left = [p for p in Path(data_dir).rglob("*") if p.is_file() and lisbon in str(p)]
    assert left == [], left
    assert requests.delete(f"{url}/v1/videos/{lisbon}", headers=bearer(alice), timeout=10).status_code == 404


def test_deleting_an_unfinished_upload_ends_it(catalog, tmp_path):
    url, data_dir, alice, _, _ = catalog
    path = tmp_path / "partial.mp4"
    video_file(path, 3 * 1024 * 1024, seed=9)
    uploader = tus.TusClient(f"{url}/v1/uploads", headers=bearer(alice)).uploader(
        str(path), chunk_size=1024 * 1024, metadata={"filename": "partial.mp4"}
    )
    uploader.upload(stop_at=1024 * 1024)
    video_id = uploader.url.rstrip("/").rsplit("/", 1)[-1]
    assert requests.delete(f"{url}/v1/videos/{video_id}", headers=bearer(alice), timeout=10).status_code == 204
    assert head(urljoin(url, uploader.url), alice).status_code in (404, 410)
    assert [p for p in Path(data_dir).rglob("*") if p.is_file() and video_id in str(p)] == []


def test_catalog_on_the_cloud_adapters(cloud, tmp_path):  # noqa: F811 (fixture)
    """api-videos on DynamoDB and S3: an owner lists, edits and deletes an unfinished upload's video; its
    records and multipart upload are gone afterwards."""
    token = cloud_sign_in(cloud, ALICE)
    path = tmp_path / "cloud-catalog.mp4"
    video_file(path, 6 * 1024 * 1024, seed=4)
    uploader = tus.TusClient(f"{cloud['upload']}/v1/uploads", headers=bearer(token)).uploader(
        str(path), chunk_size=5 * 1024 * 1024, metadata={"filename": "cloud-catalog.mp4"}
    )
    uploader.upload(stop_at=5 * 1024 * 1024)
    video_id = uploader.url.rstrip("/").rsplit("/", 1)[-1]
    api = cloud["videos"]
    mine = search(api, token, owner=ALICE.address).json()["items"]
    assert [v["id"] for v in mine] == [video_id] and mine[0]["status"] == "uploading"
    assert search(api, owner=ALICE.address).json()["items"] == [], "not ready: only its owner sees it"
    edited = patch(api, video_id, token, {"title": "Cloud edit", "tags": ["emulated"]})
    assert edited.status_code == 200, edited.text
    dynamodb = cloud["session"].client("dynamodb", endpoint_url=cloud["endpoint"])
    table = cloud["names"]["table"]
    record = dynamodb.get_item(TableName=table, Key={"pk": {"S": f"video#{video_id}"}, "sk": {"S": "meta"}})
    assert record["Item"]["title"]["S"] == "Cloud edit"
    assert record["Item"]["gsi1pk"]["S"] == f"owner#{ALICE.address}"
    s3 = cloud["session"].client("s3", endpoint_url=cloud["endpoint"])
    assert len(s3.list_multipart_uploads(Bucket=cloud["names"]["sources"]).get("Uploads", [])) == 1

    assert requests.delete(f"{api}/v1/videos/{video_id}", headers=bearer(token), timeout=10).status_code == 204
    assert requests.get(f"{api}/v1/videos/{video_id}", timeout=10).status_code == 404
    items = dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"video#{video_id}"}},
    )["Items"]
    assert items == []
    assert s3.list_multipart_uploads(Bucket=cloud["names"]["sources"]).get("Uploads", []) == []
    assert head(uploader.url, token).status_code in (404, 410)
