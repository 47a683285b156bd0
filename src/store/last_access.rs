//! `LastAccessDate` without a database write per GET.
//!
//! Upstream writes `LastAccessDate` synchronously on every GET. Here a GET only notes the
//! time in memory; a background task writes the latest time per user in one batch every few
//! seconds, and once more on shutdown. A failed batch is kept and retried, so a database
//! outage loses nothing but precision. The date is bookkeeping for operators, never used
//! to decide anything, so this trade is safe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::UserKeyStore;

/// Collects access times and writes them in batches.
#[derive(Clone)]
pub struct LastAccessRecorder {
    pending: Arc<Mutex<HashMap<Uuid, OffsetDateTime>>>,
    store: Arc<dyn UserKeyStore>,
}

impl LastAccessRecorder {
    pub fn new(store: Arc<dyn UserKeyStore>) -> Self {
        Self {
            pending: Arc::default(),
            store,
        }
    }

    /// Notes that `user` read their key at `when`.
    pub fn record(&self, user: Uuid, when: OffsetDateTime) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.entry(user).or_insert(when);
        if *entry < when {
            *entry = when;
        }
    }

    /// Writes everything pending. On failure the batch is put back (keeping any later time
    /// recorded meanwhile) and the error returned.
    pub async fn flush(&self) -> Result<usize, super::StoreError> {
        let batch: Vec<(Uuid, OffsetDateTime)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match self.store.record_last_access(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(error) => {
                for (user, when) in batch {
                    self.record(user, when);
                }
                Err(error)
            }
        }
    }

    /// Flushes `every` so often (`Settings::intervals`, on tokio's clock) until `shutdown`,
    /// then once more.
    pub fn spawn_flusher(&self, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        let recorder = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = shutdown.cancelled() => break,
                }
                if let Err(error) = recorder.flush().await {
                    tracing::warn!(%error, "could not write last access dates; will retry");
                }
            }
            match recorder.flush().await {
                Ok(0) => {}
                Ok(count) => tracing::debug!(count, "wrote last access dates on shutdown"),
                Err(error) => {
                    tracing::warn!(%error, "could not write last access dates on shutdown")
                }
            }
        })
    }
}
