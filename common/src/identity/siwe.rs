//! Sign-In with Ethereum (EIP-4361) messages: a strict parser that follows the EIP's ABNF grammar line
//! by line, and the checks that do not need storage or a chain (domain, URI, chain, times).

use alloy_primitives::Address;
use chrono::{DateTime, FixedOffset, Utc};

/// Longest message accepted; real ones are a few hundred bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

const PREAMBLE: &str = " wants you to sign in with your Ethereum account:";

/// Why a message does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: {problem}")]
    Grammar { line: usize, problem: &'static str },
    #[error("the address is not EIP-55 checksummed")]
    AddressNotChecksummed,
    #[error("the message is longer than {MAX_MESSAGE_BYTES} bytes")]
    TooLong,
}

/// A timestamp as written in the message, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    pub text: String,
    pub at: DateTime<FixedOffset>,
}

impl Timestamp {
    pub fn utc(&self) -> DateTime<Utc> {
        self.at.with_timezone(&Utc)
    }
}

/// A parsed EIP-4361 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    pub scheme: Option<String>,
    pub domain: String,
    pub address: Address,
    pub statement: Option<String>,
    pub uri: String,
    pub version: String,
    pub chain_id: u64,
    pub nonce: String,
    pub issued_at: Timestamp,
    pub expiration_time: Option<Timestamp>,
    pub not_before: Option<Timestamp>,
    pub request_id: Option<String>,
    /// The `Resources:` section: `None` when absent, possibly empty when present.
    pub resources: Option<Vec<String>>,
}

struct Lines<'a> {
    lines: std::iter::Peekable<std::iter::Enumerate<std::str::Split<'a, char>>>,
}

impl<'a> Lines<'a> {
    fn next(&mut self, problem: &'static str) -> Result<(usize, &'a str), ParseError> {
        self.lines
            .next()
            .map(|(i, line)| (i + 1, line))
            .ok_or(ParseError::Grammar { line: 0, problem })
    }

    /// The value of the next line if it starts with `tag`.
    fn tagged(&mut self, tag: &str) -> Option<(usize, &'a str)> {
        let (_, line) = self.lines.peek()?;
        let value = line.strip_prefix(tag)?;
        let (i, _) = self.lines.next()?;
        Some((i + 1, value))
    }

    fn required(&mut self, tag: &str, problem: &'static str) -> Result<(usize, &'a str), ParseError> {
        match self.tagged(tag) {
            Some(found) => Ok(found),
            None => Err(ParseError::Grammar {
                line: self.lines.peek().map_or(0, |(i, _)| i + 1),
                problem,
            }),
        }
    }
}

fn fail<T>(line: usize, problem: &'static str) -> Result<T, ParseError> {
    Err(ParseError::Grammar { line, problem })
}

