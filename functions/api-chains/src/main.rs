#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main_http(common::function_info!(), |config, ports| {
        Ok(api_chains::router(api_chains::AppState::new(config, ports)?))
    })
    .await
}
