//! Configuration: one typed struct read from the environment once at start, validated, with defaults that
//! run locally. A bad value stops the process with a message naming the variable (see [`ConfigError`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::chains::Chains;

/// Exit status for a configuration error (`EX_CONFIG` from sysexits).
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required when {because}")]
    Missing { name: &'static str, because: &'static str },
    #[error("{name}={value:?} is not valid: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{0}")]
    Chain(String),
}

/// A secret from the environment; never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which adapters back the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Files and SQLite under the data dir.
    Local,
    /// S3, DynamoDB and SQS through the standard AWS SDK environment.
    Aws,
}

/// Where the cloud adapters find their resources (`STREAMGATE_BACKEND=aws`).
#[derive(Debug, Clone)]
pub struct AwsResources {
    pub table: String,
    pub sources_bucket: String,
    pub media_bucket: String,
    pub jobs_queue_url: String,
    pub finalize_queue_url: String,
    /// Path-style S3 addressing for S3-compatible stores and emulators.
    pub s3_path_style: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub backend: Backend,
    pub data_dir: PathBuf,
    /// Present when `backend` is [`Backend::Aws`].
    pub aws: Option<AwsResources>,
    /// Port a function binary serves on outside Lambda (`PORT`, default 8080).
    pub port: u16,
    /// Address the local server listens on (`STREAMGATE_ADDR`).
    pub addr: SocketAddr,
    /// Base URL under which this installation is reached, for links it signs (`STREAMGATE_PUBLIC_URL`);
    /// when unset, `http://` and the address actually served.
    pub public_url: Option<Url>,
    /// Deliveries of one queue message before it is dead-lettered (`STREAMGATE_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Queue and storage-event workers run at once in the local server (`STREAMGATE_WORKERS`, default the
    /// number of cores).
    pub workers: usize,
    /// How long a received queue message stays invisible to other workers (`STREAMGATE_VISIBILITY_TIMEOUT`,
    /// seconds, default 300). Long jobs extend it.
    pub visibility_timeout: Duration,
    pub log_format: LogFormat,
    /// How often the local server runs the scheduled functions (`STREAMGATE_SCHEDULE_INTERVAL`, seconds,
    /// default 60); in the cloud their schedules are deployment settings.
    pub schedule_interval: Duration,
    /// The domain Sign-In with Ethereum messages must name (`STREAMGATE_DOMAIN`); when unset, the
    /// `host:port` of the public URL.
    pub domain: Option<String>,
    /// Known chains and their RPC URLs (`STREAMGATE_RPC_<chainId>`).
    pub chains: Chains,
    /// Session signing key, a PASERK `k4.secret.…` (`STREAMGATE_SESSION_KEY`); functions that sign or
    /// check sessions require it with the aws backend, and keep one in the data dir otherwise.
    pub session_key: Option<Secret>,
    /// The key before the current one (`STREAMGATE_SESSION_PREVIOUS_KEY`): its tokens stay valid.
    pub session_previous_key: Option<Secret>,
    /// Session lifetime (`STREAMGATE_SESSION_TTL`, seconds, default 3600).
    pub session_ttl: Duration,
    /// Sign-in nonce lifetime (`STREAMGATE_NONCE_TTL`, seconds, default 600).
    pub nonce_ttl: Duration,
    pub uploads: UploadLimits,
    /// Whether the embedded blob store waits for the disk (fsync) before an object becomes visible
    /// (`STREAMGATE_SYNC_WRITES`, default true). Without it objects are still whole or absent after this
    /// process crashes, but the last ones written may be lost if the machine does.
    pub sync_writes: bool,
    pub media: crate::media::MediaLimits,
    pub transcoding: Transcoding,
    /// How long playback URLs live (`STREAMGATE_PLAYBACK_TTL`, seconds, default 300).
    pub playback_ttl: Duration,
    /// The oldest a token holding read from a chain may be when an access rule is decided on it
    /// (`STREAMGATE_OWNERSHIP_TTL`, seconds, default 30).
    pub ownership_ttl: Duration,
    /// How long one JSON-RPC attempt may take before the next URL is tried (`STREAMGATE_CHAIN_TIMEOUT_MS`,
    /// milliseconds, default 3000).
    pub rpc_timeout: Duration,
    /// The key that signs playback URLs, 64 hex digits (`STREAMGATE_URL_SIGNING_KEY`); required where
    /// they are signed with the aws backend, kept in the data dir otherwise.
    pub url_signing_key: Option<Secret>,
    pub limits: RateLimits,
}

