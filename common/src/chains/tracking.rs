//! Deployments followed to their end: registered with `POST /v1/contracts`, then looked at by
//! `tx-tracker` on its schedule (and by the API when asked) until they are confirmed or failed at the
//! chain's confirmation depth, or dropped: replaced by another transaction of the same sender and nonce,
//! or unknown to the chain for [`UNSEEN_BEFORE_DROPPED`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use alloy::consensus::Transaction as _;
use alloy::primitives::{Address, B256};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Chains;
use super::rpc::{ChainError, RpcChains};
use crate::identity::accounts::AccountId;
use crate::store::{Condition, Item, Query, Store, StoreError};

/// How long a transaction no node of its chain knows (neither in a block nor waiting) stays pending.
pub const UNSEEN_BEFORE_DROPPED: chrono::Duration = chrono::Duration::minutes(30);
/// Registered transactions the tracker looks at in one run, oldest-checked first.
const PER_RUN: usize = 1000;
/// Transactions looked at concurrently.
const CONCURRENCY: usize = 8;
/// The index partition of the transactions still pending.
const PENDING: &str = "tx#pending";
/// Longest deployment name.
pub const MAX_NAME: usize = 100;
/// How long the record of a dropped transaction is kept: most were mistakes or replaced, and any signed-in
/// account can register any hash.
const DROPPED_KEPT_FOR: chrono::Duration = chrono::Duration::days(7);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxStatus {
    /// Waiting to be included, or included fewer than the chain's confirmation depth of blocks ago.
    Pending,
    /// Included and successful, at the confirmation depth.
    Confirmed,
    /// Included and reverted, at the confirmation depth.
    Failed,
    /// Replaced by another transaction with its nonce, or unknown to the chain for long.
    Dropped,
}

impl TxStatus {
    pub fn is_final(self) -> bool {
        self != Self::Pending
    }
}

/// What a transaction's chain says of it at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sighting {
    /// The latest block of the chain.
    pub latest_block: u64,
    /// From its receipt: the block holding it, whether it succeeded and the contract it created.
    pub mined: Option<Mined>,
    /// Whether the node knows the transaction, in a block or waiting in its pool.
    pub known: bool,
    /// The sender and nonce, once the transaction has been seen.
    pub sender: Option<(Address, u64)>,
    /// Whether it creates a contract, once seen.
    pub creates_contract: Option<bool>,
    /// Whether a transaction of the sender's now in a block has taken the nonce.
    pub nonce_taken: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mined {
    pub block_number: u64,
    pub success: bool,
    pub contract_address: Option<Address>,
}

/// A registered deployment and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackedTx {
    pub chain_id: u64,
    pub tx_hash: B256,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub registered_by: AccountId,
    pub registered_at: DateTime<Utc>,
    pub status: TxStatus,
    pub confirmations: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u64>,
    /// The contract the deployment created, once it is in a block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<(Address, u64)>,
    /// When a node last knew the transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime<Utc>>,
    pub checked_at: DateTime<Utc>,
}

impl TrackedTx {
    pub fn new(
        chain_id: u64,
        tx_hash: B256,
        name: Option<String>,
        registered_by: AccountId,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            chain_id,
            tx_hash,
            name,
            registered_by,
            registered_at: now,
            status: TxStatus::Pending,
            confirmations: 0,
            block_number: None,
            contract_address: None,
            sender: None,
            last_seen_at: None,
            checked_at: now,
        }
    }

    /// Takes in what the chain says now; `depth` is the chain's confirmation depth. A transaction that
    /// left its block in a reorganisation is pending again.
    pub fn observe(&mut self, sighting: &Sighting, depth: u64, now: DateTime<Utc>) {
        self.checked_at = now;
        if let Some(sender) = sighting.sender {
            self.sender = Some(sender);
        }
        if sighting.known || sighting.mined.is_some() {
            self.last_seen_at = Some(now);
        }
        (self.status, self.confirmations, self.block_number) = match sighting.mined {
            Some(mined) => {
                self.contract_address = mined.contract_address.or(self.contract_address);
                let confirmations = sighting.latest_block.saturating_sub(mined.block_number) + 1;
                let status = match (confirmations >= depth.max(1), mined.success) {
                    (false, _) => TxStatus::Pending,
                    (true, true) => TxStatus::Confirmed,
                    (true, false) => TxStatus::Failed,
                };
                (status, confirmations, Some(mined.block_number))
            }
            None if sighting.nonce_taken => (TxStatus::Dropped, 0, None),
            None if sighting.known => (TxStatus::Pending, 0, None),
            None => {
                let unseen_since = self.last_seen_at.unwrap_or(self.registered_at);
                match now - unseen_since > UNSEEN_BEFORE_DROPPED {
                    true => (TxStatus::Dropped, 0, None),
                    false => (TxStatus::Pending, 0, None),
                }
            }
        };
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("chain {0} has no RPC URL configured")]
    NotConfigured(u64),
    #[error("the transaction does not create a contract")]
    NotADeployment,
    /// A name was given by an account not linked to the wallet that sent the deployment.
    #[error("only the deployer's account names a deployment")]
    NotTheDeployer,
    /// A name was given for a transaction whose sender the chain does not know yet.
    #[error("the chain does not know the transaction's sender yet")]
    SenderUnknown,
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one run of the tracker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub checked: usize,
    pub finished: usize,
    pub failed: usize,
}

