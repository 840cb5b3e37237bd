//! Sign-In with Ethereum verification beside the bare secp256k1 recovery it rests on: what parsing and
//! the message checks add per verification.
//!
//!     cargo bench -p common --bench siwe

use alloy_primitives::{Address, Signature, eip191_hash_message};
use chrono::Utc;
use common::identity::siwe::{Expectations, SiweMessage, recover_signer};
use criterion::{Criterion, criterion_group, criterion_main};
use k256::ecdsa::SigningKey;
use std::hint::black_box;

fn fixture() -> (String, Vec<u8>, Address) {
    let key = SigningKey::from_slice(&[0x42; 32]).expect("key");
    let address = Address::from_public_key(key.verifying_key());
    let text = format!(
        "app.streamgate.test wants you to sign in with your Ethereum account:\n{}\n\nSign in to StreamGate\n\n\
         URI: https://app.streamgate.test/login\nVersion: 1\nChain ID: 1\nNonce: Xk3v9QmP2rT8wZ1bN5cY7dLe\n\
         Issued At: {}\nExpiration Time: 2999-01-01T00:00:00Z\nResources:\n- https://app.streamgate.test/terms",
        address.to_checksum(None),
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let (signature, recovery) = key
        .sign_prehash_recoverable(eip191_hash_message(&text).as_slice())
        .expect("sign");
    (
        text,
        Signature::from((signature, recovery)).as_bytes().to_vec(),
        address,
    )
}

fn verify(text: &str, signature: &[u8]) -> bool {
    let Ok(message) = SiweMessage::parse(text) else {
        return false;
    };
    let expect = Expectations {
        domain: "app.streamgate.test",
        uri_authority: Some("app.streamgate.test"),
        now: Utc::now(),
        skew: chrono::Duration::seconds(60),
        refuse_future_issuance: true,
    };
    message.check(&expect).is_ok() && recover_signer(text, signature).ok() == Some(message.address)
}

fn bench(c: &mut Criterion) {
    let (text, signature, address) = fixture();
    assert!(verify(&text, &signature));
    let mut group = c.benchmark_group("siwe");
    group.bench_function("recover (secp256k1 + keccak)", |b| {
        b.iter(|| {
            assert_eq!(
                recover_signer(black_box(&text), black_box(&signature)).ok(),
                Some(address)
            )
        })
    });
    group.bench_function("parse", |b| b.iter(|| SiweMessage::parse(black_box(&text)).is_ok()));
    group.bench_function("verify (parse + checks + recover)", |b| {
        b.iter(|| assert!(verify(black_box(&text), black_box(&signature))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
