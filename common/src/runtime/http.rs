use std::convert::Infallible;
use std::future::{Future, Ready};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::Either;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use super::FunctionInfo;
use super::request_metrics::{Counting, RequestMetrics};
use crate::limits::{AddressLimit, ClientAddress, PeerAddress};
use crate::problem::{ApiError, method_not_allowed, not_found_fallback};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A function's HTTP surface: its routes inside the layers every StreamGate function has. A concrete
/// type rather than a boxed service: the server clones it for every request (three reference counts)
/// and its answer's future is not boxed once more.
pub type HttpApp = Edge<Router>;

/// Whether the app serves `GET /metrics`.
#[derive(Clone, Copy)]
pub enum MetricsRoute {
    Prometheus(&'static PrometheusHandle),
    Off,
}

/// `GET /healthz` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub function: &'static str,
    pub version: &'static str,
}

/// Wraps a function's router with what every StreamGate HTTP surface has: `/healthz`, optional
/// `/metrics`, request ids, request spans and metrics, problem answers for unknown paths and panics,
/// CORS and security headers.
///
/// The layers wrap the router as a whole rather than through `Router::layer`, which would wrap every
/// route on its own and clone the whole stack for every request; only [`RouteLabel`], which needs the
/// matched route, sits inside.
pub fn http_app(info: FunctionInfo, router: Router, metrics: MetricsRoute) -> HttpApp {
    let health = Health {
        status: "ok",
        function: info.name,
        version: info.version,
    };
    let mut app = router.route("/healthz", get(move || async move { axum::Json(health) }));
    // Served here, the requests are tallied per thread; on Lambda, counted as they come.
    let counting = match metrics {
        MetricsRoute::Prometheus(_) => Counting::Tallied,
        MetricsRoute::Off => Counting::Directly,
    };
    let request_metrics = Arc::new(RequestMetrics::new(info.name, counting));
    if let MetricsRoute::Prometheus(handle) = metrics {
        app = app.route(
            "/metrics",
            get(render_metrics).with_state((handle, request_metrics.clone())),
        );
    }
    let app = app
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        .fallback(not_found_fallback)
        .route_layer(RouteLabelLayer);
    Edge {
        inner: app,
        ids: RequestIds::new(),
        metrics: request_metrics,
        limit: None,
    }
}

/// How many [`SECURITY_HEADERS`] there are.
const SECURITY_HEADER_COUNT: usize = 5;
/// Security headers every answer carries, unless its handler chose its own.
const SECURITY_HEADERS: [(HeaderName, HeaderValue); SECURITY_HEADER_COUNT] = [
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    ),
    (
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=63072000; includeSubDomains"),
    ),
    (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
];

/// Adds the request id and the [`SECURITY_HEADERS`] that the handler did not set itself. Handlers seldom
/// set any: one pass over the few headers an answer has tells which are set, for a fraction of what a
/// lookup of each would cost.
fn add_own_headers(headers: &mut http::HeaderMap, request_id: &HeaderValue) {
    const ID: usize = SECURITY_HEADER_COUNT;
    let mut set = [false; ID + 1];
    for name in headers.keys() {
        let own = match SECURITY_HEADERS.iter().position(|(own, _)| own == name) {
            Some(at) => Some(at),
            None => (name == REQUEST_ID).then_some(ID),
        };
        if let Some(at) = own {
            set[at] = true;
        }
    }
    if !set[ID] {
        headers.insert(REQUEST_ID, request_id.clone());
    }
    for ((name, value), set) in SECURITY_HEADERS.into_iter().zip(set) {
        if !set {
            headers.insert(name, value);
        }
    }
}

/// Request ids for requests that come without one: a random number drawn once per process, then a
/// counter, as 32 hex digits (unique without a system call per request).
#[derive(Clone)]
struct RequestIds {
    process: u64,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            process: uuid::Uuid::new_v4().as_u64_pair().0,
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    fn next(&self) -> HeaderValue {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.process.to_be_bytes());
        raw[8..].copy_from_slice(&number.to_be_bytes());
        let mut id = [0u8; 32];
        // Sixteen bytes always fit in 32 hex digits, which are always a valid header value.
        match alloy_primitives::hex::encode_to_slice(raw, &mut id) {
            Ok(()) => HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0")),
            Err(_) => HeaderValue::from_static("0"),
        }
    }
}

/// The route a request matched, handed from inside the router to [`RecordRequest`] outside it.
#[derive(Clone, Copy)]
struct RouteLabelLayer;

