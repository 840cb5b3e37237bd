//! Rate limits, answered with `429 rate_limited` and `Retry-After`.
//!
//! - **Per client address**, on every request of an HTTP surface: a flood guard kept in process (GCRA,
//!   through `governor`), so that it costs a hash lookup and no I/O on the hot path. On Lambda it holds
//!   per instance.
//! - **Per account** (all its wallets together), on authenticated calls: in process as well, checked once
//!   the session is known ([`crate::identity::Authenticated`]).
//! - **Sign-in calls per client address** (nonces, signatures, wallet links): counted in the store in
//!   windows of a minute, so the limit holds across Lambda instances and Knative replicas. Every signature
//!   checked may cost chain calls (EIP-1271), and failed ones leave their nonce usable, so this is what
//!   bounds guessing.
//!
//! The client address is the one the platform vouches for: a function URL's `sourceIp` on Lambda, else
//! the connection's peer, or, when the peer is a trusted proxy (`STREAMGATE_TRUSTED_PROXIES`), the
//! nearest address in `X-Forwarded-For` that is not one. IPv6 clients are counted by their /64, the
//! block one subscriber usually holds.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use crate::problem::ApiError;
use crate::store::{Store, now_unix};

/// The address a request came from, as [`ClientAddresses`] resolved it; in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The connection's peer, set by the HTTP server off Lambda.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub SocketAddr);

/// `429 rate_limited`, telling when to try again (whole seconds, at least one).
pub fn rate_limited(what: &str, retry_after: Duration) -> ApiError {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many {what}; try again in {seconds} s"),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
}

/// Which addresses stand for the client.
#[derive(Debug, Clone, Default)]
pub struct ClientAddresses {
    /// Proxies whose `X-Forwarded-For` is believed.
    trusted: Vec<IpNet>,
}

impl ClientAddresses {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.trusted.iter().any(|net| net.contains(&address))
    }

    /// The client of a request that came over a connection from `peer`: `peer` itself unless it is a
    /// trusted proxy; then `X-Forwarded-For` read from its end, each trusted hop stepped over, up to the
    /// first address that is not one (a client can write anything before that, never after it). When
    /// every address is a trusted one, the request came from inside: the first of them.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer.to_canonical();
        }
        let mut client = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(list) = value.to_str() else {
                return client.to_canonical();
            };
            for hop in list.rsplit(',') {
                let Ok(hop) = hop.trim().parse::<IpAddr>() else {
                    // What the proxies wrote is readable: an unreadable entry came from the client.
                    return client.to_canonical();
                };
                client = hop;
                if !self.is_trusted(hop) {
                    return hop.to_canonical();
                }
            }
        }
        client.to_canonical()
    }
}

/// The key an address is counted under: IPv4 whole, IPv6 by its /64.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// A rate per minute, of which a quarter may come at once: `0` turns the limit off.
fn quota(per_minute: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(per_minute.div_ceil(4)).unwrap_or(NonZeroU32::MIN);
    Some(Quota::per_minute(rate).allow_burst(burst))
}

/// How many checks pass between two sweeps of keys whose allowance is whole again (their state says no
/// more than a fresh one), which bounds the memory that many distinct keys take.
const SWEEP_EVERY: u32 = 1 << 16;

/// A limit kept in process for each key.
pub struct Keyed<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
    checks: AtomicU32,
    what: &'static str,
}

impl<K: std::hash::Hash + Eq + Clone> Keyed<K> {
    /// `per_minute` for each key, or `None` when it is 0 (no limit).
    pub fn per_minute(per_minute: u32, what: &'static str) -> Option<Arc<Self>> {
        let quota = quota(per_minute)?;
        let clock = DefaultClock::default();
        Some(Arc::new(Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            checks: AtomicU32::new(0),
            what,
        }))
    }

    /// Counts one call of `key`; `429` when its allowance is spent.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(key)
            .map_err(|refused| rate_limited(self.what, refused.wait_time_from(self.clock.now())))
    }
}

/// The per-address limit of an HTTP surface.
pub struct AddressLimit {
    pub addresses: ClientAddresses,
    limit: Option<Arc<Keyed<IpAddr>>>,
}

impl AddressLimit {
    pub fn new(addresses: ClientAddresses, per_minute: u32) -> Self {
        Self {
            addresses,
            limit: Keyed::per_minute(per_minute, "requests from this address"),
        }
    }

    /// Counts one request from `client`.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        match &self.limit {
            Some(limit) => limit.check(&address_key(client)),
            None => Ok(()),
        }
    }
}

/// Sign-in calls per client address, counted in the store by the minute.
#[derive(Clone)]
pub struct SignInLimit {
    store: Arc<dyn Store>,
    per_minute: u32,
    /// Addresses found past the limit, with the window they are past it in: refused again without a
    /// write until it ends, so that a flood from one address does not hammer one counter in the store.
    refused: Arc<quick_cache::sync::Cache<IpAddr, i64>>,
}

const WINDOW_SECONDS: i64 = 60;

/// How many refused addresses are remembered at once.
const REFUSED_REMEMBERED: usize = 16 * 1024;

impl SignInLimit {
    /// `per_minute` calls from one address; 0 turns the limit off.
    pub fn new(store: Arc<dyn Store>, per_minute: u32) -> Self {
        Self {
            store,
            per_minute,
            refused: Arc::new(quick_cache::sync::Cache::new(REFUSED_REMEMBERED)),
        }
    }

