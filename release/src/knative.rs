//! Releases of a Knative Service by its revision traffic, through `kubectl` (so the operator's kubeconfig
//! and RBAC apply: see knative/base/release-rbac.yaml): the release is the revision tagged `current`, a
//! canary's revision is tagged `candidate`, and after a promotion the revision before stays tagged
//! `previous` at 0 % for an instant rollback. Health is the candidate revision's requests and 5xx answers
//! as Knative's queue-proxy counts them (`revision_app_request_count`), read from Prometheus.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::plan::{Health, split};
use crate::{ReleaseError, Target, Traffic};

pub struct KnativeService {
    pub namespace: String,
    pub service: String,
    pub prometheus: String,
    pub kubectl: String,
    http: reqwest::Client,
}

impl KnativeService {
    pub fn new(namespace: &str, service: &str, prometheus: &str, kubectl: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            prometheus: prometheus.trim_end_matches('/').to_owned(),
            kubectl: kubectl.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn kubectl(&self, args: &[&str]) -> Result<String, ReleaseError> {
        let output = tokio::process::Command::new(&self.kubectl)
            .args(["--namespace", &self.namespace])
            .args(args)
            .output()
            .await
            .map_err(|e| ReleaseError::Target(format!("cannot run {}: {e}", self.kubectl)))?;
        if !output.status.success() {
            return Err(ReleaseError::Target(format!(
                "kubectl {} failed: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn set_traffic(&self, traffic: Value) -> Result<(), ReleaseError> {
        let patch = json!({"spec": {"traffic": traffic}}).to_string();
        self.kubectl(&["patch", "ksvc", &self.service, "--type", "merge", "--patch", &patch])
            .await?;
        Ok(())
    }

    async fn count(&self, query: &str) -> Result<u64, ReleaseError> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/query", self.prometheus), [("query", query)])
            .map_err(|e| ReleaseError::Usage(format!("--prometheus {}: {e}", self.prometheus)))?;
        let answer: Value = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| ReleaseError::Target(format!("Prometheus: {e}")))?
            .json()
            .await
            .map_err(|e| ReleaseError::Target(format!("Prometheus: {e}")))?;
        Ok(prometheus_scalar(&answer))
    }
}

/// The first sample of an instant-vector answer, 0 when there is none.
pub fn prometheus_scalar(answer: &Value) -> u64 {
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v.max(0.0).round() as u64)
}

/// Traffic of a canary step: the release keeps its tag and the rest of the traffic.
pub fn canary_traffic(stable: &str, candidate: &str, percent: u8) -> Value {
    let (stable_percent, candidate_percent) = split(percent);
    json!([
        {"tag": "current", "revisionName": stable, "percent": stable_percent},
        {"tag": "candidate", "revisionName": candidate, "percent": candidate_percent},
    ])
}

/// Traffic once `candidate` is the release: the one before stays addressable at 0 %.
pub fn promoted_traffic(stable: &str, candidate: &str) -> Value {
    json!([
        {"tag": "current", "revisionName": candidate, "percent": 100},
        {"tag": "previous", "revisionName": stable, "percent": 0},
    ])
}

/// Traffic settled on one revision.
pub fn settled_traffic(release: &str) -> Value {
    json!([{"tag": "current", "revisionName": release, "percent": 100}])
}

/// Reads the release, candidate and previous revisions from a Service's `status.traffic`.
pub fn traffic_of(service: &Value) -> Result<Traffic, ReleaseError> {
    let entries = service["status"]["traffic"]
        .as_array()
        .ok_or_else(|| ReleaseError::Target("the Service reports no traffic yet".into()))?;
    let by_tag = |tag: &str| {
        entries.iter().find(|e| e["tag"] == tag).and_then(|e| {
            Some((
                e["revisionName"].as_str()?.to_owned(),
                e["percent"].as_u64().unwrap_or(0),
            ))
        })
    };
    let stable = match by_tag("current") {
        Some((revision, _)) => revision,
        // Not released by this tool yet: the revision with the most traffic.
        None => entries
            .iter()
            .max_by_key(|e| e["percent"].as_u64().unwrap_or(0))
            .and_then(|e| e["revisionName"].as_str())
            .ok_or_else(|| ReleaseError::Target("the Service's traffic names no revision".into()))?
            .to_owned(),
    };
    let candidate = by_tag("candidate")
        .filter(|(revision, percent)| *percent > 0 && *revision != stable)
        .map(|(revision, percent)| (revision, u8::try_from(percent).unwrap_or(100)));
    let previous = by_tag("previous").map(|(revision, _)| revision);
    Ok(Traffic {
        stable,
        candidate,
        previous,
    })
}

#[async_trait]
impl Target for KnativeService {
    fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.service)
    }