impl<S> tower::Layer<S> for RouteLabelLayer {
    type Service = RouteLabel<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteLabel(inner)
    }
}

#[derive(Clone)]
struct RouteLabel<S>(S);

impl<S> tower::Service<Request> for RouteLabel<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = LabelledFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        LabelledFuture {
            inner: self.0.call(request),
            route,
        }
    }
}

pin_project_lite::pin_project! {
    struct LabelledFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
    }
}

impl<F, E> Future for LabelledFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        // Edge adds up to eight headers (CORS, request id, security): room for them at once.
        response.headers_mut().reserve(8);
        if let Some(route) = this.route.take() {
            response.extensions_mut().insert(route);
        }
        Poll::Ready(Ok(response))
    }
}

/// What every request passes through around the routes, in one service rather than a stack of
/// layers (each of which would be cloned per request and wrap the answer's future once more): a request
/// id (the caller's `X-Request-Id`, else a fresh one) on the request and its answer, a `request` span,
/// a problem answer for a panicking handler, the request metrics, CORS and the security headers.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    ids: RequestIds,
    metrics: Arc<RequestMetrics>,
    limit: Option<Arc<AddressLimit>>,
}

impl<S> Edge<S> {
    /// Resolves each request's [`ClientAddress`] (kept in its extensions for the handlers) and answers
    /// `429` to an address past `limit`. Requests that come with neither a client nor a peer address
    /// (an app called in process) are not counted.
    pub fn limited(mut self, limit: AddressLimit) -> Self {
        self.limit = Some(Arc::new(limit));
        self
    }

    /// Counts a request against the address limit; `Some` problem when the address is past it. Health
    /// checks and metric scrapes (from the platform's own addresses) are not counted.
    fn admit(&self, request: &mut Request) -> Option<ApiError> {
        let limit = self.limit.as_deref()?;
        if matches!(request.uri().path(), "/healthz" | "/metrics") {
            return None;
        }
        let client = match request.extensions().get::<ClientAddress>() {
            Some(client) => client.0,
            None => {
                let peer = request.extensions().get::<PeerAddress>()?.0;
                let client = limit.addresses.resolve(peer.ip(), request.headers());
                request.extensions_mut().insert(ClientAddress(client));
                client
            }
        };
        limit.check(client).err()
    }
}

