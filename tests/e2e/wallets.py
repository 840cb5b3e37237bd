"""Sign-In with Ethereum as an outside client does it: messages built by siwe-py, signed by eth-account."""

from datetime import datetime, timezone
from urllib.parse import urlparse

import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from siwe import SiweMessage

ALICE = Account.from_key("0x" + "a1" * 32)
BOB = Account.from_key("0x" + "b2" * 32)
MALLORY = Account.from_key("0x" + "c3" * 32)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def nonce(url: str) -> str:
    answer = requests.post(f"{url}/v1/auth/nonce", timeout=5)
    assert answer.status_code == 200
    value = answer.json()["nonce"]
    assert len(value) >= 16 and value.isalnum()
    return value


def message(url: str, account, **overrides) -> str:
    domain = urlparse(url).netloc
    fields = dict(
        domain=domain,
        address=account.address,
        uri=f"{url}/login",
        version="1",
        chain_id=1,
        nonce=overrides.pop("nonce", None) or nonce(url),
        issued_at=iso(datetime.now(timezone.utc)),
        statement="Sign in to StreamGate",
    )
    fields.update(overrides)
    return SiweMessage(**fields).prepare_message()


def sign(account, text: str) -> str:
    signature = Account.sign_message(encode_defunct(text=text), account.key).signature.hex()
    return signature if signature.startswith("0x") else "0x" + signature


def verify(url: str, text: str, signature: str) -> requests.Response:
    return requests.post(f"{url}/v1/auth/verify", json={"message": text, "signature": signature}, timeout=5)


def sign_in(url: str, account) -> str:
    text = message(url, account)
    answer = verify(url, text, sign(account, text))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["address"] == account.address
    return body["token"]


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}
