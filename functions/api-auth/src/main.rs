#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main_http(common::function_info!(), |_, ports| {
        api_auth::router(api_auth::AppState::new(ports))
    })
    .await
}
