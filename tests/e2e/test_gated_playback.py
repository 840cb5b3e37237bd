"""Token-gated playback on real chains: OpenZeppelin ERC-721, ERC-1155 and ERC-20 contracts on two anvil
chains (31337 with Multicall3's `aggregate3` at its usual address, 31338 without it), deployed and moved
by web3.py; viewers sign in with eth-account and siwe-py; ffmpeg plays what they are granted.

The server reads chain 31337 through a dead RPC URL first and anvil second, so every grant here also
shows fail-over. The last test stops the chains: gated playback then answers 503, never a grant."""

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from eth_account import Account
from web3 import Web3

import conftest
from conftest import ROOT, contract_artefact, free_port
from test_playback import frames_played, upload_ready_video
from wallets import bearer, message, sign, sign_in

# anvil's first development account, which deploys and mints.
DEPLOYER = Account.from_key("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
CREATOR = Account.from_key("0x" + "c0" * 32)
HOLDER = Account.from_key("0x" + "d1" * 32)
COLLECTOR = Account.from_key("0x" + "d2" * 32)
SECOND_WALLET = Account.from_key("0x" + "d3" * 32)
STRANGER = Account.from_key("0x" + "d4" * 32)
MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
OWNERSHIP_TTL = 2
ONE_TOKEN = 10**18


class Chain:
    """One anvil chain and the contracts deployed on it."""

    def __init__(self, chain_id: int):
        self.chain_id = chain_id
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [str(conftest.ANVIL), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id), "--silent"]
        )
        self.web3 = Web3(Web3.HTTPProvider(self.url))
        deadline = time.monotonic() + 20
        while not self._answers():
            assert self.process.poll() is None and time.monotonic() < deadline, "anvil did not start"
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            return self.web3.eth.chain_id == self.chain_id
        except requests.ConnectionError:
            return False

    def send(self, account, transaction: dict):
        transaction |= {
            "from": account.address,
            "nonce": self.web3.eth.get_transaction_count(account.address),
            "chainId": self.chain_id,
        }
        if "gas" not in transaction:
            transaction["gas"] = self.web3.eth.estimate_gas(transaction)
        transaction |= {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
        signed = account.sign_transaction(transaction)
        receipt = self.web3.eth.wait_for_transaction_receipt(self.web3.eth.send_raw_transaction(signed.raw_transaction))
        assert receipt.status == 1, receipt
        return receipt

    def deploy(self, name: str):
        artefact = contract_artefact(name)
        factory = self.web3.eth.contract(abi=artefact["abi"], bytecode=artefact["bytecode"])
        receipt = self.send(DEPLOYER, factory.constructor().build_transaction({"from": DEPLOYER.address}))
        return self.web3.eth.contract(address=receipt.contractAddress, abi=artefact["abi"])

    def call(self, account, function):
        return self.send(account, function.build_transaction({"from": account.address}))

    def fund(self, *accounts):
        for account in accounts:
            self.web3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])

    def install_multicall3(self):
        """Places aggregate3 at Multicall3's address, as on the mainnets."""
        runtime = self.web3.eth.get_code(self.deploy("Aggregate3").address)
        answer = self.web3.provider.make_request("anvil_setCode", [MULTICALL3, "0x" + runtime.hex().removeprefix("0x")])
        assert "error" not in answer, answer
        assert len(self.web3.eth.get_code(MULTICALL3)) > 0

    def stop(self):
        self.process.kill()
        self.process.wait()


def start_server(data: Path, extra_env: dict) -> tuple[str, conftest.Process]:
    return conftest.spawn_local(data, {"STREAMGATE_LADDER": "240p"} | extra_env)


def lookups(url: str) -> dict:
    """Holdings looked up so far, by where the answer came from (memory, store, chain)."""
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    return {
        source: int(float(count))
        for source, count in re.findall(r'streamgate_holdings_lookups_total\{from="(\w+)"\} ([\d.]+)', metrics)
    }


def link_wallet(url: str, token: str, account) -> None:
    text = message(url, account)
    answer = requests.post(
        f"{url}/v1/wallets", json={"message": text, "signature": sign(account, text)}, headers=bearer(token), timeout=5
    )
    assert answer.status_code in (200, 201), answer.text


