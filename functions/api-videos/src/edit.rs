//! The body of `PATCH /v1/videos/{id}`: the fields an owner may change, checked before anything is read.

use common::catalog::{MAX_DESCRIPTION_CHARS, MAX_TAG_CHARS, MAX_TAGS, MAX_TITLE_CHARS, Video};
use common::problem::ApiError;
use serde::Deserialize;
use serde_json::Value;

/// What an owner may change; fields left out stay as they are, and any other field is refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    pub title: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    /// Checked against the chains this installation reads by the handler.
    pub access: Option<Value>,
}

fn invalid(detail: String) -> ApiError {
    ApiError::bad_request("invalid_metadata", detail)
}

/// Control characters other than line breaks and tabs.
fn has_controls(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

impl Edit {
    /// The edit with its text trimmed, or a 400 `invalid_metadata` naming the field at fault: a title of 1 to
    /// 200 characters, a description of at most 5,000, at most 20 tags of 1 to 40 characters (repeats,
    /// compared without case, kept once).
    pub fn validate(self) -> Result<Self, ApiError> {
        let title = match self.title {
            None => None,
            Some(title) => {
                let title = title.trim().to_owned();
                let chars = title.chars().count();
                if chars == 0 || chars > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "title must be 1 to {MAX_TITLE_CHARS} characters without control characters"
                    )));
                }
                Some(title)
            }
        };
        if let Some(description) = &self.description
            && (description.chars().count() > MAX_DESCRIPTION_CHARS || has_controls(description))
        {
            return Err(invalid(format!(
                "description must be at most {MAX_DESCRIPTION_CHARS} characters without control characters"
            )));
        }
        let tags = match self.tags {
            None => None,
            Some(tags) => {
                if tags.len() > MAX_TAGS {
                    return Err(invalid(format!("a video has at most {MAX_TAGS} tags")));
                }
                let mut kept: Vec<String> = Vec::with_capacity(tags.len());
                for (index, tag) in tags.into_iter().enumerate() {
                    let tag = tag.trim().to_owned();
                    let chars = tag.chars().count();
                    if chars == 0 || chars > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
                        return Err(invalid(format!(
                            "tags[{index}] must be 1 to {MAX_TAG_CHARS} characters without control characters"
                        )));
                    }
                    if !kept.iter().any(|k| k.to_lowercase() == tag.to_lowercase()) {
                        kept.push(tag);
                    }
                }
                Some(kept)
            }
        };
        Ok(Self {
            title,
            description: self.description,
            tags,
            access: self.access,
        })
    }

    /// Applies the edit (with `access` in its canonical form); `false` when nothing changes.
    pub fn apply(&self, video: &mut Video, access: Option<&Value>) -> bool {
        let before = (
            video.title.clone(),
            video.description.clone(),
            video.tags.clone(),
            video.access().clone(),
        );
        if let Some(title) = &self.title {
            video.title.clone_from(title);
        }
        if let Some(description) = &self.description {
            video.description.clone_from(description);
        }
        if let Some(tags) = &self.tags {
            video.tags.clone_from(tags);
        }
        if let Some(access) = access {
            video.set_access(access.clone());
        }
        before
            != (
                video.title.clone(),
                video.description.clone(),
                video.tags.clone(),
                video.access().clone(),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(body: serde_json::Value) -> Result<Edit, String> {
        let edit: Edit = serde_json::from_value(body).map_err(|e| e.to_string())?;
        edit.validate().map_err(|e| e.detail().to_owned())
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = edit(serde_json::json!({"title": "a", "owner": "0x0"})).expect_err("owner is not editable");
        assert!(err.contains("unknown field `owner`"), "{err}");
    }

    #[test]
    fn limits_hold_at_their_edges() {
        assert!(edit(serde_json::json!({"title": "t".repeat(MAX_TITLE_CHARS)})).is_ok());
        assert!(
            edit(serde_json::json!({"title": "é".repeat(MAX_TITLE_CHARS)})).is_ok(),
            "characters, not bytes"
        );
        assert!(edit(serde_json::json!({"title": "t".repeat(MAX_TITLE_CHARS + 1)})).is_err());
        assert!(edit(serde_json::json!({"title": "   "})).is_err());
        assert!(edit(serde_json::json!({"title": "a\u{0}b"})).is_err());
        assert!(edit(serde_json::json!({"description": "d".repeat(MAX_DESCRIPTION_CHARS)})).is_ok());
        assert!(edit(serde_json::json!({"description": "line\nbreaks\tkept"})).is_ok());
        assert!(edit(serde_json::json!({"description": "d".repeat(MAX_DESCRIPTION_CHARS + 1)})).is_err());
        let tags: Vec<String> = (0..MAX_TAGS).map(|n| format!("tag{n}")).collect();
        assert!(edit(serde_json::json!({"tags": tags})).is_ok());
        let tags: Vec<String> = (0..=MAX_TAGS).map(|n| format!("tag{n}")).collect();
        assert!(edit(serde_json::json!({"tags": tags})).is_err());
        assert!(edit(serde_json::json!({"tags": ["t".repeat(MAX_TAG_CHARS)]})).is_ok());
        let err = edit(serde_json::json!({"tags": ["ok", "t".repeat(MAX_TAG_CHARS + 1)]})).expect_err("long tag");
        assert!(err.starts_with("tags[1]"), "{err}");
        assert!(edit(serde_json::json!({"tags": [""]})).is_err());
        assert!(edit(serde_json::json!({"tags": "not a list"})).is_err());
    }

    #[test]
    fn text_is_trimmed_and_repeated_tags_kept_once() {
        let edit = edit(serde_json::json!({"title": "  Hello  ", "tags": [" Cats ", "cats", "dogs"]})).expect("valid");
        assert_eq!(edit.title.as_deref(), Some("Hello"));
        assert_eq!(edit.tags, Some(vec!["Cats".to_owned(), "dogs".to_owned()]));
    }
}
