//! The `json` store: upstream's single JSON document.
//!
//! The file keeps the exact shape upstream's JsonFlatFileDataStore writes (lower camel case,
//! two-space indentation):
//! `{"symmetricKey": "...", "userKey": [{"id": "<guid>", "key": "...", "creationDate": "...",
//! "revisionDate": null, "lastAccessDate": null}]}` with lower-case GUIDs and ISO dates.
//! Property names are read case-insensitively and unknown properties are preserved.
//!
//! Durability: every change writes a temporary file in the same directory, fsyncs it, renames
//! it over the document and fsyncs the directory, so the file is always either the old or
//! the new complete document, even after `kill -9` or power loss.
//!
//! Several processes: each change holds an exclusive advisory lock on `<file>.lock`, and
//! inside it re-reads the document if another process replaced it since this one last read
//! it (compared by inode, size and modification time). So two processes never silently
//! overwrite each other's keys. Reads use the in-memory copy after the same freshness check.
//!
//! Reads never wait for a write in progress: each write publishes a new immutable snapshot
//! (document plus a GUID index) once its file is on disk, and a read that finds the file
//! unchanged since the current snapshot answers from it on the calling thread.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::recovery_wrap_rows::{RecoveryWrapRows, WrapChange, apply, plan as wrap_plan};
use super::symmetric_rows::{ChangeAnswer, KeyRow, KeyRowChange, RowWrite, SymmetricKeyRows, plan};
use super::user_key_rows::{KeyReplacement, LastAccess, Reseal, UserKeyRows};
use super::{
    CreateOutcome, Fault, MissingDatabase, NamedBy, PropertyStore, Refusal, StoreBackend,
    StoreError, StoredRecoveryWrap, StoredUserKey,
};
use crate::dotnet_time;
use crate::private_file::owner_only;

/// The setting naming the service's JSON document.
const SETTING: &str = "keyConnectorSettings__database__jsonFilePath";

/// How long a change waits for another process's lock before answering 503.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct JsonFileStore {
    path: PathBuf,
    inner: Arc<Mutex<JsonFile>>,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
}

/// The document in memory and what the file looked like when it was read.
struct JsonFile {
    path: PathBuf,
    lock_path: PathBuf,
    document: Map<String, Value>,
    seen: Option<FileIdentity>,
    published: Arc<RwLock<Arc<Snapshot>>>,
    /// Opened only to be read (a backup being checked): changes are refused, and the lock
    /// file is never created.
    read_only: bool,
}

/// What reads answer from: the document as of `seen`, with an index of its entries.
#[derive(Default)]
struct Snapshot {
    document: Map<String, Value>,
    index: HashMap<Uuid, usize>,
    seen: Option<FileIdentity>,
}

impl Snapshot {
    fn of(document: &Map<String, Value>, seen: Option<FileIdentity>) -> Self {
        // An id may stand twice (upstream's racy POST writes such files): the first entry
        // is the one upstream reads and the one every change here updates.
        let mut index = HashMap::new();
        for (i, item) in user_keys(document).iter().enumerate() {
            if let Some(id) = item_id(item) {
                index.entry(id).or_insert(i);
            }
        }
        Self {
            document: document.clone(),
            index,
            seen,
        }
    }

