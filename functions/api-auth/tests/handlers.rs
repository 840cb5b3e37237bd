//! `api-auth` handlers over the embedded store: sign-in, every refusal, sessions, logout, wallets.

use alloy_primitives::{Address, Signature, eip191_hash_message};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use chrono::{Duration, Utc};
use common::config::Config;
use common::platform::Ports;
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};
use tower::ServiceExt;

const DOMAIN: &str = "app.streamgate.test";

struct App {
    router: Router,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let config = Config::from_vars([("STREAMGATE_DATA_DIR".to_owned(), data)]).expect("config");
    let ports = Ports::from_config(&config).await.expect("ports");
    let state = api_auth::AppState::new(&config, &ports, DOMAIN.to_owned()).expect("state");
    App {
        router: api_auth::router(state),
        _dir: dir,
    }
}

struct Wallet {
    key: SigningKey,
    address: Address,
}

impl Wallet {
    fn new(seed: u8) -> Self {
        let key = SigningKey::from_slice(&[seed; 32]).expect("key");
        let address = Address::from_public_key(key.verifying_key());
        Self { key, address }
    }

    fn sign(&self, message: &str) -> String {
        let (signature, recovery) = self
            .key
            .sign_prehash_recoverable(eip191_hash_message(message).as_slice())
            .expect("sign");
        let signature = Signature::from((signature, recovery));
        format!("0x{}", hex(&signature.as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Fields {
    domain: String,
    uri: String,
    chain_id: u64,
    issued_at: String,
    expiration: Option<String>,
    not_before: Option<String>,
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            domain: DOMAIN.into(),
            uri: format!("https://{DOMAIN}/login"),
            chain_id: 1,
            issued_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            expiration: None,
            not_before: None,
        }
    }
}

fn message(wallet: &Wallet, nonce: &str, fields: &Fields) -> String {
    let mut text = format!(
        "{} wants you to sign in with your Ethereum account:\n{}\n\nSign in to StreamGate\n\nURI: {}\nVersion: 1\nChain ID: {}\nNonce: {nonce}\nIssued At: {}",
        fields.domain,
        wallet.address.to_checksum(None),
        fields.uri,
        fields.chain_id,
        fields.issued_at
    );
    if let Some(expiration) = &fields.expiration {
        text.push_str(&format!("\nExpiration Time: {expiration}"));
    }
    if let Some(not_before) = &fields.not_before {
        text.push_str(&format!("\nNot Before: {not_before}"));
    }
    text
}

async fn call(app: &App, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .router
        .clone()
        .oneshot(request.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn nonce(app: &App) -> String {
    let (status, body) = call(app, "POST", "/v1/auth/nonce", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let nonce = body["nonce"].as_str().expect("nonce").to_owned();
    assert!(
        nonce.len() >= 16 && nonce.chars().all(|c| c.is_ascii_alphanumeric()),
        "{nonce}"
    );
    assert!(body["expiresAt"].as_str().is_some());
    nonce
}

async fn sign_in(app: &App, wallet: &Wallet) -> String {
    let text = message(wallet, &nonce(app).await, &Fields::default());
    let (status, body) = call(
        app,
        "POST",
        "/v1/auth/verify",
        None,
        Some(json!({"message": text, "signature": wallet.sign(&text)})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["address"], wallet.address.to_checksum(None));
    body["token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn signs_in_and_out() {
    let app = app().await;
    let wallet = Wallet::new(7);
    let token = sign_in(&app, &wallet).await;
    let (status, body) = call(&app, "GET", "/v1/auth/session", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["address"], wallet.address.to_checksum(None));
    assert_eq!(body["wallets"], json!([wallet.address.to_checksum(None)]));

    let (status, _) = call(&app, "POST", "/v1/auth/logout", Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call(&app, "GET", "/v1/auth/session", Some(&token), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("session_revoked"))
    );

    // Signing in again reaches the same account.
    let token = sign_in(&app, &wallet).await;
    let (status, _) = call(&app, "GET", "/v1/auth/session", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
}

async fn refusal(app: &App, text: &str, signature: &str) -> String {
    let (status, body) = call(
        app,
        "POST",
        "/v1/auth/verify",
        None,
        Some(json!({"message": text, "signature": signature})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body["type"],
        format!(
            "https://streamgate.dev/problems/{}",
            body["code"].as_str().expect("code")
        )
    );
    body["code"].as_str().expect("code").to_owned()
}

#[tokio::test]
async fn refuses_every_failed_check_with_its_code() {
    let app = app().await;
    let wallet = Wallet::new(9);
    let signed = |fields: Fields, nonce: &str| {
        let text = message(&wallet, nonce, &fields);
        let signature = wallet.sign(&text);
        (text, signature)
    };
    let later =
        |minutes: i64| (Utc::now() + Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let cases: Vec<(Fields, &str)> = vec![
        (
            Fields {
                domain: "evil.example".into(),
                uri: "https://evil.example/".into(),
                ..Fields::default()
            },
            "domain_mismatch",
        ),
        (
            Fields {
                uri: "https://evil.example/login".into(),
                ..Fields::default()
            },
            "uri_mismatch",
        ),
        (
            Fields {
                chain_id: 99_999_999,
                ..Fields::default()
            },
            "chain_unsupported",
        ),
        (
            Fields {
                issued_at: later(10),
                ..Fields::default()
            },
            "issued_in_future",
        ),
        (
            Fields {
                expiration: Some(later(-1)),
                ..Fields::default()
            },
            "expired",
        ),
        (
            Fields {
                not_before: Some(later(10)),
                ..Fields::default()
            },
            "not_yet_valid",
        ),
    ];
    for (fields, code) in cases {
        let (text, signature) = signed(fields, &nonce(&app).await);
        assert_eq!(refusal(&app, &text, &signature).await, code);
    }

    // A nonce this service never issued.
    let (text, signature) = signed(Fields::default(), "abcdefgh12345678");
    assert_eq!(refusal(&app, &text, &signature).await, "nonce_unknown");

    // Another wallet's signature, and garbage.
    let issued = nonce(&app).await;
    let text = message(&wallet, &issued, &Fields::default());
    assert_eq!(
        refusal(&app, &text, &Wallet::new(3).sign(&text)).await,
        "invalid_signature"
    );
    assert_eq!(refusal(&app, &text, "0x1234").await, "invalid_signature");
    assert_eq!(refusal(&app, &text, "not hex").await, "invalid_signature");

    // The failed attempts did not use the nonce up; the right signature passes once, then is a replay.
    let signature = wallet.sign(&text);
    let (status, _) = call(
        &app,
        "POST",
        "/v1/auth/verify",
        None,
        Some(json!({"message": text, "signature": signature})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refusal(&app, &text, &signature).await, "nonce_reused");

    // Grammar and checksum.
    assert_eq!(refusal(&app, "hello", "0x00").await, "malformed_message");
    let lower = text.replace(
        &wallet.address.to_checksum(None),
        &wallet.address.to_checksum(None).to_lowercase(),
    );
    assert_eq!(refusal(&app, &lower, &signature).await, "address_not_checksummed");
}

#[tokio::test]
async fn bad_requests_are_problems() {
    let app = app().await;
    let (status, body) = call(&app, "POST", "/v1/auth/verify", None, Some(json!({"message": 5}))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json"))
    );
    let (status, body) = call(&app, "GET", "/v1/auth/session", None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, body) = call(&app, "GET", "/v1/auth/session", Some("v4.public.forged"), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
}

#[tokio::test]
async fn concurrent_verifications_of_one_nonce_pass_once() {
    let app = app().await;
    let wallet = Wallet::new(11);
    let text = message(&wallet, &nonce(&app).await, &Fields::default());
    let body = json!({"message": text, "signature": wallet.sign(&text)});
    let attempts = (0..8).map(|_| call(&app, "POST", "/v1/auth/verify", None, Some(body.clone())));
    let results = futures::future::join_all(attempts).await;
    let passed = results.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    assert_eq!(passed, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|(status, body)| *status == StatusCode::OK || body["code"] == "nonce_reused")
    );
}

#[tokio::test]
async fn links_lists_and_unlinks_wallets() {
    let app = app().await;
    let (first, second) = (Wallet::new(21), Wallet::new(22));
    let token = sign_in(&app, &first).await;

    let text = message(&second, &nonce(&app).await, &Fields::default());
    let (status, body) = call(
        &app,
        "POST",
        "/v1/wallets",
        Some(&token),
        Some(json!({"message": text, "signature": second.sign(&text)})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["wallets"].as_array().expect("wallets").len(), 2);

    // The second wallet signs in to the same account.
    let second_token = sign_in(&app, &second).await;
    let (_, body) = call(&app, "GET", "/v1/wallets", Some(&second_token), None).await;
    assert_eq!(body["wallets"].as_array().expect("wallets").len(), 2);

    // A wallet belongs to one account at most.
    let other = sign_in(&app, &Wallet::new(23)).await;
    let text = message(&second, &nonce(&app).await, &Fields::default());
    let (status, body) = call(
        &app,
        "POST",
        "/v1/wallets",
        Some(&other),
        Some(json!({"message": text, "signature": second.sign(&text)})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("wallet_taken"))
    );

    let path = format!("/v1/wallets/{}", second.address.to_checksum(None));
    let (status, _) = call(&app, "DELETE", &path, Some(&other), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "DELETE", &path, Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = call(&app, "GET", "/v1/wallets", Some(&token), None).await;
    assert_eq!(body["wallets"], json!([first.address.to_checksum(None)]));
    // The unlinked wallet's session no longer speaks for the account.
    let (status, body) = call(&app, "GET", "/v1/wallets", Some(&second_token), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("session_revoked"))
    );
    let last = format!("/v1/wallets/{}", first.address.to_checksum(None));
    let (status, body) = call(&app, "DELETE", &last, Some(&token), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("last_wallet"))
    );
    let (status, body) = call(&app, "DELETE", "/v1/wallets/0xnothex", Some(&token), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_address"))
    );
    // A segment that is no UTF-8 once decoded is a problem too, not axum's plain text.
    let (status, body) = call(&app, "DELETE", "/v1/wallets/%FF", Some(&token), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_path"))
    );
}
