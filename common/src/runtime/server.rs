//! The HTTP/1.1 server of every StreamGate HTTP surface off Lambda (Knative, the local server).
//!
//! hyper's connection settings are chosen here rather than left to defaults: a connection with no
//! request under way for [`IDLE_TIMEOUT`] is closed (so idle keep-alive and slow-loris connections, which
//! dawdle over a request head, cannot pile up), `TCP_NODELAY` is set (streamed answers are not held back
//! by Nagle's algorithm), and the read buffer stays below [`READ_BUFFER`], which bounds what one
//! connection streaming an upload holds at once. On shutdown the listener closes, connections finish
//! the request they are on, and after [`DRAIN_LIMIT`] the rest are dropped.
//!
//! The idle limit is kept by one watchdog per connection, which looks every third of the limit whether a
//! request arrived or is being answered. hyper's own `header_read_timeout` would do it with a timer set
//! and cancelled for every request, about 2 % of a warm playback request's instructions.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower::util::Oneshot;

use super::http::HttpApp;
use crate::limits::PeerAddress;

/// How long a connection may go without a request under way (received and not yet answered in full)
/// before it is closed; it is closed within a third more.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most one connection buffers from its socket before the body's reader takes it.
pub const READ_BUFFER: usize = 256 * 1024;

/// How long a stopping server waits for requests under way.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// Serves `app` on `listener` until `shutdown` completes, then drains. Failing connections and accepts
/// are logged and outlived, so nothing but `shutdown` ends it.
pub async fn serve(listener: TcpListener, app: HttpApp, shutdown: impl Future<Output = ()>) {
    serve_within(listener, app, shutdown, IDLE_TIMEOUT, DRAIN_LIMIT).await
}

async fn serve_within(
    listener: TcpListener,
    app: HttpApp,
    shutdown: impl Future<Output = ()>,
    idle_timeout: Duration,
    drain_limit: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut settings = http1::Builder::new();
    // No timer: the watchdog keeps the idle limit.
    settings.header_read_timeout(None).max_buf_size(READ_BUFFER);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
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
        let activity = Arc::new(Activity::default());
        let service = Hyper {
            app: app.clone(),
            activity: activity.clone(),
            peer: PeerAddress(peer),
        };
        let connection = graceful.watch(settings.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            tokio::select! {
                biased;
                ended = connection => if let Err(err) = ended {
                    // Clients going away, malformed requests: routine for a server.
                    tracing::debug!(error = %err, "connection ended with an error");
                },
                () = idle(&activity, idle_timeout) => {
                    tracing::debug!(limit = ?idle_timeout, "closed a connection with no request under way");
                }
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

/// What a connection's requests tell its watchdog.
#[derive(Default)]
struct Activity {
    /// Requests received plus answers finished: a change between two looks means one of them happened.
    events: AtomicU64,
    /// Requests received whose answer has not been sent in full.
    open: AtomicUsize,
}

/// Completes once the connection has had no request under way for `limit` to `limit` and a third: each
/// look, a third of the limit apart, that saw nothing happen and nothing under way counts.
async fn idle(activity: &Activity, limit: Duration) {
    const LOOKS: u32 = 3;
    let mut seen = activity.events.load(Ordering::Relaxed);
    let mut quiet = 0;
    while quiet < LOOKS {
        tokio::time::sleep(limit / LOOKS).await;
        let events = activity.events.load(Ordering::Relaxed);
        if events != seen || activity.open.load(Ordering::Relaxed) > 0 {
            seen = events;
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
}

/// One request under way on a connection, from its head's arrival until its answer's body is dropped
/// (hyper drops it once sent, or when the connection fails).
struct Open(Arc<Activity>);

impl Open {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.events.fetch_add(1, Ordering::Relaxed);
        activity.open.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// The app as hyper calls it on one connection: a request with hyper's body in, one with axum's out.
struct Hyper {
    app: HttpApp,
    activity: Arc<Activity>,
    peer: PeerAddress,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Hyper {
    type Response = hyper::Response<Answer>;
    type Error = Infallible;
    type Future = Answering;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        Answering {
            answer: self.app.clone().oneshot(request.map(Body::new)),
            open: Some(Open::new(&self.activity)),
        }
    }
}

/// The app's answer on its way, the request open meanwhile.
struct Answering {
    answer: Oneshot<HttpApp, Request>,
    open: Option<Open>,
}

impl Future for Answering {
    type Output = Result<hyper::Response<Answer>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = ready!(Pin::new(&mut this.answer).poll(cx))?;
        let open = this.open.take();
        Poll::Ready(Ok(response.map(|body| Answer { body, _open: open })))
    }
}

/// An answer's body, which keeps its request open until it is dropped.
struct Answer {
    body: Body,
    _open: Option<Open>,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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

    async fn start(idle_timeout: Duration, drain_limit: Duration) -> Running {
        let info = FunctionInfo {
            name: "api-test",
            version: "1.2.3",
        };
        let router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            )
            .route("/trickle", get(|| async { Body::from_stream(trickle()) }));
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
            idle_timeout,
            drain_limit,
        ));
        Running { addr, stop, served }
    }

    /// A body of three pieces, 100 ms apart.
    fn trickle() -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
        futures::stream::unfold(0, |sent| async move {
            if sent == 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok(Bytes::from_static(b"piece;")), sent + 1))
        })
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

    /// Reads from `stream` until the server closes it; returns what came and when it closed.
    async fn until_closed(stream: &mut TcpStream) -> (String, Instant) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the connection was still open after 5 s");
        (String::from_utf8_lossy(&rest).into_owned(), Instant::now())
    }

    #[tokio::test]
    async fn a_request_head_that_dawdles_is_cut_off() {
        let server = start(Duration::from_millis(300), Duration::from_secs(5)).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let started = Instant::now();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: te")
            .await
            .expect("write");
        let (text, closed) = until_closed(&mut stream).await;
        assert!(text.is_empty(), "{text}");
        assert!(closed - started >= Duration::from_millis(300), "{:?}", closed - started);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_limit() {
        let server = start(Duration::from_millis(300), Duration::from_secs(5)).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("write");
        assert!(answer(&mut stream).await.starts_with("HTTP/1.1 200 OK"));
        let answered = Instant::now();
        let (text, closed) = until_closed(&mut stream).await;
        assert!(text.is_empty(), "{text}");
        assert!(
            closed - answered >= Duration::from_millis(300),
            "{:?}",
            closed - answered
        );
    }

    #[tokio::test]
    async fn answers_that_outlast_the_idle_limit_are_not_cut_off() {
        let server = start(Duration::from_millis(90), Duration::from_secs(5)).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        // A handler slower than the limit, then a body streamed for longer than it.
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("write");
        let text = answer(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 200 OK") && text.ends_with("done"), "{text}");
        stream
            .write_all(b"GET /trickle HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let (text, _) = until_closed(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        // Chunked: three pieces, then the last chunk.
        assert_eq!(text.matches("piece;").count(), 3, "{text}");
        assert!(text.ends_with("piece;\r\n0\r\n\r\n"), "{text}");
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