/// Rate limits (see [`crate::limits`]); a limit of 0 is none.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// Requests a minute from one client address to one HTTP function, a quarter of them at once
    /// (`STREAMGATE_RATE_LIMIT_ADDRESS`, default 6000).
    pub per_address: u32,
    /// Authenticated calls a minute of one account to one function, uploads' chunks not counted
    /// (`STREAMGATE_RATE_LIMIT_ACCOUNT`, default 1200).
    pub per_account: u32,
    /// Sign-in calls a minute (nonces, signed messages, wallet links) from one client address, counted in
    /// the store (`STREAMGATE_RATE_LIMIT_SIGN_IN`, default 60).
    pub sign_in: u32,
    /// Proxies in front of the functions whose `X-Forwarded-For` names the client
    /// (`STREAMGATE_TRUSTED_PROXIES`, comma-separated networks such as `10.0.0.0/8,127.0.0.1/32`; default
    /// none). Lambda function URLs name the client themselves.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// How sources become streams.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcoding {
    /// The rungs (`STREAMGATE_LADDER`, e.g. `720p,360p`; default all five), largest first.
    pub ladder: Vec<crate::ladder::RungSpec>,
    /// The x264 preset (`STREAMGATE_X264_PRESET`, default `veryfast`).
    pub preset: String,
    /// Seconds of source per transcoding job (`STREAMGATE_CHUNK_SECONDS`, default 32), a multiple of the
    /// 4-second segment.
    pub chunk_seconds: u32,
}

/// Seconds per media segment.
pub const SEGMENT_SECONDS: u32 = 4;

/// What uploads may be, and how long they live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// The largest upload accepted, advertised as `Tus-Max-Size` (`STREAMGATE_MAX_UPLOAD_SIZE`, bytes,
    /// default 16 GiB).
    pub max_size: u64,
    /// The largest body one tus request may carry (`STREAMGATE_MAX_CHUNK_SIZE`, bytes). Lambda refuses
    /// requests over 6 MB and function URLs base64-encode binary bodies, so the default there is 4 MiB;
    /// elsewhere 64 MiB.
    pub max_chunk: u64,
    /// How long an unfinished upload lives after its last write (`STREAMGATE_UPLOAD_EXPIRY`, seconds,
    /// default 86400).
    pub expiry: Duration,
    /// How long an upload may take at most, from its creation, however often it is written to
    /// (`STREAMGATE_UPLOAD_MAX_AGE`, seconds, default 172800). In the cloud the sources bucket's
    /// lifecycle rule aborts multipart uploads this old, and Terraform sets it from the same number.
    pub max_age: Duration,
    /// How long the part URLs of a direct upload stay valid (`STREAMGATE_UPLOAD_URL_TTL`, seconds,
    /// default 3600).
    pub url_ttl: Duration,
}