/// Registered deployments in the store, and what their chains say of them.
#[derive(Clone)]
pub struct Tracker {
    store: Arc<dyn Store>,
    rpc: RpcChains,
    chains: Chains,
}

fn tx_key(chain_id: u64, hash: &B256) -> (String, &'static str) {
    (format!("tx#{chain_id}#{hash}"), "tx")
}

fn contract_key(chain_id: u64, address: &Address) -> (String, &'static str) {
    (format!("contract#{chain_id}#{address}"), "contract")
}

/// Whether the transaction's `sender` is among the registering account's `wallets`.
fn deployed_by(sender: Option<(Address, u64)>, wallets: &[Address]) -> Result<(), TrackError> {
    match sender {
        None => Err(TrackError::SenderUnknown),
        Some((sender, _)) if wallets.contains(&sender) => Ok(()),
        Some(_) => Err(TrackError::NotTheDeployer),
    }
}

fn index_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Tracker {
    pub fn new(store: Arc<dyn Store>, rpc: RpcChains, chains: Chains) -> Self {
        Self { store, rpc, chains }
    }

    fn depth(&self, chain_id: u64) -> u64 {
        self.chains.get(chain_id).map_or(1, |chain| chain.confirmations).max(1)
    }

    /// Asks the chain about a transaction: its receipt, else the transaction itself, and whether its
    /// nonce was taken by a transaction now at the chain's confirmation depth (so that a replacement a
    /// reorganisation may still undo does not drop it). `sender` is what an earlier look learned.
    pub async fn sight(
        &self,
        chain_id: u64,
        hash: B256,
        sender: Option<(Address, u64)>,
        latest_block: Option<u64>,
    ) -> Result<Sighting, ChainError> {
        let latest_block = match latest_block {
            Some(block) => block,
            None => self.rpc.block_number(chain_id).await?,
        };
        let mined = |receipt: alloy::rpc::types::TransactionReceipt| {
            receipt.block_number.map(|block_number| Mined {
                block_number,
                success: receipt.status(),
                contract_address: receipt.contract_address,
            })
        };
        let mut sighting = Sighting {
            latest_block,
            sender,
            ..Sighting::default()
        };
        if let Some(receipt) = self.rpc.receipt(chain_id, hash).await? {
            sighting.known = true;
            // A reverted creation may come without a contract address; it has no recipient either way.
            sighting.creates_contract = Some(receipt.to.is_none());
            sighting.mined = mined(receipt);
            if let Some(found) = sighting.mined {
                // A receipt's block can be ahead of the node that answered for the latest block.
                sighting.latest_block = sighting.latest_block.max(found.block_number);
                // The sender and nonce, once: a receipt has no nonce.
                if sighting.sender.is_none()
                    && let Some(transaction) = self.rpc.transaction(chain_id, hash).await?
                {
                    sighting.sender = Some((transaction.inner.signer(), transaction.nonce()));
                }
                return Ok(sighting);
            }
        }
        if let Some(transaction) = self.rpc.transaction(chain_id, hash).await? {
            sighting.known = true;
            sighting.creates_contract = Some(transaction.to().is_none());
            sighting.sender = Some((transaction.inner.signer(), transaction.nonce()));
        }
        let deep = latest_block.saturating_sub(self.depth(chain_id) - 1);
        if let Some((sender, nonce)) = sighting.sender
            && self.rpc.nonce_at(chain_id, sender, deep).await? > nonce
        {
            // Taken: by this transaction if it was included between the questions, else by another.
            match self.rpc.receipt(chain_id, hash).await?.and_then(mined) {
                Some(found) => {
                    sighting.latest_block = sighting.latest_block.max(found.block_number);
                    sighting.mined = Some(found);
                }
                None => sighting.nonce_taken = true,
            }
        }
        Ok(sighting)
    }

    /// What the chain says of a transaction nobody registered: `None` when its node does not know it.
    pub async fn look_up(&self, chain_id: u64, hash: B256) -> Result<Option<TrackedTx>, TrackError> {
        if !self.rpc.is_configured(chain_id) {
            return Err(TrackError::NotConfigured(chain_id));
        }
        let sighting = self.sight(chain_id, hash, None, None).await?;
        if !sighting.known {
            return Ok(None);
        }
        let now = Utc::now();
        let mut transaction = TrackedTx::new(chain_id, hash, None, AccountId(String::new()), now);
        transaction.observe(&sighting, self.depth(chain_id), now);
        Ok(Some(transaction))
    }

    /// Registers a deployment and looks at it once: `true` when it is new. Any account may register a
    /// deployment to follow it, but only the deployer's names it: a `name` is taken only from an
    /// account whose `wallets` hold the transaction's sender, and it replaces the name of a deployment
    /// registered before. Registering one again without a name answers it as it stands.
    pub async fn register(
        &self,
        chain_id: u64,
        hash: B256,
        name: Option<String>,
        account: &AccountId,
        wallets: &[Address],
    ) -> Result<(TrackedTx, bool), TrackError> {
        if !self.rpc.is_configured(chain_id) {
            return Err(TrackError::NotConfigured(chain_id));
        }
        if let Some(existing) = self.get(chain_id, hash).await? {
            return match name {
                Some(name) => Ok((self.rename(existing, name, wallets).await?, false)),
                None => Ok((existing, false)),
            };
        }
        let sighting = self.sight(chain_id, hash, None, None).await?;
        if sighting.creates_contract == Some(false) {
            return Err(TrackError::NotADeployment);
        }
        if name.is_some() {
            deployed_by(sighting.sender, wallets)?;
        }
        let now = Utc::now();
        let mut transaction = TrackedTx::new(chain_id, hash, name, account.clone(), now);
        transaction.observe(&sighting, self.depth(chain_id), now);
        match self.save(&transaction, Some(Condition::NotExists)).await {
            Ok(()) => Ok((transaction, true)),
            // Registered meanwhile by another request: named as this one asks.
            Err(StoreError::ConditionFailed) => match (self.get(chain_id, hash).await?, transaction.name) {
                (Some(existing), Some(name)) => Ok((self.rename(existing, name, wallets).await?, false)),
                (Some(existing), None) => Ok((existing, false)),
                (None, _) => Err(StoreError::ConditionFailed.into()),
            },
            Err(err) => Err(err.into()),
        }
    }

    /// Names a registered deployment, for its deployer: `wallets` must hold its sender. A pending one is
    /// looked at as the tracker would, which learns its sender and moves `checkedAt`, so that a look
    /// that read it before this write cannot write the old name back; a final one is written by nobody
    /// else, and is only asked for its sender when that is not known yet.
    async fn rename(
        &self,
        mut transaction: TrackedTx,
        name: String,
        wallets: &[Address],
    ) -> Result<TrackedTx, TrackError> {
        const ATTEMPTS: usize = 3;
        let (chain_id, hash) = (transaction.chain_id, transaction.tx_hash);
        for _ in 0..ATTEMPTS {
            let mut named = transaction.clone();
            if !transaction.status.is_final() {
                named = self.look(&transaction, None).await?;
            } else if transaction.sender.is_none() {
                named.sender = self.sight(chain_id, hash, None, None).await?.sender;
            }
            deployed_by(named.sender, wallets)?;
            named.name = Some(name.clone());
            if named == transaction {
                return Ok(named);
            }
            match self.save_over(&transaction, &named).await {
                Ok(()) => return Ok(named),
                // Another look or rename wrote it since it was read: start again from what it wrote.
                Err(StoreError::ConditionFailed) => {
                    transaction = self.get(chain_id, hash).await?.ok_or(StoreError::ConditionFailed)?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::ConditionFailed.into())
    }

    pub async fn get(&self, chain_id: u64, hash: B256) -> Result<Option<TrackedTx>, StoreError> {
        let (pk, sk) = tx_key(chain_id, &hash);
        self.store.get(&pk, sk).await?.map(|item| item.record()).transpose()
    }

    /// The registered deployment that created the contract at `address`.
    pub async fn by_contract(&self, chain_id: u64, address: Address) -> Result<Option<TrackedTx>, StoreError> {
        let (pk, sk) = contract_key(chain_id, &address);
        let Some(item) = self.store.get(&pk, sk).await? else {
            return Ok(None);
        };
        let hash: B256 = item
            .attrs
            .get("txHash")
            .and_then(|hash| hash.as_str())
            .and_then(|hash| hash.parse().ok())
            .ok_or_else(|| StoreError::InvalidItem("a contract entry without its transaction".into()))?;
        self.get(chain_id, hash).await
    }

    /// Writes the transaction, indexed while pending, and before it the entry that finds it by the
    /// contract it created, once known: a record written final leaves the index, and nothing would
    /// write a missing entry again.
    async fn save(&self, transaction: &TrackedTx, condition: Option<Condition>) -> Result<(), StoreError> {
        if let Some(address) = transaction.contract_address
            && transaction.status != TxStatus::Dropped
        {
            let (pk, sk) = contract_key(transaction.chain_id, &address);
            let entry = Item::new(pk, sk).with("txHash", transaction.tx_hash.to_string());
            self.store.put(entry, None).await?;
        }
        let (pk, sk) = tx_key(transaction.chain_id, &transaction.tx_hash);
        let mut item = Item::from_record(pk, sk, transaction)?;
        match transaction.status {
            TxStatus::Pending => item = item.indexed(PENDING, index_time(transaction.checked_at)),
            TxStatus::Dropped => item = item.expiring_at((transaction.checked_at + DROPPED_KEPT_FOR).timestamp()),
            TxStatus::Confirmed | TxStatus::Failed => {}
        }
        self.store.put(item, condition).await
    }

    /// Writes `next` unless another look wrote the transaction since `seen` was read.
    async fn save_over(&self, seen: &TrackedTx, next: &TrackedTx) -> Result<(), StoreError> {
        let checked = serde_json::to_value(seen.checked_at).map_err(StoreError::backend)?;
        self.save(next, Some(Condition::Equals("checkedAt".into(), checked)))
            .await
    }

    /// Looks at a pending transaction again and keeps what the chain says: the transaction as it then
    /// stands, and whether this look wrote it (another look may have written first). A transaction
    /// registered before its chain knew it that turns out to create no contract is no longer
    /// registered: [`TrackError::NotADeployment`].
    pub async fn refresh(
        &self,
        transaction: &TrackedTx,
        latest_block: Option<u64>,
    ) -> Result<(TrackedTx, bool), TrackError> {
        if transaction.status.is_final() {
            return Ok((transaction.clone(), false));
        }
        let next = self.look(transaction, latest_block).await?;
        match self.save_over(transaction, &next).await {
            Ok(()) => Ok((next, true)),
            Err(StoreError::ConditionFailed) => match self.get(transaction.chain_id, transaction.tx_hash).await? {
                Some(stored) => Ok((stored, false)),
                None => Err(StoreError::ConditionFailed.into()),
            },
            Err(err) => Err(err.into()),
        }
    }

    /// The transaction as its chain says it stands now, not yet written. One that turns out to create
    /// no contract is no longer registered: [`TrackError::NotADeployment`].
    async fn look(&self, transaction: &TrackedTx, latest_block: Option<u64>) -> Result<TrackedTx, TrackError> {
        let sighting = self
            .sight(
                transaction.chain_id,
                transaction.tx_hash,
                transaction.sender,
                latest_block,
            )
            .await?;
        if sighting.creates_contract == Some(false) {
            let (pk, sk) = tx_key(transaction.chain_id, &transaction.tx_hash);
            self.store.delete(&pk, sk, None).await?;
            tracing::info!(chain = transaction.chain_id, tx = %transaction.tx_hash, "a registered transaction creates no contract; removed");
            return Err(TrackError::NotADeployment);
        }
        let mut next = transaction.clone();
        next.observe(&sighting, self.depth(transaction.chain_id), Utc::now());
        Ok(next)
    }

    /// Moves a transaction that could not be looked at to the back of the tracker's queue, so that
    /// those of a chain that does not answer do not keep the others waiting.
    async fn postpone(&self, transaction: &TrackedTx) {
        let next = TrackedTx {
            checked_at: Utc::now(),
            ..transaction.clone()
        };
        if let Err(err) = self.save_over(transaction, &next).await
            && !matches!(err, StoreError::ConditionFailed)
        {
            tracing::warn!(tx = %transaction.tx_hash, error = %err, "could not postpone a tracked transaction");
        }
    }

    /// One run of the tracker: every pending transaction (up to [`PER_RUN`], those checked longest ago
    /// first) looked at again, each chain's latest block asked once. Those that cannot be looked at go
    /// to the back of the queue.
    pub async fn run(&self) -> Result<Run, StoreError> {
        let mut pending = Vec::new();
        let mut query = Query::default();
        while pending.len() < PER_RUN {
            let page = self.store.query_index(PENDING, query.clone()).await?;
            for item in &page.items {
                match item.record::<TrackedTx>() {
                    Ok(transaction) => pending.push(transaction),
                    Err(err) => tracing::warn!(pk = %item.pk, error = %err, "an unreadable tracked transaction"),
                }
            }
            match page.next {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        pending.truncate(PER_RUN);
        let chains: BTreeSet<u64> = pending.iter().map(|t| t.chain_id).collect();
        let mut latest = HashMap::new();
        for chain_id in chains {
            match self.rpc.block_number(chain_id).await {
                Ok(block) => {
                    latest.insert(chain_id, block);
                }
                Err(err) => {
                    tracing::warn!(chain = chain_id, error = %err, "cannot track this chain's transactions now");
                }
            }
        }
        let mut run = Run::default();
        let mut results = futures::stream::iter(pending)
            .map(|transaction| {
                let block = latest.get(&transaction.chain_id).copied();
                async move {
                    let result = match block {
                        Some(block) => self.refresh(&transaction, Some(block)).await,
                        None => Err(TrackError::Chain(ChainError::Unavailable {
                            chain: transaction.chain_id,
                            last: "its latest block could not be read".into(),
                        })),
                    };
                    (transaction, result)
                }
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((transaction, result)) = results.next().await {
            run.checked += 1;
            match result {
                Ok((next, true)) if next.status.is_final() => {
                    run.finished += 1;
                    tracing::info!(chain = next.chain_id, tx = %next.tx_hash, status = ?next.status, "tracked transaction finished");
                }
                Ok(_) => {}
                Err(TrackError::NotADeployment) => run.finished += 1,
                Err(err) => {
                    run.failed += 1;
                    tracing::warn!(tx = %transaction.tx_hash, error = %err, "looking at a tracked transaction failed");
                    self.postpone(&transaction).await;
                }
            }
        }
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENDER: Address = Address::repeat_byte(0x11);
    const CONTRACT: Address = Address::repeat_byte(0x22);

    fn pending(now: DateTime<Utc>) -> TrackedTx {
        TrackedTx::new(1, B256::repeat_byte(1), None, AccountId("a".into()), now)
    }

    fn mined(block_number: u64, success: bool, latest_block: u64) -> Sighting {
        Sighting {
            latest_block,
            mined: Some(Mined {
                block_number,
                success,
                contract_address: Some(CONTRACT),
            }),
            known: true,
            ..Sighting::default()
        }
    }

    #[test]
    fn confirmed_at_the_depth_and_not_before() {
        let now = Utc::now();
        let mut transaction = pending(now);
        transaction.observe(&mined(100, true, 110), 12, now);
        assert_eq!(
            (transaction.status, transaction.confirmations, transaction.block_number),
            (TxStatus::Pending, 11, Some(100))
        );
        assert_eq!(transaction.contract_address, Some(CONTRACT));
        transaction.observe(&mined(100, true, 111), 12, now);
        assert_eq!(
            (transaction.status, transaction.confirmations),
            (TxStatus::Confirmed, 12)
        );
        // A depth of 0 counts as 1: a mined transaction is confirmed by its own block.
        let mut transaction = pending(now);
        transaction.observe(&mined(5, true, 5), 0, now);
        assert_eq!(
            (transaction.status, transaction.confirmations),
            (TxStatus::Confirmed, 1)
        );
    }

    #[test]
    fn reverted_fails_at_the_depth() {
        let now = Utc::now();
        let mut transaction = pending(now);
        transaction.observe(&mined(100, false, 100), 2, now);
        assert_eq!(transaction.status, TxStatus::Pending);
        transaction.observe(&mined(100, false, 101), 2, now);
        assert_eq!(transaction.status, TxStatus::Failed);
    }

    #[test]
    fn a_reorganised_transaction_is_pending_again() {
        let now = Utc::now();
        let mut transaction = pending(now);
        transaction.observe(&mined(100, true, 101), 12, now);
        let waiting = Sighting {
            latest_block: 102,
            known: true,
            ..Sighting::default()
        };
        transaction.observe(&waiting, 12, now);
        assert_eq!(
            (transaction.status, transaction.confirmations, transaction.block_number),
            (TxStatus::Pending, 0, None)
        );
        // The contract it would create is still the one found by its address.
        assert_eq!(transaction.contract_address, Some(CONTRACT));
    }

    #[test]
    fn dropped_when_its_nonce_is_taken_or_it_stays_unknown() {
        let now = Utc::now();
        let mut transaction = pending(now);
        let waiting = Sighting {
            latest_block: 10,
            known: true,
            sender: Some((SENDER, 4)),
            ..Sighting::default()
        };
        transaction.observe(&waiting, 12, now);
        assert_eq!(
            (transaction.status, transaction.sender),
            (TxStatus::Pending, Some((SENDER, 4)))
        );
        let replaced = Sighting {
            latest_block: 11,
            nonce_taken: true,
            ..Sighting::default()
        };
        let mut replaced_transaction = transaction.clone();
        replaced_transaction.observe(&replaced, 12, now);
        assert_eq!(replaced_transaction.status, TxStatus::Dropped);
        // Unknown to the node: pending for a while after it was last seen, then dropped.
        let unknown = Sighting {
            latest_block: 11,
            ..Sighting::default()
        };
        transaction.observe(&unknown, 12, now + UNSEEN_BEFORE_DROPPED);
        assert_eq!(transaction.status, TxStatus::Pending);
        assert_eq!(transaction.sender, Some((SENDER, 4)), "what was learned is kept");
        transaction.observe(&unknown, 12, now + UNSEEN_BEFORE_DROPPED + chrono::Duration::seconds(1));
        assert_eq!(transaction.status, TxStatus::Dropped);
        // Never seen at all: counted from its registration.
        let mut never_seen = pending(now);
        never_seen.observe(&unknown, 12, now + chrono::Duration::minutes(29));
        assert_eq!(never_seen.status, TxStatus::Pending);
        never_seen.observe(&unknown, 12, now + chrono::Duration::minutes(31));
        assert_eq!(never_seen.status, TxStatus::Dropped);
    }

    #[test]
    fn only_the_deployer_names_a_deployment() {
        let deployer = Address::repeat_byte(0x33);
        let other = Address::repeat_byte(0x44);
        assert!(deployed_by(Some((deployer, 7)), &[other, deployer]).is_ok());
        assert!(matches!(
            deployed_by(Some((deployer, 7)), &[other]),
            Err(TrackError::NotTheDeployer)
        ));
        assert!(matches!(
            deployed_by(Some((deployer, 7)), &[]),
            Err(TrackError::NotTheDeployer)
        ));
        assert!(matches!(deployed_by(None, &[deployer]), Err(TrackError::SenderUnknown)));
    }

    #[test]
    fn records_round_trip() {
        let now = Utc::now();
        let mut transaction = pending(now);
        transaction.observe(&mined(100, true, 120), 12, now);
        let value = serde_json::to_value(&transaction).expect("json");
        assert_eq!(value["status"], "confirmed");
        assert_eq!(serde_json::from_value::<TrackedTx>(value).expect("back"), transaction);
    }
}
