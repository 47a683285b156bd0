//! The intervals and time limits tests set: how often the identity server's keys are
//! refreshed, how long a `/health` answer is reused, how start-up retries a peer that is
//! down, how often access dates are written. Other time limits (a provider's or a SQL
//! server's call, the shutdown grace) stay constants of the modules that use them.
//!
//! None of them is a setting an operator writes: [`Intervals::default`] is what the service
//! runs with. They are data in the assembled settings (`Settings::intervals`, in the
//! `settings` module above) so that tests build the application with short ones. The
//! modules that use them measure them on tokio's clock (`tokio::time::Instant`, `sleep`,
//! `interval`), never `std::time::Instant`: a test on a paused clock
//! (`#[tokio::test(start_paused = true)]`) moves them with `tokio::time::advance`, exactly,
//! instead of sleeping real seconds.

use std::time::Duration;

/// The durations the service runs with (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intervals {
    pub identity_server: IdentityServerIntervals,
    pub health: HealthIntervals,
    /// Between start-up's attempts to reach a store or key service that is down.
    pub start_up_retry: Backoff,
    /// How often pending `LastAccessDate`s are written (`store::last_access`).
    pub last_access_flush: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            identity_server: IdentityServerIntervals::default(),
            health: HealthIntervals::default(),
            start_up_retry: Backoff {
                first: Duration::from_secs(1),
                max: Duration::from_secs(30),
            },
            last_access_flush: Duration::from_secs(5),
        }
    }
}

/// The identity server's discovery document and keys (`auth/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityServerIntervals {
    /// At most one JWKS refresh per this interval, whatever triggers it.
    pub min_refresh: Duration,
    /// How often keys are refreshed when all is well.
    pub periodic_refresh: Duration,
    /// Between attempts while the identity server is unreachable.
    pub retry: Backoff,
    /// Timeout of each HTTP request to the identity server.
    pub http_timeout: Duration,
    /// How long start-up waits for the first keys before serving anyway.
    pub first_keys_wait: Duration,
}

impl Default for IdentityServerIntervals {
    fn default() -> Self {
        Self {
            min_refresh: Duration::from_secs(2),
            periodic_refresh: Duration::from_secs(300),
            retry: Backoff {
                first: Duration::from_millis(500),
                max: Duration::from_secs(5),
            },
            http_timeout: Duration::from_secs(10),
            first_keys_wait: Duration::from_secs(3),
        }
    }
}

/// The RSA key provider's health as `/health` reports it (`keys/health.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthIntervals {
    /// How long a healthy answer is reused.
    pub healthy_for: Duration,
    /// How long an unhealthy answer is reused: shorter, so that recovery shows quickly.
    pub unhealthy_for: Duration,
    /// How long one check may take before the provider counts as unhealthy.
    pub check_timeout: Duration,
}

impl Default for HealthIntervals {
    fn default() -> Self {
        Self {
            healthy_for: Duration::from_secs(5),
            unhealthy_for: Duration::from_secs(1),
            check_timeout: Duration::from_secs(5),
        }
    }
}

/// Waits that double after each failed attempt, from `first` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait that follows a wait of `previous`.
    pub fn after(&self, previous: Duration) -> Duration {
        (previous * 2).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_doubles_up_to_its_maximum() {
        let backoff = Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        let mut wait = backoff.first;
        let mut waits = vec![wait];
        for _ in 0..6 {
            wait = backoff.after(wait);
            waits.push(wait);
        }
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 30, 30].map(Duration::from_secs).to_vec()
        );
    }
}
