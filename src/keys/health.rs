//! A provider's health, checked for `/health` without letting probes hammer it.
//!
//! For remote providers (KMS, HSM) each check is a call to the provider: the answer is
//! therefore shared for a few seconds, and concurrent probes wait for one check instead of
//! each making their own. A failure is kept for a shorter time than a success, so recovery
//! shows quickly. The check is bounded so a hung provider reads as unhealthy.
//!
//! The periods and the bound are [`HealthIntervals`] (the application's
//! `Settings::intervals`), measured on tokio's clock.

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::RsaKeyProvider;
use crate::config::intervals::HealthIntervals;

/// The last check's outcome, shared by concurrent and closely following probes.
pub struct HealthCache {
    intervals: HealthIntervals,
    last: Mutex<Option<(Instant, bool)>>,
}

impl HealthCache {
    pub fn new(intervals: HealthIntervals) -> Self {
        Self {
            intervals,
            last: Mutex::new(None),
        }
    }

    /// Whether `provider` is healthy, checking it at most once per validity period.
    pub async fn check(&self, provider: &dyn RsaKeyProvider) -> bool {
        // Held across the check: probes arriving meanwhile wait for its answer.
        let mut last = self.last.lock().await;
        if let Some((at, healthy)) = *last {
            let valid_for = if healthy {
                self.intervals.healthy_for
            } else {
                self.intervals.unhealthy_for
            };
            if at.elapsed() < valid_for {
                return healthy;
            }
        }
        let check = provider.check_health();
        let healthy = match tokio::time::timeout(self.intervals.check_timeout, check).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "health check: RSA key provider failed");
                false
            }
            Err(_) => {
                tracing::warn!("health check: RSA key provider did not answer in time");
                false
            }
        };
        *last = Some((Instant::now(), healthy));
        healthy
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use zeroize::Zeroizing;

    use super::*;
    use crate::keys::KeyProviderError;

    const MS: Duration = Duration::from_millis(1);

    struct Probe {
        calls: AtomicUsize,
        failing: AtomicBool,
        /// How long a check takes, in milliseconds.
        takes_ms: AtomicU64,
    }

    impl Default for Probe {
        fn default() -> Self {
            Self {
                calls: AtomicUsize::new(0),
                failing: AtomicBool::new(false),
                takes_ms: AtomicU64::new(50),
            }
        }
    }

    impl Probe {
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl RsaKeyProvider for Probe {
        fn describe(&self) -> String {
            "probe".into()
        }
        async fn wrap_symmetric_key(&self, _: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
            unreachable!("not used by health checks")
        }
        async fn unwrap_symmetric_key(
            &self,
            _: &[u8],
        ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
            unreachable!("not used by health checks")
        }
        async fn check_health(&self) -> Result<(), KeyProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let takes = Duration::from_millis(self.takes_ms.load(Ordering::SeqCst));
            tokio::time::sleep(takes).await;
            if self.failing.load(Ordering::SeqCst) {
                Err(KeyProviderError::unavailable("down"))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_probes_share_one_check_and_an_answer_is_reused_for_its_period() {
        let intervals = HealthIntervals::default();
        let probe = Arc::new(Probe::default());
        let cache = Arc::new(HealthCache::new(intervals.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (probe, cache) = (Arc::clone(&probe), Arc::clone(&cache));
            tasks.spawn(async move { cache.check(probe.as_ref()).await });
        }
        while let Some(healthy) = tasks.join_next().await {
            assert!(healthy.unwrap());
        }
        assert_eq!(probe.calls(), 1, "one check for 20 probes");

        // A healthy answer is reused for its whole period, even once the provider fails.
        probe.failing.store(true, Ordering::SeqCst);
        tokio::time::advance(intervals.healthy_for - MS).await;
        assert!(cache.check(probe.as_ref()).await);
        assert_eq!(probe.calls(), 1);
        tokio::time::advance(MS).await;
        assert!(!cache.check(probe.as_ref()).await, "checked again");
        assert_eq!(probe.calls(), 2);

        // A failure is reused for the shorter period, then recovery shows.
        probe.failing.store(false, Ordering::SeqCst);
        tokio::time::advance(intervals.unhealthy_for - MS).await;
        assert!(!cache.check(probe.as_ref()).await);
        assert_eq!(probe.calls(), 2);
        tokio::time::advance(MS).await;
        assert!(
            cache.check(probe.as_ref()).await,
            "recovery is seen after the short period"
        );
        assert_eq!(probe.calls(), 3);
        assert!(intervals.unhealthy_for < intervals.healthy_for);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_does_not_answer_in_time_is_unhealthy() {
        let intervals = HealthIntervals::default();
        let probe = Probe::default();
        let hangs_for = intervals.check_timeout * 10;
        probe
            .takes_ms
            .store(hangs_for.as_millis() as u64, Ordering::SeqCst);
        let cache = HealthCache::new(intervals.clone());
        let started = Instant::now();
        assert!(!cache.check(&probe).await);
        let waited = started.elapsed();
        assert!(
            waited >= intervals.check_timeout && waited < hangs_for,
            "answered after {waited:?}"
        );
    }
}
