//! JSON-RPC to the configured chains through alloy: timeouts, retries, fail-over across each chain's URLs
//! with a circuit breaker per URL, and batched reads through Multicall3 where it is deployed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::bindings::IMulticall3;
use alloy::providers::{MULTICALL3_ADDRESS, Provider, RootProvider};
use alloy::rpc::types::{FeeHistory, Transaction, TransactionReceipt, TransactionRequest};
use alloy::sol;
use alloy::sol_types::SolCall;
use alloy::transports::{RpcError as AlloyRpcError, TransportErrorKind};
use async_trait::async_trait;
use futures::future::join_all;
use url::Url;

use super::Chains;

sol! {
    /// EIP-1271: a contract's answer to whether a signature is valid for it.
    interface IERC1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4 magicValue);
    }
}

/// `isValidSignature`'s answer for a valid signature.
pub const EIP1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

/// Installs rustls' ring provider as the process default, which the HTTP client of the RPC transport
/// uses. Safe to call more than once.
pub fn install_crypto_provider() {
    drop(rustls::crypto::ring::default_provider().install_default());
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("chain {0} has no RPC URL configured")]
    NotConfigured(u64),
    #[error("no RPC URL of chain {chain} answered: {last}")]
    Unavailable { chain: u64, last: String },
}

/// What the chain said to a call.
enum Outcome<T> {
    Answer(T),
    /// The call reverted or its code failed: final, another URL would say the same (see [`is_revert`]).
    Refused(String),
}

/// Whether a node's error answer is the call's own outcome, which every node would give: the contract
/// reverted, or its code failed (an invalid opcode, out of gas). EIP-1474 gives a revert code 3; nodes
/// that do not use it say so in the message (`execution reverted`, geth's `invalid opcode: …`), and
/// Nethermind answers any failed execution with -32015. Any other error answer (a rate limit, an
/// internal error, a block the node does not have) is the URL failing: the call goes on to the next URL,
/// and when none answers, to a [`ChainError::Unavailable`], never to a failed call, which reads as a
/// balance of 0.
fn is_revert(code: i64, message: &str) -> bool {
    const NETHERMIND_EXECUTION_ERROR: i64 = -32015;
    const EXECUTION_FAILURES: [&str; 6] = [
        "revert",
        "invalid opcode",
        "out of gas",
        "stack underflow",
        "stack overflow",
        "invalid jump",
    ];
    let message = message.to_ascii_lowercase();
    code == 3
        || code == NETHERMIND_EXECUTION_ERROR
        || EXECUTION_FAILURES.iter().any(|failure| message.contains(failure))
}

/// Consecutive failures after which a URL is left alone for [`COOL_DOWN`].
const TRIP_AFTER: u32 = 3;
/// How long a tripped URL is skipped before one call may try it again.
const COOL_DOWN: Duration = Duration::from_secs(30);
/// Passes over a chain's URLs before a call gives up.
const ROUNDS: u32 = 2;
/// Pause before the next pass.
const BACKOFF: Duration = Duration::from_millis(100);
/// Calls in one Multicall3 `aggregate3`, well below any node's gas cap for balance reads.
const MULTICALL_BATCH: usize = 100;

/// The circuit breaker of one URL: closed while it answers, open for [`COOL_DOWN`] after
/// [`TRIP_AFTER`] failures in a row, then half-open: the next call tries it, and its answer closes the
/// breaker or opens it again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub fn allows(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    /// Whether a call may try the URL now. Once the cool-down is over, the first call to ask is let
    /// through (half-open) and the others are not, until its answer closes the breaker or opens it
    /// again, or another cool-down passes should it never answer: a URL still dead costs one call its
    /// timeout, not every call under way.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) => {
                self.open_until = Some(now + COOL_DOWN);
                true
            }
        }
    }

    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    pub fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= TRIP_AFTER {
            self.open_until = Some(now + COOL_DOWN);
        }
    }

    pub fn is_open(&self, now: Instant) -> bool {
        !self.allows(now)
    }
}

struct Endpoint {
    url: Url,
    provider: RootProvider,
    breaker: Mutex<Breaker>,
}

impl Endpoint {
    fn host(&self) -> &str {
        self.url.host_str().unwrap_or("?")
    }