def token_rule(chain: Chain, contract, standard: str, **extra) -> dict:
    return {"type": "token", "chainId": chain.chain_id, "contract": contract.address, "standard": standard} | extra


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two chains with tokens, streamgate-local reading them, and gated videos. Yields a namespace."""
    main, side = Chain(31337), Chain(31338)
    main.install_multicall3()
    main.fund(HOLDER, COLLECTOR, SECOND_WALLET, STRANGER)
    passes, tickets = main.deploy("PassNFT"), main.deploy("SeasonTickets")
    fans = side.deploy("FanToken")
    main.call(DEPLOYER, passes.functions.mint(HOLDER.address, 1))
    main.call(DEPLOYER, passes.functions.mint(SECOND_WALLET.address, 42))
    main.call(DEPLOYER, tickets.functions.mint(COLLECTOR.address, 7, 2))
    main.call(DEPLOYER, tickets.functions.mint(HOLDER.address, 7, 1))
    side.call(DEPLOYER, fans.functions.mint(COLLECTOR.address, ONE_TOKEN))
    side.call(DEPLOYER, fans.functions.mint(STRANGER.address, ONE_TOKEN - 1))

    dead = f"http://127.0.0.1:{free_port()}"
    chains = {
        "STREAMGATE_CHAIN_TIMEOUT_MS": "1000",
        "STREAMGATE_RPC_31337": f"{dead},{main.url}",
        "STREAMGATE_RPC_31338": side.url,
    }
    url, process = start_server(tmp_path_factory.mktemp("gated"), chains | {"STREAMGATE_OWNERSHIP_TTL": str(OWNERSHIP_TTL)})

    creator = sign_in(url, CREATOR)
    source = tmp_path_factory.mktemp("sources")
    rules = {
        "pass": token_rule(main, passes, "erc721"),
        "pass42": token_rule(main, passes, "erc721", tokenIds=["42"]),
        "tickets": token_rule(main, tickets, "erc1155", tokenIds=["7"], minBalance="2"),
        "fans": token_rule(side, fans, "erc20", minBalance=str(ONE_TOKEN)),
    }
    rules["any"] = {"anyOf": [rules["pass42"], rules["fans"]]}
    rules["all"] = {"allOf": [rules["pass"], token_rule(main, tickets, "erc1155", tokenIds=["7"])]}
    videos = {name: upload_ready_video(url, creator, source / f"{name}.mp4", seconds=2, access=rule) for name, rule in rules.items()}

    class World:
        pass

    world = World()
    world.url, world.creator, world.videos, world.rules = url, creator, videos, rules
    world.main, world.side, world.passes, world.process = main, side, passes, process
    world.chains, world.tmp = chains, tmp_path_factory
    world.tokens = {account.address: sign_in(url, account) for account in (HOLDER, COLLECTOR, STRANGER)}
    yield world
    main.stop()
    side.stop()
    assert process.terminate() == 0


def playback(world, video: str, account=None) -> requests.Response:
    headers = bearer(world.tokens[account.address]) if account else {}
    return requests.get(f"{world.url}/v1/videos/{world.videos[video]}/playback", headers=headers, timeout=15)


def granted(world, video: str, account) -> bool:
    answer = playback(world, video, account)
    assert answer.status_code in (200, 403), answer.text
    if answer.status_code == 403:
        assert answer.json()["code"] == "access_denied"
    return answer.status_code == 200


def test_rules_are_stored_in_canonical_form_and_bad_ones_refused(world):
    video = requests.get(f"{world.url}/v1/videos/{world.videos['tickets']}", timeout=5).json()
    assert video["access"] == world.rules["tickets"] | {"minBalance": "2"}
    assert requests.get(f"{world.url}/v1/videos/{world.videos['pass']}", timeout=5).json()["access"]["minBalance"] == "1"

    lowercase = token_rule(world.main, world.passes, "erc721") | {"contract": world.passes.address.lower()}
    answer = requests.post(
        f"{world.url}/v1/uploads/multipart",
        json={"filename": "a.mp4", "size": 1000, "contentType": "video/mp4", "access": lowercase},
        headers=bearer(world.creator),
        timeout=5,
    )
    assert answer.status_code == 400
    problem = answer.json()
    assert problem["code"] == "invalid_access"
    assert "access.contract" in problem["detail"] and world.passes.address in problem["detail"]


def test_holders_play_others_are_refused_anonymous_must_sign_in(world):
    assert playback(world, "pass").status_code == 401
    assert playback(world, "pass").json()["code"] == "unauthenticated"
    assert granted(world, "pass", HOLDER)
    assert not granted(world, "pass", STRANGER)
    # ERC-1155: two of id 7 are needed; the holder has one.
    assert granted(world, "tickets", COLLECTOR)
    assert not granted(world, "tickets", HOLDER)
    # ERC-20 on the chain without Multicall3: one whole token, not a wei less.
    assert granted(world, "fans", COLLECTOR)
    assert not granted(world, "fans", STRANGER)
    # The creator plays all their videos, holding nothing.
    for video in world.videos:
        assert requests.get(
            f"{world.url}/v1/videos/{world.videos[video]}/playback", headers=bearer(world.creator), timeout=5
        ).status_code == 200


def test_any_of_and_all_of(world):
    assert granted(world, "any", COLLECTOR), "holds the fan token"
    assert not granted(world, "any", HOLDER), "holds pass 1, not 42, and no fan token"
    assert granted(world, "all", HOLDER), "a pass and a ticket"
    assert not granted(world, "all", COLLECTOR), "tickets but no pass"


def test_every_linked_wallet_counts(world):
    """Pass 42 is in a second wallet of the collector's account."""
    assert not granted(world, "pass42", COLLECTOR)
    link_wallet(world.url, world.tokens[COLLECTOR.address], SECOND_WALLET)
    assert granted(world, "pass42", COLLECTOR)
    # And with it the collector holds a pass and tickets.
    assert granted(world, "all", COLLECTOR)