impl<S> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<Either<S::Future, Ready<Result<Response, Infallible>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.next();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = request_id.to_str().unwrap_or(""),
        );
        let method = request.method().clone();
        let preflight = is_preflight(&request);
        // A preflight is answered without being counted: browsers keep its answer for an hour.
        let refused = if preflight { None } else { self.admit(&mut request) };
        let inner = match (preflight, refused) {
            (true, _) => Either::Right(std::future::ready(Ok(preflight_answer()))),
            (false, Some(refused)) => Either::Right(std::future::ready(Ok(refused.into_response()))),
            (false, None) => {
                let _entered = span.enter();
                Either::Left(self.inner.call(request))
            }
        };
        EdgeFuture {
            inner,
            span,
            request_id,
            method,
            preflight,
            started: Instant::now(),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Edge`] on its way.
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        request_id: HeaderValue,
        method: Method,
        preflight: bool,
        started: Instant,
        metrics: Arc<RequestMetrics>,
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (inner, span) = (this.inner, &*this.span);
        let polled = {
            let _entered = span.enter();
            // A panicking handler is never polled again: its answer is the problem below.
            std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)))
        };
        let mut response = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(response))) => response,
            Ok(Poll::Ready(Err(never))) => match never {},
            Err(_) => ApiError::internal(&"a request handler panicked").into_response(),
        };
        let elapsed = this.started.elapsed();
        let status = response.status();
        let route = response.extensions().get::<MatchedPath>().map_or(
            if *this.preflight { "preflight" } else { "unmatched" },
            MatchedPath::as_str,
        );
        this.metrics.record(route, this.method, status.as_u16(), elapsed);
        if status.is_server_error() {
            tracing::error!(parent: span, status = status.as_u16(), latency = ?elapsed, "request failed");
        } else {
            tracing::debug!(parent: span, status = status.as_u16(), latency = ?elapsed, "answered");
        }
        let headers = response.headers_mut();
        add_own_headers(headers, this.request_id);
        if !*this.preflight {
            add_cors_headers(headers);
        }
        Poll::Ready(Ok(response))
    }
}

/// CORS. Players and upload clients run on other origins and send bearer tokens, never cookies, so any
/// origin may call; the tus and playback headers are allowed and exposed. No answer depends on the
/// request's origin or headers (any origin, fixed lists), so there is no `Vary`.
const ALLOW_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "authorization,content-type,x-request-id,tus-resumable,upload-length,upload-offset,upload-metadata,\
     upload-checksum,upload-defer-length,upload-concat,x-http-method-override,range",
);
const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static(
    "location,etag,x-request-id,tus-resumable,tus-version,tus-extension,tus-max-size,tus-checksum-algorithm,\
     upload-offset,upload-length,upload-metadata,upload-expires,streamgate-max-chunk-size,content-range,\
     accept-ranges",
);
/// How long browsers may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: HeaderValue = HeaderValue::from_static("3600");

/// A CORS preflight (an `OPTIONS` with `Access-Control-Request-Method`) is answered here, before any
/// route; a plain `OPTIONS` reaches the routes, as tus clients discover a server's capabilities with it.
fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn preflight_answer() -> Response {
    let mut response = Response::default();
    let headers = response.headers_mut();
    headers.reserve(10);
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW_ORIGIN);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE);
    response
}

/// The CORS headers of every other answer.
fn add_cors_headers(headers: &mut http::HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW_ORIGIN);
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
}

async fn render_metrics(
    State((handle, requests)): State<(&'static PrometheusHandle, Arc<RequestMetrics>)>,
) -> impl IntoResponse {
    requests.hand_over_all();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::StatusCode;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    fn app() -> HttpApp {
        let info = FunctionInfo {
            name: "api-test",
            version: "1.2.3",
        };
        let router = Router::new().route("/boom", get(boom));
        http_app(info, router, MetricsRoute::Off)
    }

    async fn call(path: &str) -> (Response, serde_json::Value) {
        let response = app()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, 1 << 16).await.expect("body");
        (
            Response::from_parts(parts, Body::empty()),
            serde_json::from_slice(&bytes).unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn preflights_get_cors_and_plain_options_reach_the_routes() {
        let info = FunctionInfo {
            name: "api-test",
            version: "1.2.3",
        };
        let router = Router::new().route(
            "/things",
            get(|| async { "list" }).options(|| async { (StatusCode::NO_CONTENT, [("x-capabilities", "all")]) }),
        );
        let app = http_app(info, router, MetricsRoute::Off);
        let preflight = Request::options("/things")
            .header("origin", "https://player.example")
            .header("access-control-request-method", "PATCH")
            .header("access-control-request-headers", "upload-offset")
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(preflight).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert!(!response.headers().contains_key("x-capabilities"));

        let plain = Request::options("/things").body(Body::empty()).expect("request");
        let response = app.clone().oneshot(plain).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(response.headers()["x-capabilities"], "all");

        let cross_origin = Request::get("/things")
            .header("origin", "https://player.example")
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(cross_origin).await.expect("infallible");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        assert!(
            response.headers()["access-control-expose-headers"]
                .to_str()
                .expect("ascii")
                .contains("upload-offset")
        );
    }

    #[test]
    fn requests_are_counted_by_matched_route_method_and_status() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let info = FunctionInfo {
                    name: "api-test",
                    version: "1.2.3",
                };
                let router = Router::new().route("/things/{id}", get(|| async { "thing" }));
                let app = http_app(info, router, MetricsRoute::Off);
                for path in ["/things/1", "/things/2", "/nope"] {
                    let request = Request::get(path).body(Body::empty()).expect("request");
                    app.clone().oneshot(request).await.expect("infallible");
                }
                let preflight = Request::options("/things/1")
                    .header("origin", "https://player.example")
                    .header("access-control-request-method", "GET")
                    .body(Body::empty())
                    .expect("request");
                app.clone().oneshot(preflight).await.expect("infallible");
                let request = Request::post("/things/3").body(Body::empty()).expect("request");
                app.clone().oneshot(request).await.expect("infallible");
            });
        });
        let text = handle.render();
        let count = |labels: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("streamgate_http_requests_total{{{labels}}} ")))
                .map(str::to_owned)
        };
        let labels = |route: &str, method: &str, status: u16| {
            format!(r#"function="api-test",route="{route}",method="{method}",status="{status}""#)
        };
        assert_eq!(
            count(&labels("/things/{id}", "GET", 200)).as_deref(),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            count(&labels("/things/{id}", "POST", 405)).as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(count(&labels("unmatched", "GET", 404)).as_deref(), Some("1"), "{text}");
        assert_eq!(
            count(&labels("preflight", "OPTIONS", 200)).as_deref(),
            Some("1"),
            "{text}"
        );
        assert!(
            text.contains(r#"streamgate_http_request_duration_seconds_count{function="api-test",route="/things/{id}",method="GET"} 2"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn healthz_names_the_function() {
        let (response, body) = call("/healthz").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            body,
            serde_json::json!({"status": "ok", "function": "api-test", "version": "1.2.3"})
        );
        let id = response.headers()["x-request-id"].to_str().expect("text");
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{id}"
        );
        let (again, _) = call("/healthz").await;
        assert_ne!(
            again.headers()["x-request-id"],
            id,
            "ids differ from request to request"
        );
        for (name, value) in [
            ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
            ("strict-transport-security", "max-age=63072000; includeSubDomains"),
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
        ] {
            assert_eq!(response.headers()[name], value, "{name}");
        }
    }

    #[test]
    fn headers_a_handler_set_are_kept_and_the_others_added() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        add_own_headers(&mut headers, &HeaderValue::from_static("id-1"));
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], "sandbox");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "SAMEORIGIN");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[&REQUEST_ID], "id-1");
        assert_eq!(headers.len(), 7, "one of each: {headers:?}");

        let mut own_id = http::HeaderMap::new();
        own_id.insert(REQUEST_ID, HeaderValue::from_static("handler-id"));
        add_own_headers(&mut own_id, &HeaderValue::from_static("id-2"));
        assert_eq!(own_id.get_all(&REQUEST_ID).iter().collect::<Vec<_>>(), ["handler-id"]);
        assert_eq!(own_id.len(), 1 + SECURITY_HEADER_COUNT);
    }

    #[tokio::test]
    async fn a_callers_request_id_is_kept() {
        let request = Request::get("/healthz")
            .header("x-request-id", "trace-me-42")
            .body(Body::empty())
            .expect("request");
        let response = app().oneshot(request).await.expect("infallible");
        assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    }

    #[tokio::test]
    async fn unknown_paths_and_panics_are_problems() {
        let (response, body) = call("/nope").await;
        assert_eq!(response.status(), 404);
        assert_eq!(body["code"], "not_found");
        let (response, body) = call("/boom").await;
        assert_eq!(response.status(), 500);
        assert_eq!(body["code"], "internal");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }

    #[tokio::test]
    async fn addresses_past_the_limit_get_problems_with_the_common_headers() {
        use crate::limits::{AddressLimit, ClientAddress, ClientAddresses, PeerAddress};

        let app = app().limited(AddressLimit::new(ClientAddresses::default(), 4));
        let status = |request: Request| {
            let app = app.clone();
            async move { app.oneshot(request).await.expect("answer").status() }
        };
        let from = |path: &str, peer: [u8; 4]| {
            let mut request = Request::get(path).body(Body::empty()).expect("request");
            request.extensions_mut().insert(PeerAddress((peer, 40000).into()));
            request
        };
        assert_eq!(status(from("/nope", [192, 0, 2, 1])).await, 404);
        let refused = app
            .clone()
            .oneshot(from("/nope", [192, 0, 2, 1]))
            .await
            .expect("answer");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((14..=15).contains(&retry), "{retry}");
        assert!(refused.headers().contains_key("x-request-id"));
        assert_eq!(refused.headers()["access-control-allow-origin"], "*");
        assert_eq!(status(from("/nope", [192, 0, 2, 2])).await, 404);
        // Health checks and preflights are not counted, and not refused.
        assert_eq!(status(from("/healthz", [192, 0, 2, 1])).await, 200);
        let mut preflight = from("/nope", [192, 0, 2, 1]);
        *preflight.method_mut() = Method::OPTIONS;
        preflight
            .headers_mut()
            .insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("GET"));
        assert_eq!(status(preflight).await, 200);
        // A client address the platform named (a function URL's) is taken as it is.
        let mut named = from("/nope", [192, 0, 2, 2]);
        named.extensions_mut().insert(ClientAddress([192, 0, 2, 1].into()));
        assert_eq!(status(named).await, 429);
        // Neither: an app called in process, not counted.
        for _ in 0..3 {
            assert_eq!(
                status(Request::get("/nope").body(Body::empty()).expect("request")).await,
                404
            );
        }
    }
}
