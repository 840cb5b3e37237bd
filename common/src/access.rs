//! Access rules: who may play a video (`Access` in the public contract).
//!
//! A rule is `public`, a `token` holding on one chain, or `anyOf` / `allOf` of rules. It is checked on
//! write ([`Rule::parse`], every fault named with the path to it) and stored in its canonical JSON form;
//! at playback it is evaluated ([`Rule::evaluate`]) against the holdings of every wallet linked to the
//! viewer's account, in three-valued logic: a rule whose answer depends on a chain that could not be
//! read is [`Verdict::Unknown`], which playback turns into 503, never into a grant.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use alloy_primitives::{Address, U256};
use serde_json::{Map, Value, json};

use crate::chains::Chains;
use crate::chains::rpc::ChainError;

/// Rules nest at most this deep (the top level is depth 1).
pub const MAX_DEPTH: usize = 4;
/// At most this many token conditions in one rule, so one playback check stays a bounded set of reads.
pub const MAX_CONDITIONS: usize = 16;
/// At most this many token ids in one condition.
pub const MAX_TOKEN_IDS: usize = 100;

/// The token standards a condition can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Standard {
    Erc721,
    Erc1155,
    Erc20,
}

impl Standard {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erc721 => "erc721",
            Self::Erc1155 => "erc1155",
            Self::Erc20 => "erc20",
        }
    }
}

/// A holding of one token contract: at least `min_balance` of it (of the listed ids, when given), summed
/// over the viewer's wallets. For ERC-721 with ids that is how many of those ids the wallets own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenCondition {
    pub chain_id: u64,
    pub contract: Address,
    pub standard: Standard,
    /// Sorted and without repeats.
    pub token_ids: Option<Vec<U256>>,
    pub min_balance: U256,
}

/// A parsed, valid access rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Public,
    Token(TokenCondition),
    AnyOf(Vec<Rule>),
    AllOf(Vec<Rule>),
}

/// What is wrong with a rule, and where (`access.anyOf[1].contract`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct AccessFault {
    pub path: String,
    pub problem: String,
}

/// The answer to whether a viewer's wallets satisfy a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Granted,
    Denied,
    /// The answer depends on holdings that could not be read.
    Unknown(ChainError),
}

impl Rule {
    /// The rule `access` describes, checked against the chains this installation can read.
    pub fn parse(access: &Value, chains: &Chains) -> Result<Self, AccessFault> {
        let mut conditions = 0;
        parse_at(access, "access", 1, (chains, Checksums::Check), &mut conditions)
    }

    /// A rule as stored: it was parsed when it was written, and stored in canonical form, so its
    /// contract addresses are read without checking their EIP-55 checksums again (a hash each). Its
    /// chains are checked again: they are this installation's, which may have changed since.
    pub fn parse_stored(access: &Value, chains: &Chains) -> Result<Self, AccessFault> {
        let mut conditions = 0;
        parse_at(access, "access", 1, (chains, Checksums::Trust), &mut conditions)
    }

    /// The public rule, for videos given none.
    pub fn public() -> Self {
        Self::Public
    }

    pub fn is_public(&self) -> bool {
        matches!(self, Self::Public)
    }