    fn user_key(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        self.index
            .get(&id)
            .map(|i| parse_item(&user_keys(&self.document)[*i]))
            .transpose()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(Self {
                #[cfg(unix)]
                inode: std::os::unix::fs::MetadataExt::ino(&meta),
                #[cfg(not(unix))]
                inode: 0,
                len: meta.len(),
                modified: meta.modified().ok(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn io_unavailable(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Unavailable(Fault::caused(path.display().to_string(), error))
}

impl JsonFileStore {
    /// Opens the document. A missing file is created as `{}` (as upstream does, which also
    /// proves the directory is writable), or refused, as `missing` says.
    pub async fn open(path: &Path, missing: MissingDatabase) -> Result<Self, StoreError> {
        Self::open_as(path, false, missing, NamedBy::Setting).await
    }

    /// Opens an existing document only to read it (a backup or a restored copy being
    /// checked): nothing is created, locked or written, and every change is refused. A
    /// refusal names `named_by` as the origin of the file.
    pub async fn open_read_only(path: &Path, named_by: NamedBy) -> Result<Self, StoreError> {
        Self::open_as(path, true, MissingDatabase::Refuse, named_by).await
    }

    async fn open_as(
        path: &Path,
        read_only: bool,
        missing: MissingDatabase,
        named_by: NamedBy,
    ) -> Result<Self, StoreError> {
        let snapshot = Arc::new(RwLock::new(Arc::new(Snapshot::default())));
        let published = Arc::clone(&snapshot);
        let owned = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || {
            JsonFile::open(owned, published, read_only, missing, named_by)
        })
        .await
        .map_err(StoreError::unavailable)??;
        Ok(Self {
            path: path.to_path_buf(),
            inner: Arc::new(Mutex::new(file)),
            snapshot,
        })
    }

    /// The current snapshot if the file has not changed since it was taken; otherwise
    /// re-reads the file (on the blocking pool) first.
    async fn fresh_snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        let current = FileIdentity::of(&self.path).map_err(|e| io_unavailable(&self.path, e))?;
        {
            let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
            if snapshot.seen == current && current.is_some() {
                return Ok(Arc::clone(&snapshot));
            }
        }
        self.with_file(|file| file.refresh()).await?;
        Ok(Arc::clone(
            &self.snapshot.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    /// Runs `f` on the file state on a blocking thread.
    async fn with_file<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut JsonFile) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut file = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut file)
        })
        .await
        .map_err(|e| StoreError::Unavailable(Fault::caused("JSON store task failed", e)))?
    }
}

/// A held `<file>.lock`; released on drop.
struct ProcessLock(File);

impl Drop for ProcessLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl JsonFile {
    fn open(
        path: PathBuf,
        published: Arc<RwLock<Arc<Snapshot>>>,
        read_only: bool,
        missing: MissingDatabase,
        named_by: NamedBy,
    ) -> Result<Self, StoreError> {
        let lock_path = lock_path_of(&path);
        let mut file = Self {
            path,
            lock_path,
            document: Map::new(),
            seen: None,
            published,
            read_only,
        };
        // Refused before the lock, whose file would be left behind.
        if (read_only || missing == MissingDatabase::Refuse) && file.current_identity()?.is_none() {
            return Err(Refusal::NoDatabase {
                database: file.path.display().to_string(),
                origin: named_by.origin(SETTING),
            }
            .into());
        }
        // A read-only reader needs no lock: every change replaces the file by a rename, so
        // any read sees one complete document.
        let _lock = if read_only { None } else { Some(file.lock()?) };
        if file.current_identity()?.is_none() {
            file.write_document(Map::new())?;
            tracing::info!(path = %file.path.display(), "created an empty JSON key store");
        } else {
            file.reload().map_err(|e| match e {
                StoreError::Corrupt(fault) => StoreError::Config(Refusal::UnreadableFile {
                    fault,
                    origin: named_by.origin(SETTING),
                }),
                other => other,
            })?;
        }
        Ok(file)
    }

    fn current_identity(&self) -> Result<Option<FileIdentity>, StoreError> {
        FileIdentity::of(&self.path).map_err(|e| io_unavailable(&self.path, e))
    }

    /// Takes the cross-process lock, waiting at most [`LOCK_TIMEOUT`].
    fn lock(&self) -> Result<ProcessLock, StoreError> {
        take_process_lock(&self.lock_path)
    }

    /// Re-reads the file if it changed since it was last read.
    fn refresh(&mut self) -> Result<(), StoreError> {
        if self.current_identity()? != self.seen {
            self.reload()?;
        }
        Ok(())
    }

