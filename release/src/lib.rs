//! `streamgate-release`: canary releases (10 % → 50 % → 100 % by default, health read between steps,
//! rolled back automatically when the candidate's error rate passes the limit), blue-green switches
//! (everything at once, watched, the previous release kept for rollback) and rollbacks, for Lambda aliases
//! (weighted routing, health from CloudWatch) and Knative Services (revision traffic, health from
//! Prometheus).
#![forbid(unsafe_code)]

pub mod knative;
pub mod lambda;
pub mod plan;

use tokio::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plan::{Decision, Health, Policy, decide, judge};

/// A release failed to run (as opposed to a candidate that failed and was rolled back).
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    Target(String),
    #[error("{0}")]
    Usage(String),
}

/// Where traffic stands: the stable release, and the candidate with its share when one runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    pub stable: String,
    pub candidate: Option<(String, u8)>,
    /// The release before `stable`, when a switch or a finished canary remembered it.
    pub previous: Option<String>,
}

/// What a release moves traffic on: a Lambda alias or a Knative Service.
#[async_trait]
pub trait Target: Send + Sync {
    /// Human name of what is released, for logs.
    fn name(&self) -> String;
    async fn traffic(&self) -> Result<Traffic, ReleaseError>;
    /// Sends `percent` (1 to 99) of traffic to `candidate`, the rest to `stable`.
    async fn split(&self, stable: &str, candidate: &str, percent: u8) -> Result<(), ReleaseError>;
    /// Makes `candidate` the release, remembering `stable` as the previous one.
    async fn promote(&self, stable: &str, candidate: &str) -> Result<(), ReleaseError>;
    /// Sends all traffic to `release` and forgets any candidate.
    async fn settle(&self, release: &str) -> Result<(), ReleaseError>;
    /// Requests and failures `candidate` served since `since`.
    async fn health(&self, candidate: &str, since: DateTime<Utc>) -> Result<Health, ReleaseError>;
}

/// Health readings in a row that may fail before the candidate is rolled back.
pub const UNREADABLE_HEALTH: u32 = 3;

/// How a release ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Released { release: String },
    RolledBack { to: String, reason: String },
}

/// Runs a canary (or, with steps `[100]`, a blue-green switch) of `candidate`, watching each step and
/// rolling back on the first failing reading.
pub async fn release(target: &dyn Target, candidate: &str, policy: &Policy) -> Result<Outcome, ReleaseError> {
    policy.validate().map_err(|e| ReleaseError::Usage(e.to_string()))?;
    let traffic = target.traffic().await?;
    let stable = traffic.stable.clone();
    if stable == candidate {
        return Err(ReleaseError::Usage(format!(
            "{candidate} is already the release of {}",
            target.name()
        )));
    }
    for &percent in &policy.steps {
        if percent == 100 {
            target.promote(&stable, candidate).await?;
        } else {
            target.split(&stable, candidate, percent).await?;
        }
        tracing::info!(target = %target.name(), %candidate, percent, "traffic moved; watching");
        let since = Utc::now();
        let started = Instant::now();
        let mut unread = 0;
        loop {
            tokio::time::sleep(policy.interval).await;
            let health = match target.health(candidate, since).await {
                Ok(health) => {
                    unread = 0;
                    health
                }
                // A candidate whose health cannot be read is not left with traffic.
                Err(err) if unread + 1 >= UNREADABLE_HEALTH => {
                    target.settle(&stable).await?;
                    let reason = format!("its health could not be read {UNREADABLE_HEALTH} times in a row: {err}");
                    tracing::warn!(target = %target.name(), %reason, to = %stable, "rolled back");
                    return Ok(Outcome::RolledBack { to: stable, reason });
                }
                Err(err) => {
                    unread += 1;
                    tracing::warn!(error = %err, "cannot read the candidate's health; trying again");
                    continue;
                }
            };
            let verdict = judge(health, policy);
            tracing::info!(requests = health.requests, errors = health.errors, ?verdict, "health");
            match decide(verdict, started.elapsed(), policy) {
                Decision::Watch => continue,
                Decision::Advance => break,
                Decision::RollBack(reason) => {
                    target.settle(&stable).await?;
                    tracing::warn!(target = %target.name(), %reason, to = %stable, "rolled back");
                    return Ok(Outcome::RolledBack { to: stable, reason });
                }
            }
        }
    }
    Ok(Outcome::Released {
        release: candidate.to_owned(),
    })
}

