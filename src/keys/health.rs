//! A provider's health, checked for `/health` without letting probes hammer it.
//!
//! For remote providers (KMS, HSM) each check is a call to the provider: the answer is
//! therefore shared for a few seconds, and concurrent probes wait for one check instead of
//! each making their own. A failure is kept for a shorter time than a success, so recovery
//! shows quickly. The check is bounded so a hung provider reads as unhealthy.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::RsaKeyProvider;

const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a healthy answer is reused.
const HEALTHY_FOR: Duration = Duration::from_secs(5);
/// How long an unhealthy answer is reused.
const UNHEALTHY_FOR: Duration = Duration::from_secs(1);

/// The last check's outcome, shared by concurrent and closely following probes.
#[derive(Default)]
pub struct HealthCache {
    last: Mutex<Option<(Instant, bool)>>,
}

impl HealthCache {
    /// Whether `provider` is healthy, checking it at most once per validity period.
    pub async fn check(&self, provider: &dyn RsaKeyProvider) -> bool {
        // Held across the check: probes arriving meanwhile wait for its answer.
        let mut last = self.last.lock().await;
        if let Some((at, healthy)) = *last {
            let valid_for = if healthy { HEALTHY_FOR } else { UNHEALTHY_FOR };
            if at.elapsed() < valid_for {
                return healthy;
            }
        }
        let healthy = match tokio::time::timeout(HEALTH_TIMEOUT, provider.check_health()).await {
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
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;
    use zeroize::Zeroizing;

    use super::*;
    use crate::keys::KeyProviderError;

    #[derive(Default)]
    struct Probe {
        calls: AtomicUsize,
        failing: AtomicBool,
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
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.failing.load(Ordering::SeqCst) {
                Err(KeyProviderError::unavailable("down"))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_probes_share_one_check_and_failures_expire_sooner() {
        let probe = Arc::new(Probe::default());
        let cache = Arc::new(HealthCache::default());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (probe, cache) = (Arc::clone(&probe), Arc::clone(&cache));
            tasks.spawn(async move { cache.check(probe.as_ref()).await });
        }
        while let Some(healthy) = tasks.join_next().await {
            assert!(healthy.unwrap());
        }
        assert_eq!(
            probe.calls.load(Ordering::SeqCst),
            1,
            "one check for 20 probes"
        );

        // A fresh cache sees a failing provider; the failure is re-checked after a second.
        let cache = HealthCache::default();
        probe.failing.store(true, Ordering::SeqCst);
        assert!(!cache.check(probe.as_ref()).await);
        assert!(!cache.check(probe.as_ref()).await);
        assert_eq!(probe.calls.load(Ordering::SeqCst), 2);
        probe.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(UNHEALTHY_FOR + Duration::from_millis(100)).await;
        assert!(
            cache.check(probe.as_ref()).await,
            "recovery is seen after the short period"
        );
        assert_eq!(probe.calls.load(Ordering::SeqCst), 3);
    }
}
