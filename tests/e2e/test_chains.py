"""Gas prices and deployments tracked to their end, on a real chain (anvil): transactions signed by
eth-account and sent by web3.py, blocks mined on demand, streamgate-local's gas-monitor and tx-tracker
running on a one-second schedule."""

import re
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from eth_account import Account

from conftest import contract_artefact, event_json, free_port
from test_gated_playback import CREATOR, DEPLOYER, HOLDER, Chain
from test_uploads import cloud_sign_in
from wallets import bearer, sign_in

# Creation code whose constructor reverts at once: PUSH1 0, PUSH1 0, REVERT.
REVERTING_CONSTRUCTOR = "0x60006000fd"
GWEI = 10**9


@pytest.fixture
def chain():
    chain = Chain(31337)
    yield chain
    chain.stop()


def start(start_local, rpc_url: str) -> str:
    url, _ = start_local(
        {
            "STREAMGATE_RPC_31337": rpc_url,
            "STREAMGATE_SCHEDULE_INTERVAL": "1",
            "STREAMGATE_CHAIN_TIMEOUT_MS": "1000",
        }
    )
    return url


def gwei(wei: int) -> str:
    whole, fraction = divmod(wei, GWEI)
    return f"{whole}.{fraction:09d}".rstrip("0").rstrip(".") if fraction else str(whole)