/// Bytes in a mebibyte.
pub const MIB: u64 = 1024 * 1024;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads configuration from name-value pairs.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars: std::collections::HashMap<String, String> = vars.into_iter().collect();
        let mut config = Self::from_lookup(|name| vars.get(name).cloned())?;
        config.chains = Chains::from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| ConfigError::Chain(e.to_string()))?;
        Ok(config)
    }

    /// Reads configuration through `lookup`, which returns a variable's value if set. Chains are the
    /// built-in ones without RPC URLs (see [`Config::from_vars`]).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let backend = match get("STREAMGATE_BACKEND").as_deref() {
            None | Some("local") => Backend::Local,
            Some("aws") => Backend::Aws,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "STREAMGATE_BACKEND",
                    value: other.to_owned(),
                    expected: "`local` or `aws`",
                });
            }
        };
        let s3_path_style = parse_bool("STREAMGATE_S3_PATH_STYLE", get("STREAMGATE_S3_PATH_STYLE"))?;
        let aws = match backend {
            Backend::Local => None,
            Backend::Aws => {
                let required = |name: &'static str| {
                    get(name).ok_or(ConfigError::Missing {
                        name,
                        because: "STREAMGATE_BACKEND=aws",
                    })
                };
                Some(AwsResources {
                    table: required("STREAMGATE_TABLE")?,
                    sources_bucket: required("STREAMGATE_SOURCES_BUCKET")?,
                    media_bucket: required("STREAMGATE_MEDIA_BUCKET")?,
                    jobs_queue_url: required("STREAMGATE_JOBS_QUEUE_URL")?,
                    finalize_queue_url: required("STREAMGATE_FINALIZE_QUEUE_URL")?,
                    s3_path_style,
                })
            }
        };
        let port = parse_num("PORT", get("PORT"), 8080u16)?;
        let addr: SocketAddr = match get("STREAMGATE_ADDR") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                name: "STREAMGATE_ADDR",
                value,
                expected: "host:port, such as 127.0.0.1:8080",
            })?,
        };
        let public_url = match get("STREAMGATE_PUBLIC_URL") {
            Some(value) => Url::parse(&value)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
                .map(Some)
                .ok_or(ConfigError::Invalid {
                    name: "STREAMGATE_PUBLIC_URL",
                    value,
                    expected: "an http(s) URL such as https://media.example.com",
                })?,
            None => None,
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_attempts = parse_num("STREAMGATE_MAX_ATTEMPTS", get("STREAMGATE_MAX_ATTEMPTS"), 5u32)?;
        if max_attempts == 0 {
            return Err(ConfigError::Invalid {
                name: "STREAMGATE_MAX_ATTEMPTS",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        let workers = parse_num("STREAMGATE_WORKERS", get("STREAMGATE_WORKERS"), cores)?.max(1);
        let visibility_timeout = Duration::from_secs(parse_num(
            "STREAMGATE_VISIBILITY_TIMEOUT",
            get("STREAMGATE_VISIBILITY_TIMEOUT"),
            300u64,
        )?);
        let schedule_interval = Duration::from_secs(
            parse_num(
                "STREAMGATE_SCHEDULE_INTERVAL",
                get("STREAMGATE_SCHEDULE_INTERVAL"),
                60u64,
            )?
            .max(1),
        );
        let secret = |name: &str| get(name).map(Secret);
        let session_key = secret("STREAMGATE_SESSION_KEY");
        let seconds = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match parse_num(name, get(name), default)? {
                0 => Err(ConfigError::Invalid {
                    name,
                    value: "0".into(),
                    expected: "at least 1 second",
                }),
                n => Ok(Duration::from_secs(n)),
            }
        };
        let session_ttl = seconds("STREAMGATE_SESSION_TTL", 3600)?;
        let nonce_ttl = seconds("STREAMGATE_NONCE_TTL", 600)?;
        let on_lambda = get("AWS_LAMBDA_RUNTIME_API").is_some();
        let in_cloud = on_lambda || get("K_SERVICE").is_some();
        let bytes = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match parse_num(name, get(name), default)? {
                0 => Err(ConfigError::Invalid {
                    name,
                    value: "0".into(),
                    expected: "at least 1 byte",
                }),
                n => Ok(n),
            }
        };
        let uploads = UploadLimits {
            max_size: bytes("STREAMGATE_MAX_UPLOAD_SIZE", 16 * 1024 * MIB)?,
            max_chunk: bytes("STREAMGATE_MAX_CHUNK_SIZE", if on_lambda { 4 * MIB } else { 64 * MIB })?,
            expiry: seconds("STREAMGATE_UPLOAD_EXPIRY", 86_400)?,
            max_age: seconds("STREAMGATE_UPLOAD_MAX_AGE", 172_800)?,
            url_ttl: seconds("STREAMGATE_UPLOAD_URL_TTL", 3600)?,
        };
        // S3 signs URLs for a week at most.
        if uploads.url_ttl > Duration::from_secs(7 * 86_400) {
            return Err(ConfigError::Invalid {
                name: "STREAMGATE_UPLOAD_URL_TTL",
                value: uploads.url_ttl.as_secs().to_string(),
                expected: "at most 604800 seconds (a week)",
            });
        }
        let log_format = match get("STREAMGATE_LOG_FORMAT").as_deref() {
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            None if in_cloud => LogFormat::Json,
            None => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "STREAMGATE_LOG_FORMAT",
                    value: other.to_owned(),
                    expected: "`json` or `pretty`",
                });
            }
        };
        let float = |name: &'static str, default: f64| -> Result<f64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or(ConfigError::Invalid {
                        name,
                        value,
                        expected: "a positive number",
                    }),
            }
        };
        let defaults = crate::media::MediaLimits::default();
        let media = crate::media::MediaLimits {
            max_duration: float("STREAMGATE_MAX_DURATION", defaults.max_duration)?,
            max_dimension: parse_num(
                "STREAMGATE_MAX_DIMENSION",
                get("STREAMGATE_MAX_DIMENSION"),
                defaults.max_dimension,
            )?,
            max_frame_rate: float("STREAMGATE_MAX_FRAME_RATE", defaults.max_frame_rate)?,
        };
        let ladder = match get("STREAMGATE_LADDER") {
            None => crate::ladder::DEFAULT_LADDER.to_vec(),
            Some(value) => crate::ladder::parse_ladder(&value).map_err(|_| ConfigError::Invalid {
                name: "STREAMGATE_LADDER",
                value,
                expected: "rung names among 1080p, 720p, 480p, 360p, 240p, comma-separated",
            })?,
        };
        let preset = get("STREAMGATE_X264_PRESET").unwrap_or_else(|| "veryfast".into());
        if !crate::ladder::X264_PRESETS.contains(&preset.as_str()) {
            return Err(ConfigError::Invalid {
                name: "STREAMGATE_X264_PRESET",
                value: preset,
                expected: "an x264 preset, ultrafast to placebo",
            });
        }
        let chunk_seconds = parse_num("STREAMGATE_CHUNK_SECONDS", get("STREAMGATE_CHUNK_SECONDS"), 32u32)?;
        if chunk_seconds == 0 || !chunk_seconds.is_multiple_of(SEGMENT_SECONDS) {
            return Err(ConfigError::Invalid {
                name: "STREAMGATE_CHUNK_SECONDS",
                value: chunk_seconds.to_string(),
                expected: "a positive multiple of 4 (the segment length)",
            });
        }
        let transcoding = Transcoding {
            ladder,
            preset,
            chunk_seconds,
        };
        Ok(Self {
            backend,
            data_dir: PathBuf::from(get("STREAMGATE_DATA_DIR").unwrap_or_else(|| "./.streamgate".into())),
            aws,
            port,
            addr,
            public_url,
            max_attempts,
            workers,
            visibility_timeout,
            log_format,
            schedule_interval,
            domain: get("STREAMGATE_DOMAIN"),
            chains: Chains::from_vars(std::iter::empty()).map_err(|e| ConfigError::Chain(e.to_string()))?,
            session_key,
            session_previous_key: secret("STREAMGATE_SESSION_PREVIOUS_KEY"),
            session_ttl,
            nonce_ttl,
            uploads,
            sync_writes: match get("STREAMGATE_SYNC_WRITES") {
                None => true,
                value => parse_bool("STREAMGATE_SYNC_WRITES", value)?,
            },
            media,
            transcoding,
            playback_ttl: seconds("STREAMGATE_PLAYBACK_TTL", 300)?,
            ownership_ttl: seconds("STREAMGATE_OWNERSHIP_TTL", 30)?,
            rpc_timeout: Duration::from_millis(parse_num(
                "STREAMGATE_CHAIN_TIMEOUT_MS",
                get("STREAMGATE_CHAIN_TIMEOUT_MS"),
                3000u64,
            )?),
            url_signing_key: secret("STREAMGATE_URL_SIGNING_KEY"),
            limits: RateLimits {
                per_address: parse_num(
                    "STREAMGATE_RATE_LIMIT_ADDRESS",
                    get("STREAMGATE_RATE_LIMIT_ADDRESS"),
                    6000,
                )?,
                per_account: parse_num(
                    "STREAMGATE_RATE_LIMIT_ACCOUNT",
                    get("STREAMGATE_RATE_LIMIT_ACCOUNT"),
                    1200,
                )?,
                sign_in: parse_num(
                    "STREAMGATE_RATE_LIMIT_SIGN_IN",
                    get("STREAMGATE_RATE_LIMIT_SIGN_IN"),
                    60,
                )?,
                trusted_proxies: match get("STREAMGATE_TRUSTED_PROXIES") {
                    None => Vec::new(),
                    Some(value) => parse_networks(&value).ok_or(ConfigError::Invalid {
                        name: "STREAMGATE_TRUSTED_PROXIES",
                        value,
                        expected: "networks such as 10.0.0.0/8,127.0.0.1/32",
                    })?,
                },
            },
        })
    }
}