impl SiweMessage {
    /// Parses `text` by the EIP-4361 grammar: lines separated by LF, fields in their order, nothing after
    /// the last field.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLong);
        }
        let mut lines = Lines {
            lines: text.split('\n').enumerate().peekable(),
        };

        let (n, header) = lines.next("empty message")?;
        let Some(origin) = header.strip_suffix(PREAMBLE) else {
            return fail(n, "the first line must end with the sign-in preamble");
        };
        let (scheme, domain) = match origin.split_once("://") {
            Some((scheme, domain)) if is_scheme(scheme) => (Some(scheme.to_owned()), domain),
            Some(_) => return fail(n, "invalid scheme"),
            None => (None, origin),
        };
        if domain.is_empty() || !is_authority(domain) {
            return fail(n, "the domain is not an RFC 3986 authority");
        }

        let (n, address) = lines.next("missing address")?;
        let address = parse_address(address).map_err(|e| match e {
            ParseError::Grammar { problem, .. } => ParseError::Grammar { line: n, problem },
            other => other,
        })?;

        let (n, blank) = lines.next("missing blank line after the address")?;
        if !blank.is_empty() {
            return fail(n, "expected a blank line after the address");
        }
        let (n, line) = lines.next("missing statement or blank line")?;
        let statement = if line.is_empty() {
            None
        } else {
            if !line.chars().all(is_statement_char) {
                return fail(n, "the statement has characters the grammar does not allow");
            }
            let (m, blank) = lines.next("missing blank line after the statement")?;
            if !blank.is_empty() {
                return fail(m, "the statement must be one line followed by a blank line");
            }
            Some(line.to_owned())
        };

        let (n, uri) = lines.required("URI: ", "expected `URI: `")?;
        if !is_uri(uri) {
            return fail(n, "the URI is not an RFC 3986 URI");
        }
        let (n, version) = lines.required("Version: ", "expected `Version: `")?;
        if version != "1" {
            return fail(n, "the version must be 1");
        }
        let (n, chain) = lines.required("Chain ID: ", "expected `Chain ID: `")?;
        if chain.is_empty() || !chain.bytes().all(|b| b.is_ascii_digit()) {
            return fail(n, "the chain id must be digits");
        }
        // One way to write each chain: a leading zero would make two texts of one message.
        if chain.len() > 1 && chain.starts_with('0') {
            return fail(n, "the chain id must not have leading zeros");
        }
        let Ok(chain_id) = chain.parse::<u64>() else {
            return fail(n, "the chain id is too large");
        };
        let (n, nonce) = lines.required("Nonce: ", "expected `Nonce: `")?;
        if nonce.len() < 8 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return fail(n, "the nonce must be at least 8 letters and digits");
        }
        let (n, issued_at) = lines.required("Issued At: ", "expected `Issued At: `")?;
        let issued_at = timestamp(n, issued_at)?;
        let expiration_time = lines
            .tagged("Expiration Time: ")
            .map(|(n, t)| timestamp(n, t))
            .transpose()?;
        let not_before = lines.tagged("Not Before: ").map(|(n, t)| timestamp(n, t)).transpose()?;
        let request_id = match lines.tagged("Request ID: ") {
            Some((n, id)) if !is_pchars(id) => {
                return fail(n, "the request id has characters the grammar does not allow");
            }
            Some((_, id)) => Some(id.to_owned()),
            None => None,
        };
        let mut resources = None;
        if let Some((n, rest)) = lines.tagged("Resources:") {
            if !rest.is_empty() {
                return fail(n, "resources go on their own lines");
            }
            let mut listed = Vec::new();
            while let Some((n, resource)) = lines.tagged("- ") {
                if !is_uri(resource) {
                    return fail(n, "a resource is not an RFC 3986 URI");
                }
                listed.push(resource.to_owned());
            }
            resources = Some(listed);
        }
        if let Some((n, _)) = lines.lines.next() {
            return fail(
                n + 1,
                "unexpected line (fields out of order, unknown, or a trailing line break)",
            );
        }
        Ok(Self {
            scheme,
            domain: domain.to_owned(),
            address,
            statement,
            uri: uri.to_owned(),
            version: version.to_owned(),
            chain_id,
            nonce: nonce.to_owned(),
            issued_at,
            expiration_time,
            not_before,
            request_id,
            resources,
        })
    }

    /// The message as EIP-4361 writes it; parsing a message and writing it back gives the same text.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(512);
        if let Some(scheme) = &self.scheme {
            text.push_str(scheme);
            text.push_str("://");
        }
        text.push_str(&self.domain);
        text.push_str(PREAMBLE);
        text.push('\n');
        text.push_str(&self.address.to_checksum(None));
        text.push_str("\n\n");
        if let Some(statement) = &self.statement {
            text.push_str(statement);
            text.push('\n');
        }
        text.push('\n');
        for (tag, value) in [
            ("URI: ", Some(self.uri.as_str())),
            ("Version: ", Some(self.version.as_str())),
            ("Chain ID: ", Some(&*self.chain_id.to_string())),
            ("Nonce: ", Some(self.nonce.as_str())),
            ("Issued At: ", Some(self.issued_at.text.as_str())),
            (
                "Expiration Time: ",
                self.expiration_time.as_ref().map(|t| t.text.as_str()),
            ),
            ("Not Before: ", self.not_before.as_ref().map(|t| t.text.as_str())),
            ("Request ID: ", self.request_id.as_deref()),
        ] {
            if let Some(value) = value {
                if tag != "URI: " {
                    text.push('\n');
                }
                text.push_str(tag);
                text.push_str(value);
            }
        }
        if let Some(resources) = &self.resources {
            text.push_str("\nResources:");
            for resource in resources {
                text.push_str("\n- ");
                text.push_str(resource);
            }
        }
        text
    }
}

fn parse_address(text: &str) -> Result<Address, ParseError> {
    let hex = text
        .strip_prefix("0x")
        .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex.is_none() {
        return fail(0, "the address must be 0x and 40 hexadecimal digits");
    }
    Address::parse_checksummed(text, None).map_err(|_| ParseError::AddressNotChecksummed)
}

/// RFC 3339 `date-time` (as the grammar asks), with `T` between date and time.
fn timestamp(line: usize, text: &str) -> Result<Timestamp, ParseError> {
    let separated = text.as_bytes().get(10).is_some_and(|b| *b == b'T' || *b == b't');
    match DateTime::parse_from_rfc3339(text) {
        Ok(at) if separated => Ok(Timestamp {
            text: text.to_owned(),
            at,
        }),
        _ => fail(line, "not an RFC 3339 date-time"),
    }
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

fn is_sub_delim(c: char) -> bool {
    matches!(c, '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '=')
}

fn is_statement_char(c: char) -> bool {
    is_unreserved(c) || is_sub_delim(c) || matches!(c, ':' | '/' | '?' | '#' | '[' | ']' | '@' | ' ')
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Every character is allowed by `allowed` or is part of a `%XX` escape.
fn all_chars(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex_at = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex_at(i + 1) && hex_at(i + 2)) {
                return false;
            }
            i += 3;
            continue;
        }
        let c = bytes[i] as char;
        if !bytes[i].is_ascii() || !allowed(c) {
            return false;
        }
        i += 1;
    }
    true
}

