//! Gas prices: the base fee a chain's next block charges and the priority fees its recent blocks paid,
//! read from `eth_feeHistory` by `gas-monitor` on its schedule (and by `api-chains` when no recent reading
//! is kept) and kept in the store for `GET /v1/gas/{chainId}`.

use std::sync::Arc;

use alloy::rpc::types::FeeHistory;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rpc::{ChainError, RpcChains};
use crate::store::{Item, Store, StoreError};

/// Blocks a reading looks back over.
pub const HISTORY_BLOCKS: u64 = 20;
/// The priority fees that make the slow, standard and fast tiers: percentiles of what each block's
/// transactions paid, weighted by the gas each used (as `eth_feeHistory` computes them).
pub const PERCENTILES: [f64; 3] = [10.0, 50.0, 90.0];
/// How long a reading is kept after it was made: a chain whose RPC URLs go away stops answering.
const KEPT_FOR: chrono::Duration = chrono::Duration::days(1);

/// Priority fees (tips), in wei: the median over recent blocks of the tip paid at the 10th, 50th and 90th
/// percentile of each block's gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tiers {
    #[serde(with = "decimal")]
    pub slow: u128,
    #[serde(with = "decimal")]
    pub standard: u128,
    #[serde(with = "decimal")]
    pub fast: u128,
}

/// One reading of a chain's fees, in wei.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GasReading {
    pub chain_id: u64,
    /// The base fee of the block after `block_number`, which a transaction sent now pays.
    #[serde(with = "decimal")]
    pub base_fee: u128,
    pub priority_fee: Tiers,
    /// The latest block the reading covers.
    pub block_number: u64,
    pub observed_at: DateTime<Utc>,
}

impl GasReading {
    /// The reading a fee history gives: `None` when it covers no block. Empty blocks, whose zero
    /// rewards say nothing of what a transaction must offer, are left out of the tiers; when every block
    /// is empty the tiers are zero, which is then what inclusion costs.
    pub fn from_history(chain_id: u64, history: &FeeHistory, observed_at: DateTime<Utc>) -> Option<Self> {
        let blocks = u64::try_from(history.gas_used_ratio.len()).ok().filter(|n| *n > 0)?;
        // Nodes of chains without EIP-1559 base fees answer zeros, or nothing.
        let base_fee = history.next_block_base_fee().unwrap_or(0);
        let rewards: Vec<&Vec<u128>> = history
            .reward
            .iter()
            .flatten()
            .zip(&history.gas_used_ratio)
            .filter(|(reward, used)| **used > 0.0 && reward.len() == PERCENTILES.len())
            .map(|(reward, _)| reward)
            .collect();
        let tier = |index: usize| median(rewards.iter().map(|reward| reward[index]).collect());
        Some(Self {
            chain_id,
            base_fee,
            priority_fee: Tiers {
                slow: tier(0),
                standard: tier(1),
                fast: tier(2),
            },
            // `oldest_block` is the node's word: saturating, so a wild one cannot overflow.
            block_number: history.oldest_block.saturating_add(blocks - 1),
            observed_at,
        })
    }
}

