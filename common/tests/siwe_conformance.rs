//! The public EIP-4361 conformance vectors (`shared/conformance/siwe`, beside the repository, or
//! `STREAMGATE_CONFORMANCE_DIR`): every parsing vector and every verification vector, with the harness
//! keys (`time`, `domainBinding`, `matchNonce`) applied.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use common::identity::siwe::{Expectations, SiweMessage, decode_signature, recover_signer};
use serde_json::{Map, Value};

fn vectors(name: &str) -> Map<String, Value> {
    let dir = std::env::var_os("STREAMGATE_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"));
    let path = dir.join("siwe").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; set STREAMGATE_CONFORMANCE_DIR", path.display()));
    match serde_json::from_str(&text).expect("vector JSON") {
        Value::Object(map) => map,
        _ => panic!("{name} is not an object"),
    }
}

fn text(fields: &Value, name: &str) -> Option<String> {
    match fields.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Writes a message from a field set the way EIP-4361 lays it out, leaving out missing fields.
fn render(fields: &Value) -> String {
    let mut out = String::new();
    if let Some(scheme) = text(fields, "scheme") {
        out.push_str(&format!("{scheme}://"));
    }
    out.push_str(&text(fields, "domain").unwrap_or_default());
    out.push_str(" wants you to sign in with your Ethereum account:\n");
    out.push_str(&text(fields, "address").unwrap_or_default());
    out.push_str("\n\n");
    if let Some(statement) = text(fields, "statement") {
        out.push_str(&format!("{statement}\n"));
    }
    out.push('\n');
    let mut lines = Vec::new();
    for (tag, key) in [
        ("URI", "uri"),
        ("Version", "version"),
        ("Chain ID", "chainId"),
        ("Nonce", "nonce"),
        ("Issued At", "issuedAt"),
        ("Expiration Time", "expirationTime"),
        ("Not Before", "notBefore"),
        ("Request ID", "requestId"),
    ] {
        if let Some(value) = text(fields, key) {
            lines.push(format!("{tag}: {value}"));
        }
    }
    if let Some(Value::Array(resources)) = fields.get("resources") {
        lines.push("Resources:".into());
        lines.extend(
            resources
                .iter()
                .map(|r| format!("- {}", r.as_str().unwrap_or_default())),
        );
    }
    out.push_str(&lines.join("\n"));
    out
}

#[test]
fn parsing_positive() {
    for (name, case) in vectors("parsing_positive.json") {
        let message = case["message"].as_str().expect("message");
        let parsed = SiweMessage::parse(message).unwrap_or_else(|e| panic!("{name}: {e}"));
        let fields = &case["fields"];
        assert_eq!(parsed.domain, fields["domain"], "{name}");
        assert_eq!(parsed.address.to_checksum(None), fields["address"], "{name}");
        assert_eq!(
            parsed.statement.as_deref(),
            fields.get("statement").and_then(Value::as_str),
            "{name}"
        );
        assert_eq!(parsed.uri, fields["uri"], "{name}");
        assert_eq!(parsed.version, fields["version"], "{name}");
        assert_eq!(Value::from(parsed.chain_id), fields["chainId"], "{name}");
        assert_eq!(parsed.nonce, fields["nonce"], "{name}");
        assert_eq!(parsed.issued_at.text, fields["issuedAt"], "{name}");
        assert_eq!(
            parsed.expiration_time.as_ref().map(|t| t.text.as_str()),
            fields.get("expirationTime").and_then(Value::as_str),
            "{name}"
        );
        assert_eq!(
            parsed.not_before.as_ref().map(|t| t.text.as_str()),
            fields.get("notBefore").and_then(Value::as_str),
            "{name}"
        );
        assert_eq!(
            parsed.request_id.as_deref(),
            fields.get("requestId").and_then(Value::as_str),
            "{name}"
        );
        let resources: Vec<&str> = fields
            .get("resources")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(parsed.resources.clone().unwrap_or_default(), resources, "{name}");
        if let Some(scheme) = fields.get("scheme") {
            assert_eq!(parsed.scheme.as_deref(), scheme.as_str(), "{name}");
        }
        assert_eq!(parsed.to_text(), message, "{name}: writing it back gives the same text");
    }
}

#[test]
fn parsing_negative() {
    for (name, message) in vectors("parsing_negative.json") {
        let message = message.as_str().expect("message");
        assert!(SiweMessage::parse(message).is_err(), "{name}: accepted");
    }
    for (name, fields) in vectors("parsing_negative_objects.json") {
        assert!(SiweMessage::parse(&render(&fields)).is_err(), "{name}: accepted");
    }
}

/// Verifies a vector as the service would, with the harness keys applied.
fn verify(fields: &Value) -> Result<(), String> {
    let message = SiweMessage::parse(&render(fields)).map_err(|e| e.to_string())?;
    let now = match fields.get("time").and_then(Value::as_str) {
        Some(time) => time.parse::<DateTime<Utc>>().map_err(|e| e.to_string())?,
        None => Utc::now(),
    };
    let domain = fields
        .get("domainBinding")
        .and_then(Value::as_str)
        .unwrap_or(&message.domain)
        .to_owned();
    let expect = Expectations {
        domain: &domain,
        uri_authority: None,
        now,
        skew: chrono::Duration::zero(),
        refuse_future_issuance: false,
    };
    message.check(&expect).map_err(|e| e.to_string())?;
    if let Some(nonce) = fields.get("matchNonce").and_then(Value::as_str)
        && nonce != message.nonce
    {
        return Err("nonce mismatch".into());
    }
    let signature = decode_signature(fields["signature"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
    let signer = recover_signer(&message.to_text(), &signature).map_err(|e| e.to_string())?;
    if signer == message.address {
        Ok(())
    } else {
        Err("signer mismatch".into())
    }
}

#[test]
fn verification_positive() {
    for (name, fields) in vectors("verification_positive.json") {
        verify(&fields).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn verification_negative() {
    for (name, fields) in vectors("verification_negative.json") {
        assert!(verify(&fields).is_err(), "{name}: accepted");
    }
}