fn is_pchars(s: &str) -> bool {
    all_chars(s, |c| is_unreserved(c) || is_sub_delim(c) || matches!(c, ':' | '@'))
}

/// RFC 3986 `authority`: `[ userinfo "@" ] host [ ":" port ]`.
pub fn is_authority(s: &str) -> bool {
    let (userinfo, host_port) = match s.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, s),
    };
    if let Some(userinfo) = userinfo
        && !all_chars(userinfo, |c| is_unreserved(c) || is_sub_delim(c) || c == ':')
    {
        return false;
    }
    let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        if literal.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, port),
            None => (host_port, ""),
        }
    };
    port.bytes().all(|b| b.is_ascii_digit()) && all_chars(host, |c| is_unreserved(c) || is_sub_delim(c))
}

/// RFC 3986 `URI`: `scheme ":" hier-part [ "?" query ] [ "#" fragment ]`.
pub fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    if !is_scheme(scheme) {
        return false;
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let (hier, query) = match rest.split_once('?') {
        Some((hier, query)) => (hier, Some(query)),
        None => (rest, None),
    };
    let path = match hier.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            if !is_authority(&after[..end]) {
                return false;
            }
            &after[end..]
        }
        None => hier,
    };
    let path_ok = all_chars(path, |c| {
        is_unreserved(c) || is_sub_delim(c) || matches!(c, ':' | '@' | '/')
    });
    let tail_ok = |part: Option<&str>| {
        part.is_none_or(|p| {
            all_chars(p, |c| {
                is_unreserved(c) || is_sub_delim(c) || matches!(c, ':' | '@' | '/' | '?')
            })
        })
    };
    path_ok && tail_ok(query) && tail_ok(fragment)
}

/// The `host[:port]` part of a URI with an authority, without userinfo.
pub fn uri_authority(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    Some(authority.rsplit_once('@').map_or(authority, |(_, host)| host))
}

/// Whether `uri` is a web address (`http` or `https`) on `authority` (`host[:port]`), the port its
/// scheme implies (443, 80) written or not.
fn web_origin_is(uri: &str, authority: &str) -> bool {
    let Some((scheme, _)) = uri.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return false,
    };
    let Some(found) = uri_authority(uri) else {
        return false;
    };
    let bare = |a: &'_ str| {
        a.len()
            .checked_sub(default_port.len())
            .filter(|&at| a.is_char_boundary(at) && a[at..] == *default_port)
            .map_or(a.to_owned(), |at| a[..at].to_owned())
    };
    bare(found).eq_ignore_ascii_case(&bare(authority))
}

/// Why a sign-in is refused. Each has its own stable problem code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("the message does not follow EIP-4361: {0}")]
    Malformed(ParseError),
    #[error("the message is for another domain")]
    DomainMismatch,
    #[error("the message's URI is not on this service's origin")]
    UriMismatch,
    #[error("the message's chain is not supported here")]
    ChainUnsupported,
    #[error("the nonce was not issued by this service, or has expired")]
    NonceUnknown,
    #[error("the nonce has been used already")]
    NonceReused,
    #[error("the message was issued in the future")]
    IssuedInFuture,
    #[error("the message has expired")]
    Expired,
    #[error("the message is not valid yet")]
    NotYetValid,
    #[error("the signature does not match the address")]
    InvalidSignature,
}

impl SignInError {
    /// The stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(ParseError::AddressNotChecksummed) => "address_not_checksummed",
            Self::Malformed(_) => "malformed_message",
            Self::DomainMismatch => "domain_mismatch",
            Self::UriMismatch => "uri_mismatch",
            Self::ChainUnsupported => "chain_unsupported",
            Self::NonceUnknown => "nonce_unknown",
            Self::NonceReused => "nonce_reused",
            Self::IssuedInFuture => "issued_in_future",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::InvalidSignature => "invalid_signature",
        }
    }
}

/// What a message is checked against.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The service's domain (`host[:port]`), which the message must name.
    pub domain: &'a str,
    /// When set, the message's URI must have this authority.
    pub uri_authority: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// Tolerated clock difference for `Not Before` (and `Issued At` when checked).
    pub skew: chrono::Duration,
    /// Refuse messages issued after `now + skew`. EIP-4361 leaves this to the service; StreamGate
    /// refuses them, the conformance vectors do not.
    pub refuse_future_issuance: bool,
}