    fn reload(&mut self) -> Result<(), StoreError> {
        let before = self.current_identity()?;
        let bytes = std::fs::read(&self.path).map_err(|e| io_unavailable(&self.path, e))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Corrupt(Fault::caused(
                format!("{} is not valid JSON", self.path.display()),
                e,
            ))
        })?;
        let Value::Object(document) = value else {
            return Err(StoreError::corrupt(format!(
                "{} is not a JSON object",
                self.path.display()
            )));
        };
        check_shape(&document)
            .map_err(|m| StoreError::corrupt(format!("{}: {m}", self.path.display())))?;
        self.document = document;
        self.seen = before;
        self.publish();
        Ok(())
    }

    /// Makes the current document what reads see.
    fn publish(&self) {
        let snapshot = Arc::new(Snapshot::of(&self.document, self.seen));
        *self.published.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    /// Replaces the file atomically and durably with `document`.
    fn write_document(&mut self, document: Map<String, Value>) -> Result<(), StoreError> {
        let directory = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut text = serde_json::to_string_pretty(&Value::Object(document.clone()))
            .map_err(StoreError::corrupt_from)?;
        text.push('\n');
        let temp_path = directory.join(format!(
            ".{}.{}.tmp",
            self.path.file_name().unwrap_or_default().to_string_lossy(),
            Uuid::new_v4().simple()
        ));
        let result = (|| -> std::io::Result<()> {
            let mut temp =
                owner_only(OpenOptions::new().write(true).create_new(true)).open(&temp_path)?;
            if let Ok(meta) = std::fs::metadata(&self.path) {
                temp.set_permissions(meta.permissions())?;
            }
            temp.write_all(text.as_bytes())?;
            temp.sync_all()?;
            drop(temp);
            std::fs::rename(&temp_path, &self.path)?;
            File::open(&directory)?.sync_all()?;
            Ok(())
        })();
        if let Err(error) = result {
            let _ = std::fs::remove_file(&temp_path);
            return Err(io_unavailable(&self.path, error));
        }
        self.document = document;
        self.seen = self.current_identity()?;
        self.publish();
        Ok(())
    }

    /// Runs a change under the cross-process lock on the freshest document. `change` returns
    /// `None` to leave the file untouched.
    fn change<T>(
        &mut self,
        change: impl FnOnce(&mut Map<String, Value>) -> Result<(Option<()>, T), StoreError>,
    ) -> Result<T, StoreError> {
        if self.read_only {
            return Err(Refusal::Unusable(Fault::new(format!(
                "{} was opened only to be read",
                self.path.display()
            )))
            .into());
        }
        let _lock = self.lock()?;
        self.reload_if_changed_or_missing()?;
        let mut document = self.document.clone();
        let (write, result) = change(&mut document)?;
        if write.is_some() {
            self.write_document(document)?;
        }
        Ok(result)
    }

    fn reload_if_changed_or_missing(&mut self) -> Result<(), StoreError> {
        if self.current_identity()?.is_none() {
            return Err(StoreError::unavailable_because(format!(
                "{} has disappeared",
                self.path.display()
            )));
        }
        self.refresh()
    }
}

/// `<file>.lock`, the lock every process changing `path` holds.
fn lock_path_of(path: &Path) -> PathBuf {
    let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
    lock_name.push(".lock");
    path.with_file_name(lock_name)
}

/// Takes the cross-process lock at `lock_path`, waiting at most [`LOCK_TIMEOUT`].
fn take_process_lock(lock_path: &Path) -> Result<ProcessLock, StoreError> {
    let file = owner_only(OpenOptions::new().create(true).truncate(false).write(true))
        .open(lock_path)
        .map_err(|e| io_unavailable(lock_path, e))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(ProcessLock(file)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::unavailable_because(format!(
                    "another process holds {} for too long",
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_unavailable(lock_path, e));
            }
        }
    }
}

/// The document's bytes as they are now, read under the lock every writer holds, so the
/// copy is one complete document that no change of any process was half-way through (for
/// `backup`). Blocking; the file must exist.
pub fn read_document_locked(path: &Path) -> Result<Vec<u8>, StoreError> {
    let _lock = take_process_lock(&lock_path_of(path))?;
    std::fs::read(path).map_err(|e| io_unavailable(path, e))
}

/// The document's structure is upstream's: an object with an optional string
/// `symmetricKey` and an optional array `userKey` of objects.
fn check_shape(document: &Map<String, Value>) -> Result<(), String> {
    match get_ci(document, "symmetricKey") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => return Err("`symmetricKey` is not a string".into()),
    }
    match get_ci(document, "userKey") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            if !items.iter().all(Value::is_object) {
                return Err("`userKey` holds something that is not an object".into());
            }
        }
        Some(_) => return Err("`userKey` is not an array".into()),
    }
    Ok(())
}

/// Where a symmetric-key rotation keeps its new key. Not upstream's: it ignores it.
const PENDING_KEY: &str = "pendingSymmetricKey";

/// The document's two places for a wrapped symmetric key, as the rows of
/// [`super::symmetric_rows`] see them: `symmetricKey` first, `pendingSymmetricKey` second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySlot {
    Current,
    Pending,
}

impl KeySlot {
    fn property(self) -> &'static str {
        match self {
            KeySlot::Current => "symmetricKey",
            KeySlot::Pending => PENDING_KEY,
        }
    }
}

