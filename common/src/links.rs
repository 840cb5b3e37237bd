//! Absolute links back to this service (an upload's `Location`, playback URLs), as its client reached it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use url::Url;

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The scheme and host a request was sent to, as its client sees them behind any proxy: `https` when
/// `X-Forwarded-Proto` says so, else `http`; `X-Forwarded-Host`, else `Host`, when it is printable ASCII.
///
/// As an extractor it reads these headers alone (axum's `HeaderMap` extractor copies them all).
#[derive(Debug, Clone)]
pub struct SentTo {
    scheme: &'static str,
    host: Option<HeaderValue>,
}

impl SentTo {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let scheme = match headers.get(X_FORWARDED_PROTO).map(HeaderValue::as_bytes) {
            Some(b"https") => "https",
            _ => "http",
        };
        let host = headers
            .get(X_FORWARDED_HOST)
            .or_else(|| headers.get(header::HOST))
            .filter(|host| !host.is_empty() && host.as_bytes().iter().all(u8::is_ascii_graphic))
            .cloned();
        Self { scheme, host }
    }

    /// Writes the base of links back to this service to `out`: `public_url` when the installation has
    /// one, else the scheme and host the request was sent to; nothing when neither is known, which
    /// leaves the links relative to the request.
    pub fn write_base(&self, public_url: Option<&Url>, out: &mut String) {
        if let Some(base) = public_url {
            out.push_str(base.as_str().trim_end_matches('/'));
        } else if let Some(host) = self.host.as_ref().and_then(|host| host.to_str().ok()) {
            for piece in [self.scheme, "://", host] {
                out.push_str(piece);
            }
        }
    }

    /// The link to `path` (which starts with `/`).
    pub fn link(&self, public_url: Option<&Url>, path: &str) -> String {
        let mut link = String::with_capacity(64 + path.len());
        self.write_base(public_url, &mut link);
        link.push_str(path);
        link
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SentTo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_to(headers: &[(&'static str, &'static str)]) -> SentTo {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        SentTo::from_headers(&map)
    }

    #[test]
    fn links_follow_the_proxy_headers_then_the_host() {
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[("host", "example.org:8080")], "http://example.org:8080/v1/x"),
            (&[("host", "a"), ("x-forwarded-proto", "https")], "https://a/v1/x"),
            (&[("host", "a"), ("x-forwarded-proto", "gopher")], "http://a/v1/x"),
            (
                &[("host", "a"), ("x-forwarded-host", "cdn.example")],
                "http://cdn.example/v1/x",
            ),
            // No usable host: the link stays relative.
            (&[("host", "a b")], "/v1/x"),
            (&[("host", "")], "/v1/x"),
            (&[], "/v1/x"),
        ];
        for (headers, expected) in cases {
            assert_eq!(sent_to(headers).link(None, "/v1/x"), expected, "{headers:?}");
        }
    }

    #[test]
    fn a_public_url_wins_over_the_request() {
        let public = Url::parse("https://video.example/").expect("url");
        let headers = [("host", "internal:8080"), ("x-forwarded-host", "proxy")];
        assert_eq!(
            sent_to(&headers).link(Some(&public), "/v1/x"),
            "https://video.example/v1/x"
        );
    }
}