def metric(url: str, name: str, labels: str = "") -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    found = re.search(rf"^{name}{re.escape(labels)} ([\d.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def eventually(check, seconds: float = 15):
    """Polls `check` until it returns something true; returns that."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.2)


def rpc(chain: Chain, method: str, *params):
    answer = chain.web3.provider.make_request(method, list(params))
    assert "error" not in answer, answer
    return answer.get("result")


def send_raw(chain: Chain, account, transaction: dict, nonce: int | None = None, tip: int = GWEI) -> str:
    """Signs and sends without waiting for a block; returns the hash."""
    transaction = {
        "chainId": chain.chain_id,
        "nonce": chain.web3.eth.get_transaction_count(account.address) if nonce is None else nonce,
        "gas": 3_000_000,
        "maxFeePerGas": 20 * GWEI,
        "maxPriorityFeePerGas": tip,
        "value": 0,
    } | transaction
    signed = account.sign_transaction(transaction)
    return "0x" + chain.web3.eth.send_raw_transaction(signed.raw_transaction).hex().removeprefix("0x")


def creation(name: str) -> dict:
    return {"data": contract_artefact(name)["bytecode"]}


def register(url: str, token: str | None, **body) -> requests.Response:
    headers = bearer(token) if token else {}
    return requests.post(f"{url}/v1/contracts", json={"chainId": 31337} | body, headers=headers, timeout=10)


def test_gas_prices_are_the_chains_fee_history(chain, start_local):
    for _ in range(3):
        chain.send(DEPLOYER, {"to": HOLDER.address, "value": 1})
    url = start(start_local, chain.url)
    # gas-monitor reads the chain on its schedule, before anyone asks.
    eventually(lambda: metric(url, "streamgate_gas_base_fee_gwei", '{chain="31337"}') > 0)

    answer = requests.get(f"{url}/v1/gas/31337", timeout=10)
    assert answer.status_code == 200, answer.text
    gas = answer.json()
    latest = chain.web3.eth.block_number
    history = chain.web3.eth.fee_history(20, latest, [10, 50, 90])
    assert gas["chainId"] == 31337
    assert gas["blockNumber"] == latest
    assert gas["baseFeeGwei"] == gwei(history["baseFeePerGas"][-1])
    # Every transaction paid a tip of 1 gwei.
    assert gas["priorityFeeGwei"] == {"slow": "1", "standard": "1", "fast": "1"}

    for path, status, code in [
        ("99999", 404, "chain_unknown"),
        ("137", 404, "chain_not_configured"),
        ("abc", 400, "invalid_path"),
    ]:
        answer = requests.get(f"{url}/v1/gas/{path}", timeout=10)
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
        assert answer.headers["content-type"] == "application/problem+json"

    # The chain goes away: the last reading, once stale, is still better than none, and says its age.
    chain.stop()
    time.sleep(2.5)
    answer = requests.get(f"{url}/v1/gas/31337", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["blockNumber"] == latest
    observed = datetime.fromisoformat(answer.json()["observedAt"].replace("Z", "+00:00"))
    assert datetime.now(timezone.utc) - observed >= timedelta(seconds=2)

    # With no reading and no chain, a clear 503.
    dead = start(start_local, f"http://127.0.0.1:{free_port()}")
    answer = requests.get(f"{dead}/v1/gas/31337", timeout=10)
    assert (answer.status_code, answer.json()["code"]) == (503, "chain_unavailable"), answer.text
    assert answer.headers["retry-after"] == "5"


def test_a_deployment_is_tracked_until_confirmed(chain, start_local):
    url = start(start_local, chain.url)
    token = sign_in(url, CREATOR)
    rpc(chain, "evm_setAutomine", False)
    tx_hash = send_raw(chain, DEPLOYER, creation("PassNFT"))

    assert register(url, None, txHash=tx_hash).status_code == 401
    # Any account may follow a deployment; only one linked to the wallet that sent it names it.
    refused = register(url, token, txHash=tx_hash, name="Season passes")
    assert (refused.status_code, refused.json()["code"]) == (403, "not_the_deployer"), refused.text
    answer = register(url, token, txHash=tx_hash)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body == {
        "chainId": 31337,
        "txHash": tx_hash,
        "status": "pending",
        "confirmations": 0,
        "blockNumber": None,
        "address": None,
        "registeredAt": body["registeredAt"],
    }
    assert answer.headers["location"] == f"/v1/transactions/31337/{tx_hash}"
    refused = register(url, token, txHash=tx_hash, name="Not mine")
    assert (refused.status_code, refused.json()["code"]) == (403, "not_the_deployer"), refused.text
    deployer = sign_in(url, DEPLOYER)
    for name in ("Passes", "Season passes"):
        named = register(url, deployer, txHash=tx_hash, name=name)
        assert (named.status_code, named.json().get("name")) == (200, name), named.text
    again = register(url, token, txHash=tx_hash)
    assert (again.status_code, again.json()["name"]) == (200, "Season passes")
    status = requests.get(f"{url}/v1/transactions/31337/{tx_hash}", timeout=10).json()
    assert (status["status"], status["blockNumber"]) == ("pending", None)

    # The block comes; tx-tracker sees it on its own, before anyone asks again.
    finished = metric(url, "streamgate_tracked_transactions_finished_total")
    rpc(chain, "evm_mine")
    eventually(lambda: metric(url, "streamgate_tracked_transactions_finished_total") > finished)

    receipt = chain.web3.eth.get_transaction_receipt(tx_hash)
    for address in (receipt.contractAddress, receipt.contractAddress.lower()):
        answer = requests.get(f"{url}/v1/contracts/31337/{address}", timeout=10)
        assert answer.status_code == 200, answer.text
        contract = answer.json()
        assert contract["status"] == "confirmed"
        assert (contract["blockNumber"], contract["confirmations"]) == (receipt.blockNumber, 1)
        assert (contract["address"], contract["name"]) == (receipt.contractAddress, "Season passes")
    status = requests.get(f"{url}/v1/transactions/31337/{tx_hash}", timeout=10).json()
    assert (status["status"], status["blockNumber"]) == ("confirmed", receipt.blockNumber)

    unknown = "0x" + "00" * 20
    assert requests.get(f"{url}/v1/contracts/31337/{unknown}", timeout=10).status_code == 404
    for address, code in [
        ("not-an-address", "invalid_address"),
        (receipt.contractAddress.removeprefix("0x"), "invalid_address"),
        ("0x" + receipt.contractAddress[2:].swapcase(), "address_not_checksummed"),
    ]:
        answer = requests.get(f"{url}/v1/contracts/31337/{address}", timeout=10)
        assert (answer.status_code, answer.json()["code"]) == (400, code), address


def test_failed_and_dropped_deployments_and_refused_registrations(chain, start_local):
    url = start(start_local, chain.url)
    token = sign_in(url, CREATOR)
    deployer = Account.from_key("0x" + "e1" * 32)
    chain.fund(deployer)

    # A constructor that reverts: in a block, and failed at the chain's depth of 1.
    reverted = send_raw(chain, deployer, {"data": REVERTING_CONSTRUCTOR, "gas": 100_000})
    assert chain.web3.eth.wait_for_transaction_receipt(reverted).status == 0
    answer = register(url, token, txHash=reverted)
    assert (answer.status_code, answer.json()["status"]) == (201, "failed"), answer.text
    # Its deployer names it after the fact: the sender of a transaction in a block is known too.
    named = register(url, sign_in(url, deployer), txHash=reverted, name="First try")
    assert (named.status_code, named.json()["name"], named.json()["status"]) == (200, "First try", "failed"), named.text

    transfer = send_raw(chain, deployer, {"to": HOLDER.address, "value": 1})
    chain.web3.eth.wait_for_transaction_receipt(transfer)
    for body, code in [
        ({"txHash": transfer}, "not_a_deployment"),
        ({"txHash": transfer[:-2]}, "invalid_tx_hash"),
        ({"txHash": transfer.removeprefix("0x")}, "invalid_tx_hash"),
        ({"txHash": transfer, "chainId": 99999}, "chain_unknown"),
        ({"txHash": transfer, "chainId": 137}, "chain_not_configured"),
        ({"txHash": transfer, "extra": 1}, "malformed_json"),
        ({"txHash": transfer, "name": "x" * 101}, "invalid_name"),
        ({"txHash": transfer, "name": "Passes\u202egnp.exe"}, "invalid_name"),
    ]:
        answer = register(url, token, **body)
        assert (answer.status_code, answer.json()["code"]) == (400, code), (body, answer.text)

    # A transaction nobody registered is answered as the chain knows it.
    answer = requests.get(f"{url}/v1/transactions/31337/{transfer}", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "confirmed"
    never = "0x" + "ab" * 32
    assert requests.get(f"{url}/v1/transactions/31337/{never}", timeout=10).status_code == 404
    # Nor can it be named before the chain knows who sent it.
    answer = register(url, token, txHash=never, name="Passes")
    assert (answer.status_code, answer.json()["code"]) == (409, "sender_unknown"), answer.text

    # A deployment replaced by another transaction with its nonce is dropped.
    rpc(chain, "evm_setAutomine", False)
    nonce = chain.web3.eth.get_transaction_count(deployer.address)
    replaced = send_raw(chain, deployer, creation("PassNFT"), nonce=nonce)
    answer = register(url, token, txHash=replaced)
    assert (answer.status_code, answer.json()["status"]) == (201, "pending"), answer.text
    replacement = {"to": HOLDER.address, "value": 1, "maxFeePerGas": 40 * GWEI}
    send_raw(chain, deployer, replacement, nonce=nonce, tip=5 * GWEI)
    finished = metric(url, "streamgate_tracked_transactions_finished_total")
    rpc(chain, "evm_mine")
    assert chain.web3.eth.get_transaction_count(deployer.address) == nonce + 1
    # tx-tracker finds it dropped on its own; then the API says so.
    eventually(lambda: metric(url, "streamgate_tracked_transactions_finished_total") > finished)
    assert requests.get(f"{url}/v1/transactions/31337/{replaced}", timeout=10).json()["status"] == "dropped"


def test_gas_and_deployments_on_the_aws_adapters(chain, aws_stack, knative, lambda_function):
    """api-chains on DynamoDB (moto), gas-monitor and tx-tracker on Lambda woken by their EventBridge
    schedule."""
    env = aws_stack["env"] | {
        "STREAMGATE_DOMAIN": "streamgate.test",
        "STREAMGATE_RPC_31337": chain.url,
        "STREAMGATE_CHAIN_TIMEOUT_MS": "1000",
    }
    cloud = {"auth": knative("api-auth", env)[0]}
    chains, _ = knative("api-chains", env)
    table = aws_stack["session"].client("dynamodb", endpoint_url=aws_stack["endpoint"])
    table_name = aws_stack["names"]["table"]

    def item(pk: str, sk: str) -> dict:
        return table.get_item(TableName=table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}}).get("Item", {})

    # No reading kept yet: api-chains reads the chain itself, and keeps what it read.
    chain.send(DEPLOYER, {"to": HOLDER.address, "value": 1})
    answer = requests.get(f"{chains}/v1/gas/31337", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["priorityFeeGwei"]["standard"] == "1"
    assert item("gas#31337", "latest")["blockNumber"]["N"] == str(chain.web3.eth.block_number)
    # gas-monitor's run keeps the newer block's.
    chain.send(DEPLOYER, {"to": HOLDER.address, "value": 1})
    gas_monitor, _ = lambda_function("gas-monitor", env)
    assert gas_monitor.invoke(event_json("eventbridge-schedule.json"))[0] == "response"
    assert item("gas#31337", "latest")["blockNumber"]["N"] == str(chain.web3.eth.block_number)

    token = cloud_sign_in(cloud, CREATOR)
    rpc(chain, "evm_setAutomine", False)
    tx_hash = send_raw(chain, DEPLOYER, creation("PassNFT"))
    answer = register(chains, token, txHash=tx_hash)
    assert (answer.status_code, answer.json()["status"]) == (201, "pending"), answer.text
    assert item(f"tx#31337#{tx_hash}", "tx")["gsi1pk"]["S"] == "tx#pending"

    rpc(chain, "evm_mine")
    tracker, _ = lambda_function("tx-tracker", env)
    assert tracker.invoke(event_json("eventbridge-schedule.json"))[0] == "response"
    # The tracker found it through the index and wrote it final, out of the index.
    tracked = item(f"tx#31337#{tx_hash}", "tx")
    assert tracked["status"]["S"] == "confirmed"
    assert "gsi1pk" not in tracked
    receipt = chain.web3.eth.get_transaction_receipt(tx_hash)
    answer = requests.get(f"{chains}/v1/contracts/31337/{receipt.contractAddress}", timeout=10)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["blockNumber"]) == ("confirmed", receipt.blockNumber)
