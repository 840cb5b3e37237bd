#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main_http(common::function_info!(), |config, ports| {
        let domain = config.domain_for(std::net::SocketAddr::from(([127, 0, 0, 1], config.port)));
        Ok(api_auth::router(api_auth::AppState::new(config, ports, domain)?))
    })
    .await
}