    /// The canonical JSON form, as stored and shown.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Public => json!({"type": "public"}),
            Self::Token(c) => {
                let mut object = Map::new();
                object.insert("type".into(), "token".into());
                object.insert("chainId".into(), c.chain_id.into());
                object.insert("contract".into(), c.contract.to_checksum(None).into());
                object.insert("standard".into(), c.standard.as_str().into());
                if let Some(ids) = &c.token_ids {
                    object.insert("tokenIds".into(), ids.iter().map(|id| id.to_string()).collect());
                }
                object.insert("minBalance".into(), c.min_balance.to_string().into());
                Value::Object(object)
            }
            Self::AnyOf(rules) => json!({"anyOf": rules.iter().map(Self::to_json).collect::<Vec<_>>()}),
            Self::AllOf(rules) => json!({"allOf": rules.iter().map(Self::to_json).collect::<Vec<_>>()}),
        }
    }

    /// Every token condition in the rule, each once.
    pub fn conditions(&self) -> Vec<&TokenCondition> {
        fn walk<'a>(rule: &'a Rule, out: &mut Vec<&'a TokenCondition>) {
            match rule {
                Rule::Public => {}
                Rule::Token(c) => {
                    if !out.contains(&c) {
                        out.push(c)
                    }
                }
                Rule::AnyOf(rules) | Rule::AllOf(rules) => rules.iter().for_each(|r| walk(r, out)),
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// Whether wallets holding what `holdings` answers satisfy the rule. `holdings(condition)` is the
    /// amount the wallets hold together, or why it could not be read.
    pub fn decide(&self, holdings: &impl Fn(&TokenCondition) -> Result<U256, ChainError>) -> Verdict {
        match self {
            Self::Public => Verdict::Granted,
            Self::Token(c) => match holdings(c) {
                Ok(amount) if amount >= c.min_balance => Verdict::Granted,
                Ok(_) => Verdict::Denied,
                Err(err) => Verdict::Unknown(err),
            },
            Self::AnyOf(rules) => {
                let mut unknown = None;
                for rule in rules {
                    match rule.decide(holdings) {
                        Verdict::Granted => return Verdict::Granted,
                        Verdict::Denied => {}
                        Verdict::Unknown(err) => unknown = unknown.or(Some(err)),
                    }
                }
                unknown.map_or(Verdict::Denied, Verdict::Unknown)
            }
            Self::AllOf(rules) => {
                let mut unknown = None;
                for rule in rules {
                    match rule.decide(holdings) {
                        Verdict::Granted => {}
                        Verdict::Denied => return Verdict::Denied,
                        Verdict::Unknown(err) => unknown = unknown.or(Some(err)),
                    }
                }
                unknown.map_or(Verdict::Granted, Verdict::Unknown)
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

fn fault(path: &str, problem: impl Into<String>) -> AccessFault {
    AccessFault {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Whether contract addresses must carry their EIP-55 checksum.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checksums {
    Check,
    Trust,
}

fn parse_at(
    value: &Value,
    path: &str,
    depth: usize,
    context: (&Chains, Checksums),
    conditions: &mut usize,
) -> Result<Rule, AccessFault> {
    let Some(object) = value.as_object() else {
        return Err(fault(path, "an access rule is a JSON object"));
    };
    for combinator in ["anyOf", "allOf"] {
        let Some(list) = object.get(combinator) else {
            continue;
        };
        if let Some(other) = object.keys().find(|k| *k != combinator) {
            return Err(fault(
                path,
                format!("`{combinator}` stands alone; `{other}` is not allowed beside it"),
            ));
        }
        if depth >= MAX_DEPTH {
            return Err(fault(path, format!("rules nest at most {MAX_DEPTH} deep")));
        }
        let rules = list
            .as_array()
            .filter(|rules| !rules.is_empty())
            .ok_or_else(|| fault(path, format!("`{combinator}` takes a non-empty list of rules")))?;
        let mut parsed = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{path}.{combinator}[{i}]");
            let rule = parse_at(rule, &at, depth + 1, context, conditions)?;
            if rule.is_public() {
                return Err(fault(
                    &at,
                    "`public` cannot be combined: a rule with it is public as a whole",
                ));
            }
            parsed.push(rule);
        }
        return Ok(if combinator == "anyOf" {
            Rule::AnyOf(parsed)
        } else {
            Rule::AllOf(parsed)
        });
    }
    match object.get("type").and_then(Value::as_str) {
        Some("public") => {
            if let Some(other) = object.keys().find(|k| *k != "type") {
                return Err(fault(path, format!("a public rule has no `{other}`")));
            }
            Ok(Rule::Public)
        }
        Some("token") => {
            *conditions += 1;
            if *conditions > MAX_CONDITIONS {
                return Err(fault(
                    path,
                    format!("a rule has at most {MAX_CONDITIONS} token conditions"),
                ));
            }
            parse_token(object, path, context).map(Rule::Token)
        }
        _ => Err(fault(
            path,
            "an access rule has `type` public or token, or is `anyOf` / `allOf`",
        )),
    }
}

fn parse_token(
    object: &Map<String, Value>,
    path: &str,
    (chains, checksums): (&Chains, Checksums),
) -> Result<TokenCondition, AccessFault> {
    const FIELDS: [&str; 6] = ["type", "chainId", "contract", "standard", "tokenIds", "minBalance"];
    if let Some(other) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(fault(&format!("{path}.{other}"), "not a field of a token rule"));
    }
    let at = |field: &str| format!("{path}.{field}");

    let chain_id = object
        .get("chainId")
        .and_then(Value::as_u64)
        .ok_or_else(|| fault(&at("chainId"), "a chain id (a positive integer) is required"))?;
    let Some(chain) = chains.get(chain_id) else {
        let known: Vec<String> = chains.ids().map(|id| id.to_string()).collect();
        return Err(fault(
            &at("chainId"),
            format!("chain {chain_id} is not known here; known chains: {}", known.join(", ")),
        ));
    };
    if chain.rpc_urls.is_empty() {
        return Err(fault(
            &at("chainId"),
            format!(
                "{} ({chain_id}) has no RPC URL on this installation, so holdings on it cannot be checked",
                chain.name
            ),
        ));
    }

    let text = object
        .get("contract")
        .and_then(Value::as_str)
        .ok_or_else(|| fault(&at("contract"), "a contract address is required"))?;
    let contract = match checksums {
        Checksums::Check => Address::parse_checksummed(text, None),
        Checksums::Trust => Address::from_str(text).map_err(Into::into),
    }
    .map_err(|_| match Address::from_str(text) {
        Ok(address) => fault(
            &at("contract"),
            format!(
                "write the address with its EIP-55 checksum: {}",
                address.to_checksum(None)
            ),
        ),
        Err(_) => fault(&at("contract"), "not an address (0x and 40 hex digits)"),
    })?;
    if contract == Address::ZERO {
        return Err(fault(&at("contract"), "the zero address is not a token contract"));
    }

    let standard = match object.get("standard").and_then(Value::as_str) {
        Some("erc721") => Standard::Erc721,
        Some("erc1155") => Standard::Erc1155,
        Some("erc20") => Standard::Erc20,
        _ => return Err(fault(&at("standard"), "one of erc721, erc1155, erc20 is required")),
    };

    let token_ids = match object.get("tokenIds") {
        None => None,
        Some(Value::Array(items)) => {
            if items.is_empty() || items.len() > MAX_TOKEN_IDS {
                return Err(fault(&at("tokenIds"), format!("list 1 to {MAX_TOKEN_IDS} token ids")));
            }
            let mut ids = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let id = item
                    .as_str()
                    .and_then(decimal)
                    .ok_or_else(|| fault(&format!("{path}.tokenIds[{i}]"), "a token id is a decimal string"))?;
                ids.insert(id);
            }
            Some(ids.into_iter().collect::<Vec<_>>())
        }
        Some(_) => return Err(fault(&at("tokenIds"), "a list of decimal strings")),
    };

    let min_balance = match object.get("minBalance") {
        None => U256::from(1),
        Some(value) => value
            .as_str()
            .and_then(decimal)
            .filter(|b| !b.is_zero())
            .ok_or_else(|| fault(&at("minBalance"), "a positive whole number as a decimal string"))?,
    };

    match (standard, &token_ids) {
        (Standard::Erc1155, None) => {
            return Err(fault(
                &at("tokenIds"),
                "ERC-1155 balances are per token id: list the ids that count",
            ));
        }
        (Standard::Erc20, Some(_)) => {
            return Err(fault(&at("tokenIds"), "ERC-20 tokens have no ids"));
        }
        (Standard::Erc721, Some(ids)) if min_balance > U256::from(ids.len()) => {
            return Err(fault(
                &at("minBalance"),
                format!("cannot hold {min_balance} of {} listed ERC-721 tokens", ids.len()),
            ));
        }
        _ => {}
    }
    Ok(TokenCondition {
        chain_id,
        contract,
        standard,
        token_ids,
        min_balance,
    })
}

/// A whole number written in decimal digits (no sign, no exponent, at most 78 digits).
fn decimal(text: &str) -> Option<U256> {
    if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    U256::from_str_radix(text, 10).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NFT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    fn chains() -> Chains {
        Chains::from_vars([
            ("STREAMGATE_RPC_31337", "http://127.0.0.1:8545"),
            ("STREAMGATE_RPC_1", "http://a"),
        ])
        .expect("chains")
    }

    fn parse(value: Value) -> Result<Rule, AccessFault> {
        Rule::parse(&value, &chains())
    }

    fn token(extra: Value) -> Value {
        let mut rule = json!({"type": "token", "chainId": 31337, "contract": NFT, "standard": "erc721"});
        if let (Some(rule), Some(extra)) = (rule.as_object_mut(), extra.as_object()) {
            rule.extend(extra.clone());
        }
        rule
    }

    #[test]
    fn stored_rules_skip_the_checksum_but_not_the_chain_check() {
        let stored = parse(token(json!({}))).expect("valid").to_json();
        assert_eq!(Rule::parse_stored(&stored, &chains()), parse(stored.clone()));
        // Only a rule checked on write could have been stored; its addresses are read as they are.
        let lower = token(json!({"contract": NFT.to_lowercase()}));
        assert!(parse(lower.clone()).is_err());
        assert_eq!(Rule::parse_stored(&lower, &chains()), parse(token(json!({}))));
        // This installation may have lost the chain since.
        let elsewhere = token(json!({"chainId": 10}));
        let fault = Rule::parse_stored(&elsewhere, &chains()).expect_err("unknown chain");
        assert_eq!(fault.path, "access.chainId");
        assert!(Rule::parse_stored(&token(json!({"contract": "0x12"})), &chains()).is_err());
    }

    #[test]
    fn canonical_forms_round_trip() {
        let rule = parse(json!({"anyOf": [
            token(json!({})),
            {"allOf": [
                token(json!({"standard": "erc1155", "tokenIds": ["7", "3", "7"], "minBalance": "2"})),
                token(json!({"standard": "erc20", "chainId": 1, "minBalance": "1000000000000000000"})),
            ]},
        ]}))
        .expect("valid");
        let canonical = rule.to_json();
        assert_eq!(canonical["anyOf"][0]["minBalance"], "1");
        assert_eq!(canonical["anyOf"][1]["allOf"][0]["tokenIds"], json!(["3", "7"]));
        assert_eq!(parse(canonical).expect("canonical form parses"), rule);
        assert_eq!(rule.conditions().len(), 3);
        assert!(parse(json!({"type": "public"})).expect("public").is_public());
    }

    #[test]
    fn faults_are_named_with_their_path() {
        let cases = [
            (json!([]), "access", "JSON object"),
            (json!({"type": "everyone"}), "access", "`type`"),
            (json!({"type": "public", "chainId": 1}), "access", "no `chainId`"),
            (json!({"anyOf": []}), "access", "non-empty"),
            (
                json!({"anyOf": [token(json!({}))], "type": "token"}),
                "access",
                "stands alone",
            ),
            (
                json!({"anyOf": [{"type": "public"}]}),
                "access.anyOf[0]",
                "cannot be combined",
            ),
            (token(json!({"chainId": 5})), "access.chainId", "not known here"),
            (token(json!({"chainId": 137})), "access.chainId", "no RPC URL"),
            (token(json!({"chainId": "1"})), "access.chainId", "required"),
            (token(json!({"contract": NFT.to_lowercase()})), "access.contract", NFT),
            (token(json!({"contract": "0x12"})), "access.contract", "not an address"),
            (
                token(json!({"contract": "0x0000000000000000000000000000000000000000"})),
                "access.contract",
                "zero address",
            ),
            (token(json!({"standard": "erc777"})), "access.standard", "one of"),
            (token(json!({"standard": "erc1155"})), "access.tokenIds", "per token id"),
            (
                token(json!({"standard": "erc20", "tokenIds": ["1"]})),
                "access.tokenIds",
                "no ids",
            ),
            (
                token(json!({"tokenIds": ["1"], "minBalance": "2"})),
                "access.minBalance",
                "cannot hold 2",
            ),
            (token(json!({"tokenIds": ["0x1"]})), "access.tokenIds[0]", "decimal"),
            (token(json!({"tokenIds": []})), "access.tokenIds", "1 to 100"),
            (token(json!({"minBalance": "0"})), "access.minBalance", "positive"),
            (token(json!({"minBalance": 1})), "access.minBalance", "decimal string"),
            (token(json!({"owner": "me"})), "access.owner", "not a field"),
        ];
        for (rule, path, words) in cases {
            let err = parse(rule.clone()).expect_err(&rule.to_string());
            assert_eq!(err.path, path, "{rule}: {err}");
            assert!(err.problem.contains(words), "{rule}: {err}");
        }
        let deep = json!({"anyOf": [{"allOf": [{"anyOf": [{"allOf": [token(json!({}))]}]}]}]});
        assert!(parse(deep).expect_err("too deep").problem.contains("nest"));
        let many = json!({"anyOf": vec![token(json!({})); MAX_CONDITIONS + 1]});
        assert!(parse(many).expect_err("too many").problem.contains("at most"));
    }

    #[test]
    fn decisions_are_three_valued() {
        let held = |c: &TokenCondition| -> Result<U256, ChainError> {
            match c.standard {
                Standard::Erc721 => Ok(U256::from(1)),
                Standard::Erc20 => Ok(U256::ZERO),
                Standard::Erc1155 => Err(ChainError::Unavailable {
                    chain: c.chain_id,
                    last: "down".into(),
                }),
            }
        };
        let nft = token(json!({}));
        let coin = token(json!({"standard": "erc20"}));
        let tickets = token(json!({"standard": "erc1155", "tokenIds": ["1"]}));
        let verdict = |rule: Value| parse(rule).expect("valid").decide(&held);
        assert_eq!(verdict(nft.clone()), Verdict::Granted);
        assert_eq!(verdict(coin.clone()), Verdict::Denied);
        assert!(matches!(verdict(tickets.clone()), Verdict::Unknown(_)));
        assert_eq!(
            verdict(json!({"anyOf": [tickets.clone(), nft.clone()]})),
            Verdict::Granted
        );
        assert!(matches!(
            verdict(json!({"anyOf": [tickets.clone(), coin.clone()]})),
            Verdict::Unknown(_)
        ));
        assert_eq!(
            verdict(json!({"allOf": [tickets.clone(), coin.clone()]})),
            Verdict::Denied
        );
        assert!(matches!(
            verdict(json!({"allOf": [tickets, nft.clone()]})),
            Verdict::Unknown(_)
        ));
        assert_eq!(verdict(json!({"allOf": [nft.clone(), nft]})), Verdict::Granted);
        assert_eq!(verdict(json!({"anyOf": [coin.clone(), coin]})), Verdict::Denied);
        let bigger = token(json!({"minBalance": "2"}));
        assert_eq!(verdict(bigger), Verdict::Denied);
    }
}
