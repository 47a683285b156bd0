//! What the SQL server stores (PostgreSQL, MySQL/MariaDB, SQL Server) share: deadlines, date
//! conversion, the bootstrap lock's name and the rule for a `UserKeys` row without a key.
//!
//! A database that does not answer in time is [`StoreError::Unavailable`], which the API
//! turns into 503 with `Retry-After`, never into "no key".

use std::future::Future;
use std::time::Duration;

use time::{OffsetDateTime, PrimitiveDateTime};

use super::StoreError;
use crate::config::SqlConnection;

/// The lock name or number every instance of this service (of any version) uses to
/// serialise schema creation and symmetric-key creation on one database.
pub const BOOTSTRAP_LOCK_NAME: &str = "bitwarden-key-connector-bootstrap";

/// How long an instance waits for another one holding the bootstrap lock.
pub const BOOTSTRAP_LOCK_WAIT: Duration = Duration::from_secs(30);

/// The bootstrap lock was not granted in time: another instance holds it.
pub fn lock_not_granted(name: &str) -> StoreError {
    StoreError::unavailable_because(format!(
        "another instance held the `{name}` lock for over {} s",
        BOOTSTRAP_LOCK_WAIT.as_secs()
    ))
}

/// Runs `operation` with the deadline the connection string allows; a database that does
/// not answer in time is unavailable.
pub async fn with_deadline<T>(
    deadline: Duration,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, operation).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::unavailable_because(format!(
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
        .ok_or_else(|| StoreError::corrupt(format!("the UserKeys row of {id} has no key")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

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