    fn allows(&self) -> bool {
        self.breaker.lock().map(|mut b| b.admit(Instant::now())).unwrap_or(true)
    }

    fn record(&self, ok: bool) {
        if let Ok(mut breaker) = self.breaker.lock() {
            if ok {
                breaker.succeeded();
            } else {
                breaker.failed(Instant::now());
                if breaker.is_open(Instant::now()) {
                    tracing::warn!(
                        url = self.host(),
                        "RPC URL keeps failing; skipping it for {COOL_DOWN:?}"
                    );
                }
            }
        }
    }
}

struct Chain {
    endpoints: Vec<Endpoint>,
    /// Whether Multicall3 is deployed at its usual address, once known.
    multicall: tokio::sync::OnceCell<bool>,
}

/// Providers for every chain that has RPC URLs: each call tries the chain's URLs in order, skipping those
/// whose breaker is open, with a timeout per attempt and a second pass after a short pause.
#[derive(Clone)]
pub struct RpcChains {
    chains: Arc<BTreeMap<u64, Chain>>,
    timeout: Duration,
}

impl RpcChains {
    pub fn new(chains: &Chains, timeout: Duration) -> Self {
        install_crypto_provider();
        let chains = chains
            .iter()
            .filter(|chain| !chain.rpc_urls.is_empty())
            .map(|chain| {
                let endpoints = chain
                    .rpc_urls
                    .iter()
                    .map(|url| Endpoint {
                        url: url.clone(),
                        provider: RootProvider::new_http(url.clone()),
                        breaker: Mutex::new(Breaker::default()),
                    })
                    .collect();
                let chain_state = Chain {
                    endpoints,
                    multicall: tokio::sync::OnceCell::new(),
                };
                (chain.chain_id, chain_state)
            })
            .collect();
        Self {
            chains: Arc::new(chains),
            timeout,
        }
    }

    pub fn is_configured(&self, chain: u64) -> bool {
        self.chains.contains_key(&chain)
    }

    /// The first answer among the chain's URLs. With `reverts_answer`, an error answer that reads as
    /// the call's own revert is its answer ([`Outcome::Refused`]); otherwise it is that URL failing.
    async fn first_answer<T, F, Fut>(&self, chain: u64, reverts_answer: bool, call: F) -> Result<Outcome<T>, ChainError>
    where
        F: Fn(RootProvider) -> Fut,
        Fut: Future<Output = Result<T, AlloyRpcError<TransportErrorKind>>>,
    {
        let endpoints = &self
            .chains
            .get(&chain)
            .ok_or(ChainError::NotConfigured(chain))?
            .endpoints;
        let mut last = None;
        for round in 0..ROUNDS {
            if round > 0 {
                tokio::time::sleep(BACKOFF * round).await;
            }
            for endpoint in endpoints.iter().filter(|e| e.allows()) {
                let failure = match tokio::time::timeout(self.timeout, call(endpoint.provider.clone())).await {
                    Ok(Ok(answer)) => {
                        endpoint.record(true);
                        return Ok(Outcome::Answer(answer));
                    }
                    Ok(Err(AlloyRpcError::ErrorResp(payload)))
                        if reverts_answer && is_revert(payload.code, &payload.message) =>
                    {
                        endpoint.record(true);
                        return Ok(Outcome::Refused(payload.message.to_string()));
                    }
                    // A rate limit, an internal error, a block the node lacks: that URL's trouble, which
                    // says nothing of the contract.
                    Ok(Err(AlloyRpcError::ErrorResp(payload))) => format!(
                        "{}: the node answered error {}: {}",
                        endpoint.host(),
                        payload.code,
                        payload.message
                    ),
                    Ok(Err(err)) => format!("{}: {err}", endpoint.host()),
                    Err(_) => format!("{}: no answer within {:?}", endpoint.host(), self.timeout),
                };
                endpoint.record(false);
                tracing::warn!(chain, error = %failure, "RPC URL failed; trying the next");
                last = Some(failure);
            }
        }
        let last = last.unwrap_or_else(|| "every URL is failing and left alone for now".into());
        metrics::counter!("streamgate_rpc_unavailable_total", "chain" => chain.to_string()).increment(1);
        Err(ChainError::Unavailable { chain, last })
    }

