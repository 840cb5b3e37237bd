use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use super::FunctionInfo;
use crate::problem::{ApiError, method_not_allowed, not_found_fallback};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
pub fn http_app(info: FunctionInfo, router: Router, metrics: MetricsRoute) -> Router {
    let health = Health {
        status: "ok",
        function: info.name,
        version: info.version,
    };
    let mut app = router.route("/healthz", get(move || async move { axum::Json(health) }));
    if let MetricsRoute::Prometheus(handle) = metrics {
        app = app.route("/metrics", get(render_metrics).with_state(handle));
    }
    app.method_not_allowed_fallback(|| async { method_not_allowed() })
        .fallback(not_found_fallback)
        .layer(middleware::from_fn_with_state(info.name, record_request))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal(&"a request handler panicked").into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PreflightCors(cors()))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
}

/// CORS for every request but an `OPTIONS` that is not a preflight (it has no
/// `Access-Control-Request-Method`): that one reaches the routes, as tus clients discover a server's
/// capabilities with it. (`tower_http`'s layer answers every `OPTIONS` itself.)
#[derive(Clone)]
struct PreflightCors(CorsLayer);

impl<S: Clone> tower::Layer<S> for PreflightCors {
    type Service = PreflightCorsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PreflightCorsService {
            cors: self.0.layer(inner.clone()),
            plain: inner,
        }
    }
}

#[derive(Clone)]
struct PreflightCorsService<S> {
    cors: tower_http::cors::Cors<S>,
    plain: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for PreflightCorsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::Either<
        tower::util::Oneshot<S, http::Request<B>>,
        tower::util::Oneshot<tower_http::cors::Cors<S>, http::Request<B>>,
    >;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        // Each call readies its own clone.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tower::ServiceExt;
        let plain_options = request.method() == Method::OPTIONS
            && !request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if plain_options {
            futures::future::Either::Left(self.plain.clone().oneshot(request))
        } else {
            futures::future::Either::Right(self.cors.clone().oneshot(request))
        }
    }
}

/// Players and upload clients run on other origins and send bearer tokens, never cookies, so any origin
/// may call; the tus and playback headers are allowed and exposed.
fn cors() -> CorsLayer {
    let allow = [
        "authorization",
        "content-type",
        "x-request-id",
        "tus-resumable",
        "upload-length",
        "upload-offset",
        "upload-metadata",
        "upload-checksum",
        "upload-defer-length",
        "upload-concat",
        "x-http-method-override",
        "range",
    ];
    let expose = [
        "location",
        "etag",
        "x-request-id",
        "tus-resumable",
        "tus-version",
        "tus-extension",
        "tus-max-size",
        "tus-checksum-algorithm",
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "upload-expires",
        "streamgate-max-chunk-size",
        "content-range",
        "accept-ranges",
    ];
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(allow.map(HeaderName::from_static))
        .expose_headers(expose.map(HeaderName::from_static))
        .max_age(Duration::from_secs(3600))
}

async fn render_metrics(State(handle): State<&'static PrometheusHandle>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

async fn record_request(State(function): State<&'static str>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("function", function.to_owned()),
        ("route", route),
        ("method", method),
        ("status", status),
    ];
    metrics::counter!("streamgate_http_requests_total", &labels).increment(1);
    metrics::histogram!("streamgate_http_request_duration_seconds", &labels[..3])
        .record(started.elapsed().as_secs_f64());
    response
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

    fn app() -> Router {
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

    #[tokio::test]
    async fn healthz_names_the_function() {
        let (response, body) = call("/healthz").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            body,
            serde_json::json!({"status": "ok", "function": "api-test", "version": "1.2.3"})
        );
        assert!(response.headers().contains_key("x-request-id"));
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
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
}
