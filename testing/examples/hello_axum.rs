//! The baseline of the playback benchmark (`tests/bench/playback_auth.py`): the least an axum server
//! can do per request, on the same runtime and machine as StreamGate.
//!
//!   cargo run --release -p streamgate-testing --example hello_axum -- 127.0.0.1:0
//!
//! Prints `listening on http://ADDR` once it accepts connections.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new().route("/", get(|| async { "Hello, World!" }));
    axum::serve(listener, app).await
}
