//! What the SQL server stores (PostgreSQL, MySQL/MariaDB, SQL Server) share: deadlines,
//! date conversion, error classification and the one-retry rule for dead pooled connections.
//!
//! Error classification is the safety rule of the whole service: anything that is not a
//! positive answer from the database is [`StoreError::Unavailable`], which the API turns into
//! 503 with `Retry-After`, never into "no key".

use std::future::Future;
use std::time::Duration;

use time::{OffsetDateTime, PrimitiveDateTime};

use super::StoreError;
use crate::config::SqlConnection;

/// The lock name or number every instance of this service (of any version) uses to
/// serialise schema creation and symmetric-key creation on one database.
pub const BOOTSTRAP_LOCK_NAME: &str = "bitwarden-key-connector-bootstrap";

/// What opening a database must do to its schema, decided the way EF's `Migrate()` would,
/// plus the cases EF would fail on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaPlan {
    /// A new database: create upstream's tables and record the migration.
    Create,
    /// The tables exist without EF's record (made by hand or by other tooling): record the
    /// migration, or upstream would try to create them again and fail.
    RecordMigration,
    /// Upstream's schema, recorded: nothing to do.
    UpToDate,
}

/// Decides from which of upstream's tables exist and whether `InitialCreate` is recorded.
pub fn schema_plan(
    has_application_datas: bool,
    has_user_keys: bool,
    migration_recorded: bool,
) -> Result<SchemaPlan, StoreError> {
    match (has_application_datas, has_user_keys) {
        (false, false) if migration_recorded => Err(StoreError::Config(
            "the database records upstream's InitialCreate migration but its tables are missing; refusing to guess".into(),
        )),
        (false, false) => Ok(SchemaPlan::Create),
        (true, true) if migration_recorded => Ok(SchemaPlan::UpToDate),
        (true, true) => Ok(SchemaPlan::RecordMigration),
        _ => Err(StoreError::Config(
            "the database has only one of the tables `ApplicationDatas` and `UserKeys`; it is not a key connector database".into(),
        )),
    }
}

/// Runs `operation` with the deadline the connection string allows; a database that does
/// not answer in time is unavailable.
pub async fn with_deadline<T>(
    deadline: Duration,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, operation).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "the database did not answer within {} s",
            deadline.as_secs()
        ))),
    }
}

/// Upstream's dates are UTC `DateTime`s in columns without a zone.
pub fn to_naive_utc(value: OffsetDateTime) -> PrimitiveDateTime {
    let utc = value.to_offset(time::UtcOffset::UTC);
    PrimitiveDateTime::new(utc.date(), utc.time())
}

/// The same, cut to the microseconds PostgreSQL and MySQL keep (MySQL would round otherwise).
pub fn to_naive_utc_micros(value: OffsetDateTime) -> PrimitiveDateTime {
    let naive = to_naive_utc(value);
    let micros = naive.nanosecond() / 1_000 * 1_000;
    naive.replace_nanosecond(micros).unwrap_or(naive)
}

pub fn from_naive_utc(value: PrimitiveDateTime) -> OffsetDateTime {
    value.assume_utc()
}

/// Logs, once at open, what the connection string asked for that is not acted on.
pub fn log_connection_warnings(store: &str, connection: &SqlConnection) {
    for warning in &connection.warnings {
        tracing::warn!(store, "{warning}");
    }
}

/// A row of `UserKeys` whose `Key` is NULL cannot be served.
pub fn require_key(id: uuid::Uuid, key: Option<String>) -> Result<String, StoreError> {
    key.filter(|k| !k.is_empty())
        .ok_or_else(|| StoreError::Corrupt(format!("the UserKeys row of {id} has no key")))
}

#[cfg(any(feature = "postgresql", feature = "mysql"))]
pub mod sqlx_support {
    //! sqlx error classification and retries, for the PostgreSQL and MySQL stores.

    use std::future::Future;

    use super::StoreError;

    /// Whether the statement surely did not reach the database through a live session: the
    /// pooled connection was dead (the server restarted) or none could be had.
    pub fn is_connection_error(error: &sqlx::Error) -> bool {
        matches!(
            error,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)
        )
    }

    /// The TLS failure in `error`, if it is one: sqlx reports a certificate that does not
    /// verify as an I/O error wrapping the rustls error.
    pub fn tls_failure(error: &sqlx::Error) -> Option<String> {
        match error {
            sqlx::Error::Tls(tls) => Some(tls.to_string()),
            sqlx::Error::Io(io) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map(ToString::to_string),
            _ => None,
        }
    }

    /// Classifies a driver error; see the module docs of `store::sql`.
    pub fn store_error(error: sqlx::Error) -> StoreError {
        match error {
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(error.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }

    /// Runs an idempotent operation, once more if the first try failed on a dead connection:
    /// after a database restart every pooled connection is dead, and the first request on
    /// each would otherwise fail although the database is back.
    pub async fn retry_idempotent<T, F, Fut>(mut operation: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match operation().await {
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "pooled connection failed; retrying once on a new one");
                operation().await.map_err(store_error)
            }
            other => other.map_err(store_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_schema_plan_follows_ef_and_refuses_what_ef_would_break() {
        assert_eq!(
            schema_plan(false, false, false).unwrap(),
            SchemaPlan::Create
        );
        assert_eq!(schema_plan(true, true, true).unwrap(), SchemaPlan::UpToDate);
        assert_eq!(
            schema_plan(true, true, false).unwrap(),
            SchemaPlan::RecordMigration
        );
        for (a, k, r) in [
            (false, false, true),
            (true, false, false),
            (false, true, true),
        ] {
            assert!(
                matches!(schema_plan(a, k, r), Err(StoreError::Config(_))),
                "{a} {k} {r}"
            );
        }
    }

    #[test]
    fn dates_are_naive_utc_and_cut_to_microseconds() {
        let value = datetime!(2026-11-25 10:00:00.123_456_789 +02:00);
        assert_eq!(
            to_naive_utc_micros(value),
            datetime!(2026-11-25 08:00:00.123_456)
        );
        assert_eq!(
            from_naive_utc(datetime!(2026-11-25 08:00:00.5)),
            datetime!(2026-11-25 08:00:00.5 UTC)
        );
    }
}
