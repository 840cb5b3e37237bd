//! What a client tells about its file: the tus `Upload-Metadata` header, or the fields of a direct upload.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::access::Rule;
use common::chains::Chains;
use common::problem::ApiError;
use serde_json::Value;

pub use common::catalog::{MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS};
const MAX_FILENAME_CHARS: usize = 255;
/// The largest `Upload-Metadata` header taken: room for a full description in base64.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The metadata StreamGate reads, validated.
#[derive(Debug, Default, PartialEq)]
pub struct Details {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub title: String,
    pub description: String,
    pub access: Option<Value>,
}

/// The fields a client may give, before validation.
#[derive(Debug, Default)]
pub struct Fields {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub access: Option<Value>,
}

/// Parses an `Upload-Metadata` header: comma-separated `key base64value` pairs (the value may be left
/// out), keys unique, ASCII without spaces or commas.
pub fn parse_header(header: &str) -> Result<Fields, String> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(format!("Upload-Metadata is longer than {MAX_HEADER_BYTES} bytes"));
    }
    let mut fields = Fields::default();
    let mut seen = std::collections::HashSet::new();
    for pair in header.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let mut words = pair.split(' ').filter(|w| !w.is_empty());
        let key = words.next().unwrap_or_default();
        let value = words.next();
        if words.next().is_some() {
            return Err(format!("metadata pair {key:?} has more than a key and a value"));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err("metadata keys are ASCII without spaces or commas".into());
        }
        if !seen.insert(key.to_owned()) {
            return Err(format!("metadata key {key:?} appears twice"));
        }
        let decoded = match value {
            None => String::new(),
            Some(value) => {
                let bytes = STANDARD
                    .decode(value)
                    .map_err(|_| format!("the value of metadata key {key:?} is not base64"))?;
                match String::from_utf8(bytes) {
                    Ok(text) => text,
                    // Values StreamGate does not read may be any bytes.
                    Err(_) if !is_known(key) => continue,
                    Err(_) => return Err(format!("the value of metadata key {key:?} is not UTF-8")),
                }
            }
        };
        let value = Some(decoded).filter(|v| !v.is_empty());
        match key {
            "filename" | "name" => fields.filename = fields.filename.or(value),
            "filetype" | "type" | "contentType" => fields.content_type = fields.content_type.or(value),
            "title" => fields.title = value,
            "description" => fields.description = value,
            "access" => {
                if let Some(text) = value {
                    let access =
                        serde_json::from_str(&text).map_err(|e| format!("metadata `access` is not JSON: {e}"))?;
                    fields.access = Some(access);
                }
            }
            _ => {}
        }
    }
    Ok(fields)
}

fn is_known(key: &str) -> bool {
    matches!(
        key,
        "filename" | "name" | "filetype" | "type" | "contentType" | "title" | "description" | "access"
    )
}

impl Fields {
    /// Checks the fields and fills in a title: the one given, else the file name without its extension.
    /// An access rule is checked against the chains this installation reads, and kept in its canonical
    /// form.
    pub fn validate(self, chains: &Chains) -> Result<Details, ApiError> {
        let details = self
            .validate_text()
            .map_err(|detail| ApiError::bad_request("invalid_metadata", detail))?;
        let access = match &details.access {
            None => None,
            Some(access) => Some(
                Rule::parse(access, chains)
                    .map_err(|fault| ApiError::bad_request("invalid_access", fault.to_string()))?
                    .to_json(),
            ),
        };
        Ok(Details { access, ..details })
    }

    fn validate_text(self) -> Result<Details, String> {
        let filename = self.filename.map(|name| name.trim().to_owned());
        if let Some(name) = &filename
            && (name.chars().count() > MAX_FILENAME_CHARS || name.chars().any(char::is_control))
        {
            return Err(format!(
                "filename must be at most {MAX_FILENAME_CHARS} characters without control characters"
            ));
        }
        let content_type = self.content_type.map(|t| t.trim().to_ascii_lowercase());
        if let Some(mime) = &content_type
            && !is_media_type(mime)
        {
            return Err(format!("{mime:?} is not a media type such as video/mp4"));
        }
        let title = match self.title.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
            Some(title) => title,
            None => filename
                .as_deref()
                .map(|name| name.rsplit_once('.').map_or(name, |(stem, _)| stem))
                .filter(|stem| !stem.is_empty())
                .unwrap_or("Untitled")
                .chars()
                .take(MAX_TITLE_CHARS)
                .collect(),
        };
        if title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
            return Err(format!(
                "title must be at most {MAX_TITLE_CHARS} characters without control characters"
            ));
        }
        let description = self.description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(format!(
                "description must be at most {MAX_DESCRIPTION_CHARS} characters"
            ));
        }
        Ok(Details {
            filename,
            content_type,
            title,
            description,
            access: self.access,
        })
    }
}

/// `type/subtype`, each a token of RFC 9110.
fn is_media_type(text: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    essence.split_once('/').is_some_and(|(a, b)| token(a) && token(b)) && text.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains() -> Chains {
        Chains::from_vars(std::iter::empty()).expect("built-in chains")
    }

    fn b64(text: &str) -> String {
        STANDARD.encode(text)
    }

    #[test]
    fn reads_the_fields_streamgate_knows() {
        let header = format!(
            "filename {},filetype {}, title {},is_confidential,access {}",
            b64("holiday.mov"),
            b64("video/QuickTime"),
            b64("Holiday"),
            b64(r#"{"type":"public"}"#)
        );
        let details = parse_header(&header)
            .expect("valid")
            .validate(&chains())
            .expect("valid");
        assert_eq!(details.filename.as_deref(), Some("holiday.mov"));
        assert_eq!(details.content_type.as_deref(), Some("video/quicktime"));
        assert_eq!(details.title, "Holiday");
        assert_eq!(details.access, Some(serde_json::json!({"type": "public"})));
    }

    #[test]
    fn the_title_defaults_to_the_file_name() {
        let details = parse_header(&format!("filename {}", b64("my.trip.mp4")))
            .expect("parses")
            .validate(&chains())
            .expect("valid");
        assert_eq!(details.title, "my.trip");
        assert_eq!(
            parse_header("")
                .expect("empty")
                .validate(&chains())
                .expect("valid")
                .title,
            "Untitled"
        );
    }

    #[test]
    fn refuses_what_is_not_metadata() {
        let long_title = b64(&"t".repeat(MAX_TITLE_CHARS + 1));
        for bad in [
            "filename not-base64!".to_owned(),
            format!("title {},title {}", b64("a"), b64("b")),
            format!("title {} extra", b64("a")),
            format!("title {long_title}"),
            format!("access {}", b64("{not json")),
            format!("access {}", b64(r#"{"type":"everyone"}"#)),
            format!("access {}", b64(r#"{"anyOf":[]}"#)),
            format!(
                "access {}",
                b64(r#"{"type":"token","chainId":1,"contract":"0x1","standard":"erc20"}"#)
            ),
            format!("filetype {}", b64("mp4")),
            format!("filename {}", b64("a\nb")),
            "x".repeat(MAX_HEADER_BYTES + 1),
        ] {
            let refused = parse_header(&bad).map(|fields| fields.validate(&chains()));
            assert!(!matches!(refused, Ok(Ok(_))), "{bad:.80}");
        }
    }
}
