//! Writing a backup file: a consistent snapshot of the live store into a private temporary
//! file beside the destination, then published under its name in one rename.
//!
//! The file is created owner-only (0600) before any byte is written, so it is never
//! readable by others, not even for a moment. Publishing fsyncs the file, renames it and
//! fsyncs the directory, so after a crash the destination is either absent or complete.
//! Blocking: run it on the blocking pool.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
#[cfg(feature = "sqlite")]
use std::time::{Duration, Instant};

use uuid::Uuid;

#[cfg(feature = "sqlite")]
use crate::operations::progress::Progress;
use crate::private_file::owner_only;

/// A file being written next to its destination; removed on drop unless published.
pub struct PrivateTempFile {
    path: PathBuf,
    directory: PathBuf,
    kept: bool,
}

impl PrivateTempFile {
    /// Creates `.<name>.<random>.partial` in the destination's directory, owner-only and
    /// empty.
    pub fn beside(destination: &Path) -> std::io::Result<Self> {
        let directory = parent_of(destination);
        let name = destination
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let path = directory.join(format!(".{name}.{}.partial", Uuid::new_v4().simple()));
        create_private(&path)?;
        Ok(Self {
            path,
            directory,
            kept: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file durable and moves it to `destination` (in the same directory).
    /// Without `replace`, an existing destination is never overwritten: the file is linked
    /// under the new name, which fails if the name is taken.
    pub fn publish(mut self, destination: &Path, replace: bool) -> std::io::Result<()> {
        File::open(&self.path)?.sync_all()?;
        if replace {
            std::fs::rename(&self.path, destination)?;
        } else {
            match std::fs::hard_link(&self.path, destination) {
                Ok(()) => std::fs::remove_file(&self.path)?,
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(error);
                }
                // A file system without hard links: the name was free when the command
                // started and is checked again just before.
                Err(_) if !destination.exists() => std::fs::rename(&self.path, destination)?,
                Err(error) => return Err(error),
            }
        }
        self.kept = true;
        File::open(&self.directory)?.sync_all()
    }
}

impl Drop for PrivateTempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
            // SQLite's rollback journal of the copy, if a failure left one.
            let mut journal = self.path.clone().into_os_string();
            journal.push("-journal");
            let _ = std::fs::remove_file(journal);
        }
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Creates `path` empty and owner-only; fails if it exists.
fn create_private(path: &Path) -> std::io::Result<File> {
    owner_only(OpenOptions::new().write(true).create_new(true)).open(path)
}

/// Writes the JSON document `bytes` (read under the store's lock) into `temp`.
pub fn write_json_copy(bytes: &[u8], temp: &PrivateTempFile) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(temp.path())?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Pages copied per step of SQLite's online backup.
#[cfg(feature = "sqlite")]
const PAGES_PER_STEP: std::os::raw::c_int = 256;
/// How long a step may keep finding the databases busy before the copy gives up.
#[cfg(feature = "sqlite")]
const BUSY_FOR_AT_MOST: Duration = Duration::from_secs(30);

/// Copies the live SQLite database at `source` into `temp` through SQLite's online backup
/// API. The whole copy reads one snapshot: a read transaction is held on the source from
/// the first page to the last, so writers carry on (WAL) and the copy is the database as
/// it was at one instant. The copy is left in rollback-journal mode, a single
/// self-contained file.
#[cfg(feature = "sqlite")]
pub fn copy_sqlite(
    source: &Path,
    temp: &PrivateTempFile,
    interactive: bool,
) -> Result<(), rusqlite::Error> {
    use rusqlite::backup::{Backup, StepResult};
    use rusqlite::{Connection, OpenFlags};

    let base = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    // Read-write (never create) so that a WAL database can be read without the service
    // running; read-only when this user may only read the file.
    let from = Connection::open_with_flags(source, base | OpenFlags::SQLITE_OPEN_READ_WRITE)
        .or_else(|_| {
            Connection::open_with_flags(source, base | OpenFlags::SQLITE_OPEN_READ_ONLY)
        })?;
    from.busy_timeout(Duration::from_secs(5))?;
    from.execute_batch("BEGIN DEFERRED")?;
    // The first read starts the snapshot every later page comes from.
    let _: i64 = from.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
    let pages: i64 = from.query_row("PRAGMA page_count", [], |row| row.get(0))?;

    let mut to = Connection::open_with_flags(
        temp.path(),
        OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_READ_WRITE,
    )?;
    {
        let backup = Backup::new(&from, &mut to)?;
        let mut progress = Progress::new("copying the database", pages.max(0) as u64, interactive);
        let mut busy_since: Option<Instant> = None;
        loop {
            match backup.step(PAGES_PER_STEP)? {
                StepResult::Done => break,
                StepResult::More => busy_since = None,
                // Busy, Locked, or a state a later SQLite adds: wait and try again.
                _ => {
                    let since = *busy_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > BUSY_FOR_AT_MOST {
                        return Err(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                            Some("the database stayed locked during the copy".into()),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let state = backup.progress();
            progress.set_done((state.pagecount - state.remaining).max(0) as u64);
        }
        progress.finish();
    }
    from.execute_batch("COMMIT")?;
    drop(from);
    let mode: String = to.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        tracing::warn!(journal_mode = %mode, "the copy could not leave WAL mode");
    }
    to.close().map_err(|(_, error)| error)
}
