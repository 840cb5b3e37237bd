//! Accounts and their linked wallets. A wallet belongs to one account at most (a conditional write on
//! the wallet's own item); an account lists its wallets under its partition.

use std::sync::Arc;

use alloy_primitives::Address;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chains::holdings::Wallet;
use crate::store::{Condition, Item, Query, Store, StoreError};

/// An account's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub String);

impl AccountId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the wallet is linked to another account")]
    WalletTaken,
    #[error("the wallet is not linked to this account")]
    NotLinked,
    #[error("an account keeps at least one wallet")]
    LastWallet,
    #[error("an account links at most {MAX_WALLETS} wallets")]
    TooManyWallets,
    /// A contract wallet signs in only on the chain whose contract vouched for it when it was linked.
    #[error("this contract wallet was linked on chain {linked}; sign in on that chain")]
    OtherChain { linked: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The most wallets one account links. Every gated playback reads each of them on the chain (for an
/// ERC-721 rule with token ids, once per id as well), so the count bounds what one viewer costs in RPC
/// calls; it is also well below what one read of an account's wallets returns.
pub const MAX_WALLETS: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WalletLink {
    account: AccountId,
    /// Stored with its EIP-55 checksum; read once per stored link, then shared by every read of it.
    #[serde(serialize_with = "checksummed")]
    address: Address,
    linked_at: DateTime<Utc>,
    /// For a contract wallet (EIP-1271): the chain whose contract vouched for it when it was linked. The
    /// same address on another chain may be another contract, controlled by someone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vouched_on: Option<u64>,
}

/// How a signer proved it controls an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The address's own key signed (EIP-191): it controls the address on every chain.
    Key,
    /// The contract at the address vouched for the signature (EIP-1271) on this chain only.
    Contract { chain_id: u64 },
}

impl WalletLink {
    /// Whether `proof` speaks for this link: a contract wallet's signature counts on its own chain only.
    fn admits(&self, proof: Proof) -> Result<(), AccountError> {
        match (self.vouched_on, proof) {
            (Some(linked), Proof::Contract { chain_id }) if linked != chain_id => {
                Err(AccountError::OtherChain { linked })
            }
            _ => Ok(()),
        }
    }
}

fn checksummed<S: serde::Serializer>(address: &Address, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&address.to_checksum(None))
}

#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
}

pub(super) fn wallet_pk(address: &Address) -> String {
    wallet_key(&address.to_checksum(None))
}

/// The key of a wallet's link, by the wallet's checksummed address.
fn wallet_key(checksummed: &str) -> String {
    ["wallet#", checksummed].concat()
}

fn account_pk(account: &AccountId) -> String {
    ["account#", account.0.as_str()].concat()
}