/// Gives all traffic back: to the stable release while a canary runs, else to the previous release.
pub async fn roll_back(target: &dyn Target) -> Result<Outcome, ReleaseError> {
    let traffic = target.traffic().await?;
    let to = match (&traffic.candidate, &traffic.previous) {
        (Some(_), _) => traffic.stable.clone(),
        (None, Some(previous)) => previous.clone(),
        (None, None) => {
            return Err(ReleaseError::Usage(format!(
                "{} has no canary running and no previous release to go back to",
                target.name()
            )));
        }
    };
    target.settle(&to).await?;
    Ok(Outcome::RolledBack {
        to,
        reason: "asked for".into(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// A target that records what it is told and answers health from a script (one reading per call).
    struct Scripted {
        traffic: Mutex<Traffic>,
        readings: Mutex<Vec<Health>>,
        calls: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(readings: Vec<Health>) -> Self {
            Self {
                traffic: Mutex::new(Traffic {
                    stable: "6".into(),
                    candidate: None,
                    previous: None,
                }),
                readings: Mutex::new(readings.into_iter().rev().collect()),
                calls: Mutex::new(Vec::new()),
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("calls").clone()
        }
    }

    #[async_trait]
    impl Target for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }
        async fn traffic(&self) -> Result<Traffic, ReleaseError> {
            Ok(self.traffic.lock().expect("traffic").clone())
        }
        async fn split(&self, stable: &str, candidate: &str, percent: u8) -> Result<(), ReleaseError> {
            self.calls
                .lock()
                .expect("calls")
                .push(format!("split {stable} {candidate} {percent}"));
            self.traffic.lock().expect("traffic").candidate = Some((candidate.into(), percent));
            Ok(())
        }
        async fn promote(&self, stable: &str, candidate: &str) -> Result<(), ReleaseError> {
            self.calls
                .lock()
                .expect("calls")
                .push(format!("promote {stable} {candidate}"));
            *self.traffic.lock().expect("traffic") = Traffic {
                stable: candidate.into(),
                candidate: None,
                previous: Some(stable.into()),
            };
            Ok(())
        }
        async fn settle(&self, release: &str) -> Result<(), ReleaseError> {
            self.calls.lock().expect("calls").push(format!("settle {release}"));
            *self.traffic.lock().expect("traffic") = Traffic {
                stable: release.into(),
                candidate: None,
                previous: None,
            };
            Ok(())
        }
        async fn health(&self, _: &str, _: DateTime<Utc>) -> Result<Health, ReleaseError> {
            match self.readings.lock().expect("readings").pop() {
                Some(health) => Ok(health),
                None => Err(ReleaseError::Target("metrics unavailable".into())),
            }
        }
    }

    fn policy() -> Policy {
        Policy {
            steps: vec![10, 50, 100],
            bake: Duration::from_secs(60),
            interval: Duration::from_secs(30),
            max_error_rate: 0.01,
            min_requests: 100,
        }
    }

    fn good() -> Health {
        Health {
            requests: 500,
            errors: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_canary_goes_through_every_step() {
        let target = Scripted::new(vec![good(); 6]);
        let outcome = release(&target, "7", &policy()).await.expect("release");
        assert_eq!(outcome, Outcome::Released { release: "7".into() });
        assert_eq!(target.calls(), ["split 6 7 10", "split 6 7 50", "promote 6 7"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_candidate_is_rolled_back_at_the_step_it_fails() {
        let failing = Health {
            requests: 400,
            errors: 40,
        };
        let target = Scripted::new(vec![good(), good(), good(), failing]);
        let outcome = release(&target, "7", &policy()).await.expect("release");
        assert!(matches!(&outcome, Outcome::RolledBack { to, reason } if to == "6" && reason.contains("10.00 %")));
        assert_eq!(target.calls(), ["split 6 7 10", "split 6 7 50", "settle 6"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_switch_fails_back_to_the_release_before() {
        let target = Scripted::new(vec![Health {
            requests: 10,
            errors: 9,
        }]);
        let switch = Policy {
            steps: vec![100],
            ..policy()
        };
        let outcome = release(&target, "7", &switch).await.expect("switch");
        assert!(matches!(outcome, Outcome::RolledBack { ref to, .. } if to == "6"));
        assert_eq!(target.calls(), ["promote 6 7", "settle 6"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_candidate_whose_health_cannot_be_read_loses_its_traffic() {
        let target = Scripted::new(vec![good()]);
        let outcome = release(&target, "7", &policy()).await.expect("release");
        assert!(
            matches!(&outcome, Outcome::RolledBack { to, reason } if to == "6" && reason.contains("metrics unavailable"))
        );
        assert_eq!(target.calls(), ["split 6 7 10", "settle 6"]);
    }

    #[tokio::test(start_paused = true)]
    async fn rollback_ends_a_canary_or_returns_to_the_previous_release() {
        let target = Scripted::new(Vec::new());
        assert!(
            matches!(roll_back(&target).await, Err(ReleaseError::Usage(_))),
            "nothing to go back to"
        );
        target.split("6", "7", 10).await.expect("split");
        assert!(matches!(roll_back(&target).await, Ok(Outcome::RolledBack { ref to, .. }) if to == "6"));
        target.promote("6", "7").await.expect("promote");
        assert!(matches!(roll_back(&target).await, Ok(Outcome::RolledBack { ref to, .. }) if to == "6"));
        assert!(
            matches!(release(&target, "6", &policy()).await, Err(ReleaseError::Usage(_))),
            "already the release"
        );
    }
}
