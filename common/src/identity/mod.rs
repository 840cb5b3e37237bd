//! Identity: Sign-In with Ethereum (EIP-4361), single-use nonces, accounts with linked wallets, and
//! session tokens.

pub mod accounts;
pub mod nonces;
pub mod sessions;
pub mod siwe;

use std::collections::BTreeSet;
use std::sync::Arc;

use alloy_primitives::Address;
use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use self::accounts::{AccountError, AccountId, Accounts, MAX_WALLETS, Proof};
use self::nonces::{NonceError, Nonces};
use self::sessions::{Session, SessionError, Sessions};
use self::siwe::{Expectations, SignInError, SiweMessage, decode_signature, recover_signer};
use crate::chains::rpc::{ChainError, ContractWallets};
use crate::problem::ApiError;
use crate::store::StoreError;

/// A signed EIP-4361 message, as clients send it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedMessage {
    pub message: String,
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    SignIn(#[from] SignInError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl From<NonceError> for AuthError {
    fn from(err: NonceError) -> Self {
        match err {
            NonceError::Refused(refusal) => Self::SignIn(refusal),
            NonceError::Store(store) => Self::Store(store),
        }
    }
}

fn bearer_challenge(error: ApiError) -> ApiError {
    error.with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::SignIn(refusal) => ApiError::unauthorized(refusal.code(), refusal.to_string()),
            AuthError::Session(SessionError::Invalid) => bearer_challenge(ApiError::unauthorized(
                "invalid_token",
                "the bearer token is missing, malformed, expired or not ours",
            )),
            AuthError::Session(SessionError::Revoked) => bearer_challenge(ApiError::unauthorized(
                "session_revoked",
                "this session has ended; sign in again",
            )),
            AuthError::Session(SessionError::Store(store)) | AuthError::Store(store) => ApiError::unavailable(&store),
            AuthError::Account(AccountError::WalletTaken) => {
                ApiError::conflict("wallet_taken", "this wallet is linked to another account")
            }
            AuthError::Account(AccountError::NotLinked) => {
                ApiError::not_found("this wallet is not linked to your account")
            }
            AuthError::Account(AccountError::LastWallet) => ApiError::conflict(
                "last_wallet",
                "an account keeps at least one wallet; link another first",
            ),
            AuthError::Account(AccountError::TooManyWallets) => ApiError::conflict(
                "too_many_wallets",
                format!("an account links at most {MAX_WALLETS} wallets; unlink one first"),
            ),
            AuthError::Account(refused @ AccountError::OtherChain { .. }) => {
                ApiError::unauthorized("wallet_chain_mismatch", refused.to_string())
            }
            AuthError::Account(AccountError::Store(store)) => ApiError::unavailable(&store),
            AuthError::Chain(chain) => {
                tracing::warn!(error = %chain, "a contract wallet's signature could not be checked");
                ApiError::chain_unavailable("the wallet's chain did not answer; try again shortly")
            }
        }
    }
}

/// Sign-in and wallet linking: every check of EIP-4361 against this service's domain and chains.
#[derive(Clone)]
pub struct SignIn {
    pub nonces: Nonces,
    pub accounts: Accounts,
    pub sessions: Sessions,
    /// The domain messages must name (`host[:port]`); their URI must be on it too.
    pub domain: String,
    pub chains: BTreeSet<u64>,
    /// Checks signatures of contract wallets (EIP-1271) on the message's chain.
    pub contract_wallets: Arc<dyn ContractWallets>,
    /// Tolerated clock difference.
    pub skew: chrono::Duration,
}

/// A successful sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub token: String,
    pub address: Address,
    pub expires_at: DateTime<Utc>,
}

impl SignIn {
    /// Checks a signed message: grammar, domain, chain, URI, times, nonce, then the signature (EIP-191,
    /// or EIP-1271 for contract wallets); then uses up its nonce, so that a replay is refused. Failed
    /// attempts leave the nonce usable. Returns the message and how its signer proved the address.
    pub async fn verify(&self, signed: &SignedMessage) -> Result<(SiweMessage, Proof), AuthError> {
        let message = SiweMessage::parse(&signed.message).map_err(SignInError::Malformed)?;
        let expect = Expectations {
            domain: &self.domain,
            uri_authority: Some(&self.domain),
            now: Utc::now(),
            skew: self.skew,
            refuse_future_issuance: true,
        };
        if !message.domain.eq_ignore_ascii_case(expect.domain) {
            return Err(SignInError::DomainMismatch.into());
        }
        if !self.chains.contains(&message.chain_id) {
            return Err(SignInError::ChainUnsupported.into());
        }
        message.check(&expect)?;
        self.nonces.check(&message.nonce).await?;
        let signature = decode_signature(&signed.signature)?;
        let signed_by_key =
            signature.len() == 65 && recover_signer(&signed.message, &signature).ok() == Some(message.address);
        let mut proof = Proof::Key;
        if !signed_by_key {
            // Not the address's own key: the address may be a contract wallet that vouches for it.
            let hash = alloy_primitives::eip191_hash_message(&signed.message);
            if !self
                .contract_wallets
                .is_valid_signature(message.chain_id, message.address, hash, &signature)
                .await?
            {
                return Err(SignInError::InvalidSignature.into());
            }
            proof = Proof::Contract {
                chain_id: message.chain_id,
            };
        }
        self.nonces.consume(&message.nonce).await?;
        Ok((message, proof))
    }

    /// Signs in the wallet of a signed message, creating its account on first sign-in.
    pub async fn sign_in(&self, signed: &SignedMessage) -> Result<SignedIn, AuthError> {
        let (message, proof) = self.verify(signed).await?;
        let account = self.accounts.sign_in_proven(&message.address, proof).await?;
        let wallets = self.accounts.wallets(&account).await?;
        let (token, expires_at) = self.sessions.issue(&account, &message.address, &wallets)?;
        tracing::info!(address = %message.address, "signed in");
        Ok(SignedIn {
            token,
            address: message.address,
            expires_at,
        })
    }

    /// Links the wallet of a signed message to the session's account.
    pub async fn link(&self, session: &Session, signed: &SignedMessage) -> Result<Address, AuthError> {
        let (message, proof) = self.verify(signed).await?;
        self.accounts
            .link_proven(&session.account, &message.address, proof)
            .await?;
        tracing::info!(address = %message.address, "wallet linked");
        Ok(message.address)
    }
}

/// The session of a request's `Authorization: Bearer` token; refuses the request with a 401 problem
/// when it is missing, invalid, expired or revoked.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<Session>);

impl<S> FromRequestParts<S> for Authenticated
where
    Sessions: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|token| !token.is_empty());
        let Some(token) = token else {
            return Err(bearer_challenge(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "sign in and send the token as `Authorization: Bearer <token>`",
            )));
        };
        let sessions = Sessions::from_ref(state);
        let session = sessions.verify(token).await.map_err(AuthError::from)?;
        sessions.admit(&session)?;
        Ok(Self(session))
    }
}

/// `Option<Authenticated>`: `None` for a request without `Authorization`; a token that is sent must be
/// valid (401 otherwise), so a client never silently loses its identity.
impl<S> OptionalFromRequestParts<S> for Authenticated
where
    Sessions: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// The account a session belongs to.
impl Authenticated {
    pub fn account(&self) -> &AccountId {
        &self.0.account
    }
}