    async fn traffic(&self) -> Result<Traffic, ReleaseError> {
        let text = self
            .kubectl(&["get", "ksvc", &self.service, "--output", "json"])
            .await?;
        let service: Value =
            serde_json::from_str(&text).map_err(|e| ReleaseError::Target(format!("kubectl answered: {e}")))?;
        traffic_of(&service)
    }

    async fn split(&self, stable: &str, candidate: &str, percent: u8) -> Result<(), ReleaseError> {
        self.set_traffic(canary_traffic(stable, candidate, percent)).await
    }

    async fn promote(&self, stable: &str, candidate: &str) -> Result<(), ReleaseError> {
        self.set_traffic(promoted_traffic(stable, candidate)).await
    }

    async fn settle(&self, release: &str) -> Result<(), ReleaseError> {
        self.set_traffic(settled_traffic(release)).await
    }

    async fn health(&self, candidate: &str, since: DateTime<Utc>) -> Result<Health, ReleaseError> {
        let window = (Utc::now() - since).num_seconds().max(60);
        let selector = format!(r#"namespace_name="{}",revision_name="{}""#, self.namespace, candidate);
        let requests = self
            .count(&format!(
                "sum(increase(revision_app_request_count{{{selector}}}[{window}s]))"
            ))
            .await?;
        let errors = self
            .count(&format!(
                r#"sum(increase(revision_app_request_count{{{selector},response_code_class="5xx"}}[{window}s]))"#
            ))
            .await?;
        Ok(Health { requests, errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_is_read_from_the_service_status() {
        let service = json!({"status": {"traffic": [
            {"tag": "current", "revisionName": "play-00007", "percent": 90},
            {"tag": "candidate", "revisionName": "play-00008", "percent": 10},
            {"tag": "previous", "revisionName": "play-00006", "percent": 0},
        ]}});
        let traffic = traffic_of(&service).expect("traffic");
        assert_eq!(traffic.stable, "play-00007");
        assert_eq!(traffic.candidate, Some(("play-00008".into(), 10)));
        assert_eq!(traffic.previous.as_deref(), Some("play-00006"));

        let untagged =
            json!({"status": {"traffic": [{"revisionName": "play-00001", "percent": 100, "latestRevision": true}]}});
        let traffic = traffic_of(&untagged).expect("traffic");
        assert_eq!(
            (traffic.stable.as_str(), traffic.candidate, traffic.previous),
            ("play-00001", None, None)
        );
        assert!(traffic_of(&json!({"status": {}})).is_err());
    }

    #[test]
    fn patches_split_promote_and_settle() {
        let canary = canary_traffic("a", "b", 10);
        assert_eq!(canary[0], json!({"tag": "current", "revisionName": "a", "percent": 90}));
        assert_eq!(
            canary[1],
            json!({"tag": "candidate", "revisionName": "b", "percent": 10})
        );
        let promoted = promoted_traffic("a", "b");
        assert_eq!(promoted[0]["revisionName"], "b");
        assert_eq!(promoted[0]["percent"], 100);
        assert_eq!(
            promoted[1],
            json!({"tag": "previous", "revisionName": "a", "percent": 0})
        );
        assert_eq!(
            settled_traffic("a"),
            json!([{"tag": "current", "revisionName": "a", "percent": 100}])
        );
        for traffic in [canary, promoted] {
            let total: u64 = traffic
                .as_array()
                .expect("list")
                .iter()
                .map(|e| e["percent"].as_u64().expect("percent"))
                .sum();
            assert_eq!(total, 100);
        }
    }

    #[test]
    fn prometheus_answers_are_read() {
        let answer = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.7e9, "41.6"]}]}});
        assert_eq!(prometheus_scalar(&answer), 42);
        assert_eq!(prometheus_scalar(&json!({"data": {"result": []}})), 0);
    }
}
