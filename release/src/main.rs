//! `streamgate-release`: see the library's documentation and `streamgate-release --help`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use streamgate_release::knative::KnativeService;
use streamgate_release::lambda::LambdaAlias;
use streamgate_release::plan::Policy;
use streamgate_release::{Outcome, ReleaseError, Target, release, roll_back};

/// Canary releases, blue-green switches and rollbacks of StreamGate functions, on Lambda aliases or
/// Knative Services.
#[derive(Parser)]
#[command(name = "streamgate-release", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Moves traffic to a candidate step by step (default 10 %, 50 %, 100 %), watching its error rate
    /// between steps and rolling back on its own when the rate passes the limit.
    Canary {
        #[command(flatten)]
        target: TargetArgs,
        /// The candidate: a published Lambda version, or a Knative revision name.
        #[arg(long)]
        to: String,
        /// Percentages of traffic, rising, ending at 100.
        #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
        steps: Vec<u8>,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Blue-green: sends all traffic to the candidate at once, keeps the release before as `previous`,
    /// watches for one bake time and switches back on its own if the candidate fails.
    Switch {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Gives all traffic back: to the stable release while a canary runs, else to the previous release.
    Rollback {
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false, id = "what")]
struct TargetArgs {
    /// A Lambda function (name or ARN) released through its alias.
    #[arg(long, group = "what")]
    lambda: Option<String>,
    /// The Lambda alias that carries the traffic.
    #[arg(long, default_value = "live")]
    alias: String,
    /// A Knative Service released through its revision traffic (with kubectl).
    #[arg(long, group = "what")]
    knative: Option<String>,
    #[arg(long, default_value = "streamgate")]
    namespace: String,
    /// Prometheus that scrapes Knative's queue-proxy metrics.
    #[arg(long, default_value = "http://prometheus.monitoring.svc:9090")]
    prometheus: String,
    #[arg(long, default_value = "kubectl")]
    kubectl: String,
}

#[derive(Args)]
struct WatchArgs {
    /// How long each step is watched (e.g. 300s, 5m).
    #[arg(long, default_value = "5m", value_parser = duration)]
    bake: Duration,
    /// How often health is read.
    #[arg(long, default_value = "30s", value_parser = duration)]
    interval: Duration,
    /// The largest share of failed requests the candidate may have.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
    /// Requests below which a step's error rate is not trusted.
    #[arg(long, default_value_t = 100)]
    min_requests: u64,
}

/// `90`, `90s`, `5m` or `1h`.
fn duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s or 5m"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

impl WatchArgs {
    fn policy(&self, steps: Vec<u8>) -> Policy {
        Policy {
            steps,
            bake: self.bake,
            interval: self.interval,
            max_error_rate: self.max_error_rate,
            min_requests: self.min_requests,
        }
    }
}

async fn target(args: &TargetArgs) -> Box<dyn Target> {
    match (&args.lambda, &args.knative) {
        (Some(function), _) => {
            let sdk = common::adapters::aws::load_sdk_config().await;
            Box::new(LambdaAlias::new(&sdk, function, &args.alias))
        }
        (None, Some(service)) => Box::new(KnativeService::new(
            &args.namespace,
            service,
            &args.prometheus,
            &args.kubectl,
        )),
        (None, None) => unreachable!("clap requires one of --lambda and --knative"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Canary {
            target: args,
            to,
            steps,
            watch,
        } => release(target(args).await.as_ref(), to, &watch.policy(steps.clone())).await,
        Command::Switch {
            target: args,
            to,
            watch,
        } => release(target(args).await.as_ref(), to, &watch.policy(vec![100])).await,
        Command::Rollback { target: args } => roll_back(target(args).await.as_ref()).await,
    };
    match outcome {
        Ok(Outcome::Released { release }) => {
            println!("released {release}");
            ExitCode::SUCCESS
        }
        Ok(Outcome::RolledBack { to, reason }) => {
            println!("rolled back to {to}: {reason}");
            // A rollback the operator asked for succeeded; one the candidate caused fails the pipeline.
            if matches!(cli.command, Command::Rollback { .. }) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(ReleaseError::Usage(message)) => {
            eprintln!("streamgate-release: {message}");
            ExitCode::from(64)
        }
        Err(ReleaseError::Target(message)) => {
            eprintln!("streamgate-release: {message}");
            ExitCode::FAILURE
        }
    }
}
