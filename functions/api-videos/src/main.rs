#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main_http(common::function_info!(), |_, ports| {
        Ok(api_videos::router(api_videos::AppState::new(ports)))
    })
    .await
}
