#[tokio::main]
async fn main() -> std::process::ExitCode {
    let info = common::function_info!();
    if let Err(why) = common::media::check_tools() {
        common::runtime::fail_start(info, "finalize needs ffmpeg", &why);
    }
    common::runtime::main_events(info, |config, ports| {
        std::sync::Arc::new(finalize::Handler::new(config, ports))
    })
    .await
}