    /// Counts one sign-in call from `client` (none known: not counted); `429` past the minute's limit.
    /// When the count cannot be kept the call is refused too (`503`): a counter the store throttles is
    /// one address's flood, and the sign-in it guards writes elsewhere.
    pub async fn check(&self, client: Option<ClientAddress>) -> Result<(), ApiError> {
        let (Some(ClientAddress(address)), true) = (client, self.per_minute > 0) else {
            return Ok(());
        };
        let now = now_unix();
        let window = now.div_euclid(WINDOW_SECONDS);
        let ends = (window + 1) * WINDOW_SECONDS;
        let refused = || {
            let wait = u64::try_from(ends - now).unwrap_or(1);
            rate_limited("sign-in attempts from this address", Duration::from_secs(wait))
        };
        let key = address_key(address);
        if self.refused.get(&key) == Some(window) {
            return Err(refused());
        }
        let pk = format!("limit#sign-in#{key}");
        let count = self
            .store
            .increment(&pk, &window.to_string(), "count", 1, Some(ends))
            .await
            .map_err(|err| ApiError::unavailable(&err))?;
        if count > i64::from(self.per_minute) {
            self.refused.insert(key, window);
            return Err(refused());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).expect("header"));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let addresses = ClientAddresses::new(vec!["10.0.0.0/8".parse().expect("net")]);
        let headers = forwarded(&["1.2.3.4"]);
        assert_eq!(addresses.resolve(ip("203.0.113.9"), &headers), ip("203.0.113.9"));
        assert_eq!(
            ClientAddresses::default().resolve(ip("10.0.0.1"), &headers),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_hops_are_stepped_over_from_the_end() {
        let addresses = ClientAddresses::new(vec![
            "10.0.0.0/8".parse().expect("net"),
            "127.0.0.1/32".parse().expect("net"),
        ]);
        // The client wrote 6.6.6.6 itself; the first proxy appended the real peer, the others their own.
        let headers = forwarded(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(addresses.resolve(ip("127.0.0.1"), &headers), ip("198.51.100.7"));
        // Only proxies: a request from inside, the first of them.
        let inside = forwarded(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(addresses.resolve(ip("127.0.0.1"), &inside), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(addresses.resolve(ip("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"));
        // Garbage written by the client stops the walk at the last address a proxy wrote.
        let garbage = forwarded(&["not-an-address, 10.1.1.1"]);
        assert_eq!(addresses.resolve(ip("127.0.0.1"), &garbage), ip("10.1.1.1"));
        // An IPv4-mapped IPv6 peer is the IPv4 address.
        assert_eq!(
            addresses.resolve(ip("::ffff:10.0.0.5"), &forwarded(&["192.0.2.1"])),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            address_key(ip("2001:db8:1:2:ffff::9")),
            address_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(address_key(ip("2001:db8:1:3::1")), address_key(ip("2001:db8:1:2::1")));
        assert_eq!(address_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn an_address_past_its_burst_is_refused_with_a_retry_time_and_others_are_not() {
        let limit = AddressLimit::new(ClientAddresses::default(), 8);
        let (one, other) = (ip("192.0.2.1"), ip("192.0.2.2"));
        // A quarter of the minute's rate at once: two.
        assert!(limit.check(one).is_ok());
        assert!(limit.check(one).is_ok());
        let refused = limit.check(one).expect_err("third at once");
        assert_eq!(
            (refused.status(), refused.code()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        let response = axum::response::IntoResponse::into_response(refused);
        let retry: u64 = response.headers()[header::RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        // 8 a minute: the next one in 7.5 s, rounded up.
        assert_eq!(retry, 8);
        assert!(limit.check(other).is_ok());
        // Within one /64, one client.
        let v6 = AddressLimit::new(ClientAddresses::default(), 4);
        assert!(v6.check(ip("2001:db8::1")).is_ok());
        assert!(v6.check(ip("2001:db8::2")).is_err());
    }

    #[tokio::test]
    async fn sign_in_calls_past_the_limit_are_refused_without_another_write() {
        use crate::adapters::local::{LocalDb, LocalStore};

        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(LocalDb::open(&dir.path().join("db")).expect("db")));
        let limit = SignInLimit::new(store.clone(), 3);
        // Well inside one minute's window.
        if now_unix().rem_euclid(WINDOW_SECONDS) > WINDOW_SECONDS - 5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        let client = Some(ClientAddress(ip("192.0.2.7")));
        for _ in 0..3 {
            limit.check(client).await.expect("within the limit");
        }
        for _ in 0..3 {
            let refused = limit.check(client).await.expect_err("past the limit");
            assert_eq!(
                (refused.status(), refused.code()),
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            );
        }
        limit
            .check(Some(ClientAddress(ip("192.0.2.8"))))
            .await
            .expect("another address");
        limit.check(None).await.expect("no address known");
        // The first refusal was counted; the next two were answered from memory.
        let window = now_unix().div_euclid(WINDOW_SECONDS).to_string();
        let counter = store
            .get("limit#sign-in#192.0.2.7", &window)
            .await
            .expect("get")
            .expect("counter");
        assert_eq!(counter.attrs["count"], serde_json::json!(4));
        assert!(counter.expires_at.expect("expires") <= now_unix() + WINDOW_SECONDS);
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limit = AddressLimit::new(ClientAddresses::default(), 0);
        for _ in 0..1000 {
            assert!(limit.check(ip("192.0.2.1")).is_ok());
        }
        assert!(Keyed::<u8>::per_minute(0, "calls").is_none());
    }
}
