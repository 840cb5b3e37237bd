//! The HTTP/1.1 server of every StreamGate HTTP surface off Lambda (Knative, the local server).
//!
//! hyper's connection settings are chosen here rather than left to defaults: a client that opens a
//! connection and dawdles over its request head is cut off after [`HEADER_READ_TIMEOUT`] (so idle or
//! slow-loris connections cannot pile up), `TCP_NODELAY` is set (streamed answers are not held back by
//! Nagle's algorithm), and the read buffer stays below [`READ_BUFFER`], which bounds what one
//! connection streaming an upload holds at once. On shutdown the listener closes, connections finish
//! the request they are on, and after [`DRAIN_LIMIT`] the rest are dropped.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower::util::Oneshot;

use super::http::HttpApp;

/// How long a connection may take to send a request's head (line and headers), from its first byte or,
/// between requests, from the end of the previous answer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The most one connection buffers from its socket before the body's reader takes it.
pub const READ_BUFFER: usize = 256 * 1024;

/// How long a stopping server waits for requests under way.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// Serves `app` on `listener` until `shutdown` completes, then drains. Failing connections and accepts
/// are logged and outlived, so nothing but `shutdown` ends it.
pub async fn serve(listener: TcpListener, app: HttpApp, shutdown: impl Future<Output = ()>) {
    serve_within(listener, app, shutdown, HEADER_READ_TIMEOUT, DRAIN_LIMIT).await
}

async fn serve_within(
    listener: TcpListener,
    app: HttpApp,
    shutdown: impl Future<Output = ()>,
    header_read_timeout: Duration,
    drain_limit: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut settings = http1::Builder::new();
    settings
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(READ_BUFFER);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    // Out of file descriptors or memory: wait for connections to close rather than spin.
                    tracing::error!(error = %err, "cannot accept connections; retrying in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "TCP_NODELAY not set");
        }
        let connection = settings.serve_connection(TokioIo::new(stream), Hyper(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // Clients going away, malformed requests, header timeouts: routine for a server.
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain_limit, graceful.shutdown()).await.is_err() {
        tracing::warn!(limit = ?drain_limit, "requests still under way at the drain limit were dropped");
    }
}

/// Errors of one incoming connection, not of the listener: the next accept may succeed at once.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// The app as hyper calls it: a request with hyper's body in, one with axum's out.
#[derive(Clone)]
struct Hyper(HttpApp);

impl hyper::service::Service<hyper::Request<Incoming>> for Hyper {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Oneshot<HttpApp, Request>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.0.clone().oneshot(request.map(Body::new))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;
    use crate::runtime::{FunctionInfo, MetricsRoute, http_app};

    struct Running {
        addr: std::net::SocketAddr,
        stop: oneshot::Sender<()>,
        served: tokio::task::JoinHandle<()>,
    }

    async fn start(header_read_timeout: Duration, drain_limit: Duration) -> Running {
        let info = FunctionInfo {
            name: "api-test",
            version: "1.2.3",
        };
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let app = http_app(info, router, MetricsRoute::Off);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve_within(
            listener,
            app,
            async move {
                let _ = stopped.await;
            },
            header_read_timeout,
            drain_limit,
        ));
        Running { addr, stop, served }
    }

    /// Reads one answer's head and `Content-Length` body from `stream`.
    async fn answer(stream: &mut TcpStream) -> String {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if bytes.len() >= end + 4 + length {
                    return text;
                }
            }
            let read = stream.read(&mut chunk).await.expect("read");
            assert!(read > 0, "the connection closed before a whole answer: {text:?}");
            bytes.extend_from_slice(&chunk[..read]);
        }
    }

    /// A connection whose `GET /slow` the server is answering.
    async fn slow_request_under_way(server: &Running) -> TcpStream {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream
    }

    #[tokio::test]
    async fn one_connection_carries_several_requests() {
        let server = start(Duration::from_secs(5), Duration::from_secs(5)).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        for _ in 0..3 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
                .await
                .expect("write");
            let text = answer(&mut stream).await;
            assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
            assert!(text.contains("\"function\":\"api-test\""), "{text}");
        }
        drop(server.stop);
        server.served.await.expect("join");
    }

    #[tokio::test]
    async fn a_request_head_that_dawdles_is_cut_off() {
        let server = start(Duration::from_millis(200), Duration::from_secs(5)).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: te")
            .await
            .expect("write");
        let started = Instant::now();
        let mut rest = Vec::new();
        // The server closes the connection (with or without a 408 first) instead of waiting on.
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the connection was still open after 5 s");
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
        let text = String::from_utf8_lossy(&rest);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }

    #[tokio::test]
    async fn stopping_finishes_requests_under_way_and_closes_the_listener() {
        let server = start(Duration::from_secs(5), Duration::from_secs(5)).await;
        let mut stream = slow_request_under_way(&server).await;
        server.stop.send(()).expect("stop");
        let text = answer(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 200 OK") && text.ends_with("done"), "{text}");
        server.served.await.expect("join");
        assert!(TcpStream::connect(server.addr).await.is_err(), "the listener is closed");
    }

    #[tokio::test]
    async fn the_drain_has_a_limit() {
        let server = start(Duration::from_secs(5), Duration::from_millis(100)).await;
        let _stream = slow_request_under_way(&server).await;
        let started = Instant::now();
        server.stop.send(()).expect("stop");
        server.served.await.expect("join");
        assert!(
            started.elapsed() < Duration::from_millis(280),
            "{:?}",
            started.elapsed()
        );
    }
}
