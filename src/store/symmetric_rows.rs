//! The `ApplicationDatas` protocol, written once: which row holds the current symmetric key,
//! which the pending one, and what each change must write given the rows present.
//!
//! Rows are taken in `Id` order. The first row is the current key, the second the pending
//! key of an unfinished rotation; a NULL or empty `SymmetricKey` means "none". Upstream only
//! ever reads the first row, so whatever this service keeps in the second stays invisible to
//! an official instance. The JSON document has the same two places (`symmetricKey`,
//! `pendingSymmetricKey`) and follows the same plans.
//!
//! This module does no I/O. A backend implements [`SymmetricKeyRows`]: it reads the rows and,
//! under whatever lock makes the change atomic against other instances, applies the
//! [`RowWrite`]s that [`plan`] decides; [`crate::store::SymmetricKeyStore`] follows.

use async_trait::async_trait;

use super::{Refusal, StoreBackend, StoreError, SymmetricKeyStore};

/// One `ApplicationDatas` row: its id in the backend and its `SymmetricKey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow<Id> {
    pub id: Id,
    pub key: Option<String>,
}

/// A change a caller asks for, with the values it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRowChange {
    /// Save the first symmetric key unless there is one.
    InsertCurrentIfAbsent { wrapped: String },
    /// Swap the stored wrapping `expected` for `replacement` (same key, other RSA key).
    Replace {
        expected: String,
        replacement: String,
    },
    /// Save the key a rotation moves to unless one is pending.
    SavePendingIfAbsent { wrapped: String },
    /// Make the pending key current if the current one is still `expected_current`.
    PromotePending { expected_current: String },
}

/// One write a plan asks the backend to make, inside the same atomic section as the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowWrite<Id> {
    /// Append a row (it gets the next `Id`).
    Insert { key: String },
    /// Set the `SymmetricKey` of row `id`.
    Update { id: Id, key: String },
    /// Delete every row but `keep`.
    DeleteAllBut { keep: Id },
}

/// What a change answers: the key stored afterwards, or whether anything changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeAnswer {
    Stored(String),
    Changed(bool),
}

/// The writes a change needs and what it then answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<Id> {
    pub writes: Vec<RowWrite<Id>>,
    pub answer: ChangeAnswer,
}

impl<Id> Plan<Id> {
    fn nothing(answer: ChangeAnswer) -> Self {
        Self {
            writes: Vec::new(),
            answer,
        }
    }
}

/// A key that is there: not NULL, not empty.
fn present(key: Option<&String>) -> Option<&str> {
    key.map(String::as_str).filter(|k| !k.is_empty())
}

/// The current key of rows in `Id` order (the first row's).
pub fn current_key(keys: &[Option<String>]) -> Option<&str> {
    present(keys.first().and_then(Option::as_ref))
}

/// The pending key of rows in `Id` order (the second row's).
pub fn pending_key(keys: &[Option<String>]) -> Option<&str> {
    present(keys.get(1).and_then(Option::as_ref))
}

/// Decides what `change` writes into `rows` (all rows, in `Id` order).
pub fn plan<Id: Copy>(change: &KeyRowChange, rows: &[KeyRow<Id>]) -> Result<Plan<Id>, Refusal> {
    let key = |index: usize| present(rows.get(index).and_then(|row| row.key.as_ref()));
    Ok(match change {
        KeyRowChange::InsertCurrentIfAbsent { wrapped } => keep_or_write(rows.first(), wrapped),
        KeyRowChange::Replace {
            expected,
            replacement,
        } => {
            // Every row holding `expected`: an upstream race can leave the key twice.
            let writes: Vec<_> = rows
                .iter()
                .filter(|row| row.key.as_deref() == Some(expected.as_str()))
                .map(|row| RowWrite::Update {
                    id: row.id,
                    key: replacement.clone(),
                })
                .collect();
            let changed = !writes.is_empty();
            Plan {
                writes,
                answer: ChangeAnswer::Changed(changed),
            }
        }
        KeyRowChange::SavePendingIfAbsent { wrapped } => {
            if key(0).is_none() {
                return Err(Refusal::NoSymmetricKeyToRotate);
            }
            keep_or_write(rows.get(1), wrapped)
        }
        KeyRowChange::PromotePending { expected_current } => match (rows.first(), key(0), key(1)) {
            (Some(first), Some(current), Some(pending)) if current == expected_current => Plan {
                writes: vec![
                    RowWrite::Update {
                        id: first.id,
                        key: pending.to_owned(),
                    },
                    RowWrite::DeleteAllBut { keep: first.id },
                ],
                answer: ChangeAnswer::Changed(true),
            },
            _ => Plan::nothing(ChangeAnswer::Changed(false)),
        },
    })
}

