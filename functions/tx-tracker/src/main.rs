#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main_events(common::function_info!(), |config, ports| {
        std::sync::Arc::new(tx_tracker::Handler::new(config, ports))
    })
    .await
}
