//! The `json` store: upstream's single JSON document.
//!
//! Placeholder: see the stores work item.

use std::path::Path;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{CreateOutcome, PutOutcome, StoreError, StoredUserKey, UserKeyStore};

pub struct JsonFileStore;

impl JsonFileStore {
    pub async fn open(_path: &Path) -> Result<Self, StoreError> {
        Err(StoreError::Config("the json store is not built yet".into()))
    }
}

#[async_trait]
impl UserKeyStore for JsonFileStore {
    fn kind(&self) -> &'static str {
        "json"
    }
    async fn read_symmetric_key(&self) -> Result<Option<String>, StoreError> {
        unimplemented!()
    }
    async fn insert_symmetric_key_if_absent(&self, _wrapped: &str) -> Result<String, StoreError> {
        unimplemented!()
    }
    async fn read_user_key(&self, _id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        unimplemented!()
    }
    async fn create_user_key(&self, _key: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
        unimplemented!()
    }
    async fn put_user_key(
        &self,
        _id: Uuid,
        _sealed_key: &str,
        _now: OffsetDateTime,
    ) -> Result<PutOutcome, StoreError> {
        unimplemented!()
    }
    async fn record_last_access(
        &self,
        _accesses: &[(Uuid, OffsetDateTime)],
    ) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn list_user_keys(&self) -> Result<Vec<StoredUserKey>, StoreError> {
        unimplemented!()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn close(&self) {}
}
