use std::process::ExitCode;

use common::runtime::{fail_start, shutdown_signal, start};
use streamgate_local::LocalServer;

#[tokio::main]
async fn main() -> ExitCode {
    let info = common::function_info!();
    if let Err(why) = common::media::check_tools() {
        fail_start(info, "streamgate-local needs ffmpeg", &why);
    }
    let config = start(info);
    let server = match LocalServer::start(info, config).await {
        Ok(server) => server,
        Err(err) => fail_start(info, "streamgate-local could not start", &err),
    };
    println!("StreamGate is serving on http://{}", server.addr);
    shutdown_signal().await;
    server.stop().await;
    ExitCode::SUCCESS
}
