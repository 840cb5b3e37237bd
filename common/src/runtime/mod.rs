//! One binary, three ways to run. With `AWS_LAMBDA_RUNTIME_API` set, HTTP functions run under
//! `lambda_http` (function URL events) and event functions under `lambda_runtime`; otherwise the same
//! router or handler is served over HTTP on `0.0.0.0:$PORT`, taking CloudEvents for events as Knative
//! delivers them, and drains on SIGTERM. The local server mounts the same routers and handlers in one
//! process. A handler never knows which of the three it runs under.

mod cloudevents;
mod http;
mod lambda;
mod request_metrics;
mod server;
mod worker;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

pub use self::cloudevents::{Deliveries, event_router};
pub use self::http::{Health, HttpApp, MetricsRoute, http_app};
pub use self::lambda::handle_lambda_event;
pub use self::server::{DRAIN_LIMIT, IDLE_TIMEOUT, READ_BUFFER, serve};
pub use self::worker::{QueueWorker, Retry};

use crate::config::{Config, EXIT_CONFIG};
use crate::events::EventHandler;
use crate::limits::{AddressLimit, ClientAddress, ClientAddresses};

/// A function's name (kebab-case, as everywhere) and version, for `/healthz`, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionInfo {
    pub name: &'static str,
    pub version: &'static str,
}

/// `FunctionInfo` of the calling crate.
#[macro_export]
macro_rules! function_info {
    () => {
        $crate::runtime::FunctionInfo {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
        }
    };
}

/// Whether this process runs inside AWS Lambda.
pub fn on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Reads the configuration and starts logging; a bad configuration ends the process with a message
/// naming the variable and exit status 78.
pub fn start(info: FunctionInfo) -> Config {
    match Config::from_env() {
        Ok(config) => {
            crate::telemetry::init_tracing(config.log_format);
            tracing::info!(function = info.name, version = info.version, backend = ?config.backend, "starting");
            config
        }
        Err(err) => {
            eprintln!("{}: configuration error: {err}", info.name);
            std::process::exit(EXIT_CONFIG);
        }
    }
}

/// Ends the process for a dependency that could not be set up at start.
pub fn fail_start(info: FunctionInfo, what: &str, err: &dyn std::fmt::Display) -> ! {
    tracing::error!(function = info.name, error = %err, "{what}");
    eprintln!("{}: {what}: {err}", info.name);
    std::process::exit(1);
}

/// Serves an HTTP function: on Lambda as a function URL handler, elsewhere on `0.0.0.0:$PORT`.
pub async fn serve_http(info: FunctionInfo, config: &Config, router: axum::Router) -> ExitCode {
    if on_lambda() {
        let collector = match crate::telemetry::cloudwatch_emf(info.name) {
            Ok(collector) => collector,
            Err(err) => fail_start(info, "metrics could not start", &err),
        };
        // Function URL requests carry Lambda's body type; the app takes axum's.
        // The function URL names the client's address itself.
        let app = tower::ServiceBuilder::new()
            .map_request(|request: lambda_http::Request| {
                let client = source_ip(&request);
                let mut request = request.map(axum::body::Body::new);
                if let Some(client) = client {
                    request.extensions_mut().insert(client);
                }
                request
            })
            .service(http_app(info, router, MetricsRoute::Off).limited(address_limit(config)));
        return match metrics_cloudwatch_embedded::lambda::service::run_http(collector, app).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail_start(info, "the Lambda runtime stopped", &err),
        };
    }
    let app =
        http_app(info, router, MetricsRoute::Prometheus(crate::telemetry::prometheus())).limited(address_limit(config));
    serve_on_port(info, config.port, app).await
}

/// The per-address limit of an HTTP function, as configured.
pub fn address_limit(config: &Config) -> AddressLimit {
    AddressLimit::new(
        ClientAddresses::new(config.limits.trusted_proxies.clone()),
        config.limits.per_address,
    )
}

/// The client address of a function URL request.
fn source_ip(request: &lambda_http::Request) -> Option<ClientAddress> {
    use lambda_http::request::RequestContext;
    let source = match request.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref()?,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let address = source.parse::<std::net::IpAddr>().ok()?;
    Some(ClientAddress(address.to_canonical()))
}

/// Serves an event function: on Lambda for S3, SQS (with partial batch failures) and EventBridge
/// payloads, elsewhere as a CloudEvents sink on `POST /` of `0.0.0.0:$PORT`, counting each message's
/// deliveries in `ports.store` (see [`Deliveries`]).
pub async fn serve_events(
    info: FunctionInfo,
    config: &Config,
    ports: &crate::platform::Ports,
    handler: Arc<dyn EventHandler>,
) -> ExitCode {
    if on_lambda() {
        let collector = match crate::telemetry::cloudwatch_emf(info.name) {
            Ok(collector) => collector,
            Err(err) => fail_start(info, "metrics could not start", &err),
        };
        let service = lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let handler = handler.clone();
            async move {
                handle_lambda_event(handler.as_ref(), event.payload)
                    .await
                    .map_err(lambda_runtime::Error::from)
            }
        });
        return match metrics_cloudwatch_embedded::lambda::service::run(collector, service).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail_start(info, "the Lambda runtime stopped", &err),
        };
    }
    let app = http_app(
        info,
        event_router(info, handler, Deliveries::new(ports.store.clone())),
        MetricsRoute::Prometheus(crate::telemetry::prometheus()),
    );
    serve_on_port(info, config.port, app).await
}

async fn serve_on_port(info: FunctionInfo, port: u16, app: HttpApp) -> ExitCode {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => fail_start(info, &format!("cannot listen on {addr}"), &err),
    };
    tracing::info!(function = info.name, %addr, "serving");
    serve(listener, app, shutdown_signal()).await;
    tracing::info!(function = info.name, "drained; stopping");
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM (Knative, Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let interrupt = async {
        drop(tokio::signal::ctrl_c().await);
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received; draining");
}

/// The whole `main` of an HTTP function: configuration, adapters, then [`serve_http`].
pub async fn main_http(
    info: FunctionInfo,
    build: impl FnOnce(&Config, &crate::platform::Ports) -> Result<axum::Router, String>,
) -> ExitCode {
    let config = start(info);
    let ports = match crate::platform::Ports::from_config(&config).await {
        Ok(ports) => ports,
        Err(err) => fail_start(info, "storage could not be set up", &err),
    };
    let router = match build(&config, &ports) {
        Ok(router) => router,
        Err(err) => fail_start(info, "the function could not be set up", &err),
    };
    serve_http(info, &config, router).await
}

/// The whole `main` of an event function: configuration, adapters, then [`serve_events`].
pub async fn main_events(
    info: FunctionInfo,
    build: impl FnOnce(&Config, &crate::platform::Ports) -> Arc<dyn EventHandler>,
) -> ExitCode {
    let config = start(info);
    let ports = match crate::platform::Ports::from_config(&config).await {
        Ok(ports) => ports,
        Err(err) => fail_start(info, "storage could not be set up", &err),
    };
    let handler = build(&config, &ports);
    serve_events(info, &config, &ports, handler).await
}