impl Config {
    /// The Sign-In with Ethereum domain when this process serves on `addr`.
    pub fn domain_for(&self, addr: SocketAddr) -> String {
        if let Some(domain) = &self.domain {
            return domain.clone();
        }
        let url = self.public_url_for(addr);
        match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => addr.to_string(),
        }
    }

    /// The base URL for signed links when this process serves on `addr`.
    pub fn public_url_for(&self, addr: SocketAddr) -> Url {
        self.public_url.clone().unwrap_or_else(|| default_public_url(addr))
    }
}

/// `http://addr/`, with an unspecified address (0.0.0.0) shown as loopback.
pub fn default_public_url(addr: SocketAddr) -> Url {
    let ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let shown = SocketAddr::new(ip, addr.port());
    Url::parse(&format!("http://{shown}/"))
        .unwrap_or_else(|_| unreachable!("a socket address is a valid URL authority"))
}

/// Comma-separated networks; a bare address is a network of one.
fn parse_networks(value: &str) -> Option<Vec<ipnet::IpNet>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| part.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        })
        .collect()
}

fn parse_num<T: std::str::FromStr>(name: &'static str, value: Option<String>, default: T) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            value,
            expected: "a whole number",
        }),
    }
}

fn parse_bool(name: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(_) => Err(ConfigError::Invalid {
            name,
            value: value.unwrap_or_default(),
            expected: "true or false",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_run_locally() {
        let config = config(&[]).expect("defaults");
        assert_eq!(config.backend, Backend::Local);
        assert_eq!(config.port, 8080);
        assert_eq!(config.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.public_url, None);
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.max_attempts, 5);
        assert!(config.aws.is_none());
        assert_eq!(config.uploads.max_chunk, 64 * MIB);
    }

    #[test]
    fn chunks_fit_lambda_requests_on_lambda() {
        let config = config(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]).expect("lambda");
        // Base64 makes 4 MiB about 5.6 MB, under Lambda's 6 MB request limit with room for headers.
        assert!(config.uploads.max_chunk.div_ceil(3) * 4 < 6_000_000);
    }

    #[test]
    fn public_urls_show_loopback_and_bracket_ipv6() {
        assert_eq!(
            default_public_url("0.0.0.0:9000".parse().expect("addr")).as_str(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            default_public_url("[::1]:9000".parse().expect("addr")).as_str(),
            "http://[::1]:9000/"
        );
    }

    #[test]
    fn aws_backend_names_the_missing_variable() {
        let err = config(&[("STREAMGATE_BACKEND", "aws"), ("STREAMGATE_TABLE", "t")]).expect_err("incomplete");
        assert_eq!(
            err.to_string(),
            "STREAMGATE_SOURCES_BUCKET is required when STREAMGATE_BACKEND=aws"
        );
    }

    #[test]
    fn aws_backend_reads_resources() {
        let config = config(&[
            ("STREAMGATE_BACKEND", "aws"),
            ("STREAMGATE_TABLE", "t"),
            ("STREAMGATE_SOURCES_BUCKET", "src"),
            ("STREAMGATE_MEDIA_BUCKET", "media"),
            ("STREAMGATE_JOBS_QUEUE_URL", "http://q/jobs"),
            ("STREAMGATE_FINALIZE_QUEUE_URL", "http://q/finalize"),
            ("STREAMGATE_SESSION_KEY", "k4.secret.x"),
            ("STREAMGATE_S3_PATH_STYLE", "true"),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ])
        .expect("complete");
        assert!(
            !format!("{config:?}").contains("k4.secret.x"),
            "secrets stay out of Debug output"
        );
        let aws = config.aws.expect("aws resources");
        assert!(aws.s3_path_style);
        assert_eq!(aws.media_bucket, "media");
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn rate_limits_and_trusted_proxies() {
        let defaults = config(&[]).expect("defaults").limits;
        assert_eq!(
            (defaults.per_address, defaults.per_account, defaults.sign_in),
            (6000, 1200, 60)
        );
        assert!(defaults.trusted_proxies.is_empty());
        let set = config(&[
            ("STREAMGATE_RATE_LIMIT_ADDRESS", "0"),
            ("STREAMGATE_TRUSTED_PROXIES", " 10.0.0.0/8, 127.0.0.1 ,fd00::/8"),
        ])
        .expect("valid")
        .limits;
        assert_eq!(set.per_address, 0);
        let nets: Vec<String> = set.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]);
    }

    #[test]
    fn rejects_bad_values_by_name() {
        for (name, value) in [
            ("STREAMGATE_BACKEND", "gcp"),
            ("PORT", "eighty"),
            ("STREAMGATE_ADDR", "localhost"),
            ("STREAMGATE_PUBLIC_URL", "ftp://x"),
            ("STREAMGATE_MAX_ATTEMPTS", "0"),
            ("STREAMGATE_S3_PATH_STYLE", "maybe"),
            ("STREAMGATE_MAX_CHUNK_SIZE", "0"),
            ("STREAMGATE_UPLOAD_EXPIRY", "-1"),
            ("STREAMGATE_UPLOAD_MAX_AGE", "0"),
            ("STREAMGATE_UPLOAD_URL_TTL", "604801"),
            ("STREAMGATE_LADDER", "4k"),
            ("STREAMGATE_X264_PRESET", "warp"),
            ("STREAMGATE_CHUNK_SECONDS", "30"),
            ("STREAMGATE_MAX_DURATION", "-5"),
            ("STREAMGATE_RATE_LIMIT_ADDRESS", "-1"),
            ("STREAMGATE_RATE_LIMIT_SIGN_IN", "many"),
            ("STREAMGATE_TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal"),
        ] {
            let err = config(&[(name, value)]).expect_err(name);
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }
}
