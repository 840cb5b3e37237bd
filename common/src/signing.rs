//! HMAC-signed URLs for what the local server serves itself (blobs now, playback later): a URL names its
//! method, resource and expiry, and any change to them, or a late use, is refused.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the URL carries no signature or expiry")]
    Missing,
    #[error("the URL's signature does not match")]
    Invalid,
    #[error("the URL has expired")]
    Expired,
}

/// Signs and checks URLs with one secret key.
#[derive(Clone)]
pub struct UrlSigner {
    /// The HMAC with the key already absorbed, copied for each signature.
    keyed: HmacSha256,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

impl UrlSigner {
    pub fn new(key: [u8; 32]) -> Self {
        let keyed =
            <HmacSha256 as KeyInit>::new_from_slice(&key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self { keyed }
    }

    /// The key configured as 64 hex digits (`STREAMGATE_URL_SIGNING_KEY`).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim()).map_err(|_| "the URL signing key is not hex".to_owned())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the URL signing key must be 32 bytes (64 hex digits)".to_owned())?;
        Ok(Self::new(key))
    }

    /// The signer of this deployment: the configured key, else (embedded backend) the data dir's.
    pub fn from_config(config: &crate::config::Config, ports: &crate::platform::Ports) -> Result<Self, String> {
        match (&config.url_signing_key, &ports.local) {
            (Some(key), _) => Self::from_hex(key.expose()),
            (None, Some(local)) => Ok(local.signer.clone()),
            (None, None) => Err("STREAMGATE_URL_SIGNING_KEY is required with the aws backend".into()),
        }
    }

    /// Reads the key kept at `path`, creating it (mode 0600) from the OS random source on first use.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                Ok(Self::new(key))
            }
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a 32-byte key; delete it to create a new one", path.display()),
            )),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_secret_file(path, &key)?;
                Ok(Self::new(key))
            }
            Err(err) => Err(err),
        }
    }

    /// The MAC of `method`, the resource (the concatenation of `resource`'s pieces) and `expires`.
    fn mac(&self, method: &str, resource: &[&str], expires: i64) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        let mut digits = itoa::Buffer::new();
        let expires = digits.format(expires);
        // Length-prefixed fields, so that no two (method, resource, expiry) triples share a message.
        let resource_length: usize = resource.iter().map(|piece| piece.len()).sum();
        mac.update(&(method.len() as u64).to_be_bytes());
        mac.update(method.as_bytes());
        mac.update(&(resource_length as u64).to_be_bytes());
        for piece in resource {
            mac.update(piece.as_bytes());
        }
        mac.update(&(expires.len() as u64).to_be_bytes());
        mac.update(expires.as_bytes());
        mac
    }

    /// The signature for `method` on `resource` (a path plus any parameters that must not change) until
    /// `expires_at`.
    pub fn sign(&self, method: &str, resource: &str, expires_at: DateTime<Utc>) -> String {
        let mut signature = String::with_capacity(64);
        self.sign_to(method, &[resource], expires_at.timestamp(), &mut signature);
        signature
    }

    /// [`UrlSigner::sign`] for a resource given in pieces and an expiry in Unix seconds, written to the
    /// end of `out`: for URLs built in one buffer.
    pub fn sign_to(&self, method: &str, resource: &[&str], expires: i64, out: &mut String) {
        let mac = self.mac(method, resource, expires).finalize().into_bytes();
        out.push_str(alloy_primitives::hex::Buffer::<32>::new().format(&mac.into()));
    }

    /// Checks a signature in constant time, then the expiry.
    pub fn verify(
        &self,
        method: &str,
        resource: &str,
        expires: Option<&str>,
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(SignatureError::Missing);
        };
        let expires: i64 = expires.parse().map_err(|_| SignatureError::Invalid)?;
        let signature = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
        self.mac(method, &[resource], expires)
            .verify_slice(&signature)
            .map_err(|_| SignatureError::Invalid)?;
        match Utc.timestamp_opt(expires, 0).single() {
            Some(at) if at > Utc::now() => Ok(()),
            _ => Err(SignatureError::Expired),
        }
    }
}

/// Writes a new secret file readable by its owner only (mode 0600), creating its folder.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(path, bytes)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn accepts_its_own_and_refuses_alterations() {
        let signer = UrlSigner::new([7; 32]);
        let expires = Utc::now() + Duration::minutes(5);
        let sig = signer.sign("GET", "/blobs/media/a", expires);
        let exp = expires.timestamp().to_string();
        assert_eq!(signer.verify("GET", "/blobs/media/a", Some(&exp), Some(&sig)), Ok(()));
        assert_eq!(
            signer.verify("PUT", "/blobs/media/a", Some(&exp), Some(&sig)),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signer.verify("GET", "/blobs/media/b", Some(&exp), Some(&sig)),
            Err(SignatureError::Invalid)
        );
        let later = (expires.timestamp() + 1).to_string();
        assert_eq!(
            signer.verify("GET", "/blobs/media/a", Some(&later), Some(&sig)),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signer.verify("GET", "/blobs/media/a", Some(&exp), None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            signer.verify("GET", "/blobs/media/a", Some(&exp), Some("zz")),
            Err(SignatureError::Invalid)
        );
        let other = UrlSigner::new([8; 32]);
        assert_eq!(
            other.verify("GET", "/blobs/media/a", Some(&exp), Some(&sig)),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn a_resource_in_pieces_signs_as_the_whole() {
        let signer = UrlSigner::new([9; 32]);
        let expires = Utc::now() + Duration::minutes(5);
        let whole = signer.sign("GET", "/v1/media/abc/", expires);
        let mut pieces = String::from("prefix:");
        signer.sign_to("GET", &["/v1/media/", "abc", "/"], expires.timestamp(), &mut pieces);
        assert_eq!(pieces, format!("prefix:{whole}"));

        // The message is each field's length (8 bytes, big-endian) and then the field.
        let mut message = Vec::new();
        for field in ["GET", "/v1/media/abc/", &expires.timestamp().to_string()] {
            message.extend_from_slice(&(field.len() as u64).to_be_bytes());
            message.extend_from_slice(field.as_bytes());
        }
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&[9; 32]).expect("key");
        mac.update(&message);
        assert_eq!(whole, hex::encode(mac.finalize().into_bytes()));
        assert_eq!(whole.len(), 64);
        assert!(whole.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn refuses_expired_urls() {
        let signer = UrlSigner::new([1; 32]);
        let expired = Utc::now() - Duration::seconds(1);
        let sig = signer.sign("GET", "/x", expired);
        assert_eq!(
            signer.verify("GET", "/x", Some(&expired.timestamp().to_string()), Some(&sig)),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn key_is_created_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/url.key");
        let first = UrlSigner::load_or_create(&path).expect("create");
        let second = UrlSigner::load_or_create(&path).expect("load");
        let at = Utc::now() + chrono::Duration::minutes(1);
        assert_eq!(first.sign("GET", "/x", at), second.sign("GET", "/x", at));
        assert_ne!(
            first.sign("GET", "/x", at),
            UrlSigner::new([7; 32]).sign("GET", "/x", at)
        );
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