    /// One read-only call: its return data, `None` when the contract reverted.
    pub async fn call(&self, chain: u64, to: Address, input: Bytes) -> Result<Option<Bytes>, ChainError> {
        let request = TransactionRequest::default().to(to).input(input.into());
        let answer = self
            .first_answer(chain, true, |p| {
                let request = request.clone();
                async move { p.call(request).await }
            })
            .await?;
        Ok(match answer {
            Outcome::Answer(output) => Some(output),
            Outcome::Refused(reason) => {
                tracing::debug!(chain, %to, %reason, "call refused");
                None
            }
        })
    }

    /// A read that runs no contract code (blocks, fees, transactions): any error answer, even one that
    /// reads like a revert, is the node's fault, and the read goes on to the next URL.
    async fn read<T, F, Fut>(&self, chain: u64, call: F) -> Result<T, ChainError>
    where
        F: Fn(RootProvider) -> Fut,
        Fut: Future<Output = Result<T, AlloyRpcError<TransportErrorKind>>>,
    {
        match self.first_answer(chain, false, call).await? {
            Outcome::Answer(answer) => Ok(answer),
            Outcome::Refused(reason) => Err(ChainError::Unavailable { chain, last: reason }),
        }
    }

    /// The number of the chain's latest block.
    pub async fn block_number(&self, chain: u64) -> Result<u64, ChainError> {
        self.read(chain, |p| async move { p.get_block_number().await }).await
    }

    /// `eth_feeHistory` of the latest `blocks` blocks, with the priority fees paid at `percentiles`.
    pub async fn fee_history(&self, chain: u64, blocks: u64, percentiles: &[f64]) -> Result<FeeHistory, ChainError> {
        self.read(chain, |p| async move {
            p.get_fee_history(blocks, BlockNumberOrTag::Latest, percentiles).await
        })
        .await
    }

    /// A transaction as the node knows it: in a block, waiting in its pool, or `None`.
    pub async fn transaction(&self, chain: u64, hash: B256) -> Result<Option<Transaction>, ChainError> {
        self.read(chain, |p| async move { p.get_transaction_by_hash(hash).await })
            .await
    }

    /// A transaction's receipt, `None` until it is in a block.
    pub async fn receipt(&self, chain: u64, hash: B256) -> Result<Option<TransactionReceipt>, ChainError> {
        self.read(chain, |p| async move { p.get_transaction_receipt(hash).await })
            .await
    }

    /// The transaction count of `account` as of block `block`: the nonces its transactions in that block
    /// and before have taken.
    pub async fn nonce_at(&self, chain: u64, account: Address, block: u64) -> Result<u64, ChainError> {
        self.read(chain, |p| async move {
            p.get_transaction_count(account).number(block).await
        })
        .await
    }

    /// Whether Multicall3 answers at its usual address on `chain` (asked once per chain and process).
    async fn has_multicall(&self, chain: u64) -> Result<bool, ChainError> {
        let state = self.chains.get(&chain).ok_or(ChainError::NotConfigured(chain))?;
        state
            .multicall
            .get_or_try_init(|| async {
                let code = self
                    .first_answer(chain, true, |p| async move { p.get_code_at(MULTICALL3_ADDRESS).await })
                    .await?;
                let deployed = matches!(code, Outcome::Answer(code) if !code.is_empty());
                tracing::info!(chain, deployed, "Multicall3 looked up");
                Ok(deployed)
            })
            .await
            .copied()
    }

    /// Read-only calls on one chain, each answered with its return data or `None` when it reverted:
    /// batched through Multicall3 `aggregate3` where it is deployed, otherwise sent concurrently.
    pub async fn call_many(&self, chain: u64, calls: &[(Address, Bytes)]) -> Vec<Result<Option<Bytes>, ChainError>> {
        if calls.len() > 1 {
            match self.has_multicall(chain).await {
                Ok(true) => {
                    let batches = calls.chunks(MULTICALL_BATCH).map(|batch| self.aggregate3(chain, batch));
                    let mut answers = Vec::with_capacity(calls.len());
                    for (batch, result) in calls.chunks(MULTICALL_BATCH).zip(join_all(batches).await) {
                        match result {
                            Ok(results) => answers.extend(results.into_iter().map(Ok)),
                            Err(err) => answers.extend(batch.iter().map(|_| Err(err.clone()))),
                        }
                    }
                    return answers;
                }
                Ok(false) => {}
                Err(err) => return calls.iter().map(|_| Err(err.clone())).collect(),
            }
        }
        join_all(calls.iter().map(|(to, input)| self.call(chain, *to, input.clone()))).await
    }