/// The key at one place (`row`, or the place after the last row when `None`): kept if it
/// is there, else written into the row, else appended as a new row.
fn keep_or_write<Id: Copy>(row: Option<&KeyRow<Id>>, wrapped: &str) -> Plan<Id> {
    match (row, row.and_then(|row| present(row.key.as_ref()))) {
        (_, Some(existing)) => Plan::nothing(ChangeAnswer::Stored(existing.to_owned())),
        (Some(row), None) => stored_after(RowWrite::Update {
            id: row.id,
            key: wrapped.to_owned(),
        }),
        (None, None) => stored_after(RowWrite::Insert {
            key: wrapped.to_owned(),
        }),
    }
}

/// A single write, after which the written key is the one stored.
fn stored_after<Id>(write: RowWrite<Id>) -> Plan<Id> {
    let key = match &write {
        RowWrite::Insert { key } | RowWrite::Update { key, .. } => key.clone(),
        RowWrite::DeleteAllBut { .. } => String::new(),
    };
    Plan {
        writes: vec![write],
        answer: ChangeAnswer::Stored(key),
    }
}

/// The I/O a backend supplies for the symmetric-key protocol.
#[async_trait]
pub trait SymmetricKeyRows: StoreBackend {
    /// The `SymmetricKey` of every row, in `Id` order (no lock needed).
    async fn read_key_rows(&self) -> Result<Vec<Option<String>>, StoreError>;

    /// Under the backend's lock and atomically: reads the rows, asks [`plan`] what `change`
    /// writes, writes it, and returns the plan's answer.
    async fn change_key_rows(&self, change: KeyRowChange) -> Result<ChangeAnswer, StoreError>;
}

/// The key a change left stored.
fn stored(answer: Result<ChangeAnswer, StoreError>) -> Result<String, StoreError> {
    Ok(match answer? {
        ChangeAnswer::Stored(key) => key,
        ChangeAnswer::Changed(_) => String::new(),
    })
}

/// Whether a change changed anything.
fn changed(answer: Result<ChangeAnswer, StoreError>) -> Result<bool, StoreError> {
    Ok(matches!(answer?, ChangeAnswer::Changed(true)))
}

#[async_trait]
impl<S: SymmetricKeyRows> SymmetricKeyStore for S {
    async fn read_symmetric_key(&self) -> Result<Option<String>, StoreError> {
        Ok(current_key(&self.read_key_rows().await?).map(str::to_owned))
    }

    async fn insert_symmetric_key_if_absent(&self, wrapped: &str) -> Result<String, StoreError> {
        let wrapped = wrapped.to_owned();
        stored(
            self.change_key_rows(KeyRowChange::InsertCurrentIfAbsent { wrapped })
                .await,
        )
    }

    async fn replace_symmetric_key(
        &self,
        expected: &str,
        replacement: &str,
    ) -> Result<bool, StoreError> {
        let (expected, replacement) = (expected.to_owned(), replacement.to_owned());
        changed(
            self.change_key_rows(KeyRowChange::Replace {
                expected,
                replacement,
            })
            .await,
        )
    }

    async fn read_pending_symmetric_key(&self) -> Result<Option<String>, StoreError> {
        Ok(pending_key(&self.read_key_rows().await?).map(str::to_owned))
    }

    async fn save_pending_symmetric_key_if_absent(
        &self,
        wrapped: &str,
    ) -> Result<String, StoreError> {
        let wrapped = wrapped.to_owned();
        stored(
            self.change_key_rows(KeyRowChange::SavePendingIfAbsent { wrapped })
                .await,
        )
    }