/// The wrapped key at `property`, if it is a string.
fn wrapped_key(document: &Map<String, Value>, property: &str) -> Option<String> {
    get_ci(document, property)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The slots present, as rows: the current one whenever either is there.
fn key_rows(document: &Map<String, Value>) -> Vec<KeyRow<KeySlot>> {
    let current = wrapped_key(document, KeySlot::Current.property());
    let pending = wrapped_key(document, KeySlot::Pending.property());
    let mut rows = Vec::new();
    if current.is_some() || pending.is_some() {
        rows.push(KeyRow {
            id: KeySlot::Current,
            key: current,
        });
    }
    if pending.is_some() {
        rows.push(KeyRow {
            id: KeySlot::Pending,
            key: pending,
        });
    }
    rows
}

/// Applies a planned write; an inserted row takes the first slot not in `rows`.
fn write_key_row(
    document: &mut Map<String, Value>,
    rows: &[KeyRow<KeySlot>],
    write: &RowWrite<KeySlot>,
) {
    match write {
        RowWrite::Insert { key } => {
            let slot = if rows.is_empty() {
                KeySlot::Current
            } else {
                KeySlot::Pending
            };
            set_ci(document, slot.property(), Value::String(key.clone()));
        }
        RowWrite::Update { id, key } => {
            set_ci(document, id.property(), Value::String(key.clone()));
        }
        RowWrite::DeleteAllBut { keep } => {
            for slot in [KeySlot::Current, KeySlot::Pending] {
                if slot != *keep
                    && let Some(name) = document
                        .keys()
                        .find(|k| k.eq_ignore_ascii_case(slot.property()))
                        .cloned()
                {
                    document.shift_remove(&name);
                }
            }
        }
    }
}

/// A property by name, case-insensitively (as upstream's reader binds them).
fn get_ci<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Sets a property under its canonical camelCase name, replacing any other spelling.
fn set_ci(map: &mut Map<String, Value>, name: &str, value: Value) {
    if let Some(existing) = map
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name) && *k != name)
        .cloned()
    {
        map.shift_remove(&existing);
    }
    map.insert(name.to_owned(), value);
}

