//! Single-use sign-in nonces in `Store`: issued with an expiry, consumed by one conditional write, so two
//! concurrent verifications of one nonce cannot both pass.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;

use super::siwe::SignInError;
use crate::store::{Condition, Item, Store, StoreError};

/// Length of an issued nonce: 24 alphanumerics, about 143 bits.
pub const NONCE_LENGTH: usize = 24;

#[derive(Clone)]
pub struct Nonces {
    store: Arc<dyn Store>,
    ttl: Duration,
}

/// Why a nonce could not be consumed.
#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    #[error(transparent)]
    Refused(SignInError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn pk(nonce: &str) -> String {
    format!("nonce#{nonce}")
}

impl Nonces {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self { store, ttl }
    }

    /// Issues a fresh nonce from the OS random source.
    pub async fn issue(&self) -> Result<(String, DateTime<Utc>), StoreError> {
        let nonce: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(NONCE_LENGTH)
            .map(char::from)
            .collect();
        let expires_at = Utc::now() + self.ttl;
        let item = Item::new(pk(&nonce), "nonce")
            .with("state", "issued")
            .expiring_at(expires_at.timestamp());
        self.store.put(item, Some(Condition::NotExists)).await?;
        Ok((nonce, expires_at))
    }

    /// Refuses a nonce this service did not issue (or that expired) and one already used.
    pub async fn check(&self, nonce: &str) -> Result<(), NonceError> {
        match self.store.get(&pk(nonce), "nonce").await? {
            None => Err(NonceError::Refused(SignInError::NonceUnknown)),
            Some(item) if item.attrs.get("state").and_then(|s| s.as_str()) == Some("issued") => Ok(()),
            Some(_) => Err(NonceError::Refused(SignInError::NonceReused)),
        }
    }

    /// Marks the nonce used, atomically: of concurrent consumers, exactly one succeeds. The used nonce
    /// is kept until its expiry so that a replay is told apart from an unknown nonce.
    pub async fn consume(&self, nonce: &str) -> Result<(), NonceError> {
        let Some(issued) = self.store.get(&pk(nonce), "nonce").await? else {
            return Err(NonceError::Refused(SignInError::NonceUnknown));
        };
        let mut used = issued.clone();
        used.set("state", "used");
        match self
            .store
            .put(used, Some(Condition::Equals("state".into(), "issued".into())))
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(NonceError::Refused(SignInError::NonceReused)),
            Err(other) => Err(other.into()),
        }
    }
}