/// The middle value (the lower of the two middle ones), 0 for none.
fn median(mut values: Vec<u128>) -> u128 {
    values.sort_unstable();
    values.get(values.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// Wei as gwei in decimal, exactly: `1500000000` is `"1.5"`, `1` is `"0.000000001"`.
pub fn gwei(wei: u128) -> String {
    const WEI_PER_GWEI: u128 = 1_000_000_000;
    let (whole, fraction) = (wei / WEI_PER_GWEI, wei % WEI_PER_GWEI);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:09}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[derive(Debug, thiserror::Error)]
pub enum GasError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("chain {0} answered a fee history of no blocks")]
    NoHistory(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Readings in the store, and new ones from the chains.
#[derive(Clone)]
pub struct GasPrices {
    store: Arc<dyn Store>,
    rpc: RpcChains,
}

fn key(chain_id: u64) -> (String, &'static str) {
    (format!("gas#{chain_id}"), "latest")
}

impl GasPrices {
    pub fn new(store: Arc<dyn Store>, rpc: RpcChains) -> Self {
        Self { store, rpc }
    }

    /// Reads the chain's fees now and keeps the reading as its latest.
    pub async fn sample(&self, chain_id: u64) -> Result<GasReading, GasError> {
        let history = self.rpc.fee_history(chain_id, HISTORY_BLOCKS, &PERCENTILES).await?;
        let now = Utc::now();
        let reading = GasReading::from_history(chain_id, &history, now).ok_or(GasError::NoHistory(chain_id))?;
        let (pk, sk) = key(chain_id);
        let item = Item::from_record(pk, sk, &reading)?.expiring_at((now + KEPT_FOR).timestamp());
        self.store.put(item, None).await?;
        Ok(reading)
    }

    /// The latest reading kept for the chain.
    pub async fn latest(&self, chain_id: u64) -> Result<Option<GasReading>, StoreError> {
        let (pk, sk) = key(chain_id);
        self.store.get(&pk, sk).await?.map(|item| item.record()).transpose()
    }
}

/// Integers as decimal strings, which every JSON reader (and DynamoDB's numbers) holds exactly.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(oldest: u64, base_fees: &[u128], used: &[f64], rewards: &[[u128; 3]]) -> FeeHistory {
        FeeHistory {
            base_fee_per_gas: base_fees.to_vec(),
            gas_used_ratio: used.to_vec(),
            oldest_block: oldest,
            reward: Some(rewards.iter().map(|r| r.to_vec()).collect()),
            ..FeeHistory::default()
        }
    }

    #[test]
    fn tiers_are_medians_over_blocks_with_transactions() {
        let history = history(
            100,
            &[10, 11, 12, 13, 14],
            &[0.5, 0.0, 0.9, 0.2],
            &[[1, 5, 9], [0, 0, 0], [3, 7, 20], [2, 6, 8]],
        );
        let reading = GasReading::from_history(31337, &history, Utc::now()).expect("a reading");
        // The next block's base fee, which the history gives after the latest block's.
        assert_eq!(reading.base_fee, 14);
        assert_eq!(reading.block_number, 103);
        // The empty block's zeros are left out: medians of [1, 3, 2], [5, 7, 6], [9, 20, 8].
        assert_eq!(
            reading.priority_fee,
            Tiers {
                slow: 2,
                standard: 6,
                fast: 9
            }
        );
    }

    #[test]
    fn empty_blocks_and_empty_histories() {
        let idle = history(7, &[1, 1], &[0.0], &[[0, 0, 0]]);
        let reading = GasReading::from_history(1, &idle, Utc::now()).expect("a reading");
        assert_eq!(
            (reading.base_fee, reading.priority_fee.fast, reading.block_number),
            (1, 0, 7)
        );
        assert_eq!(
            GasReading::from_history(1, &history(7, &[], &[], &[]), Utc::now()),
            None
        );
        // A node that gives no rewards (no percentiles asked, or none kept) still gives the base fee.
        let bare = FeeHistory {
            reward: None,
            ..history(7, &[3, 4], &[0.5], &[])
        };
        let reading = GasReading::from_history(1, &bare, Utc::now()).expect("a reading");
        assert_eq!((reading.base_fee, reading.priority_fee.standard), (4, 0));
    }

    #[test]
    fn gwei_is_exact() {
        assert_eq!(gwei(0), "0");
        assert_eq!(gwei(1_500_000_000), "1.5");
        assert_eq!(gwei(1), "0.000000001");
        assert_eq!(gwei(30_000_000_000), "30");
        assert_eq!(gwei(u128::MAX), "340282366920938463463374607431.768211455");
    }

    #[test]
    fn readings_keep_wei_as_decimal_strings() {
        let reading = GasReading {
            chain_id: 1,
            base_fee: u128::MAX,
            priority_fee: Tiers {
                slow: 1,
                standard: 2,
                fast: 3,
            },
            block_number: 9,
            observed_at: Utc::now(),
        };
        let value = serde_json::to_value(&reading).expect("json");
        assert_eq!(value["baseFee"], u128::MAX.to_string());
        assert_eq!(value["priorityFee"]["fast"], "3");
        assert_eq!(serde_json::from_value::<GasReading>(value).expect("back"), reading);
    }
}
