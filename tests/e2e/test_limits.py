"""Rate limits: per client address at every HTTP function, per account on authenticated calls, and sign-in
calls per client address, counted in the store so that the limit holds across instances."""

import copy
import json
import time

import requests

from conftest import event_json
from wallets import ALICE, BOB, bearer, message, sign, sign_in, verify


def refused(answer) -> int:
    """Checks a `429 rate_limited` problem; returns its `Retry-After` seconds."""
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["code"] == "rate_limited" and body["status"] == 429
    retry = int(answer.headers["retry-after"])
    assert 1 <= retry <= 60
    return retry


def chains(url: str, forwarded: str | None = None) -> requests.Response:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return requests.get(f"{url}/v1/chains", headers=headers, timeout=5)


def test_an_address_past_its_limit_is_refused_whatever_it_forwards(start_local):
    # 8 a minute, a quarter of them at once: 2.
    url, _ = start_local({"STREAMGATE_RATE_LIMIT_ADDRESS": "8"})
    assert chains(url).status_code == 200
    assert chains(url).status_code == 200
    # The next allowance comes in 7.5 s.
    assert refused(chains(url)) in (7, 8)
    # The peer is no proxy of ours: what it writes in X-Forwarded-For is not believed.
    refused(chains(url, forwarded="198.51.100.1"))
    refused(requests.post(f"{url}/v1/auth/nonce", timeout=5))
    # Health checks come from the platform and are never refused.
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


def test_behind_a_trusted_proxy_each_forwarded_client_is_counted_on_its_own(start_local):
    url, _ = start_local({"STREAMGATE_RATE_LIMIT_ADDRESS": "8", "STREAMGATE_TRUSTED_PROXIES": "127.0.0.0/8"})
    for client in ("198.51.100.1", "198.51.100.2"):
        # Each client wrote an address of its own choosing first; the proxy appended the real one.
        assert chains(url, forwarded=f"6.6.6.6, {client}").status_code == 200
        assert chains(url, forwarded=f"6.6.6.7, {client}").status_code == 200
        refused(chains(url, forwarded=f"6.6.6.8, {client}"))
    # A request from the proxy's own network, with nothing forwarded, is the proxy's.
    assert chains(url).status_code == 200


def test_an_account_past_its_limit_is_refused_and_others_are_not(start_local):
    # 4 calls a minute: one at once. Sign-in calls are not authenticated ones.
    url, _ = start_local({"STREAMGATE_RATE_LIMIT_ACCOUNT": "4"})
    alice, bob = sign_in(url, ALICE), sign_in(url, BOB)
    assert requests.get(f"{url}/v1/auth/session", headers=bearer(alice), timeout=5).status_code == 200
    refused(requests.get(f"{url}/v1/auth/session", headers=bearer(alice), timeout=5))
    refused(requests.get(f"{url}/v1/wallets", headers=bearer(alice), timeout=5))
    assert requests.get(f"{url}/v1/auth/session", headers=bearer(bob), timeout=5).status_code == 200
    # Anonymous calls are not the account's.
    assert requests.get(f"{url}/v1/videos", timeout=5).status_code == 200


def test_sign_in_calls_are_counted_across_instances(aws_stack, knative):
    env = aws_stack["env"] | {
        "STREAMGATE_DOMAIN": "streamgate.test",
        "STREAMGATE_RATE_LIMIT_SIGN_IN": "4",
        "STREAMGATE_TRUSTED_PROXIES": "127.0.0.1",
    }
    first, _ = knative("api-auth", env)
    second, _ = knative("api-auth", env)
    # The count is kept by the minute: start well inside one.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    text = message(first, ALICE, domain="streamgate.test", uri="https://streamgate.test/login")
    # That took a nonce from `first`: three more calls, alternating between the two instances.
    assert requests.post(f"{second}/v1/auth/nonce", timeout=5).status_code == 200
    assert requests.post(f"{first}/v1/auth/nonce", timeout=5).status_code == 200
    assert requests.post(f"{second}/v1/auth/nonce", timeout=5).status_code == 200
    refused(requests.post(f"{first}/v1/auth/nonce", timeout=5))
    # A good signature is refused too, before it is checked: its nonce stays unused.
    refused(verify(second, text, sign(ALICE, text)))
    # Another client (through the trusted proxy) has its own count, and signs in with that nonce.
    other = {"x-forwarded-for": "198.51.100.9"}
    answer = requests.post(
        f"{second}/v1/auth/verify", json={"message": text, "signature": sign(ALICE, text)}, headers=other, timeout=5
    )
    assert answer.status_code == 200, answer.text


def test_on_lambda_the_function_urls_source_address_is_the_client(lambda_function):
    api, process = lambda_function("api-chains", {"STREAMGATE_RATE_LIMIT_ADDRESS": "4"})

    def call(source: str, forwarded: str) -> dict:
        event = copy.deepcopy(event_json("function-url-healthz.json"))
        event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/chains"
        event["requestContext"]["http"]["sourceIp"] = source
        event["headers"]["x-forwarded-for"] = forwarded
        kind, response = api.invoke(event)
        assert kind == "response", response
        return response

    assert call("203.0.113.10", "203.0.113.10")["statusCode"] == 200
    limited = call("203.0.113.10", "198.51.100.1")
    assert limited["statusCode"] == 429
    assert json.loads(limited["body"])["code"] == "rate_limited"
    assert int(limited["headers"]["retry-after"]) in (14, 15)
    assert call("203.0.113.11", "203.0.113.10")["statusCode"] == 200
    assert process.alive()
