//! The chains StreamGate knows: ten EVM mainnets built in, and any chain given an RPC URL with
//! `STREAMGATE_RPC_<chainId>` (comma-separated fallbacks), such as a local 31337.

pub mod gas;
pub mod holdings;
pub mod rpc;
pub mod tracking;

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::primitives::Address;
use serde::Serialize;
use url::Url;

use crate::problem::ApiError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NativeCurrency {
    pub name: String,
    pub symbol: String,
    pub decimals: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainInfo {
    pub chain_id: u64,
    pub name: String,
    pub native_currency: NativeCurrency,
    /// Blocks, its own included, after which a transaction or transfer counts as final here.
    pub confirmations: u64,
    #[serde(skip)]
    pub rpc_urls: Vec<Url>,
}

/// Id, name, currency (name, symbol), confirmation depth.
const BUILT_IN: [(u64, &str, &str, &str, u64); 10] = [
    (1, "Ethereum", "Ether", "ETH", 12),
    (10, "OP Mainnet", "Ether", "ETH", 10),
    (56, "BNB Smart Chain", "BNB", "BNB", 15),
    (100, "Gnosis", "xDAI", "XDAI", 12),
    (137, "Polygon PoS", "POL", "POL", 64),
    (8453, "Base", "Ether", "ETH", 10),
    (42161, "Arbitrum One", "Ether", "ETH", 10),
    (43114, "Avalanche C-Chain", "Avalanche", "AVAX", 1),
    (59144, "Linea", "Linea Ether", "ETH", 10),
    (534352, "Scroll", "Ether", "ETH", 10),
];

/// Shared, so that handler states holding it clone cheaply (axum clones state for every request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chains {
    by_id: Arc<BTreeMap<u64, ChainInfo>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{name} is not valid: {problem}")]
pub struct ChainsError {
    pub name: String,
    pub problem: String,
}

impl Chains {
    /// The built-in chains, with RPC URLs from `STREAMGATE_RPC_<chainId>` variables among `vars`.
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ChainsError> {
        let mut by_id: BTreeMap<u64, ChainInfo> = BUILT_IN
            .iter()
            .map(|&(chain_id, name, currency, symbol, confirmations)| {
                let native_currency = NativeCurrency {
                    name: currency.into(),
                    symbol: symbol.into(),
                    decimals: 18,
                };
                (
                    chain_id,
                    ChainInfo {
                        chain_id,
                        name: name.into(),
                        native_currency,
                        confirmations,
                        rpc_urls: Vec::new(),
                    },
                )
            })
            .collect();
        for (name, value) in vars {
            let Some(id) = name.strip_prefix("STREAMGATE_RPC_") else {
                continue;
            };
            let fault = |problem: &str| ChainsError {
                name: name.to_owned(),
                problem: problem.to_owned(),
            };
            let chain_id: u64 = id
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| fault("the suffix must be a chain id"))?;
            let mut urls = Vec::new();
            for text in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let url = Url::parse(text).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
                urls.push(url.ok_or_else(|| fault("every URL must be http(s)"))?);
            }
            if urls.is_empty() {
                return Err(fault("give at least one URL"));
            }
            by_id
                .entry(chain_id)
                .or_insert_with(|| ChainInfo {
                    chain_id,
                    name: if chain_id == 31337 {
                        "Local".into()
                    } else {
                        format!("Chain {chain_id}")
                    },
                    native_currency: NativeCurrency {
                        name: "Ether".into(),
                        symbol: "ETH".into(),
                        decimals: 18,
                    },
                    confirmations: 1,
                    rpc_urls: Vec::new(),
                })
                .rpc_urls = urls;
        }
        Ok(Self { by_id: Arc::new(by_id) })
    }

    pub fn get(&self, chain_id: u64) -> Option<&ChainInfo> {
        self.by_id.get(&chain_id)
    }

    pub fn contains(&self, chain_id: u64) -> bool {
        self.by_id.contains_key(&chain_id)
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_id.keys().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ChainInfo> {
        self.by_id.values()
    }
}

/// An address in a path: EIP-55 checksummed, or all one case.
pub fn address_in_path(text: &str) -> Result<Address, ApiError> {
    let digits = text
        .strip_prefix("0x")
        .filter(|d| d.len() == 40 && d.bytes().all(|b| b.is_ascii_hexdigit()));
    let Some(digits) = digits else {
        return Err(ApiError::bad_request(
            "invalid_address",
            "an address is 0x and 40 hexadecimal digits",
        ));
    };
    let one_case = digits == digits.to_ascii_lowercase() || digits == digits.to_ascii_uppercase();
    let parsed = if one_case {
        text.to_ascii_lowercase().parse().ok()
    } else {
        Address::parse_checksummed(text, None).ok()
    };
    parsed.ok_or_else(|| {
        ApiError::bad_request(
            "address_not_checksummed",
            "the address's letter case is not its EIP-55 checksum",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_mainnets_and_added_chains() {
        let chains = Chains::from_vars([
            ("STREAMGATE_RPC_31337", "http://127.0.0.1:8545"),
            ("STREAMGATE_RPC_1", "http://a, http://b"),
            ("OTHER", "x"),
        ])
        .expect("chains");
        assert_eq!(
            chains.ids().collect::<Vec<_>>(),
            [1, 10, 56, 100, 137, 8453, 31337, 42161, 43114, 59144, 534352]
        );
        assert_eq!(chains.get(1).expect("mainnet").rpc_urls.len(), 2);
        assert_eq!(chains.get(31337).expect("local").name, "Local");
        assert!(chains.get(137).expect("polygon").rpc_urls.is_empty());
        assert!(Chains::from_vars([("STREAMGATE_RPC_abc", "http://x")]).is_err());
        assert!(Chains::from_vars([("STREAMGATE_RPC_5", "ftp://x")]).is_err());
        assert!(Chains::from_vars([("STREAMGATE_RPC_5", " , ")]).is_err());
    }

    #[test]
    fn addresses_in_paths_are_checksummed_or_one_case() {
        let checksummed = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        let address: Address = checksummed.parse().expect("address");
        assert_eq!(address_in_path(checksummed).ok(), Some(address));
        assert_eq!(address_in_path(&checksummed.to_lowercase()).ok(), Some(address));
        assert_eq!(
            address_in_path(&checksummed.to_uppercase().replace("0X", "0x")).ok(),
            Some(address)
        );
        let code = |text: &str| address_in_path(text).err().map(|e| e.code());
        assert_eq!(
            code("0x5fbDB2315678afecb367f032d93F642f64180aa3"),
            Some("address_not_checksummed")
        );
        assert_eq!(code(&checksummed[2..]), Some("invalid_address"));
        assert_eq!(code(&checksummed[..41]), Some("invalid_address"));
        assert_eq!(
            code("0xzzbDB2315678afecb367f032d93F642f64180aa3"),
            Some("invalid_address")
        );
    }
}
