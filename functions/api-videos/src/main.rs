#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main_http(common::function_info!(), |config, ports| {
        Ok(api_videos::router(api_videos::AppState::new(config, ports)?))
    })
    .await
}
