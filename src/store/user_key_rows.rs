//! The `UserKeys` rules every backend shares, written once: how a PUT creates or replaces a
//! row when another request may be doing the same, and how a batch of access times is
//! reduced before it is written.
//!
//! A backend implements [`UserKeyRows`] (single-row reads and writes, each atomic on its
//! own); [`crate::store::UserKeyStore`] follows from it here.

use std::collections::HashMap;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{CreateOutcome, PutOutcome, StoreBackend, StoreError, StoredUserKey, UserKeyStore};

/// A user and when they read their key.
pub type LastAccess = (Uuid, OffsetDateTime);

/// A new sealed key for an existing row, as of `now` (its `RevisionDate`).
#[derive(Debug, Clone, Copy)]
pub struct KeyReplacement<'a> {
    pub id: Uuid,
    pub sealed_key: &'a str,
    pub now: OffsetDateTime,
}

/// A row's sealed key re-sealed under another symmetric key, if it is still `expected`.
#[derive(Debug, Clone, Copy)]
pub struct Reseal<'a> {
    pub id: Uuid,
    pub expected: &'a str,
    pub resealed: &'a str,
}

/// The I/O a backend supplies for `UserKeys`. Every write is durable before it returns.
#[async_trait]
pub trait UserKeyRows: StoreBackend {
    async fn read_row(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError>;

    /// Every row, oldest first.
    async fn list_rows(&self) -> Result<Vec<StoredUserKey>, StoreError>;

    /// Inserts `row` unless its id exists (then nothing changes), atomically.
    async fn insert_row(&self, row: &StoredUserKey) -> Result<CreateOutcome, StoreError>;

    /// Sets `Key` and `RevisionDate` of the row, keeping its other dates; `false` if there
    /// is no such row.
    async fn replace_key(&self, change: &KeyReplacement<'_>) -> Result<bool, StoreError>;

    /// Sets `Key` if it is still `expected`, dates unchanged; `false` otherwise.
    async fn reseal_key(&self, change: &Reseal<'_>) -> Result<bool, StoreError>;

    /// Sets `LastAccessDate` of each existing row; `accesses` names each user once.
    async fn write_last_access(&self, accesses: &[LastAccess]) -> Result<(), StoreError>;
}

/// The latest time per user: a batch may name a user twice, and the later access wins.
pub fn latest_accesses(accesses: &[LastAccess]) -> Vec<LastAccess> {
    let mut latest: HashMap<Uuid, OffsetDateTime> = HashMap::new();
    for &(id, when) in accesses {
        let entry = latest.entry(id).or_insert(when);
        *entry = (*entry).max(when);
    }
    latest.into_iter().collect()
}

#[async_trait]
impl<S: UserKeyRows> UserKeyStore for S {
    async fn reseal_user_key(
        &self,
        id: Uuid,
        expected: &str,
        resealed: &str,
    ) -> Result<bool, StoreError> {
        self.reseal_key(&Reseal {
            id,
            expected,
            resealed,
        })
        .await
    }

    async fn read_user_key(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        self.read_row(id).await
    }

    async fn create_user_key(&self, key: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
        self.insert_row(key).await
    }

    async fn put_user_key(
        &self,
        id: Uuid,
        sealed_key: &str,
        now: OffsetDateTime,
    ) -> Result<PutOutcome, StoreError> {
        let replacement = KeyReplacement {
            id,
            sealed_key,
            now,
        };
        if self.replace_key(&replacement).await? {
            return Ok(PutOutcome::Replaced);
        }
        let row = StoredUserKey::fresh(id, sealed_key.to_owned(), now);
        match self.insert_row(&row).await? {
            CreateOutcome::Created => Ok(PutOutcome::Created),
            // Another request created it meanwhile: replace that row.
            CreateOutcome::AlreadyExists => {
                self.replace_key(&replacement).await?;
                Ok(PutOutcome::Replaced)
            }
        }
    }

    async fn record_last_access(
        &self,
        accesses: &[(Uuid, OffsetDateTime)],
    ) -> Result<(), StoreError> {
        if accesses.is_empty() {
            return Ok(());
        }
        self.write_last_access(&latest_accesses(accesses)).await
    }

    async fn list_user_keys(&self) -> Result<Vec<StoredUserKey>, StoreError> {
        self.list_rows().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use time::macros::datetime;

    use super::*;

    /// Rows in memory; `racing` makes the first replacement miss as if another request
    /// inserted the row just after it.
    #[derive(Default)]
    struct MemoryRows {
        rows: Mutex<Vec<StoredUserKey>>,
        racing: Mutex<Option<StoredUserKey>>,
        written_accesses: Mutex<Vec<LastAccess>>,
    }

    #[async_trait]
    impl StoreBackend for MemoryRows {
        fn kind(&self) -> &'static str {
            "memory"
        }

        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }

        async fn close(&self) {}
    }

    #[async_trait]
    impl UserKeyRows for MemoryRows {
        async fn read_row(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
            Ok(self
                .rows
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.id == id)
                .cloned())
        }

        async fn list_rows(&self) -> Result<Vec<StoredUserKey>, StoreError> {
            Ok(self.rows.lock().unwrap().clone())
        }

        async fn insert_row(&self, row: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
            let mut rows = self.rows.lock().unwrap();
            if rows.iter().any(|r| r.id == row.id) {
                return Ok(CreateOutcome::AlreadyExists);
            }
            rows.push(row.clone());
            Ok(CreateOutcome::Created)
        }

        async fn replace_key(&self, change: &KeyReplacement<'_>) -> Result<bool, StoreError> {
            let mut rows = self.rows.lock().unwrap();
            let Some(row) = rows.iter_mut().find(|r| r.id == change.id) else {
                if let Some(other) = self.racing.lock().unwrap().take() {
                    rows.push(other);
                }
                return Ok(false);
            };
            row.sealed_key = change.sealed_key.to_owned();
            row.revision_date = Some(change.now);
            Ok(true)
        }

        async fn reseal_key(&self, change: &Reseal<'_>) -> Result<bool, StoreError> {
            let mut rows = self.rows.lock().unwrap();
            match rows
                .iter_mut()
                .find(|r| r.id == change.id && r.sealed_key == change.expected)
            {
                Some(row) => {
                    row.sealed_key = change.resealed.to_owned();
                    Ok(true)
                }
                None => Ok(false),
            }
        }

        async fn write_last_access(&self, accesses: &[LastAccess]) -> Result<(), StoreError> {
            self.written_accesses
                .lock()
                .unwrap()
                .extend_from_slice(accesses);
            Ok(())
        }
    }

    const NOW: OffsetDateTime = datetime!(2026-11-24 15:33:59 UTC);

    #[tokio::test]
    async fn put_creates_a_missing_row_dated_now() {
        let store = MemoryRows::default();
        let id = Uuid::new_v4();
        assert_eq!(
            store.put_user_key(id, "k", NOW).await.unwrap(),
            PutOutcome::Created
        );
        let row = store.read_user_key(id).await.unwrap().unwrap();
        assert_eq!((row.creation_date, row.revision_date), (NOW, None));
    }

    #[tokio::test]
    async fn put_replaces_a_row_another_request_created_meanwhile() {
        let id = Uuid::new_v4();
        let earlier = datetime!(2026-01-01 00:00:00 UTC);
        let store = MemoryRows {
            racing: Mutex::new(Some(StoredUserKey::fresh(id, "theirs".into(), earlier))),
            ..MemoryRows::default()
        };
        let outcome = store.put_user_key(id, "ours", NOW).await.unwrap();
        let replaced = StoredUserKey {
            revision_date: Some(NOW),
            ..StoredUserKey::fresh(id, "ours".into(), earlier)
        };
        assert_eq!(outcome, PutOutcome::Replaced);
        assert_eq!(store.read_user_key(id).await.unwrap(), Some(replaced));
    }

    #[tokio::test]
    async fn access_batches_keep_the_latest_time_per_user_and_skip_empty_ones() {
        let store = MemoryRows::default();
        store.record_last_access(&[]).await.unwrap();
        assert!(store.written_accesses.lock().unwrap().is_empty());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let later = datetime!(2026-11-24 16:00:00 UTC);
        store
            .record_last_access(&[(a, later), (b, NOW), (a, NOW)])
            .await
            .unwrap();
        let mut written = store.written_accesses.lock().unwrap().clone();
        written.sort_by_key(|(_, when)| *when);
        assert_eq!(written, [(b, NOW), (a, later)]);
    }
}
