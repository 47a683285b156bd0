//! `stats`: how many users have a key, and when keys were created and last used.

use std::sync::Arc;

use time::OffsetDateTime;

use super::binding::BindingState;
use super::{Database, OperationError, StepFailure};
use crate::config::DatabaseSettings;
use crate::store::{KeyStore, StoredUserKey};

/// `stats`: the key statistics and the binding state of `database` (it writes nothing to
/// an existing database; like every command, it opens the configured store as the service
/// does).
pub async fn read(database: &DatabaseSettings) -> Result<(KeyStats, BindingState), OperationError> {
    super::run(
        Database::at("stats", database),
        async |store: &Arc<dyn KeyStore>| {
            let failed = StepFailure("Nothing was changed");
            let rows = store
                .list_user_keys()
                .await
                .map_err(failed.at("cannot read the user keys"))?;
            let binding = BindingState::read(store.as_ref(), &rows)
                .await
                .map_err(failed.at("cannot read the binding state"))?;
            Ok((compute(&rows), binding))
        },
    )
    .await
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyStats {
    pub users: usize,
    pub oldest_creation: Option<OffsetDateTime>,
    pub newest_creation: Option<OffsetDateTime>,
    pub oldest_access: Option<OffsetDateTime>,
    pub newest_access: Option<OffsetDateTime>,
    /// Keys read at least once since they were stored (`LastAccessDate` set).
    pub ever_accessed: usize,
    /// Keys replaced by a `PUT` at least once (`RevisionDate` set).
    pub replaced: usize,
}

pub fn compute(rows: &[StoredUserKey]) -> KeyStats {
    let mut stats = KeyStats {
        users: rows.len(),
        ..KeyStats::default()
    };
    for row in rows {
        stats.oldest_creation = Some(
            stats
                .oldest_creation
                .map_or(row.creation_date, |d| d.min(row.creation_date)),
        );
        stats.newest_creation = Some(
            stats
                .newest_creation
                .map_or(row.creation_date, |d| d.max(row.creation_date)),
        );
        if let Some(access) = row.last_access_date {
            stats.ever_accessed += 1;
            stats.oldest_access = Some(stats.oldest_access.map_or(access, |d| d.min(access)));
            stats.newest_access = Some(stats.newest_access.map_or(access, |d| d.max(access)));
        }
        if row.revision_date.is_some() {
            stats.replaced += 1;
        }
    }
    stats
}

impl std::fmt::Display for KeyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let date = |d: Option<OffsetDateTime>| {
            d.map(crate::dotnet_time::format_iso_utc)
                .unwrap_or_else(|| "-".into())
        };
        writeln!(f, "users with a key:     {}", self.users)?;
        writeln!(f, "oldest key created:   {}", date(self.oldest_creation))?;
        writeln!(f, "newest key created:   {}", date(self.newest_creation))?;
        writeln!(f, "keys ever read:       {}", self.ever_accessed)?;
        writeln!(
            f,
            "keys never read:      {}",
            self.users - self.ever_accessed
        )?;
        writeln!(f, "keys replaced (PUT):  {}", self.replaced)?;
        writeln!(f, "least recent access:  {}", date(self.oldest_access))?;
        write!(f, "most recent access:   {}", date(self.newest_access))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use uuid::Uuid;

    fn row(
        created: OffsetDateTime,
        accessed: Option<OffsetDateTime>,
        revised: bool,
    ) -> StoredUserKey {
        StoredUserKey {
            id: Uuid::new_v4(),
            sealed_key: "x".into(),
            creation_date: created,
            revision_date: revised.then_some(created),
            last_access_date: accessed,
        }
    }

    #[test]
    fn counts_and_ranges() {
        let stats = compute(&[
            row(datetime!(2024-01-01 0:00 UTC), None, false),
            row(
                datetime!(2022-06-01 0:00 UTC),
                Some(datetime!(2025-01-01 0:00 UTC)),
                true,
            ),
            row(
                datetime!(2026-01-01 0:00 UTC),
                Some(datetime!(2026-02-01 0:00 UTC)),
                false,
            ),
        ]);
        assert_eq!(stats.users, 3);
        assert_eq!(stats.oldest_creation, Some(datetime!(2022-06-01 0:00 UTC)));
        assert_eq!(stats.newest_creation, Some(datetime!(2026-01-01 0:00 UTC)));
        assert_eq!(stats.oldest_access, Some(datetime!(2025-01-01 0:00 UTC)));
        assert_eq!(stats.newest_access, Some(datetime!(2026-02-01 0:00 UTC)));
        assert_eq!((stats.ever_accessed, stats.replaced), (2, 1));
        assert!(stats.to_string().contains("keys never read:      1"));
        assert_eq!(compute(&[]).to_string().matches('-').count(), 4);
    }
}