    async fn aggregate3(&self, chain: u64, batch: &[(Address, Bytes)]) -> Result<Vec<Option<Bytes>>, ChainError> {
        let calls = batch
            .iter()
            .map(|(target, input)| IMulticall3::Call3 {
                target: *target,
                allowFailure: true,
                callData: input.clone(),
            })
            .collect();
        let input = Bytes::from(IMulticall3::aggregate3Call { calls }.abi_encode());
        metrics::counter!("streamgate_rpc_multicalls_total", "chain" => chain.to_string()).increment(1);
        let unavailable = |last: String| ChainError::Unavailable { chain, last };
        let output = self
            .call(chain, MULTICALL3_ADDRESS, input)
            .await?
            .ok_or_else(|| unavailable("Multicall3 reverted".into()))?;
        let results = IMulticall3::aggregate3Call::abi_decode_returns(&output)
            .map_err(|e| unavailable(format!("Multicall3 answered what is not its result: {e}")))?;
        if results.len() != batch.len() {
            return Err(unavailable("Multicall3 answered another number of results".into()));
        }
        Ok(results.into_iter().map(|r| r.success.then_some(r.returnData)).collect())
    }
}

/// Signatures of contract wallets (EIP-1271), such as Safe and other smart accounts.
#[async_trait]
pub trait ContractWallets: Send + Sync {
    /// Whether `wallet` on `chain` is a contract that accepts `signature` for `hash`. `Ok(false)` for
    /// accounts without code, chains without RPC URLs and contracts that refuse; an error only when no
    /// RPC URL of the chain answered.
    async fn is_valid_signature(
        &self,
        chain: u64,
        wallet: Address,
        hash: B256,
        signature: &[u8],
    ) -> Result<bool, ChainError>;
}