    async fn promote_pending_symmetric_key(&self, current: &str) -> Result<bool, StoreError> {
        let expected_current = current.to_owned();
        changed(
            self.change_key_rows(KeyRowChange::PromotePending { expected_current })
                .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(keys: &[Option<&str>]) -> Vec<KeyRow<i64>> {
        keys.iter()
            .zip(1..)
            .map(|(key, id)| KeyRow {
                id,
                key: key.map(str::to_owned),
            })
            .collect()
    }

    fn update(id: i64, key: &str) -> RowWrite<i64> {
        RowWrite::Update {
            id,
            key: key.into(),
        }
    }

    fn insert_row(key: &str) -> RowWrite<i64> {
        RowWrite::Insert { key: key.into() }
    }

    fn stored_plan(writes: Vec<RowWrite<i64>>, key: &str) -> Plan<i64> {
        Plan {
            writes,
            answer: ChangeAnswer::Stored(key.into()),
        }
    }

    fn changed_plan(writes: Vec<RowWrite<i64>>) -> Plan<i64> {
        let changed = !writes.is_empty();
        Plan {
            writes,
            answer: ChangeAnswer::Changed(changed),
        }
    }

    /// Checks the plan of `change` for each `(rows present, expected plan)`.
    fn plans(change: KeyRowChange, cases: Vec<(Vec<KeyRow<i64>>, Plan<i64>)>) {
        for (present, expected) in cases {
            assert_eq!(plan(&change, &present).unwrap(), expected, "{present:?}");
        }
    }

    #[test]
    fn the_first_row_is_current_the_second_pending_and_empty_is_none() {
        let keys = |k: &[Option<&str>]| k.iter().map(|k| k.map(str::to_owned)).collect::<Vec<_>>();
        assert_eq!(current_key(&keys(&[])), None);
        assert_eq!(current_key(&keys(&[Some("a"), Some("b")])), Some("a"));
        assert_eq!(current_key(&keys(&[Some(""), Some("b")])), None);
        assert_eq!(pending_key(&keys(&[Some("a")])), None);
        assert_eq!(pending_key(&keys(&[Some("a"), Some("b")])), Some("b"));
        assert_eq!(pending_key(&keys(&[Some("a"), None, Some("c")])), None);
    }

    #[test]
    fn insert_if_absent_inserts_fills_an_empty_first_row_or_keeps_the_key() {
        plans(
            KeyRowChange::InsertCurrentIfAbsent {
                wrapped: "new".into(),
            },
            vec![
                (rows(&[]), stored_plan(vec![insert_row("new")], "new")),
                (rows(&[None]), stored_plan(vec![update(1, "new")], "new")),
                (
                    rows(&[Some("")]),
                    stored_plan(vec![update(1, "new")], "new"),
                ),
                (
                    rows(&[Some("old"), Some("other")]),
                    stored_plan(vec![], "old"),
                ),
            ],
        );
    }

    #[test]
    fn replace_swaps_every_row_holding_the_expected_wrapping() {
        let change = KeyRowChange::Replace {
            expected: "old".into(),
            replacement: "new".into(),
        };
        plans(
            change,
            vec![
                (
                    rows(&[Some("old"), Some("p"), Some("old")]),
                    changed_plan(vec![update(1, "new"), update(3, "new")]),
                ),
                (rows(&[Some("other")]), changed_plan(vec![])),
            ],
        );
    }

    #[test]
    fn a_pending_key_needs_a_current_one_and_is_saved_once() {
        let change = KeyRowChange::SavePendingIfAbsent {
            wrapped: "p".into(),
        };
        for no_current in [rows(&[]), rows(&[None]), rows(&[Some(""), Some("p")])] {
            assert!(matches!(
                plan(&change, &no_current),
                Err(Refusal::NoSymmetricKeyToRotate)
            ));
        }
        plans(
            change,
            vec![
                (rows(&[Some("c")]), stored_plan(vec![insert_row("p")], "p")),
                (
                    rows(&[Some("c"), None]),
                    stored_plan(vec![update(2, "p")], "p"),
                ),
                (
                    rows(&[Some("c"), Some("earlier")]),
                    stored_plan(vec![], "earlier"),
                ),
            ],
        );
    }

    #[test]
    fn promotion_moves_the_pending_key_into_the_first_row_only_if_current_is_expected() {
        let promoted = vec![update(1, "p"), RowWrite::DeleteAllBut { keep: 1 }];
        plans(
            KeyRowChange::PromotePending {
                expected_current: "c".into(),
            },
            vec![
                (
                    rows(&[Some("c"), Some("p"), Some("x")]),
                    changed_plan(promoted),
                ),
                (rows(&[Some("other"), Some("p")]), changed_plan(vec![])),
                (rows(&[Some("c")]), changed_plan(vec![])),
                (rows(&[Some("c"), Some("")]), changed_plan(vec![])),
                (rows(&[]), changed_plan(vec![])),
            ],
        );
    }
}