fn user_keys(document: &Map<String, Value>) -> &[Value] {
    match get_ci(document, "userKey") {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

fn user_keys_mut(document: &mut Map<String, Value>) -> &mut Vec<Value> {
    if !matches!(get_ci(document, "userKey"), Some(Value::Array(_))) {
        set_ci(document, "userKey", Value::Array(Vec::new()));
    }
    let name = document
        .keys()
        .find(|k| k.eq_ignore_ascii_case("userKey"))
        .cloned()
        .unwrap_or_else(|| "userKey".into());
    match document.get_mut(&name) {
        Some(Value::Array(items)) => items,
        _ => unreachable!("userKey was just made an array"),
    }
}

fn item_id(item: &Value) -> Option<Uuid> {
    item.as_object()
        .and_then(|o| get_ci(o, "id"))
        .and_then(Value::as_str)
        .and_then(|s| Uuid::try_parse(s).ok())
}

fn position(document: &Map<String, Value>, id: Uuid) -> Option<usize> {
    user_keys(document)
        .iter()
        .position(|item| item_id(item) == Some(id))
}

/// The entry of user `id`, to change in place.
fn item_mut(document: &mut Map<String, Value>, id: Uuid) -> Option<&mut Map<String, Value>> {
    let index = position(document, id)?;
    user_keys_mut(document).get_mut(index)?.as_object_mut()
}

fn date_value(date: Option<OffsetDateTime>) -> Value {
    date.map_or(Value::Null, |d| {
        Value::String(dotnet_time::format_iso_utc(d))
    })
}

fn parse_item(item: &Value) -> Result<StoredUserKey, StoreError> {
    let object = item
        .as_object()
        .ok_or_else(|| StoreError::corrupt("a userKey entry is not an object"))?;
    let id =
        item_id(item).ok_or_else(|| StoreError::corrupt("a userKey entry has no GUID `id`"))?;
    let corrupt = |what: &str| StoreError::corrupt(format!("userKey {id}: {what}"));
    let sealed_key = get_ci(object, "key")
        .and_then(Value::as_str)
        .ok_or_else(|| corrupt("`key` is missing"))?
        .to_owned();
    let date = |name: &str| -> Result<Option<OffsetDateTime>, StoreError> {
        match get_ci(object, name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => dotnet_time::parse(text)
                .map(Some)
                .map_err(|e| corrupt(&format!("`{name}`: {e}"))),
            Some(_) => Err(corrupt(&format!("`{name}` is not a date"))),
        }
    };
    Ok(StoredUserKey {
        id,
        sealed_key,
        creation_date: date("creationDate")?.ok_or_else(|| corrupt("`creationDate` is missing"))?,
        revision_date: date("revisionDate")?,
        last_access_date: date("lastAccessDate")?,
    })
}

/// A new entry in upstream's property order.
fn new_item(key: &StoredUserKey) -> Value {
    let mut item = Map::new();
    item.insert("id".into(), Value::String(key.id.hyphenated().to_string()));
    item.insert("key".into(), Value::String(key.sealed_key.clone()));
    item.insert(
        "creationDate".into(),
        Value::String(dotnet_time::format_iso_utc(key.creation_date)),
    );
    item.insert("revisionDate".into(), date_value(key.revision_date));
    item.insert("lastAccessDate".into(), date_value(key.last_access_date));
    Value::Object(item)
}

#[async_trait]
impl StoreBackend for JsonFileStore {
    fn kind(&self) -> &'static str {
        "json"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_file(|file| file.current_identity().map(|_| ()))
            .await
    }

    async fn close(&self) {}
}

#[async_trait]
impl SymmetricKeyRows for JsonFileStore {
    async fn read_key_rows(&self) -> Result<Vec<Option<String>>, StoreError> {
        let snapshot = self.fresh_snapshot().await?;
        Ok(key_rows(&snapshot.document)
            .into_iter()
            .map(|row| row.key)
            .collect())
    }

    async fn change_key_rows(&self, change: KeyRowChange) -> Result<ChangeAnswer, StoreError> {
        self.with_file(move |file| {
            file.change(|document| {
                let rows = key_rows(document);
                let plan = plan(&change, &rows)?;
                for write in &plan.writes {
                    write_key_row(document, &rows, write);
                }
                let write = (!plan.writes.is_empty()).then_some(());
                Ok((write, plan.answer))
            })
        })
        .await
    }
}

/// Where the recovery wraps are kept: a top-level array of `{keyCheck, fingerprint,
/// wrappedKey}`. Not upstream's: its JsonFlatFileDataStore keeps top-level properties it
/// does not know when it rewrites the file (it writes back the whole document it read),
/// and the names are already the lower camel case it would give them.
const RECOVERY_WRAPS: &str = "recoveryKeyWraps";

fn recovery_wraps(document: &Map<String, Value>) -> Result<Vec<StoredRecoveryWrap>, StoreError> {
    let items = match get_ci(document, RECOVERY_WRAPS) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(StoreError::corrupt(format!(
                "`{RECOVERY_WRAPS}` is not an array"
            )));
        }
    };
    items
        .iter()
        .map(|item| {
            let field = |name: &str| {
                item.as_object()
                    .and_then(|object| get_ci(object, name))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        StoreError::corrupt(format!(
                            "an entry of `{RECOVERY_WRAPS}` has no string `{name}`"
                        ))
                    })
            };
            Ok(StoredRecoveryWrap {
                key_check: field("keyCheck")?,
                fingerprint: field("fingerprint")?,
                wrapped_key: field("wrappedKey")?,
            })
        })
        .collect()
}

fn set_recovery_wraps(document: &mut Map<String, Value>, wraps: &[StoredRecoveryWrap]) {
    let items = wraps
        .iter()
        .map(|wrap| {
            let mut item = Map::new();
            item.insert("keyCheck".into(), Value::String(wrap.key_check.clone()));
            item.insert(
                "fingerprint".into(),
                Value::String(wrap.fingerprint.clone()),
            );
            item.insert("wrappedKey".into(), Value::String(wrap.wrapped_key.clone()));
            Value::Object(item)
        })
        .collect();
    set_ci(document, RECOVERY_WRAPS, Value::Array(items));
}

#[async_trait]
impl RecoveryWrapRows for JsonFileStore {
    async fn read_wrap_rows(&self) -> Result<Vec<StoredRecoveryWrap>, StoreError> {
        recovery_wraps(&self.fresh_snapshot().await?.document)
    }

