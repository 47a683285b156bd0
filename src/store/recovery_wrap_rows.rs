//! The recovery-wrap rules every backend shares, written once: one wrap per symmetric key
//! (a save replaces the wrap of the same key check), a retain deletes the wraps of every
//! other key, a change that would leave the wraps as they are writes nothing, and only a
//! change that adds a wrap may create the table (or JSON property), so that a database
//! without a recovery key stays exactly as upstream made it.
//!
//! This module does no I/O. A backend implements [`RecoveryWrapRows`]: it reads the wraps
//! and, atomically, applies the [`WrapWrite`]s that [`plan`] decides;
//! [`crate::store::RecoveryWrapStore`] follows.

use async_trait::async_trait;

use super::{RecoveryWrapStore, StoreBackend, StoreError, StoredRecoveryWrap};

/// A change a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrapChange {
    /// Store this wrap in place of any wrap of the same symmetric key.
    Save(StoredRecoveryWrap),
    /// Keep only the wraps of these key checks.
    Retain(Vec<String>),
}

impl WrapChange {
    /// Whether the change may add a wrap, and so needs the table to exist. One that does
    /// not has nothing to do where there is no table.
    pub fn adds_a_wrap(&self) -> bool {
        matches!(self, WrapChange::Save(_))
    }
}

/// One write a plan asks the backend to make, in the same atomic section as the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrapWrite {
    /// Delete every wrap of this key check.
    Delete { key_check: String },
    /// Add this wrap (no wrap of its key check is left by then).
    Insert(StoredRecoveryWrap),
}

/// Decides what `change` writes, given every stored wrap.
pub fn plan(change: &WrapChange, stored: &[StoredRecoveryWrap]) -> Vec<WrapWrite> {
    match change {
        WrapChange::Save(wrap) => {
            let same_key: Vec<_> = stored
                .iter()
                .filter(|s| s.key_check == wrap.key_check)
                .collect();
            match same_key.as_slice() {
                [only] if *only == wrap => Vec::new(),
                [] => vec![WrapWrite::Insert(wrap.clone())],
                _ => vec![
                    WrapWrite::Delete {
                        key_check: wrap.key_check.clone(),
                    },
                    WrapWrite::Insert(wrap.clone()),
                ],
            }
        }
        WrapChange::Retain(keep) => {
            let mut forget: Vec<&str> = stored
                .iter()
                .map(|s| s.key_check.as_str())
                .filter(|check| !keep.iter().any(|k| k == check))
                .collect();
            forget.sort_unstable();
            forget.dedup();
            forget
                .into_iter()
                .map(|key_check| WrapWrite::Delete {
                    key_check: key_check.to_owned(),
                })
                .collect()
        }
    }
}

/// Applies `writes` to wraps held in memory (the JSON document's array).
pub fn apply(wraps: &mut Vec<StoredRecoveryWrap>, writes: &[WrapWrite]) {
    for write in writes {
        match write {
            WrapWrite::Delete { key_check } => wraps.retain(|w| &w.key_check != key_check),
            WrapWrite::Insert(wrap) => wraps.push(wrap.clone()),
        }
    }
}

/// A wrap from its three stored columns: key check, fingerprint, wrapped key.
pub fn from_columns(
    (key_check, fingerprint, wrapped_key): (String, String, String),
) -> StoredRecoveryWrap {
    StoredRecoveryWrap {
        key_check,
        fingerprint,
        wrapped_key,
    }
}

/// The I/O a backend supplies for the recovery wraps.
#[async_trait]
pub trait RecoveryWrapRows: StoreBackend {
    /// Every stored wrap (no lock needed); none while there is no table (or property).
    async fn read_wrap_rows(&self) -> Result<Vec<StoredRecoveryWrap>, StoreError>;

    /// Atomically: creates the table first if [`WrapChange::adds_a_wrap`], reads the wraps,
    /// asks [`plan`] what `change` writes and writes it, durably.
    async fn change_wrap_rows(&self, change: WrapChange) -> Result<(), StoreError>;
}

#[async_trait]
impl<S: RecoveryWrapRows> RecoveryWrapStore for S {
    async fn read_recovery_wraps(&self) -> Result<Vec<StoredRecoveryWrap>, StoreError> {
        let mut wraps = self.read_wrap_rows().await?;
        wraps.sort_by(|a, b| a.key_check.cmp(&b.key_check));
        Ok(wraps)
    }

    async fn save_recovery_wrap(&self, wrap: &StoredRecoveryWrap) -> Result<(), StoreError> {
        self.change_wrap_rows(WrapChange::Save(wrap.clone())).await
    }

    async fn retain_recovery_wraps(&self, keep: &[String]) -> Result<(), StoreError> {
        self.change_wrap_rows(WrapChange::Retain(keep.to_vec()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(check: &str, wrapped: &str) -> StoredRecoveryWrap {
        StoredRecoveryWrap {
            key_check: check.into(),
            fingerprint: "f".into(),
            wrapped_key: wrapped.into(),
        }
    }

    fn delete(check: &str) -> WrapWrite {
        WrapWrite::Delete {
            key_check: check.into(),
        }
    }

    #[test]
    fn a_save_adds_replaces_or_keeps_the_wrap_of_its_symmetric_key() {
        let new = wrap("a", "2");
        let save = WrapChange::Save(new.clone());
        assert_eq!(plan(&save, &[]), [WrapWrite::Insert(new.clone())]);
        assert_eq!(
            plan(&save, &[wrap("b", "1")]),
            [WrapWrite::Insert(new.clone())]
        );
        let replaced = [delete("a"), WrapWrite::Insert(new.clone())];
        assert_eq!(plan(&save, &[wrap("a", "1"), wrap("b", "1")]), replaced);
        assert_eq!(plan(&save, &[new.clone(), new.clone()]), replaced);
        assert!(plan(&save, &[wrap("b", "1"), new.clone()]).is_empty());
        assert!(save.adds_a_wrap());
    }

    #[test]
    fn a_retain_deletes_every_other_key_once_and_never_needs_the_table() {
        let retain = WrapChange::Retain(vec!["a".into()]);
        let stored = [
            wrap("c", "1"),
            wrap("a", "1"),
            wrap("b", "1"),
            wrap("c", "2"),
        ];
        assert_eq!(plan(&retain, &stored), [delete("b"), delete("c")]);
        assert!(plan(&retain, &[wrap("a", "1")]).is_empty());
        assert!(plan(&retain, &[]).is_empty());
        assert!(!retain.adds_a_wrap());
    }

    #[test]
    fn applied_in_memory_a_plan_leaves_one_wrap_per_key() {
        let mut wraps = vec![wrap("a", "1"), wrap("b", "1")];
        let save = WrapChange::Save(wrap("a", "2"));
        let writes = plan(&save, &wraps);
        apply(&mut wraps, &writes);
        assert_eq!(wraps, [wrap("b", "1"), wrap("a", "2")]);
        let writes = plan(&WrapChange::Retain(vec!["a".into()]), &wraps);
        apply(&mut wraps, &writes);
        assert_eq!(wraps, [wrap("a", "2")]);
    }
}
