//! What a release does next, decided from the candidate's health alone: no I/O here.

use std::time::Duration;

/// How a release proceeds and when it gives up.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Percentages of traffic the candidate gets, in order; the last is 100 (the candidate becomes the
    /// release).
    pub steps: Vec<u8>,
    /// How long each step is watched before the next.
    pub bake: Duration,
    /// How often health is read during a step.
    pub interval: Duration,
    /// The largest share of failed requests the candidate may have.
    pub max_error_rate: f64,
    /// Requests below which a step's error rate is not trusted (except when the errors alone already
    /// exceed what this many requests would allow).
    pub min_requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("steps must rise strictly from above 0 and end at 100, e.g. 10,50,100")]
    Steps,
    #[error("the error rate must be between 0 and 1")]
    ErrorRate,
    #[error("the interval must be positive and no longer than the bake time")]
    Interval,
}

impl Policy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        let rising = self.steps.windows(2).all(|w| w[0] < w[1]);
        if self.steps.is_empty() || !rising || self.steps[0] == 0 || self.steps.last() != Some(&100) {
            return Err(PolicyError::Steps);
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err(PolicyError::ErrorRate);
        }
        if self.interval.is_zero() || self.interval > self.bake {
            return Err(PolicyError::Interval);
        }
        Ok(())
    }
}

/// What the candidate served since its step began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    pub requests: u64,
    pub errors: u64,
}

/// How the candidate is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Healthy {
        error_rate: f64,
    },
    Failing {
        error_rate: f64,
    },
    /// Too little traffic to tell.
    Quiet,
}

pub fn judge(health: Health, policy: &Policy) -> Verdict {
    let rate = |requests: u64| health.errors as f64 / requests.max(1) as f64;
    // Errors beyond what even min_requests requests would allow fail the candidate at once.
    let budget = policy.max_error_rate * policy.min_requests as f64;
    if health.errors as f64 > budget.max(0.0) && health.errors > 0 && rate(health.requests) > policy.max_error_rate {
        return Verdict::Failing {
            error_rate: rate(health.requests),
        };
    }
    if health.requests < policy.min_requests {
        return Verdict::Quiet;
    }
    let error_rate = rate(health.requests);
    if error_rate > policy.max_error_rate {
        Verdict::Failing { error_rate }
    } else {
        Verdict::Healthy { error_rate }
    }
}

/// What to do after a health reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keep watching this step.
    Watch,
    /// This step is done: go on to the next (or finish after the last).
    Advance,
    /// Give the traffic back to the stable release.
    RollBack(String),
}

/// The decision at `elapsed` into a step. A failing candidate is rolled back at once; a healthy one, or
/// one without enough traffic to tell, once the step has baked.
pub fn decide(verdict: Verdict, elapsed: Duration, policy: &Policy) -> Decision {
    match verdict {
        Verdict::Failing { error_rate } => Decision::RollBack(format!(
            "the candidate failed {:.2} % of requests (limit {:.2} %)",
            error_rate * 100.0,
            policy.max_error_rate * 100.0
        )),
        Verdict::Healthy { .. } | Verdict::Quiet if elapsed >= policy.bake => Decision::Advance,
        Verdict::Healthy { .. } | Verdict::Quiet => Decision::Watch,
    }
}

/// The traffic split of a canary step: (stable percent, candidate percent).
pub fn split(candidate_percent: u8) -> (u8, u8) {
    let candidate = candidate_percent.min(100);
    (100 - candidate, candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            steps: vec![10, 50, 100],
            bake: Duration::from_secs(300),
            interval: Duration::from_secs(30),
            max_error_rate: 0.01,
            min_requests: 100,
        }
    }

    #[test]
    fn policies_are_checked() {
        assert_eq!(policy().validate(), Ok(()));
        for steps in [vec![], vec![10, 50], vec![0, 100], vec![50, 10, 100], vec![10, 10, 100]] {
            let bad = Policy { steps, ..policy() };
            assert_eq!(bad.validate(), Err(PolicyError::Steps));
        }
        assert_eq!(
            Policy {
                steps: vec![100],
                ..policy()
            }
            .validate(),
            Ok(()),
            "a switch is one step"
        );
        assert_eq!(
            Policy {
                max_error_rate: 1.5,
                ..policy()
            }
            .validate(),
            Err(PolicyError::ErrorRate)
        );
        let slow = Policy {
            interval: Duration::from_secs(600),
            ..policy()
        };
        assert_eq!(slow.validate(), Err(PolicyError::Interval));
    }

    #[test]
    fn the_error_rate_decides_once_there_is_traffic() {
        let p = policy();
        assert_eq!(
            judge(
                Health {
                    requests: 1000,
                    errors: 10
                },
                &p
            ),
            Verdict::Healthy { error_rate: 0.01 }
        );
        assert!(matches!(
            judge(
                Health {
                    requests: 1000,
                    errors: 11
                },
                &p
            ),
            Verdict::Failing { .. }
        ));
        assert_eq!(
            judge(
                Health {
                    requests: 50,
                    errors: 0
                },
                &p
            ),
            Verdict::Quiet
        );
        assert_eq!(judge(Health { requests: 0, errors: 0 }, &p), Verdict::Quiet);
        // One error in 50 requests: not enough traffic to trust 2 %.
        assert_eq!(
            judge(
                Health {
                    requests: 50,
                    errors: 1
                },
                &p
            ),
            Verdict::Quiet
        );
        // Five errors in 20 requests already exceed what 100 requests could hold.
        assert!(matches!(
            judge(
                Health {
                    requests: 20,
                    errors: 5
                },
                &p
            ),
            Verdict::Failing { .. }
        ));
    }

    #[test]
    fn failing_rolls_back_at_once_and_steps_advance_after_baking() {
        let p = policy();
        let early = Duration::from_secs(10);
        let baked = Duration::from_secs(300);
        let failing = Verdict::Failing { error_rate: 0.2 };
        assert!(matches!(decide(failing, early, &p), Decision::RollBack(reason) if reason.contains("20.00 %")));
        assert_eq!(decide(Verdict::Healthy { error_rate: 0.0 }, early, &p), Decision::Watch);
        assert_eq!(
            decide(Verdict::Healthy { error_rate: 0.0 }, baked, &p),
            Decision::Advance
        );
        assert_eq!(decide(Verdict::Quiet, early, &p), Decision::Watch);
        assert_eq!(decide(Verdict::Quiet, baked, &p), Decision::Advance);
    }

    #[test]
    fn splits_add_up() {
        assert_eq!(split(10), (90, 10));
        assert_eq!(split(100), (0, 100));
        assert_eq!(split(200), (0, 100));
    }
}
