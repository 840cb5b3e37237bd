#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main_events(common::function_info!(), |_, ports| {
        std::sync::Arc::new(dead_letters::Handler::new(ports))
    })
    .await
}
