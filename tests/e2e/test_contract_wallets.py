"""Contract wallets (EIP-1271) sign in: an OpenZeppelin-based wallet deployed on anvil vouches for its
owner's signature, checked through `isValidSignature` on the message's chain."""

from datetime import datetime, timezone
from urllib.parse import urlparse

import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from siwe import SiweMessage
from web3 import Web3

from conftest import contract_artefact

# anvil's first development account (well known, funded on every anvil chain).
DEPLOYER = Account.from_key("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
OWNER = Account.from_key("0x" + "0d" * 32)
STRANGER = Account.from_key("0x" + "5e" * 32)


def deploy_wallet(rpc_url: str, owner: str, chain_id: int = 31337) -> str:
    web3 = Web3(Web3.HTTPProvider(rpc_url))
    artefact = contract_artefact("SignerWallet")
    contract = web3.eth.contract(abi=artefact["abi"], bytecode=artefact["bytecode"])
    transaction = contract.constructor(owner).build_transaction(
        {"from": DEPLOYER.address, "nonce": web3.eth.get_transaction_count(DEPLOYER.address), "chainId": chain_id}
    )
    signed = DEPLOYER.sign_transaction(transaction)
    receipt = web3.eth.wait_for_transaction_receipt(web3.eth.send_raw_transaction(signed.raw_transaction))
    assert receipt.status == 1
    return receipt.contractAddress


def signed_message(url: str, address: str, signer, chain_id: int = 31337) -> dict:
    nonce = requests.post(f"{url}/v1/auth/nonce", timeout=5).json()["nonce"]
    text = SiweMessage(
        domain=urlparse(url).netloc,
        address=address,
        uri=f"{url}/login",
        version="1",
        chain_id=chain_id,
        nonce=nonce,
        issued_at=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
    ).prepare_message()
    signature = Account.sign_message(encode_defunct(text=text), signer.key).signature.hex()
    return {"message": text, "signature": signature if signature.startswith("0x") else "0x" + signature}


def test_contract_wallet_signs_in_with_its_owners_signature(anvil, start_local):
    rpc_url, chain = anvil
    wallet = deploy_wallet(rpc_url, OWNER.address)
    url, _ = start_local({"STREAMGATE_RPC_31337": rpc_url})

    answer = requests.post(f"{url}/v1/auth/verify", json=signed_message(url, wallet, OWNER), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["address"] == wallet

    refused = requests.post(f"{url}/v1/auth/verify", json=signed_message(url, wallet, STRANGER), timeout=10)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_signature"

    # An account without code is not a contract wallet: a stranger's signature stays invalid.
    plain = requests.post(f"{url}/v1/auth/verify", json=signed_message(url, OWNER.address, STRANGER), timeout=10)
    assert plain.json()["code"] == "invalid_signature"

    # With the chain gone, a contract wallet's sign-in fails closed and says so.
    chain.kill()
    chain.wait()
    down = requests.post(f"{url}/v1/auth/verify", json=signed_message(url, wallet, OWNER), timeout=30)
    assert down.status_code == 503
    assert down.json()["code"] == "chain_unavailable"


def test_a_contract_wallet_signs_in_only_on_the_chain_it_was_linked_on(start_local):
    # The same deployer, at the same nonce, puts a wallet at the same address on two chains: one owned
    # by its owner, the other by a stranger (as happened to a multisig's address on another network).
    from test_gated_playback import Chain

    main, side = Chain(31337), Chain(31338)
    try:
        wallet = deploy_wallet(main.url, OWNER.address, 31337)
        assert deploy_wallet(side.url, STRANGER.address, 31338) == wallet
        url, _ = start_local({"STREAMGATE_RPC_31337": main.url, "STREAMGATE_RPC_31338": side.url})

        owner = requests.post(f"{url}/v1/auth/verify", json=signed_message(url, wallet, OWNER, 31337), timeout=10)
        assert owner.status_code == 200, owner.text
        # The stranger's contract vouches for the stranger on its chain: not the owner's account.
        stranger = requests.post(
            f"{url}/v1/auth/verify", json=signed_message(url, wallet, STRANGER, 31338), timeout=10
        )
        assert stranger.status_code == 401, stranger.text
        assert stranger.json()["code"] == "wallet_chain_mismatch"
        assert "31337" in stranger.json()["detail"]
        # The owner goes on signing in where the wallet was linked.
        again = requests.post(f"{url}/v1/auth/verify", json=signed_message(url, wallet, OWNER, 31337), timeout=10)
        assert again.status_code == 200, again.text
    finally:
        main.stop()
        side.stop()


def test_a_contract_wallets_tokens_count_only_on_the_chain_it_was_linked_on(start_local, tmp_path):
    # The owner's wallet holds tokens on one chain; a stranger's contract sits at the same address on
    # another chain, and the stranger signs in with it before the owner ever does.
    from test_gated_playback import Chain
    from test_playback import upload_ready_video
    from wallets import ALICE, bearer, sign_in

    main, side = Chain(31337), Chain(31338)
    try:
        wallet = deploy_wallet(main.url, OWNER.address, 31337)
        assert deploy_wallet(side.url, STRANGER.address, 31338) == wallet
        fans = main.deploy("FanToken")
        main.call(DEPLOYER, fans.functions.mint(wallet, 10**18))
        url, _ = start_local(
            {"STREAMGATE_RPC_31337": main.url, "STREAMGATE_RPC_31338": side.url, "STREAMGATE_LADDER": "240p"}
        )
        rule = {"type": "token", "chainId": 31337, "contract": fans.address, "standard": "erc20"}
        video = upload_ready_video(url, sign_in(url, ALICE), tmp_path / "gated.mp4", seconds=2, access=rule)

        squatter = requests.post(
            f"{url}/v1/auth/verify", json=signed_message(url, wallet, STRANGER, 31338), timeout=10
        )
        assert squatter.status_code == 200, squatter.text
        played = requests.get(
            f"{url}/v1/videos/{video}/playback", headers=bearer(squatter.json()["token"]), timeout=10
        )
        assert played.status_code == 403, played.text
        assert played.json()["code"] == "access_denied"
    finally:
        main.stop()
        side.stop()