def test_reads_are_batched_through_multicall3_where_deployed(world):
    metrics = requests.get(f"{world.url}/metrics", timeout=5).text
    batched = re.search(r'streamgate_rpc_multicalls_total\{chain="31337"\} (\d+)', metrics)
    assert batched and int(batched.group(1)) > 0, metrics
    assert 'streamgate_rpc_multicalls_total{chain="31338"}' not in metrics


def test_the_gated_stream_plays_through_its_signed_urls(world):
    urls = playback(world, "pass", HOLDER).json()
    assert frames_played(urls["hls"]) == 60
    assert frames_played(urls["dash"]) == 60


def play(url: str, token: str | None = None) -> subprocess.CompletedProcess:
    headers = ["-headers", f"Authorization: Bearer {token}\r\n"] if token else []
    return subprocess.run(
        ["ffmpeg", "-v", "error", *headers, "-i", url, "-map", "0:v:0", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_encrypted_stream_plays_with_its_key_and_not_without(world):
    holder = world.tokens[HOLDER.address]
    urls = playback(world, "pass", HOLDER).json()
    encrypted = urls["hlsEncrypted"]
    assert encrypted.endswith("/aes/master.m3u8")
    media = requests.get(encrypted.replace("master.m3u8", "240p/index.m3u8"), timeout=5).text
    key_line = next(line for line in media.splitlines() if line.startswith("#EXT-X-KEY"))
    assert key_line == f'#EXT-X-KEY:METHOD=AES-128,URI="{world.url}/v1/keys/{world.videos["pass"]}"'
    assert media.index("#EXT-X-MAP") < media.index("#EXT-X-KEY")

    # The segments really are encrypted: not the clear ones, whole AES blocks, not MP4 boxes.
    clear = requests.get(urls["hls"].replace("master.m3u8", "240p/seg-00000.m4s"), timeout=5).content
    sealed = requests.get(encrypted.replace("master.m3u8", "240p/seg-00000.m4s"), timeout=5).content
    assert len(sealed) % 16 == 0 and len(clear) < len(sealed) <= len(clear) + 16
    assert clear[4:8] in (b"styp", b"moof") and sealed[4:8] not in (b"styp", b"moof")

    # The key answers under the video's rule.
    key_url = f"{world.url}/v1/keys/{world.videos['pass']}"
    key = requests.get(key_url, headers=bearer(holder), timeout=5)
    assert key.status_code == 200 and len(key.content) == 16
    assert key.headers["cache-control"] == "private, no-store"
    assert requests.get(key_url, timeout=5).status_code == 401
    denied = requests.get(key_url, headers=bearer(world.tokens[STRANGER.address]), timeout=5)
    assert denied.status_code == 403 and denied.json()["code"] == "access_denied"

    played = play(encrypted, holder)
    assert played.returncode == 0 and played.stderr == "", played.stderr
    assert sum(1 for line in played.stdout.splitlines() if not line.startswith("#")) == 60
    # Without the viewer's token the key is refused, and nothing decodes.
    refused = play(encrypted)
    assert refused.returncode != 0
    assert "Unable to open key file" in refused.stderr, refused.stderr
    assert not any(not line.startswith("#") for line in refused.stdout.splitlines())


def test_hls_js_plays_the_encrypted_stream_in_headless_chromium(world):
    """hls.js fetches the key with the viewer's token and decrypts the CMAF segments in the browser."""
    encrypted = playback(world, "pass", HOLDER).json()["hlsEncrypted"]
    player = ROOT / "tests" / "clients" / "play-hls.mjs"
    token = world.tokens[HOLDER.address]
    done = subprocess.run(
        ["node", str(player), encrypted, "--seconds", "1.5", "--bearer", token], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] is None, result
    assert result["currentTime"] >= 1.5
    # Without the token the key request is refused and hls.js gives up.
    done = subprocess.run(["node", str(player), encrypted, "--seconds", "1.5"], capture_output=True, text=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] is not None and "key" in result["error"].lower(), result


def test_a_transfer_moves_access_within_the_ttl(world):
    assert granted(world, "pass", HOLDER)
    assert not granted(world, "pass", STRANGER)
    world.main.call(HOLDER, world.passes.functions.transferFrom(HOLDER.address, STRANGER.address, 1))
    time.sleep(OWNERSHIP_TTL + 0.5)
    assert granted(world, "pass", STRANGER)
    assert not granted(world, "pass", HOLDER)


def test_gated_playback_fails_closed_when_no_rpc_answers(world):
    """Last: stops the chains. Before that, a second installation with a long ownership TTL shows the
    cache: concurrent checks of one holding share one read, and answers kept in Store outlive a restart
    while they are young enough, chain or no chain."""
    data = world.tmp.mktemp("cached")
    url, process = start_server(data, world.chains | {"STREAMGATE_OWNERSHIP_TTL": "120"})
    creator = sign_in(url, CREATOR)
    video = upload_ready_video(url, creator, data / "pass.mp4", seconds=2, access=world.rules["pass"])
    stranger = sign_in(url, STRANGER)  # holds pass 1 since the transfer
    before = lookups(url)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda _: requests.get(f"{url}/v1/videos/{video}/playback", headers=bearer(stranger), timeout=15),
            range(32),
        ))
    assert [a.status_code for a in answers] == [200] * 32
    after = lookups(url)
    assert after.get("chain", 0) - before.get("chain", 0) == 1, after
    assert process.terminate() == 0

    world.main.stop()
    world.side.stop()
    url, process = start_server(data, world.chains | {"STREAMGATE_OWNERSHIP_TTL": "120"})
    answer = requests.get(f"{url}/v1/videos/{video}/playback", headers=bearer(stranger), timeout=15)
    assert answer.status_code == 200, answer.text
    assert lookups(url) == {"store": 1}
    assert process.terminate() == 0

    time.sleep(OWNERSHIP_TTL + 0.5)
    for video, account in [("pass", STRANGER), ("fans", COLLECTOR), ("any", COLLECTOR)]:
        answer = playback(world, video, account)
        assert answer.status_code == 503, answer.text
        problem = answer.json()
        assert problem["code"] == "chain_unavailable"
        assert "127.0.0.1" not in answer.text
    # Public rules and owners need no chain.
    assert requests.get(
        f"{world.url}/v1/videos/{world.videos['pass']}/playback", headers=bearer(world.creator), timeout=5
    ).status_code == 200
