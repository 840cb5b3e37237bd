//! Session tokens: PASETO v4.public (Ed25519) naming the account, the wallet that signed in and the
//! account's wallets, short-lived, refused after logout (a revocation item in `Store` that lives as long
//! as the token) and once the wallet that signed in is unlinked. Keys are PASERK strings
//! (`k4.secret.…`); tokens signed with the previous key are still accepted, so keys rotate without
//! signing everyone out.

use std::path::Path;
use std::sync::Arc;

use alloy_primitives::Address;
use chrono::{DateTime, Duration, Utc};
use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::FormatAsPaserk;
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{Public, public};

use super::accounts::AccountId;
use crate::limits::Keyed;
use crate::problem::ApiError;
use crate::store::{Item, Store, StoreError};

const ISSUER: &str = "streamgate";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the token is not valid")]
    Invalid,
    #[error("the session has ended")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// The key that signs new tokens and the keys that verify them.
#[derive(Clone)]
pub struct SessionKeys {
    secret: Arc<AsymmetricSecretKey<V4>>,
    verifying: Arc<Vec<AsymmetricPublicKey<V4>>>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    /// Keys from PASERK `k4.secret.` strings: the current one, and optionally the one before it.
    pub fn from_paserk(current: &str, previous: Option<&str>) -> Result<Self, KeyError> {
        let parse = |text: &str| {
            AsymmetricSecretKey::<V4>::try_from(text.trim())
                .map_err(|_| KeyError("a session key is not a k4.secret PASERK".into()))
        };
        let secret = parse(current)?;
        let mut verifying = vec![public_of(&secret)?];
        if let Some(previous) = previous {
            verifying.push(public_of(&parse(previous)?)?);
        }
        Ok(Self {
            secret: Arc::new(secret),
            verifying: Arc::new(verifying),
        })
    }

    /// Reads the key kept at `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_paserk(&text, None),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let pair =
                    AsymmetricKeyPair::<V4>::generate().map_err(|e| KeyError(format!("cannot generate a key: {e}")))?;
                let mut text = String::new();
                pair.secret.fmt(&mut text).map_err(|e| KeyError(e.to_string()))?;
                crate::signing::write_secret_file(path, text.as_bytes())
                    .map_err(|e| KeyError(format!("cannot write {}: {e}", path.display())))?;
                Self::from_paserk(&text, None)
            }
            Err(err) => Err(KeyError(format!("cannot read {}: {err}", path.display()))),
        }
    }

    /// A fresh key as a PASERK string, for operators to put in their secret store.
    pub fn generate_paserk() -> Result<String, KeyError> {
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|e| KeyError(e.to_string()))?;
        let mut text = String::new();
        pair.secret.fmt(&mut text).map_err(|e| KeyError(e.to_string()))?;
        Ok(text)
    }
}

