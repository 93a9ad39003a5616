//! `grpc.health.v1` statuses that follow a dependency: a service's database, or an
//! upstream behind the gateway.

use std::{future::Future, time::Duration};

use tokio::task::JoinHandle;
use tonic_health::{ServingStatus, server::HealthReporter};

/// How often a dependency is probed, and how long one probe may take.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports `service_names` SERVING while `probe` answers true in time, and
/// NOT_SERVING otherwise.
pub struct HealthFollower<P> {
    /// The dependency, for the log lines when it goes down and comes back.
    dependency: &'static str,
    reporter: HealthReporter,
    service_names: Vec<&'static str>,
    probe: P,
    last: Option<ServingStatus>,
}

impl<P, F> HealthFollower<P>
where
    P: FnMut() -> F + Send + 'static,
    F: Future<Output = bool> + Send,
{
    pub fn new(
        dependency: &'static str,
        reporter: HealthReporter,
        service_names: Vec<&'static str>,
        probe: P,
    ) -> Self {
        Self {
            dependency,
            reporter,
            service_names,
            probe,
            last: None,
        }
    }

    /// Reports the first answer before returning, so health never says "unknown
    /// service" once serving starts; then follows the dependency in a task.
    pub async fn start(mut self) -> JoinHandle<()> {
        self.check().await;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                self.check().await;
            }
        })
    }

    async fn check(&mut self) {
        let up = tokio::time::timeout(PROBE_TIMEOUT, (self.probe)())
            .await
            .unwrap_or(false);
        crate::metrics::record_upstream(self.dependency, up);
        let status = if up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if self.last == Some(status) {
            return;
        }
        // State changes only: down, and up again after being down. The first
        // answer, when it is SERVING, is no news.
        match (self.last, status) {
            (_, ServingStatus::NotServing) => tracing::warn!(
                dependency = self.dependency,
                "dependency unreachable; health is NOT_SERVING"
            ),
            (Some(ServingStatus::NotServing), ServingStatus::Serving) => tracing::info!(
                dependency = self.dependency,
                "dependency reachable again; health is SERVING"
            ),
            _ => tracing::debug!(dependency = self.dependency, "dependency reachable"),
        }
        for name in &self.service_names {
            self.reporter.set_service_status(*name, status).await;
        }
        self.last = Some(status);
    }
}
