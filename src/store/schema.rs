//! Upstream's schema as EF Core's `Migrate()` treats it, for every SQL store (SQLite and the
//! SQL servers): what opening a database must do, and which columns must be there.
//!
//! Pure decisions, no I/O: each store reads its catalog and runs its own DDL.

use super::{Refusal, StoreError};

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
        (false, false) if migration_recorded => Err(Refusal::MigrationWithoutTables.into()),
        (false, false) => Ok(SchemaPlan::Create),
        (true, true) if migration_recorded => Ok(SchemaPlan::UpToDate),
        (true, true) => Ok(SchemaPlan::RecordMigration),
        _ => Err(Refusal::PartialSchema.into()),
    }
}

/// The type names a catalog reports for upstream's four kinds of column.
#[derive(Debug, Clone, Copy)]
pub struct ColumnTypes {
    integer: &'static str,
    guid: &'static str,
    text: &'static str,
    date: &'static str,
}

impl ColumnTypes {
    pub const fn new(
        integer: &'static str,
        guid: &'static str,
        text: &'static str,
        date: &'static str,
    ) -> Self {
        Self {
            integer,
            guid,
            text,
            date,
        }
    }

    /// Upstream's columns as `(table, column, type)`, with this catalog's type names.
    fn expected(&self) -> [(&'static str, &'static str, &'static str); 7] {
        [
            ("ApplicationDatas", "Id", self.integer),
            ("ApplicationDatas", "SymmetricKey", self.text),
            ("UserKeys", "Id", self.guid),
            ("UserKeys", "Key", self.text),
            ("UserKeys", "CreationDate", self.date),
            ("UserKeys", "RevisionDate", self.date),
            ("UserKeys", "LastAccessDate", self.date),
        ]
    }
}

/// Refuses a schema that lacks one of upstream's columns (with its type, compared
/// case-insensitively) among the `(table, column, type)` found.
pub fn check_columns(
    found: &[(String, String, String)],
    types: &ColumnTypes,
) -> Result<(), StoreError> {
    for (table, column, kind) in types.expected() {
        if !found
            .iter()
            .any(|(t, c, k)| t == table && c == column && k.eq_ignore_ascii_case(kind))
        {
            return Err(Refusal::ForeignColumn {
                table,
                column,
                kind,
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_missing_or_foreign_column_is_refused_by_name() {
        let types = ColumnTypes::new("int", "UUID", "text", "date");
        let mut found: Vec<_> = types
            .expected()
            .iter()
            .map(|(t, c, k)| (t.to_string(), c.to_string(), k.to_lowercase()))
            .collect();
        assert!(check_columns(&found, &types).is_ok());
        found[2].2 = "text".into();
        let error = check_columns(&found, &types).unwrap_err();
        assert_eq!(
            error.to_string(),
            "table `UserKeys` has no UUID column `Id`; this is not upstream's schema"
        );
    }
}