fn public_of(secret: &AsymmetricSecretKey<V4>) -> Result<AsymmetricPublicKey<V4>, KeyError> {
    AsymmetricPublicKey::<V4>::try_from(secret).map_err(|_| KeyError("a session key is malformed".into()))
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub account: AccountId,
    /// The wallet that signed in.
    pub address: Address,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Sessions {
    keys: SessionKeys,
    store: Arc<dyn Store>,
    ttl: Duration,
    /// Sessions whose token signature was checked, by the token itself: a signature that held once
    /// holds until the token expires, so it is checked once per process (an expired entry is checked
    /// again, and refused). A lookup hashes the token with the cache's fast hasher and compares it
    /// whole; bounded by the tokens' total length. Revocation is still asked of the store on every call.
    verified: Arc<quick_cache::sync::Cache<Box<str>, Verified, TokenLength>>,
    /// Authenticated calls per account, when limited.
    calls: Option<Arc<Keyed<AccountId>>>,
}

/// Weighs a verified token by its length, with room for its session.
#[derive(Clone)]
struct TokenLength;

impl quick_cache::Weighter<Box<str>, Verified> for TokenLength {
    fn weight(&self, token: &Box<str>, _: &Verified) -> u64 {
        token.len() as u64 + 128
    }
}

/// A session whose token's signature held, with the keys of its revocation item and of its wallet's
/// link.
#[derive(Clone)]
struct Verified {
    session: Arc<Session>,
    revoked_pk: Arc<str>,
    link_pk: Arc<str>,
    /// The session's expiry in Unix milliseconds, compared with the clock without a calendar.
    expires_ms: i64,
}

/// Bytes of verified tokens remembered at once (about 40,000 sessions of about 700 bytes).
const VERIFIED_BYTES: u64 = 32 * 1024 * 1024;

fn revoked_pk(id: &str) -> String {
    format!("revoked#{id}")
}

impl Sessions {
    pub fn new(keys: SessionKeys, store: Arc<dyn Store>, ttl: Duration) -> Self {
        let verified = Arc::new(quick_cache::sync::Cache::with_weighter(
            (VERIFIED_BYTES / 700) as usize,
            VERIFIED_BYTES,
            TokenLength,
        ));
        Self {
            keys,
            store,
            ttl,
            verified,
            calls: None,
        }
    }

    /// Limits each account to `per_minute` authenticated calls (0: no limit), counted by
    /// [`Sessions::admit`].
    pub fn limited(mut self, per_minute: u32) -> Self {
        self.calls = Keyed::per_minute(per_minute, "calls from this account");
        self
    }

    /// Counts one authenticated call of `session`'s account; `429` past its limit.
    pub fn admit(&self, session: &Session) -> Result<(), ApiError> {
        match &self.calls {
            Some(calls) => calls.check(&session.account),
            None => Ok(()),
        }
    }

    /// Signs a token for `account`, signed in with `address`, listing its `wallets`.
    pub fn issue(
        &self,
        account: &AccountId,
        address: &Address,
        wallets: &[Address],
    ) -> Result<(String, DateTime<Utc>), SessionError> {
        let ttl = self.ttl.to_std().map_err(|_| SessionError::Invalid)?;
        let mut claims = Claims::new_expires_in(&ttl).map_err(|_| SessionError::Invalid)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        claims.issuer(ISSUER).map_err(|_| SessionError::Invalid)?;
        claims.subject(&account.0).map_err(|_| SessionError::Invalid)?;
        claims.token_identifier(&id).map_err(|_| SessionError::Invalid)?;
        claims
            .add_additional("address", address.to_checksum(None))
            .map_err(|_| SessionError::Invalid)?;
        let wallets: Vec<String> = wallets.iter().map(|w| w.to_checksum(None)).collect();
        claims
            .add_additional("wallets", wallets)
            .map_err(|_| SessionError::Invalid)?;
        let expires_at = claims
            .get_claim("exp")
            .and_then(|v| v.as_str())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or(SessionError::Invalid)?;
        let token = public::sign(&self.keys.secret, &claims, None, None).map_err(|_| SessionError::Invalid)?;
        Ok((token, expires_at))
    }

    /// Checks a token's signature (current or previous key), expiry and revocation, and that the wallet
    /// that signed in is still the account's.
    pub async fn verify(&self, token: &str) -> Result<Arc<Session>, SessionError> {
        if token.len() > 4096 {
            return Err(SessionError::Invalid);
        }
        let verified = match self.verified.get(token) {
            Some(verified) if verified.expires_ms > crate::store::now_unix_ms() => verified,
            _ => {
                let session = self.check_signature(token)?;
                let verified = Verified {
                    revoked_pk: revoked_pk(&session.id).into(),
                    link_pk: super::accounts::wallet_pk(&session.address).into(),
                    expires_ms: session.expires_at.timestamp_millis(),
                    session: Arc::new(session),
                };
                self.verified.insert(token.into(), verified.clone());
                verified
            }
        };
        let (revoked, linked) = futures::future::join(
            self.store.get_shared(&verified.revoked_pk, "revoked"),
            super::accounts::linked_to(self.store.as_ref(), &verified.link_pk, &verified.session.account),
        )
        .await;
        if revoked?.is_some() {
            return Err(SessionError::Revoked);
        }
        // Unlinking the wallet that signed in ends its sessions: they no longer speak for the account.
        if !linked? {
            return Err(SessionError::Revoked);
        }
        Ok(verified.session)
    }

    /// The session a token signed by one of the keys describes, if it has not expired.
    fn check_signature(&self, token: &str) -> Result<Session, SessionError> {
        let untrusted = UntrustedToken::<Public, V4>::try_from(token).map_err(|_| SessionError::Invalid)?;
        let mut rules = ClaimsValidationRules::new();
        rules.validate_issuer_with(ISSUER);
        let trusted = self
            .keys
            .verifying
            .iter()
            .find_map(|key| public::verify(key, &untrusted, &rules, None, None).ok())
            .ok_or(SessionError::Invalid)?;
        let claims = trusted.payload_claims().ok_or(SessionError::Invalid)?;
        let text = |name: &str| {
            claims
                .get_claim(name)
                .and_then(|v| v.as_str())
                .ok_or(SessionError::Invalid)
        };
        let session = Session {
            id: text("jti")?.to_owned(),
            account: AccountId(text("sub")?.to_owned()),
            address: text("address")?.parse().map_err(|_| SessionError::Invalid)?,
            expires_at: DateTime::parse_from_rfc3339(text("exp")?)
                .map_err(|_| SessionError::Invalid)?
                .with_timezone(&Utc),
        };
        Ok(session)
    }

    /// Ends a session: its token is refused from now until it would have expired anyway.
    pub async fn revoke(&self, session: &Session) -> Result<(), StoreError> {
        let item = Item::new(revoked_pk(&session.id), "revoked").expiring_at(session.expires_at.timestamp() + 1);
        self.store.put(item, None).await
    }
}

impl SessionKeys {
    /// The keys a deployment configured (`STREAMGATE_SESSION_KEY`, `STREAMGATE_SESSION_PREVIOUS_KEY`), or
    /// with the embedded backend, the key kept in the data dir.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, KeyError> {
        match &config.session_key {
            Some(current) => Self::from_paserk(
                current.expose(),
                config.session_previous_key.as_ref().map(|k| k.expose()),
            ),
            None if config.backend == crate::config::Backend::Local => {
                Self::load_or_create(&config.data_dir.join("keys/session.paserk"))
            }
            None => Err(KeyError(
                "STREAMGATE_SESSION_KEY is required with the aws backend".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::{LocalDb, LocalStore};

    fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        Arc::new(LocalStore::new(LocalDb::open(&dir.path().join("db")).expect("db")))
    }

    fn address() -> Address {
        "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A".parse().expect("address")
    }

    /// The account that `address()` signs in to.
    async fn account_in(store: &Arc<dyn Store>) -> AccountId {
        super::super::accounts::Accounts::new(store.clone())
            .sign_in(&address())
            .await
            .expect("sign in")
    }

    #[tokio::test]
    async fn keys_rotate_without_signing_everyone_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, new, newer) = (
            SessionKeys::generate_paserk().expect("key"),
            SessionKeys::generate_paserk().expect("key"),
            SessionKeys::generate_paserk().expect("key"),
        );
        let store = store(&dir);
        let sessions = |current: &str, previous: Option<&str>| {
            Sessions::new(
                SessionKeys::from_paserk(current, previous).expect("keys"),
                store.clone(),
                Duration::hours(1),
            )
        };
        let account = account_in(&store).await;
        let (token, _) = sessions(&old, None)
            .issue(&account, &address(), &[address()])
            .expect("issue");

        let session = sessions(&new, Some(&old))
            .verify(&token)
            .await
            .expect("the previous key still verifies");
        assert_eq!((session.account.clone(), session.address), (account, address()));
        assert!(matches!(
            sessions(&newer, Some(&new)).verify(&token).await,
            Err(SessionError::Invalid)
        ));
        assert!(matches!(
            sessions(&new, None).verify(&token).await,
            Err(SessionError::Invalid)
        ));
    }

    #[tokio::test]
    async fn refuses_revoked_expired_and_altered_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SessionKeys::generate_paserk().expect("key");
        let keys = SessionKeys::from_paserk(&key, None).expect("keys");
        let store = store(&dir);
        let account = account_in(&store).await;
        let sessions = Sessions::new(keys.clone(), store.clone(), Duration::hours(1));
        let (token, _) = sessions.issue(&account, &address(), &[]).expect("issue");
        let session = sessions.verify(&token).await.expect("valid");

        // A token naming another account than the wallet's.
        let (stranger, _) = sessions.issue(&AccountId::generate(), &address(), &[]).expect("issue");
        assert!(matches!(sessions.verify(&stranger).await, Err(SessionError::Revoked)));

        let mut altered = token.clone().into_bytes();
        let last = altered.len() - 5;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(matches!(sessions.verify(&altered).await, Err(SessionError::Invalid)));

        sessions.revoke(&session).await.expect("revoke");
        assert!(matches!(sessions.verify(&token).await, Err(SessionError::Revoked)));

        let short = Sessions::new(keys, store, Duration::seconds(1));
        let (token, _) = short.issue(&account, &address(), &[]).expect("issue");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert!(matches!(short.verify(&token).await, Err(SessionError::Invalid)));
    }

    #[test]
    fn the_local_key_is_created_once_and_kept_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/session.paserk");
        SessionKeys::load_or_create(&path).expect("create");
        let first = std::fs::read_to_string(&path).expect("read");
        SessionKeys::load_or_create(&path).expect("load");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), first);
        assert!(first.starts_with("k4.secret."));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
