//! Identifiers, parsed once at the edge: a value of these types is known to be well formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a video id (32 lowercase hexadecimal characters)")]
pub struct InvalidVideoId(String);

/// A video's id, which is also its upload's id: a UUIDv7 as 32 lowercase hex digits, so ids sort by
/// creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct VideoId(String);

impl VideoId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VideoId {
    type Err = InvalidVideoId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidVideoId(s.chars().take(64).collect()))
        }
    }
}

impl<'de> Deserialize<'de> for VideoId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for VideoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_ids_parse_strictly() {
        let id = VideoId::generate();
        assert_eq!(id.as_str().parse::<VideoId>().expect("own id"), id);
        for bad in [
            "",
            "../etc/passwd",
            "0189ABCDEF0123456789abcdef012345",
            "0189abcdef0123456789abcdef01234",
        ] {
            assert!(bad.parse::<VideoId>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<VideoId>("\"nope\"").is_err());
    }
}
