//! Releases of a Lambda function through its alias: a canary is the alias's weighted routing to the
//! candidate version, a promotion points the alias at it (noting the version before in the alias's
//! description), and health is the candidate version's `Invocations` and `Errors` as CloudWatch counts
//! them for invocations through the alias (dimension `ExecutedVersion`).

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::types::AliasRoutingConfiguration;
use chrono::{DateTime, Utc};

use crate::plan::Health;
use crate::{ReleaseError, Target, Traffic};

const PREVIOUS: &str = "streamgate-release previous=";

pub struct LambdaAlias {
    lambda: aws_sdk_lambda::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    function: String,
    alias: String,
}

fn failed(err: impl std::error::Error) -> ReleaseError {
    ReleaseError::Target(DisplayErrorContext(err).to_string())
}

impl LambdaAlias {
    pub fn new(sdk: &aws_config::SdkConfig, function: impl Into<String>, alias: impl Into<String>) -> Self {
        Self {
            lambda: aws_sdk_lambda::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            function: function.into(),
            alias: alias.into(),
        }
    }

    async fn update(
        &self,
        version: &str,
        weights: Option<(&str, f64)>,
        description: Option<String>,
    ) -> Result<(), ReleaseError> {
        let routing = AliasRoutingConfiguration::builder()
            .set_additional_version_weights(Some(
                weights.map(|(v, w)| [(v.to_owned(), w)].into()).unwrap_or_default(),
            ))
            .build();
        let mut request = self
            .lambda
            .update_alias()
            .function_name(&self.function)
            .name(&self.alias)
            .function_version(version)
            .routing_config(routing);
        if let Some(description) = description {
            request = request.description(description);
        }
        request.send().await.map_err(failed)?;
        Ok(())
    }

    async fn sum(&self, metric: &str, version: &str, since: DateTime<Utc>) -> Result<u64, ReleaseError> {
        let dimension = |name: &str, value: String| Dimension::builder().name(name).value(value).build();
        let now = Utc::now();
        let output = self
            .cloudwatch
            .get_metric_statistics()
            .namespace("AWS/Lambda")
            .metric_name(metric)
            .dimensions(dimension("FunctionName", self.function.clone()))
            .dimensions(dimension("Resource", format!("{}:{}", self.function, self.alias)))
            .dimensions(dimension("ExecutedVersion", version.to_owned()))
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                since.timestamp() - 60,
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                now.timestamp() + 60,
            ))
            .period(60)
            .statistics(Statistic::Sum)
            .send()
            .await
            .map_err(failed)?;
        let total: f64 = output.datapoints().iter().filter_map(|point| point.sum()).sum();
        Ok(total.max(0.0).round() as u64)
    }
}

#[async_trait]
impl Target for LambdaAlias {
    fn name(&self) -> String {
        format!("{}:{}", self.function, self.alias)
    }

    async fn traffic(&self) -> Result<Traffic, ReleaseError> {
        let alias = self
            .lambda
            .get_alias()
            .function_name(&self.function)
            .name(&self.alias)
            .send()
            .await
            .map_err(failed)?;
        let stable = alias
            .function_version()
            .ok_or_else(|| ReleaseError::Target(format!("{} has no version", self.name())))?
            .to_owned();
        let candidate = alias
            .routing_config()
            .and_then(|routing| routing.additional_version_weights())
            .and_then(|weights| weights.iter().next())
            .map(|(version, weight)| (version.clone(), (weight * 100.0).round() as u8));
        let previous = alias
            .description()
            .and_then(|d| d.strip_prefix(PREVIOUS))
            .map(str::to_owned);
        Ok(Traffic {
            stable,
            candidate,
            previous,
        })
    }

    async fn split(&self, stable: &str, candidate: &str, percent: u8) -> Result<(), ReleaseError> {
        self.update(stable, Some((candidate, f64::from(percent) / 100.0)), None)
            .await
    }

    async fn promote(&self, stable: &str, candidate: &str) -> Result<(), ReleaseError> {
        self.update(candidate, None, Some(format!("{PREVIOUS}{stable}"))).await
    }

    async fn settle(&self, release: &str) -> Result<(), ReleaseError> {
        self.update(release, None, Some(String::new())).await
    }

    async fn health(&self, candidate: &str, since: DateTime<Utc>) -> Result<Health, ReleaseError> {
        Ok(Health {
            requests: self.sum("Invocations", candidate, since).await?,
            errors: self.sum("Errors", candidate, since).await?,
        })
    }
}