#[async_trait]
impl ContractWallets for RpcChains {
    async fn is_valid_signature(
        &self,
        chain: u64,
        wallet: Address,
        hash: B256,
        signature: &[u8],
    ) -> Result<bool, ChainError> {
        if !self.is_configured(chain) {
            return Ok(false);
        }
        let code = match self
            .first_answer(chain, true, |p| async move { p.get_code_at(wallet).await })
            .await?
        {
            Outcome::Answer(code) => code,
            Outcome::Refused(_) => return Ok(false),
        };
        if code.is_empty() {
            return Ok(false);
        }
        let input = Bytes::from(
            IERC1271::isValidSignatureCall {
                hash,
                signature: Bytes::copy_from_slice(signature),
            }
            .abi_encode(),
        );
        Ok(match self.call(chain, wallet, input).await? {
            Some(output) => output.get(..4) == Some(&EIP1271_MAGIC[..]),
            None => {
                tracing::debug!(chain, %wallet, "isValidSignature reverted");
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A JSON-RPC node on loopback that gives every request the members of `answer` (a `result` or an
    /// `error`); returns its URL and how many requests it has had.
    async fn node(answer: Value) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        let reply = move |axum::Json(request): axum::Json<Value>| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reply = json!({"jsonrpc": "2.0", "id": request["id"]});
            if let (Some(reply), Some(members)) = (reply.as_object_mut(), answer.as_object()) {
                reply.extend(members.clone());
            }
            std::future::ready(axum::Json(reply))
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let app = axum::Router::new().route("/", axum::routing::post(reply));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, asked)
    }

    fn chain_1(urls: &[&str]) -> RpcChains {
        let urls = urls.join(",");
        let chains = Chains::from_vars([("STREAMGATE_RPC_1", urls.as_str())]).expect("chains");
        RpcChains::new(&chains, Duration::from_secs(5))
    }

    fn balance_of() -> Bytes {
        Bytes::from_static(&[0x70, 0xa0, 0x82, 0x31])
    }

    #[tokio::test]
    async fn a_node_error_that_is_not_a_revert_fails_over_and_never_reads_as_a_revert() {
        let (limited, limited_asked) = node(json!({"error": {"code": -32005, "message": "rate limited"}})).await;
        let (internal, _) = node(json!({"error": {"code": -32603, "message": "internal error"}})).await;
        let one = format!("0x{}", "00".repeat(31) + "01");
        let (healthy, _) = node(json!({"result": one})).await;
        let to = Address::repeat_byte(7);

        let answer = chain_1(&[&limited, &healthy]).call(1, to, balance_of()).await;
        let output = answer.expect("the second URL answers").expect("not a revert");
        assert_eq!(output.last(), Some(&1));
        assert_eq!(limited_asked.load(std::sync::atomic::Ordering::SeqCst), 1);

        let answer = chain_1(&[&limited, &internal]).call(1, to, balance_of()).await;
        match answer {
            Err(ChainError::Unavailable { chain: 1, last }) => assert!(last.contains("-32603"), "{last}"),
            other => panic!("no URL answered, which is not a revert: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_revert_is_the_calls_answer_from_the_first_url() {
        for error in [
            json!({"code": 3, "message": "execution reverted", "data": "0x7e273289"}),
            json!({"code": -32000, "message": "execution reverted"}),
            json!({"code": -32015, "message": "VM execution error.", "data": "revert"}),
            json!({"code": -32000, "message": "invalid opcode: INVALID"}),
        ] {
            let (reverting, _) = node(json!({"error": error})).await;
            let (unused, unused_asked) = node(json!({"result": "0x"})).await;
            let answer = chain_1(&[&reverting, &unused])
                .call(1, Address::repeat_byte(7), balance_of())
                .await;
            assert_eq!(answer, Ok(None), "{error}");
            assert_eq!(unused_asked.load(std::sync::atomic::Ordering::SeqCst), 0, "{error}");
        }
    }

    #[test]
    fn only_reverts_are_final() {
        assert!(is_revert(3, "execution reverted: ERC721NonexistentToken"));
        assert!(is_revert(-32000, "Execution Reverted"));
        assert!(is_revert(-32015, "VM execution error."));
        assert!(is_revert(-32000, "invalid opcode: INVALID"));
        assert!(is_revert(-32000, "out of gas"));
        assert!(is_revert(-32000, "stack underflow (0 <=> 1)"));
        assert!(!is_revert(-32000, "header not found"));
        assert!(!is_revert(-32005, "request rate exceeded"));
        assert!(!is_revert(429, "Too Many Requests"));
        assert!(!is_revert(-32603, "internal error"));
    }

    #[test]
    fn a_breaker_opens_after_failures_in_a_row_and_half_opens_after_its_cool_down() {
        let start = Instant::now();
        let mut breaker = Breaker::default();
        for _ in 0..TRIP_AFTER - 1 {
            breaker.failed(start);
        }
        assert!(breaker.allows(start), "not yet tripped");
        breaker.succeeded();
        for _ in 0..TRIP_AFTER - 1 {
            breaker.failed(start);
        }
        assert!(breaker.allows(start), "a success resets the count");
        breaker.failed(start);
        assert!(breaker.is_open(start));
        assert!(breaker.is_open(start + COOL_DOWN - Duration::from_millis(1)));
        let later = start + COOL_DOWN;
        assert!(breaker.admit(later), "half-open after the cool-down");
        assert!(!breaker.admit(later), "one call tries it, not every call under way");
        breaker.failed(later);
        assert!(breaker.is_open(later), "one more failure opens it again");
        let after = later + COOL_DOWN;
        assert!(breaker.admit(after));
        breaker.succeeded();
        assert!(breaker.admit(after) && breaker.admit(after), "closed again");
        // A trial call that never answers holds the URL back for one more cool-down only.
        for _ in 0..TRIP_AFTER {
            breaker.failed(after);
        }
        let again = after + COOL_DOWN;
        assert!(breaker.admit(again));
        assert!(!breaker.admit(again + COOL_DOWN - Duration::from_millis(1)));
        assert!(breaker.admit(again + COOL_DOWN));
    }
}
