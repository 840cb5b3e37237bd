//! Token holdings of wallets, read from the chains and cached, and the evaluation of access rules on them.
//!
//! One holding is what one wallet holds of one token condition (a contract's balance, or of the listed
//! ids). Holdings are cached in process (bounded LRU, each entry expiring when its answer reaches
//! `STREAMGATE_OWNERSHIP_TTL` of age) and in `Store`, so other instances and cold starts share them. Two
//! checks of one holding at once share one load (and its failure). The reads of holdings loaded at the
//! same moment are gathered per chain for [`BATCH_WINDOW`] and sent as one batch (one Multicall3
//! `aggregate3` where it is deployed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol;
use alloy::sol_types::SolCall;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::rpc::{ChainError, RpcChains};
use crate::access::{Rule, Standard, TokenCondition, Verdict};
use crate::store::{Item, Store, now_unix_ms};
use crate::telemetry::KeptCounter;

/// Where holdings were found (`streamgate_holdings_lookups_total{from}`).
static FROM_MEMORY: KeptCounter = KeptCounter::new("streamgate_holdings_lookups_total", &[("from", "memory")]);
static FROM_STORE: KeptCounter = KeptCounter::new("streamgate_holdings_lookups_total", &[("from", "store")]);
static FROM_CHAIN: KeptCounter = KeptCounter::new("streamgate_holdings_lookups_total", &[("from", "chain")]);

sol! {
    interface IBalance {
        /// ERC-20 and ERC-721.
        function balanceOf(address owner) external view returns (uint256);
    }
    interface IERC721Owner {
        function ownerOf(uint256 tokenId) external view returns (address);
    }
    interface IERC1155Balance {
        function balanceOf(address account, uint256 id) external view returns (uint256);
    }
}

/// How long reads wait for others to share their batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(1);
/// Holdings kept in process.
const CACHE_CAPACITY: u64 = 100_000;

/// One wallet's holding of one condition's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HoldingKey {
    chain: u64,
    contract: Address,
    standard: Standard,
    token_ids: Option<Arc<[U256]>>,
    wallet: Address,
}

impl HoldingKey {
    fn new(condition: &TokenCondition, wallet: Address) -> Self {
        Self {
            chain: condition.chain_id,
            contract: condition.contract,
            standard: condition.standard,
            token_ids: condition.token_ids.as_deref().map(Arc::from),
            wallet,
        }
    }

    fn store_keys(&self) -> (String, String) {
        let pk = format!("holding#{}#{}#{}", self.chain, self.contract, self.wallet);
        let sk = match &self.token_ids {
            None => self.standard.as_str().to_owned(),
            Some(ids) => {
                let mut digest = Sha256::new();
                for id in ids.iter() {
                    digest.update(id.to_be_bytes::<32>());
                }
                format!("{}#{}", self.standard.as_str(), hex::encode(&digest.finalize()[..12]))
            }
        };
        (pk, sk)
    }

    /// The calls that read the holding.
    fn reads(&self) -> Vec<(Address, Bytes)> {
        let call = |input: Vec<u8>| (self.contract, Bytes::from(input));
        match (&self.token_ids, self.standard) {
            (Some(ids), Standard::Erc721) => ids
                .iter()
                .map(|&id| call(IERC721Owner::ownerOfCall { tokenId: id }.abi_encode()))
                .collect(),
            (Some(ids), _) => ids
                .iter()
                .map(|&id| {
                    call(
                        IERC1155Balance::balanceOfCall {
                            account: self.wallet,
                            id,
                        }
                        .abi_encode(),
                    )
                })
                .collect(),
            (None, _) => vec![call(IBalance::balanceOfCall { owner: self.wallet }.abi_encode())],
        }
    }