/// Whether the wallet link under `link_pk` (see [`wallet_pk`]) names `account`.
pub(super) async fn linked_to(store: &dyn Store, link_pk: &str, account: &AccountId) -> Result<bool, StoreError> {
    match store.get_shared(link_pk, "link").await? {
        Some(item) => Ok(&item.record_shared::<WalletLink>()?.account == account),
        None => Ok(false),
    }
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The account `address` belongs to, if any.
    pub async fn account_of(&self, address: &Address) -> Result<Option<AccountId>, StoreError> {
        self.linked_account(&wallet_pk(address)).await
    }

    /// The account of a wallet written as text, as records keep them: text in the EIP-55 form links
    /// write is found without computing the checksum again; other text that is an address is looked up
    /// in that form; text that is no address has no account.
    pub async fn account_of_text(&self, address: &str) -> Result<Option<AccountId>, StoreError> {
        if let Some(account) = self.linked_account(&wallet_key(address)).await? {
            return Ok(Some(account));
        }
        match address.parse::<Address>() {
            Ok(parsed) if parsed.to_checksum(None) != address => self.account_of(&parsed).await,
            _ => Ok(None),
        }
    }

    async fn linked_account(&self, pk: &str) -> Result<Option<AccountId>, StoreError> {
        Ok(self.wallet_link(pk).await?.map(|link| link.account.clone()))
    }

    async fn wallet_link(&self, pk: &str) -> Result<Option<Arc<WalletLink>>, StoreError> {
        match self.store.get(pk, "link").await? {
            Some(item) => Ok(Some(item.record_shared::<WalletLink>()?)),
            None => Ok(None),
        }
    }

    /// The account of `address`, created with it as first wallet when it has none; signed by the
    /// address's own key.
    pub async fn sign_in(&self, address: &Address) -> Result<AccountId, AccountError> {
        self.sign_in_proven(address, Proof::Key).await
    }

    /// [`Accounts::sign_in`] with a signature proven by `proof`: a contract wallet linked on one chain
    /// is refused on another.
    pub async fn sign_in_proven(&self, address: &Address, proof: Proof) -> Result<AccountId, AccountError> {
        if let Some(link) = self.wallet_link(&wallet_pk(address)).await? {
            link.admits(proof)?;
            let account = link.account.clone();
            // An account that lists no wallet is a first link whose second write failed (see `link`):
            // completed here, or the account could never be used. Any other account lists one at
            // least (`unlink` keeps the last), and its sign-ins write nothing: one racing an unlink of
            // this wallet would list it again after the unlink took it off.
            if self.wallets(&account).await?.is_empty() {
                self.link_proven(&account, address, proof).await?;
            }
            return Ok(account);
        }
        let account = AccountId::generate();
        match self.link_proven(&account, address, proof).await {
            Ok(()) => Ok(account),
            // A concurrent first sign-in of the same wallet won: use its account.
            Err(AccountError::WalletTaken) => match self.wallet_link(&wallet_pk(address)).await? {
                Some(link) => link.admits(proof).map(|()| link.account.clone()),
                None => Err(AccountError::WalletTaken),
            },
            Err(other) => Err(other),
        }
    }

    /// Links `address` to `account`; refused when it belongs to another account, or when the account
    /// already has [`MAX_WALLETS`]. Linking a wallet already on this account succeeds.
    pub async fn link(&self, account: &AccountId, address: &Address) -> Result<(), AccountError> {
        self.link_proven(account, address, Proof::Key).await
    }

    /// [`Accounts::link`] with a signature proven by `proof`, which a new link keeps.
    pub async fn link_proven(&self, account: &AccountId, address: &Address, proof: Proof) -> Result<(), AccountError> {
        let wallets = self.wallets(account).await?;
        if wallets.contains(address) {
            return Ok(());
        }
        if wallets.len() >= MAX_WALLETS {
            return Err(AccountError::TooManyWallets);
        }
        let link = WalletLink {
            account: account.clone(),
            address: *address,
            linked_at: Utc::now(),
            vouched_on: match proof {
                Proof::Key => None,
                Proof::Contract { chain_id } => Some(chain_id),
            },
        };
        let wrote_link = match self
            .store
            .put(
                Item::from_record(wallet_pk(address), "link", &link)?,
                Some(Condition::NotExists),
            )
            .await
        {
            Ok(()) => true,
            // Already this account's, but not on its list: a link whose second write failed. Writing
            // the list entry again completes it.
            Err(StoreError::ConditionFailed) => match self.account_of(address).await? {
                Some(owner) if &owner == account => false,
                _ => return Err(AccountError::WalletTaken),
            },
            Err(other) => return Err(other.into()),
        };
        let listed = Item::from_record(account_pk(account), wallet_pk(address), &link)?;
        self.store.put(listed, None).await?;
        // Links made at the same moment each saw room for one more: any that finds the account over
        // the limit once written takes itself back (the link it found in place stays).
        if self.wallets(account).await?.len() > MAX_WALLETS {
            self.store
                .delete(&account_pk(account), &wallet_pk(address), None)
                .await?;
            if wrote_link {
                self.store.delete(&wallet_pk(address), "link", None).await?;
            }
            return Err(AccountError::TooManyWallets);
        }
        Ok(())
    }

    /// The account's wallets for evaluating holdings: a contract wallet counts on the chain it was
    /// linked on only.
    pub async fn holders(&self, account: &AccountId) -> Result<Vec<Wallet>, StoreError> {
        let page = self.listed(account).await?;
        page.items
            .iter()
            .map(|item| {
                let link = item.record_shared::<WalletLink>()?;
                Ok(Wallet {
                    address: link.address,
                    only_on: link.vouched_on,
                })
            })
            .collect()
    }

    async fn listed(&self, account: &AccountId) -> Result<Arc<crate::store::Page>, StoreError> {
        self.store
            .query_shared(
                &account_pk(account),
                Query {
                    limit: Some(1000),
                    ..Query::prefix("wallet#")
                },
            )
            .await
    }

    /// The account's wallets, in the order of their addresses.
    pub async fn wallets(&self, account: &AccountId) -> Result<Vec<Address>, StoreError> {
        let page = self.listed(account).await?;
        page.items
            .iter()
            .map(|item| Ok(item.record_shared::<WalletLink>()?.address))
            .collect()
    }

    /// Unlinks `address` from `account`. The last wallet stays: an account without wallets could never
    /// sign in again.
    pub async fn unlink(&self, account: &AccountId, address: &Address) -> Result<(), AccountError> {
        if self.account_of(address).await?.as_ref() != Some(account) {
            return Err(AccountError::NotLinked);
        }
        if self.wallets(account).await?.len() <= 1 {
            return Err(AccountError::LastWallet);
        }
        let listed = self
            .store
            .get(&account_pk(account), &wallet_pk(address))
            .await?
            .ok_or(AccountError::NotLinked)?;
        self.store
            .delete(&account_pk(account), &wallet_pk(address), None)
            .await?;
        // Unlinks made at the same moment each saw another wallet left: any that finds none left once
        // it took its own off the list puts it back.
        if self.wallets(account).await?.is_empty() {
            self.store.put(listed, None).await?;
            return Err(AccountError::LastWallet);
        }
        let owned = Condition::Equals("account".into(), serde_json::Value::String(account.0.clone()));
        match self.store.delete(&wallet_pk(address), "link", Some(owned)).await {
            Ok(()) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::{LocalDb, LocalStore};

    #[tokio::test]
    async fn a_wallet_written_as_text_finds_its_account_in_any_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = accounts_in(&dir);
        let wallet: Address = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A".parse().expect("address");
        let account = accounts.sign_in(&wallet).await.expect("sign in");

        let checksummed = wallet.to_checksum(None);
        assert_eq!(
            accounts.account_of_text(&checksummed).await.expect("read"),
            Some(account.clone())
        );
        let lower = checksummed.to_lowercase();
        assert_eq!(accounts.account_of_text(&lower).await.expect("read"), Some(account));
        let stranger = "0x0000000000000000000000000000000000000001";
        assert_eq!(accounts.account_of_text(stranger).await.expect("read"), None);
        assert_eq!(accounts.account_of_text("not an address").await.expect("read"), None);
    }

    #[tokio::test]
    async fn links_are_stored_with_checksummed_addresses_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalStore::new(LocalDb::open(&dir.path().join("db")).expect("db")));
        let accounts = Accounts::new(store.clone());
        let wallet: Address = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A".parse().expect("address");
        let account = accounts.sign_in(&wallet).await.expect("sign in");

        let stored = store
            .get(&wallet_pk(&wallet), "link")
            .await
            .expect("read")
            .expect("link");
        assert_eq!(
            stored.attrs.get("address"),
            Some(&serde_json::json!(wallet.to_checksum(None)))
        );
        assert_eq!(accounts.wallets(&account).await.expect("wallets"), vec![wallet]);
    }

    fn accounts_in(dir: &tempfile::TempDir) -> Accounts {
        Accounts::new(Arc::new(LocalStore::new(
            LocalDb::open(&dir.path().join("db")).expect("db"),
        )))
    }

    /// The `n`th of a row of distinct wallets.
    fn wallet(n: usize) -> Address {
        Address::left_padding_from(&(n as u64 + 1).to_be_bytes())
    }

    #[tokio::test]
    async fn an_account_links_a_bounded_number_of_wallets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = accounts_in(&dir);
        let account = accounts.sign_in(&wallet(0)).await.expect("sign in");
        for n in 1..MAX_WALLETS {
            accounts.link(&account, &wallet(n)).await.expect("link");
        }
        assert!(matches!(
            accounts.link(&account, &wallet(MAX_WALLETS)).await,
            Err(AccountError::TooManyWallets)
        ));
        // Linking one already linked still succeeds, and another account is not held back.
        accounts.link(&account, &wallet(3)).await.expect("already linked");
        assert_eq!(accounts.wallets(&account).await.expect("wallets").len(), MAX_WALLETS);
        assert!(accounts.account_of(&wallet(MAX_WALLETS)).await.expect("read").is_none());
        accounts.sign_in(&wallet(MAX_WALLETS)).await.expect("a new account");
    }

    #[tokio::test]
    async fn a_link_whose_listing_was_not_written_is_completed_at_sign_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = accounts_in(&dir);
        let account = AccountId::generate();
        // The first of a link's two writes, alone.
        let link = WalletLink {
            account: account.clone(),
            address: wallet(0),
            linked_at: Utc::now(),
            vouched_on: None,
        };
        let item = Item::from_record(wallet_pk(&wallet(0)), "link", &link).expect("item");
        accounts.store.put(item, None).await.expect("put");
        assert!(accounts.wallets(&account).await.expect("wallets").is_empty());

        assert_eq!(accounts.sign_in(&wallet(0)).await.expect("sign in"), account);
        assert_eq!(accounts.wallets(&account).await.expect("wallets"), [wallet(0)]);
        // So is one linked again.
        let second = Item::from_record(wallet_pk(&wallet(1)), "link", &link).expect("item");
        accounts.store.put(second, None).await.expect("put");
        accounts.link(&account, &wallet(1)).await.expect("link");
        assert_eq!(accounts.wallets(&account).await.expect("wallets").len(), 2);
    }

    #[tokio::test]
    async fn a_sign_in_during_an_unlink_does_not_list_the_wallet_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = accounts_in(&dir);
        let account = accounts.sign_in(&wallet(0)).await.expect("sign in");
        accounts.link(&account, &wallet(1)).await.expect("link");
        // An unlink of wallet 1 half done: off the list, its link not yet deleted.
        let listing = wallet_pk(&wallet(1));
        accounts
            .store
            .delete(&account_pk(&account), &listing, None)
            .await
            .expect("delete");
        assert_eq!(accounts.sign_in(&wallet(1)).await.expect("sign in"), account);
        accounts
            .store
            .delete(&wallet_pk(&wallet(1)), "link", None)
            .await
            .expect("delete");
        assert_eq!(accounts.wallets(&account).await.expect("wallets"), [wallet(0)]);
    }

    #[tokio::test]
    async fn unlinks_made_at_once_leave_a_wallet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = accounts_in(&dir);
        let account = accounts.sign_in(&wallet(0)).await.expect("sign in");
        accounts.link(&account, &wallet(1)).await.expect("link");
        let (first, second) = futures::future::join(
            accounts.unlink(&account, &wallet(0)),
            accounts.unlink(&account, &wallet(1)),
        )
        .await;
        assert!(first.is_err() || second.is_err(), "{first:?} {second:?}");
        let left = accounts.wallets(&account).await.expect("wallets");
        assert!(!left.is_empty());
        for address in left {
            assert_eq!(
                accounts.account_of(&address).await.expect("read"),
                Some(account.clone())
            );
        }
    }

    #[tokio::test]
    async fn links_made_at_once_do_not_pass_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = accounts_in(&dir);
        let account = accounts.sign_in(&wallet(0)).await.expect("sign in");
        for n in 1..MAX_WALLETS - 1 {
            accounts.link(&account, &wallet(n)).await.expect("link");
        }
        // Room for one more; three try at once.
        let newcomers: Vec<Address> = (MAX_WALLETS - 1..MAX_WALLETS + 2).map(wallet).collect();
        let tries = newcomers.iter().map(|address| accounts.link(&account, address));
        let linked = futures::future::join_all(tries).await;
        assert!(linked.iter().filter(|l| l.is_ok()).count() <= 1, "{linked:?}");
        let wallets = accounts.wallets(&account).await.expect("wallets");
        assert!(wallets.len() <= MAX_WALLETS, "{}", wallets.len());
        for refused in (MAX_WALLETS - 1..MAX_WALLETS + 2).filter(|&n| !wallets.contains(&wallet(n))) {
            assert_eq!(
                accounts.account_of(&wallet(refused)).await.expect("read"),
                None,
                "taken back"
            );
        }
    }

    #[tokio::test]
    async fn a_contract_wallet_signs_in_on_the_chain_it_was_linked_on_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = accounts_in(&dir);
        let on = |chain_id| Proof::Contract { chain_id };
        let account = accounts.sign_in_proven(&wallet(0), on(1)).await.expect("first sign-in");
        assert_eq!(
            accounts.sign_in_proven(&wallet(0), on(1)).await.expect("again"),
            account
        );
        assert!(matches!(
            accounts.sign_in_proven(&wallet(0), on(10)).await,
            Err(AccountError::OtherChain { linked: 1 })
        ));
        // The address's own key speaks for it on every chain.
        assert_eq!(accounts.sign_in(&wallet(0)).await.expect("by key"), account);

        // A wallet linked by its key, or linked as a contract wallet by a second write, keeps the proof
        // it was linked with.
        let keyed = accounts.sign_in(&wallet(1)).await.expect("by key");
        assert_eq!(
            accounts.sign_in_proven(&wallet(1), on(10)).await.expect("any chain"),
            keyed
        );
        accounts.link_proven(&account, &wallet(2), on(137)).await.expect("link");
        assert_eq!(
            accounts.sign_in_proven(&wallet(2), on(137)).await.expect("its chain"),
            account
        );
        assert!(matches!(
            accounts.sign_in_proven(&wallet(2), on(1)).await,
            Err(AccountError::OtherChain { linked: 137 })
        ));
    }
}
