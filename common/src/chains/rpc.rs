//! JSON-RPC to the configured chains through alloy, trying each chain's URLs in order until one answers.

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol;
use alloy::sol_types::SolCall;
use alloy::transports::{RpcError as AlloyRpcError, TransportErrorKind};
use async_trait::async_trait;
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
    /// The node answered with an error (a revert, say): final, another URL would say the same.
    Refused(String),
}

/// Providers for every chain that has RPC URLs.
#[derive(Clone)]
pub struct RpcChains {
    providers: BTreeMap<u64, Vec<(Url, RootProvider)>>,
    timeout: Duration,
}

impl RpcChains {
    pub fn new(chains: &Chains, timeout: Duration) -> Self {
        install_crypto_provider();
        let providers = chains
            .iter()
            .filter(|chain| !chain.rpc_urls.is_empty())
            .map(|chain| {
                let providers = chain
                    .rpc_urls
                    .iter()
                    .map(|url| (url.clone(), RootProvider::new_http(url.clone())))
                    .collect();
                (chain.chain_id, providers)
            })
            .collect();
        Self { providers, timeout }
    }

    pub fn is_configured(&self, chain: u64) -> bool {
        self.providers.contains_key(&chain)
    }

    async fn first_answer<T, F, Fut>(&self, chain: u64, call: F) -> Result<Outcome<T>, ChainError>
    where
        F: Fn(RootProvider) -> Fut,
        Fut: Future<Output = Result<T, AlloyRpcError<TransportErrorKind>>>,
    {
        let providers = self.providers.get(&chain).ok_or(ChainError::NotConfigured(chain))?;
        let mut last = String::from("no URL tried");
        for (url, provider) in providers {
            match tokio::time::timeout(self.timeout, call(provider.clone())).await {
                Ok(Ok(answer)) => return Ok(Outcome::Answer(answer)),
                Ok(Err(AlloyRpcError::ErrorResp(payload))) => return Ok(Outcome::Refused(payload.message.to_string())),
                Ok(Err(err)) => last = format!("{}: {err}", url.host_str().unwrap_or("?")),
                Err(_) => last = format!("{}: no answer within {:?}", url.host_str().unwrap_or("?"), self.timeout),
            }
            tracing::warn!(chain, error = %last, "RPC URL failed; trying the next");
        }
        Err(ChainError::Unavailable { chain, last })
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
            .first_answer(chain, |p| async move { p.get_code_at(wallet).await })
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
        let request = TransactionRequest::default().to(wallet).input(input.into());
        let answer = self
            .first_answer(chain, |p| {
                let request = request.clone();
                async move { p.call(request).await }
            })
            .await?;
        Ok(match answer {
            Outcome::Answer(output) => output.get(..4) == Some(&EIP1271_MAGIC[..]),
            Outcome::Refused(reason) => {
                tracing::debug!(chain, %wallet, %reason, "isValidSignature reverted");
                false
            }
        })
    }
}
