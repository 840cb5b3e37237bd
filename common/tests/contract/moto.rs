use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use tokio::sync::OnceCell;

/// One moto server for the whole test binary; each test makes its own uniquely named resources.
pub struct Moto {
    pub sdk: aws_config::SdkConfig,
    _child: ChildGuard,
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    /// Closing the shell's stdin stops the server; then the shell ends.
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        drop(self.0.wait());
    }
}

static MOTO: OnceCell<Moto> = OnceCell::const_new();
static NEXT: AtomicU32 = AtomicU32::new(0);

fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Moto {
    pub async fn shared() -> &'static Moto {
        MOTO.get_or_init(Self::start).await
    }

    async fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let binary = moto_binary();
        // The server lives in a static, which is never dropped: a shell keeps it only as long as the test
        // process holds the shell's stdin open, which ends with the process however it ends.
        let child = Command::new("sh")
            .args([
                "-c",
                r#""$0" "$@" & server=$!; cat > /dev/null; kill "$server"; wait "$server""#,
            ])
            .arg(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the AWS emulator {}: {e}; run tests/setup (or set MOTO_SERVER)",
                    binary.display()
                )
            });
        let child = ChildGuard(child);
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto server did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .http_client(common::adapters::aws::http_client())
            .load()
            .await;
        Moto { sdk, _child: child }
    }

    pub async fn bucket(&self) -> String {
        let name = unique("contract");
        let config = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create bucket");
        name
    }

    pub async fn table(&self) -> String {
        let name = unique("contract");
        let client = aws_sdk_dynamodb::Client::new(&self.sdk);
        let attribute = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute")
        };
        let key = |n: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
                .expect("key")
        };
        client
            .create_table()
            .table_name(&name)
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(vec![
                attribute("pk"),
                attribute("sk"),
                attribute("gsi1pk"),
                attribute("gsi1sk"),
            ]))
            .key_schema(key("pk", KeyType::Hash))
            .key_schema(key("sk", KeyType::Range))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(common::adapters::aws::GSI1)
                    .key_schema(key("gsi1pk", KeyType::Hash))
                    .key_schema(key("gsi1sk", KeyType::Range))
                    .projection(Projection::builder().projection_type(ProjectionType::All).build())
                    .build()
                    .expect("gsi"),
            )
            .send()
            .await
            .expect("create table");
        client
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("ttl")
                    .build()
                    .expect("ttl"),
            )
            .send()
            .await
            .expect("enable ttl");
        name
    }

    /// A queue whose messages move to a dead-letter queue after `max_receives` deliveries.
    pub async fn queue_with_dead_letter(&self, max_receives: u32) -> (String, String) {
        let client = aws_sdk_sqs::Client::new(&self.sdk);
        let dlq_url = client
            .create_queue()
            .queue_name(unique("contract-dlq"))
            .send()
            .await
            .expect("dlq")
            .queue_url
            .expect("url");
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("dlq attributes")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("dlq arn");
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}).to_string();
        let url = client
            .create_queue()
            .queue_name(unique("contract"))
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .expect("queue")
            .queue_url
            .expect("url");
        (url, dlq_url)
    }
}