    /// The holding the answers to [`Self::reads`] make. A reverted call or an answer that is not the
    /// function's (a contract of another kind, an account without code) holds nothing.
    fn amount(&self, answers: &[Option<Bytes>]) -> U256 {
        let balance = |answer: &Option<Bytes>| {
            answer
                .as_ref()
                .and_then(|data| IBalance::balanceOfCall::abi_decode_returns(data).ok())
                .unwrap_or_default()
        };
        match (&self.token_ids, self.standard) {
            (Some(_), Standard::Erc721) => {
                let owned = answers
                    .iter()
                    .filter_map(|a| a.as_ref())
                    .filter_map(|data| IERC721Owner::ownerOfCall::abi_decode_returns(data).ok())
                    .filter(|owner| *owner == self.wallet)
                    .count();
                U256::from(owned)
            }
            _ => answers.iter().map(balance).fold(U256::ZERO, |a, b| a.saturating_add(b)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Holding {
    amount: U256,
    /// When the chain was asked (Unix milliseconds).
    observed_at: i64,
}

impl Holding {
    fn age(&self) -> Duration {
        let age = now_unix_ms() - self.observed_at;
        Duration::from_millis(age.max(0) as u64)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredHolding {
    amount: String,
    observed_at: i64,
}

/// The store item keeping `holding` under its keys until it is `ttl` old.
fn stored_item(pk: String, sk: String, holding: &Holding, ttl: Duration) -> Result<Item, crate::store::StoreError> {
    let stored = StoredHolding {
        amount: holding.amount.to_string(),
        observed_at: holding.observed_at,
    };
    let expires = holding.observed_at / 1000 + ttl.as_secs() as i64 + 1;
    Ok(Item::from_record(pk, sk, &stored)?.expiring_at(expires))
}

/// Entries leave the cache when their answer reaches the TTL in age, wherever it was first read.
struct AgeLimit(Duration);

impl moka::Expiry<HoldingKey, Holding> for AgeLimit {
    fn expire_after_create(&self, _: &HoldingKey, value: &Holding, _: Instant) -> Option<Duration> {
        Some(self.0.saturating_sub(value.age()))
    }
}

struct Pending {
    target: Address,
    input: Bytes,
    reply: oneshot::Sender<Result<Option<Bytes>, ChainError>>,
}

/// Gathers the calls made on one chain within [`BATCH_WINDOW`] into one batch.
#[derive(Clone)]
struct Batcher {
    rpc: RpcChains,
    queues: Arc<Mutex<HashMap<u64, Vec<Pending>>>>,
}

impl Batcher {
    async fn call(&self, chain: u64, target: Address, input: Bytes) -> Result<Option<Bytes>, ChainError> {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            let queue = queues.entry(chain).or_default();
            queue.push(Pending { target, input, reply });
            queue.len() == 1
        };
        if first {
            let batcher = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(BATCH_WINDOW).await;
                batcher.flush(chain).await;
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(ChainError::Unavailable {
                chain,
                last: "the batch was abandoned".into(),
            })
        })
    }

    async fn flush(&self, chain: u64) {
        let batch = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&chain)
            .unwrap_or_default();
        // Each call goes once: a check of ERC-721 token ids for several wallets asks the same `ownerOf`
        // for every wallet.
        let mut calls: Vec<(Address, Bytes)> = Vec::with_capacity(batch.len());
        let slots: Vec<usize> = {
            let mut first_of: HashMap<(Address, &Bytes), usize> = HashMap::with_capacity(batch.len());
            batch
                .iter()
                .map(|p| {
                    *first_of.entry((p.target, &p.input)).or_insert_with(|| {
                        calls.push((p.target, p.input.clone()));
                        calls.len() - 1
                    })
                })
                .collect()
        };
        metrics::histogram!("streamgate_rpc_batch_calls").record(calls.len() as f64);
        let answers = self.rpc.call_many(chain, &calls).await;
        for (pending, slot) in batch.into_iter().zip(slots) {
            let answer = answers.get(slot).cloned().unwrap_or_else(|| {
                Err(ChainError::Unavailable {
                    chain,
                    last: "a batch answered fewer calls than it was asked".into(),
                })
            });
            // A caller that went away no longer needs its answer.
            drop(pending.reply.send(answer));
        }
    }
}

/// A wallet of a viewer's account, as far as holdings go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wallet {
    pub address: Address,
    /// A contract wallet speaks for its address on the chain it was proven on only: the same address on
    /// another chain may be someone else's contract, whose tokens are not the viewer's.
    pub only_on: Option<u64>,
}

impl From<Address> for Wallet {
    fn from(address: Address) -> Self {
        Self { address, only_on: None }
    }
}

/// Holdings of wallets, and whether they satisfy access rules.
///
/// Two in-process caches: `fresh` answers warm checks (a lookup is a hash and a shard's read lock, the
/// age checked on read); `loads` is consulted when it has nothing young enough, and makes concurrent
/// checks of one holding share one load and its outcome, a failure included (a dead chain is waited for
/// once, not once per waiting check). Both hold an answer no longer than the TTL from when the chain
/// was asked.
#[derive(Clone)]
pub struct Holdings {
    fresh: Arc<quick_cache::sync::Cache<HoldingKey, Holding>>,
    loads: moka::future::Cache<HoldingKey, Holding>,
    store: Arc<dyn Store>,
    batcher: Batcher,
    ttl: Duration,
}

impl Holdings {
    /// Holdings read through `rpc`, cached for at most `ttl` (`STREAMGATE_OWNERSHIP_TTL`).
    pub fn new(rpc: RpcChains, store: Arc<dyn Store>, ttl: Duration) -> Self {
        let loads = moka::future::Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .expire_after(AgeLimit(ttl))
            .build();
        Self {
            fresh: Arc::new(quick_cache::sync::Cache::new(CACHE_CAPACITY as usize)),
            loads,
            store,
            batcher: Batcher {
                rpc,
                queues: Arc::default(),
            },
            ttl,
        }
    }

    /// Whether `wallets` together satisfy `rule`.
    pub async fn evaluate(&self, rule: &Rule, wallets: &[Wallet]) -> Verdict {
        // The usual rule, one token condition, is decided on its holding alone, without a table.
        if let Rule::Token(only) = rule {
            let amount = self.held(only, wallets).await;
            return rule.decide(&|_| amount.clone());
        }
        let conditions = rule.conditions();
        let amounts = join_all(conditions.iter().map(|c| self.held(c, wallets))).await;
        let table: Vec<_> = conditions.into_iter().zip(amounts).collect();
        rule.decide(&|condition| {
            table
                .iter()
                .find(|(c, _)| *c == condition)
                .map(|(_, amount)| amount.clone())
                .unwrap_or_else(|| Err(ChainError::NotConfigured(condition.chain_id)))
        })
    }

    /// What `wallets` hold together of the condition's token; a wallet that speaks for its address on one
    /// chain only counts on that chain. When some holdings could not be read, the sum of the others
    /// answers only if it already reaches the condition's minimum.
    pub async fn held(&self, condition: &TokenCondition, wallets: &[Wallet]) -> Result<U256, ChainError> {
        let mut total = U256::ZERO;
        let mut failure = None;
        let mut add = |holding: Result<U256, ChainError>| match holding {
            Ok(amount) => total = total.saturating_add(amount),
            Err(err) => failure = failure.take().or(Some(err)),
        };
        let counts = |wallet: &&Wallet| wallet.only_on.is_none_or(|chain| chain == condition.chain_id);
        match wallets {
            // One wallet (the usual account) is awaited as it is, without join_all's allocations.
            [only] if counts(&only) => add(self.holding(HoldingKey::new(condition, only.address)).await),
            [_] => {}
            _ => join_all(
                wallets
                    .iter()
                    .filter(counts)
                    .map(|w| self.holding(HoldingKey::new(condition, w.address))),
            )
            .await
            .into_iter()
            .for_each(add),
        }
        match failure {
            Some(err) if total < condition.min_balance => Err(err),
            _ => Ok(total),
        }
    }

    async fn holding(&self, key: HoldingKey) -> Result<U256, ChainError> {
        if let Some(holding) = self.fresh.get(&key).filter(|h| h.age() < self.ttl) {
            FROM_MEMORY.increment(1);
            return Ok(holding.amount);
        }
        let holding = self
            .loads
            .try_get_with(key.clone(), self.load(key.clone()))
            .await
            .map_err(|err| (*err).clone())?;
        self.fresh.insert(key, holding);
        Ok(holding.amount)
    }

    /// A holding from `Store` while it is young enough, else from the chain (then kept in `Store`).
    async fn load(&self, key: HoldingKey) -> Result<Holding, ChainError> {
        let (pk, sk) = key.store_keys();
        match self.store.get(&pk, &sk).await {
            Ok(Some(item)) => match item.record::<StoredHolding>() {
                Ok(stored) => {
                    let holding = Holding {
                        amount: U256::from_str_radix(&stored.amount, 10).unwrap_or_default(),
                        observed_at: stored.observed_at,
                    };
                    if holding.age() < self.ttl {
                        FROM_STORE.increment(1);
                        return Ok(holding);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "unreadable cached holding; reading the chain"),
            },
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "holdings cache unavailable; reading the chain"),
        }
        FROM_CHAIN.increment(1);
        let observed_at = now_unix_ms();
        let answers = join_all(
            key.reads()
                .into_iter()
                .map(|(target, input)| self.batcher.call(key.chain, target, input)),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let holding = Holding {
            amount: key.amount(&answers),
            observed_at,
        };
        match stored_item(pk, sk, &holding, self.ttl) {
            Ok(item) => {
                if let Err(err) = self.store.put(item, None).await {
                    tracing::warn!(error = %err, "could not keep a holding in the store");
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not keep a holding in the store"),
        }
        Ok(holding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;
    use alloy::sol_types::SolValue;

    const WALLET: Address = address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
    const OTHER: Address = address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
    const TOKEN: Address = address!("0x5FbDB2315678afecb367f032d93F642f64180aa3");

    fn key(standard: Standard, ids: Option<&[u64]>) -> HoldingKey {
        HoldingKey {
            chain: 31337,
            contract: TOKEN,
            standard,
            token_ids: ids.map(|ids| ids.iter().map(|&i| U256::from(i)).collect()),
            wallet: WALLET,
        }
    }

    fn word(value: impl SolValue) -> Option<Bytes> {
        Some(Bytes::from(value.abi_encode()))
    }

    #[test]
    fn reads_and_amounts_per_standard() {
        let coin = key(Standard::Erc20, None);
        let reads = coin.reads();
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].0, TOKEN);
        assert_eq!(reads[0].1[..4], IBalance::balanceOfCall::SELECTOR);
        assert_eq!(coin.amount(&[word(U256::from(7))]), U256::from(7));
        assert_eq!(coin.amount(&[None]), U256::ZERO, "a revert holds nothing");
        assert_eq!(coin.amount(&[Some(Bytes::new())]), U256::ZERO, "no code holds nothing");

        let passes = key(Standard::Erc721, Some(&[1, 2, 3]));
        assert_eq!(passes.reads().len(), 3);
        assert_eq!(passes.reads()[2].1[..4], IERC721Owner::ownerOfCall::SELECTOR);
        let owners = [word(WALLET), word(OTHER), None];
        assert_eq!(passes.amount(&owners), U256::from(1));

        let tickets = key(Standard::Erc1155, Some(&[4, 5]));
        assert_eq!(tickets.reads()[0].1[..4], IERC1155Balance::balanceOfCall::SELECTOR);
        assert_eq!(
            tickets.amount(&[word(U256::from(2)), word(U256::MAX)]),
            U256::MAX,
            "saturates"
        );
    }

    /// Holdings over a chain whose only RPC URL refuses connections, so every chain read fails.
    fn holdings_without_chain(dir: &tempfile::TempDir, ttl: Duration) -> (Holdings, Arc<dyn Store>) {
        use crate::adapters::local::{LocalDb, LocalStore};
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(LocalDb::open(&dir.path().join("db")).expect("db")));
        let chains =
            crate::chains::Chains::from_vars([("STREAMGATE_RPC_31337", "http://127.0.0.1:1")]).expect("chains");
        let rpc = RpcChains::new(&chains, Duration::from_secs(2));
        (Holdings::new(rpc, store.clone(), ttl), store)
    }

    /// Keeps `amount` in the store as a holding observed now, as a read from the chain would (for a
    /// minute: the holdings' own TTL decides whether it is young enough).
    async fn store_holding(store: &dyn Store, key: &HoldingKey, amount: u64) {
        let (pk, sk) = key.store_keys();
        let holding = Holding {
            amount: U256::from(amount),
            observed_at: chrono::Utc::now().timestamp_millis(),
        };
        let item = stored_item(pk, sk, &holding, Duration::from_secs(60)).expect("item");
        store.put(item, None).await.expect("put");
    }

    #[tokio::test]
    async fn warm_answers_come_from_memory_until_they_reach_the_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ttl = Duration::from_millis(400);
        let (holdings, store) = holdings_without_chain(&dir, ttl);
        let coin = key(Standard::Erc20, None);
        store_holding(store.as_ref(), &coin, 7).await;
        assert_eq!(
            holdings.holding(coin.clone()).await.expect("from the store"),
            U256::from(7)
        );

        // A newer answer in the store is not read while the one in memory is young enough.
        store_holding(store.as_ref(), &coin, 9).await;
        assert_eq!(
            holdings.holding(coin.clone()).await.expect("from memory"),
            U256::from(7)
        );

        // Past the TTL neither cache answers, nor the store (its answer is as old); the chain fails.
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        let err = holdings.holding(coin.clone()).await.expect_err("nothing young enough");
        assert!(matches!(err, ChainError::Unavailable { .. }), "{err:?}");
    }

    /// A chain without Multicall3 whose every token is owned by `owner`: a JSON-RPC node on loopback
    /// that counts the `eth_call`s it answers.
    async fn chain_owned_by(owner: Address) -> (RpcChains, Arc<std::sync::atomic::AtomicUsize>) {
        use serde_json::{Value, json};
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let answer = move |axum::Json(request): axum::Json<Value>| {
            let result = match request["method"].as_str() {
                Some("eth_call") => {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    json!(Bytes::from(owner.abi_encode()))
                }
                _ => json!("0x"),
            };
            std::future::ready(axum::Json(
                json!({"jsonrpc": "2.0", "id": request["id"], "result": result}),
            ))
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let app = axum::Router::new().route("/", axum::routing::post(answer));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let chains = crate::chains::Chains::from_vars([("STREAMGATE_RPC_31337", url.as_str())]).expect("chains");
        (RpcChains::new(&chains, Duration::from_secs(5)), calls)
    }

    #[tokio::test]
    async fn a_batch_makes_each_read_once() {
        let (rpc, calls) = chain_owned_by(OTHER).await;
        let batcher = Batcher {
            rpc,
            queues: Arc::default(),
        };
        let owner_of = |id: u64| {
            Bytes::from(
                IERC721Owner::ownerOfCall {
                    tokenId: U256::from(id),
                }
                .abi_encode(),
            )
        };
        // As a check of two token ids for two wallets asks: each `ownerOf` twice, in one batch.
        let asked = [1, 2, 1, 2].map(|id| batcher.call(31337, TOKEN, owner_of(id)));
        for answer in join_all(asked).await {
            assert_eq!(answer.expect("answered"), word(OTHER));
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn store_keys_tell_id_sets_apart() {
        let (pk, sk) = key(Standard::Erc20, None).store_keys();
        assert_eq!(pk, format!("holding#31337#{TOKEN}#{WALLET}"));
        assert_eq!(sk, "erc20");
        let (_, a) = key(Standard::Erc721, Some(&[1, 2])).store_keys();
        let (_, b) = key(Standard::Erc721, Some(&[1, 3])).store_keys();
        assert_ne!(a, b);
        assert!(a.starts_with("erc721#"));
    }
}
