"""Sign-In with Ethereum against streamgate-local with outside clients: messages built by siwe-py, signed
by eth-account."""

from datetime import datetime, timedelta, timezone

import pytest
import requests

from wallets import ALICE, BOB, MALLORY, bearer, iso, message, nonce, sign, sign_in, verify


def test_sign_in_session_and_logout(local_server):
    token = sign_in(local_server, ALICE)
    session = requests.get(f"{local_server}/v1/auth/session", headers=bearer(token), timeout=5)
    assert session.status_code == 200
    assert session.json()["address"] == ALICE.address
    assert session.json()["wallets"] == [ALICE.address]
    assert requests.post(f"{local_server}/v1/auth/logout", headers=bearer(token), timeout=5).status_code == 204
    after = requests.get(f"{local_server}/v1/auth/session", headers=bearer(token), timeout=5)
    assert after.status_code == 401
    assert after.json()["code"] == "session_revoked"
    assert after.headers["www-authenticate"] == "Bearer"


def refusal(answer: requests.Response) -> str:
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"] == f"https://streamgate.dev/problems/{problem['code']}"
    return problem["code"]


@pytest.mark.parametrize(
    "overrides, code",
    [
        (dict(domain="evil.example", uri="https://evil.example/login"), "domain_mismatch"),
        (dict(uri="https://evil.example/login"), "uri_mismatch"),
        (dict(chain_id=999999), "chain_unsupported"),
        (dict(issued_at=iso(datetime.now(timezone.utc) + timedelta(minutes=10))), "issued_in_future"),
        (dict(expiration_time=iso(datetime.now(timezone.utc) - timedelta(seconds=1))), "expired"),
        (dict(not_before=iso(datetime.now(timezone.utc) + timedelta(minutes=10))), "not_yet_valid"),
        (dict(nonce="neverIssuedByUs42"), "nonce_unknown"),
    ],
)
def test_every_failed_check_is_a_401_with_its_code(local_server, overrides, code):
    text = message(local_server, ALICE, **overrides)
    assert refusal(verify(local_server, text, sign(ALICE, text))) == code


def test_signatures_and_replays(local_server):
    text = message(local_server, ALICE)
    assert refusal(verify(local_server, text, sign(MALLORY, text))) == "invalid_signature"
    assert refusal(verify(local_server, text, "0xdeadbeef")) == "invalid_signature"
    signature = sign(ALICE, text)
    assert verify(local_server, text, signature).status_code == 200
    assert refusal(verify(local_server, text, signature)) == "nonce_reused"


def test_malformed_input(local_server):
    text = message(local_server, ALICE)
    lowercase = text.replace(ALICE.address, ALICE.address.lower())
    assert refusal(verify(local_server, lowercase, sign(ALICE, lowercase))) == "address_not_checksummed"
    assert refusal(verify(local_server, "hello\nworld", "0x00")) == "malformed_message"
    broken = requests.post(f"{local_server}/v1/auth/verify", data="{not json", headers={"content-type": "application/json"}, timeout=5)
    assert broken.status_code == 400
    assert broken.json()["code"] == "malformed_json"
    huge = requests.post(f"{local_server}/v1/auth/verify", json={"message": "x" * 100_000, "signature": "0x"}, timeout=5)
    assert huge.status_code == 413


def test_linked_wallets(local_server):
    token = sign_in(local_server, ALICE)
    text = message(local_server, BOB)
    linked = requests.post(f"{local_server}/v1/wallets", json={"message": text, "signature": sign(BOB, text)}, headers=bearer(token), timeout=5)
    assert linked.status_code == 200, linked.text
    assert sorted(linked.json()["wallets"]) == sorted([ALICE.address, BOB.address])

    # Bob's own sign-in reaches the same account.
    bob_token = sign_in(local_server, BOB)
    wallets = requests.get(f"{local_server}/v1/wallets", headers=bearer(bob_token), timeout=5).json()["wallets"]
    assert sorted(wallets) == sorted([ALICE.address, BOB.address])

    # Mallory cannot take Bob's wallet, nor unlink it.
    mallory = sign_in(local_server, MALLORY)
    text = message(local_server, BOB)
    taken = requests.post(f"{local_server}/v1/wallets", json={"message": text, "signature": sign(BOB, text)}, headers=bearer(mallory), timeout=5)
    assert taken.status_code == 409 and taken.json()["code"] == "wallet_taken"
    assert requests.delete(f"{local_server}/v1/wallets/{BOB.address}", headers=bearer(mallory), timeout=5).status_code == 404

    assert requests.delete(f"{local_server}/v1/wallets/{BOB.address}", headers=bearer(token), timeout=5).status_code == 204
    assert requests.get(f"{local_server}/v1/wallets", headers=bearer(token), timeout=5).json()["wallets"] == [ALICE.address]


def test_anonymous_and_forged_tokens(local_server):
    assert requests.get(f"{local_server}/v1/auth/session", timeout=5).json()["code"] == "unauthenticated"
    forged = requests.get(f"{local_server}/v1/auth/session", headers=bearer("v4.public.eyJmb3JnZWQiOnRydWV9"), timeout=5)
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_token"