impl SiweMessage {
    /// The checks that need neither storage nor a chain: domain, URI, times. The chain id, nonce and
    /// signature are checked by the caller.
    pub fn check(&self, expect: &Expectations<'_>) -> Result<(), SignInError> {
        if !self.domain.eq_ignore_ascii_case(expect.domain) {
            return Err(SignInError::DomainMismatch);
        }
        if let Some(authority) = expect.uri_authority
            && !web_origin_is(&self.uri, authority)
        {
            return Err(SignInError::UriMismatch);
        }
        if expect.refuse_future_issuance && self.issued_at.utc() > expect.now + expect.skew {
            return Err(SignInError::IssuedInFuture);
        }
        if let Some(expiry) = &self.expiration_time
            && expiry.utc() <= expect.now
        {
            return Err(SignInError::Expired);
        }
        if let Some(not_before) = &self.not_before
            && not_before.utc() > expect.now + expect.skew
        {
            return Err(SignInError::NotYetValid);
        }
        Ok(())
    }
}

/// The address whose key made `signature` (65 bytes, hex, `v` as 0/1 or 27/28) over the EIP-191
/// personal message `text`.
pub fn recover_signer(text: &str, signature: &[u8]) -> Result<Address, SignInError> {
    let signature = alloy_primitives::Signature::from_raw(signature).map_err(|_| SignInError::InvalidSignature)?;
    signature
        .recover_address_from_msg(text.as_bytes())
        .map_err(|_| SignInError::InvalidSignature)
}

/// Decodes a `0x`-prefixed hex signature.
pub fn decode_signature(hex_text: &str) -> Result<Vec<u8>, SignInError> {
    let digits = hex_text.strip_prefix("0x").unwrap_or(hex_text);
    if digits.len() > 4096 {
        return Err(SignInError::InvalidSignature);
    }
    hex::decode(digits).map_err(|_| SignInError::InvalidSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "app.streamgate.test wants you to sign in with your Ethereum account:\n\
        0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A\n\nSign in\n\nURI: https://app.streamgate.test/login\n\
        Version: 1\nChain ID: 8453\nNonce: Xk3v9QmP2rT8wZ1b\nIssued At: 2026-11-27T04:17:23.443Z";

    #[test]
    fn the_uri_is_a_web_address_on_the_service_s_origin() {
        let on = |uri: &str, authority: &str| web_origin_is(uri, authority);
        assert!(on("https://app.streamgate.test/login", "app.streamgate.test"));
        assert!(on("HTTPS://App.StreamGate.test", "app.streamgate.test"));
        assert!(on("https://app.streamgate.test:443/", "app.streamgate.test"));
        assert!(on("http://localhost:8080/", "localhost:8080"));
        assert!(on("http://localhost/", "localhost:80"));
        assert!(on("https://user@app.streamgate.test/", "app.streamgate.test"));
        assert!(!on("ftp://app.streamgate.test/", "app.streamgate.test"));
        assert!(!on("https://app.streamgate.test:8443/", "app.streamgate.test"));
        assert!(!on("https://evil.example/app.streamgate.test", "app.streamgate.test"));
        assert!(!on("app.streamgate.test", "app.streamgate.test"));
        assert!(!on("https://app.streamgate.test.evil.example/", "app.streamgate.test"));
    }

    #[test]
    fn writes_back_what_it_parsed() {
        let message = SiweMessage::parse(MESSAGE).expect("parses");
        assert_eq!(message.chain_id, 8453);
        assert_eq!(message.to_text(), MESSAGE);
        // Found by fuzzing: an empty `Resources:` section is kept, not dropped.
        let empty_section = format!("{MESSAGE}\nResources:");
        assert_eq!(
            SiweMessage::parse(&empty_section).expect("parses").to_text(),
            empty_section
        );
    }

    #[test]
    fn refuses_what_would_have_two_texts() {
        // Found by fuzzing: `0453` and `453` name one chain.
        let padded = MESSAGE.replace("Chain ID: 8453", "Chain ID: 08453");
        assert!(matches!(
            SiweMessage::parse(&padded),
            Err(ParseError::Grammar { line: 8, .. })
        ));
        for bad in [
            MESSAGE.replace("Chain ID: 8453", "Chain ID: 99999999999999999999999"),
            MESSAGE.replace("Version: 1", "Version: 2"),
            format!("{MESSAGE}\n"),
            format!("{MESSAGE}\nResources:\n"),
            MESSAGE.replace('\n', "\r\n"),
            MESSAGE.replace("Sign in\n", "Sign in\u{0}\n"),
        ] {
            assert!(SiweMessage::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