    async fn change_wrap_rows(&self, change: WrapChange) -> Result<(), StoreError> {
        self.with_file(move |file| {
            file.change(|document| {
                let mut wraps = recovery_wraps(document)?;
                let writes = wrap_plan(&change, &wraps);
                if writes.is_empty() {
                    return Ok((None, ()));
                }
                apply(&mut wraps, &writes);
                set_recovery_wraps(document, &wraps);
                Ok((Some(()), ()))
            })
        })
        .await
    }
}

/// Where this service's properties are kept: a top-level object of strings, kept by
/// upstream's reader as the recovery wraps are.
const PROPERTIES: &str = "keyConnectorProperties";

fn property(document: &Map<String, Value>, name: &str) -> Result<Option<String>, StoreError> {
    match get_ci(document, PROPERTIES) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(properties)) => match get_ci(properties, name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.clone())),
            Some(_) => Err(StoreError::corrupt(format!(
                "`{PROPERTIES}.{name}` is not a string"
            ))),
        },
        Some(_) => Err(StoreError::corrupt(format!(
            "`{PROPERTIES}` is not an object"
        ))),
    }
}

#[async_trait]
impl PropertyStore for JsonFileStore {
    async fn read_property(&self, name: &str) -> Result<Option<String>, StoreError> {
        property(&self.fresh_snapshot().await?.document, name)
    }

    async fn write_property(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        let (name, value) = (name.to_owned(), value.map(str::to_owned));
        self.with_file(move |file| {
            file.change(|document| {
                if property(document, &name)? == value {
                    return Ok((None, ()));
                }
                let mut properties = match get_ci(document, PROPERTIES) {
                    Some(Value::Object(properties)) => properties.clone(),
                    _ => Map::new(),
                };
                match value {
                    Some(value) => set_ci(&mut properties, &name, Value::String(value)),
                    None => properties.retain(|key, _| !key.eq_ignore_ascii_case(&name)),
                }
                if properties.is_empty() {
                    document.retain(|key, _| !key.eq_ignore_ascii_case(PROPERTIES));
                } else {
                    set_ci(document, PROPERTIES, Value::Object(properties));
                }
                Ok((Some(()), ()))
            })
        })
        .await
    }
}

#[async_trait]
impl UserKeyRows for JsonFileStore {
    async fn read_row(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        self.fresh_snapshot().await?.user_key(id)
    }

    async fn list_rows(&self) -> Result<Vec<StoredUserKey>, StoreError> {
        let snapshot = self.fresh_snapshot().await?;
        user_keys(&snapshot.document)
            .iter()
            .map(parse_item)
            .collect()
    }

    async fn insert_row(&self, key: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
        let key = key.clone();
        self.with_file(move |file| {
            file.change(|document| {
                if position(document, key.id).is_some() {
                    return Ok((None, CreateOutcome::AlreadyExists));
                }
                user_keys_mut(document).push(new_item(&key));
                Ok((Some(()), CreateOutcome::Created))
            })
        })
        .await
    }

    async fn replace_key(&self, change: &KeyReplacement<'_>) -> Result<bool, StoreError> {
        let (id, sealed_key, now) = (change.id, change.sealed_key.to_owned(), change.now);
        self.with_file(move |file| {
            file.change(|document| {
                let Some(item) = item_mut(document, id) else {
                    return Ok((None, false));
                };
                set_ci(item, "key", Value::String(sealed_key));
                set_ci(item, "revisionDate", date_value(Some(now)));
                Ok((Some(()), true))
            })
        })
        .await
    }

    async fn reseal_key(&self, change: &Reseal<'_>) -> Result<bool, StoreError> {
        let id = change.id;
        let (expected, resealed) = (change.expected.to_owned(), change.resealed.to_owned());
        self.with_file(move |file| {
            file.change(|document| match item_mut(document, id) {
                Some(item) if get_ci(item, "key").and_then(Value::as_str) == Some(&expected) => {
                    set_ci(item, "key", Value::String(resealed));
                    Ok((Some(()), true))
                }
                _ => Ok((None, false)),
            })
        })
        .await
    }

    async fn write_last_access(&self, accesses: &[LastAccess]) -> Result<(), StoreError> {
        let accesses = accesses.to_vec();
        self.with_file(move |file| {
            file.change(|document| {
                let mut changed = false;
                for (id, when) in accesses {
                    if let Some(item) = item_mut(document, id) {
                        set_ci(item, "lastAccessDate", date_value(Some(when)));
                        changed = true;
                    }
                }
                Ok((changed.then_some(()), ()))
            })
        })
        .await
    }
}
