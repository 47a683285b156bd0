//! The rolling log file, named, rolled, capped and pruned as upstream's Serilog `File` sink
//! does it, so that log shippers and operators' habits keep working after the swap.
//!
//! For the configured path `/etc/bitwarden/logs/log.txt` and a daily interval, the file
//! written is `log20261201.txt`; at the size limit it continues in `log20261201_001.txt`
//! (or, without `rollOnFileSizeLimit`, writing pauses until the next day); only the newest
//! `retainedFileCountLimit` files are kept. Periods are UTC, as for the official image in a
//! container without a time zone. Files are created `0600`: the log names users and paths.
//!
//! Written by hand: `tracing-appender`'s roller names files `log.2026-12-01.txt` and has
//! neither a size cap nor sequence files. This type is only ever called from the single
//! background thread of a non-blocking writer (see [`super`]), never on a request's path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::logging::LogFileSettings;
use crate::private_file::owner_only;

/// How long to wait before trying a file again after it could not be opened or written.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The open file and where it stands.
struct Current {
    file: File,
    period: String,
    sequence: u32,
    written: u64,
}

/// Writes log lines into Serilog-named files. Every failure is reported once on standard
/// error (the console log is unaffected) and retried later; nothing here panics or blocks
/// on anything but the file itself.
pub struct RollingLogFile {
    settings: LogFileSettings,
    directory: PathBuf,
    stem: String,
    extension: String,
    current: Option<Current>,
    /// Set while the size limit is reached without rolling: lines are dropped until the
    /// period changes, as Serilog does.
    full_until_period_after: Option<String>,
    retry_at: Option<Instant>,
    failing: bool,
}

impl RollingLogFile {
    /// Prepares the writer and opens the current file, so that a directory that cannot be
    /// written is known (and reported by the caller) at start-up.
    pub fn open(settings: LogFileSettings) -> io::Result<Self> {
        Self::open_at(settings, OffsetDateTime::now_utc())
    }

    fn open_at(settings: LogFileSettings, now: OffsetDateTime) -> io::Result<Self> {
        let directory = directory_of(&settings.path).to_path_buf();
        let name = settings
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "log.txt".to_owned());
        let (stem, extension) = match name.rfind('.') {
            Some(dot) if dot > 0 => (name[..dot].to_owned(), name[dot..].to_owned()),
            _ => (name, String::new()),
        };
        let mut log = Self {
            settings,
            directory,
            stem,
            extension,
            current: None,
            full_until_period_after: None,
            retry_at: None,
            failing: false,
        };
        std::fs::create_dir_all(&log.directory)?;
        let period = log.period_of(now);
        log.open_period(&period)?;
        Ok(log)
    }

    /// The file currently written, if one is open.
    pub fn current_path(&self) -> Option<PathBuf> {
        self.current
            .as_ref()
            .map(|c| self.path_for(&c.period, c.sequence))
    }

    fn period_of(&self, now: OffsetDateTime) -> String {
        let full = format!(
            "{:04}{:02}{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute()
        );
        full[..self.settings.rolling_interval.period_digits()].to_owned()
    }

    fn path_for(&self, period: &str, sequence: u32) -> PathBuf {
        let suffix = if sequence == 0 {
            String::new()
        } else {
            format!("_{sequence:03}")
        };
        self.directory
            .join(format!("{}{period}{suffix}{}", self.stem, self.extension))
    }

    /// The (period, sequence) a file name stands for, if it is one of ours.
    fn parse_name(&self, name: &str) -> Option<(String, u32)> {
        let middle = name
            .strip_prefix(&self.stem)?
            .strip_suffix(&self.extension)?;
        let digits = self.settings.rolling_interval.period_digits();
        if middle.len() < digits || !middle[..digits].bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (period, rest) = middle.split_at(digits);
        let sequence = match rest {
            "" => 0,
            _ => {
                let number = rest.strip_prefix('_')?;
                if number.len() < 3 || !number.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                number.parse().ok()?
            }
        };
        Some((period.to_owned(), sequence))
    }

    /// Every file of ours in the directory, oldest first.
    fn existing_files(&self) -> Vec<(String, u32, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.directory) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let (period, sequence) = self.parse_name(&name)?;
                Some((period, sequence, entry.path()))
            })
            .collect();
        files.sort();
        files
    }

    /// Opens the newest file of `period` (appending, as Serilog does after a restart), or
    /// the next sequence when that one is full and rolling on size is on.
    fn open_period(&mut self, period: &str) -> io::Result<()> {
        self.current = None;
        let sequence = self
            .existing_files()
            .into_iter()
            .filter(|(p, _, _)| p == period)
            .map(|(_, sequence, _)| sequence)
            .max()
            .unwrap_or(0);
        self.open_file(period, sequence)?;
        if self.is_full() && self.settings.roll_on_size_limit {
            self.open_file(period, sequence + 1)?;
        }
        self.prune();
        Ok(())
    }

    fn open_file(&mut self, period: &str, sequence: u32) -> io::Result<()> {
        let path = self.path_for(period, sequence);
        let file = owner_only(OpenOptions::new().create(true).append(true)).open(&path)?;
        let written = file.metadata()?.len();
        self.current = Some(Current {
            file,
            period: period.to_owned(),
            sequence,
            written,
        });
        Ok(())
    }

    fn is_full(&self) -> bool {
        match (&self.current, self.settings.size_limit_bytes) {
            (Some(current), Some(limit)) => current.written >= limit,
            _ => false,
        }
    }

    /// Deletes the oldest files beyond `retainedFileCountLimit` (the open one always stays).
    fn prune(&self) {
        let Some(keep) = self.settings.retained_files else {
            return;
        };
        let files = self.existing_files();
        let excess = files.len().saturating_sub(keep);
        let open = self.current_path();
        for (_, _, path) in files.into_iter().take(excess) {
            if Some(&path) != open.as_ref() {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Writes one log line, rolling first when the period changed or the file is full.
    fn write_line(&mut self, line: &[u8], now: OffsetDateTime) -> io::Result<()> {
        let period = self.period_of(now);
        if let Some(full_period) = &self.full_until_period_after {
            if *full_period == period {
                return Ok(());
            }
            self.full_until_period_after = None;
        }
        let needs_new_period = self.current.as_ref().is_none_or(|c| c.period != period);
        if needs_new_period {
            self.open_period(&period)?;
        } else if self.is_full() {
            if self.settings.roll_on_size_limit {
                let sequence = self.current.as_ref().map_or(0, |c| c.sequence) + 1;
                self.open_file(&period, sequence)?;
                self.prune();
            } else {
                self.full_until_period_after = Some(period);
                return Ok(());
            }
        }
        let current = self
            .current
            .as_mut()
            .ok_or_else(|| io::Error::other("no log file open"))?;
        current.file.write_all(line)?;
        current.written += line.len() as u64;
        Ok(())
    }

    fn report(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    eprintln!(
                        "log file: writing {} again",
                        self.current_path().unwrap_or_default().display()
                    );
                }
            }
            Err(error) => {
                self.current = None;
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                if !self.failing {
                    self.failing = true;
                    eprintln!(
                        "log file: cannot write under {}: {error}; logging to the console only, retrying every {} s",
                        self.directory.display(),
                        RETRY_AFTER.as_secs()
                    );
                }
            }
        }
    }
}

impl Write for RollingLogFile {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(line.len());
        }
        self.retry_at = None;
        let result = self.write_line(line, OffsetDateTime::now_utc());
        self.report(result);
        // A line that could not be written is dropped, never an error for the logger.
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(current) = self.current.as_mut() {
            let _ = current.file.flush();
        }
        Ok(())
    }
}

/// The directory of the file sink, for messages.
pub fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::logging::RollingInterval;
    use std::os::unix::fs::PermissionsExt;
    use time::macros::datetime;

    fn settings(dir: &Path, interval: RollingInterval) -> LogFileSettings {
        LogFileSettings {
            path: dir.join("log.txt"),
            rolling_interval: interval,
            size_limit_bytes: Some(1024),
            roll_on_size_limit: true,
            retained_files: Some(31),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_are_named_by_period_as_serilog_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RollingLogFile::open(settings(dir.path(), RollingInterval::Day)).unwrap();
        let today = log.period_of(OffsetDateTime::now_utc());
        assert_eq!(names(dir.path()), vec![format!("log{today}.txt")]);
        log.write_line(b"a\n", datetime!(2026-12-02 00:00:01 UTC))
            .unwrap();
        log.write_line(b"b\n", datetime!(2026-12-03 23:59:59 UTC))
            .unwrap();
        assert!(names(dir.path()).contains(&"log20261202.txt".to_owned()));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log20261203.txt")).unwrap(),
            "b\n"
        );
        let mode = std::fs::metadata(dir.path().join("log20261203.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_size_limit_rolls_into_sequence_files_and_retention_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = settings(dir.path(), RollingInterval::Hour);
        config.size_limit_bytes = Some(10);
        config.retained_files = Some(3);
        let at = datetime!(2026-12-01 10:30:00 UTC);
        let mut log = RollingLogFile::open_at(config, at).unwrap();
        for _ in 0..5 {
            log.write_line(b"0123456789\n", at).unwrap();
        }
        assert_eq!(
            names(dir.path()),
            vec![
                "log2026120110_002.txt",
                "log2026120110_003.txt",
                "log2026120110_004.txt"
            ]
        );
        // After a restart the newest file of the period is continued (here full: the next).
        drop(log);
        let mut config = settings(dir.path(), RollingInterval::Hour);
        config.size_limit_bytes = Some(10);
        config.retained_files = Some(3);
        let mut log = RollingLogFile::open_at(config, at).unwrap();
        log.write_line(b"x\n", at).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log2026120110_005.txt")).unwrap(),
            "x\n"
        );
    }

    #[test]
    fn without_rolling_on_size_a_full_file_pauses_until_the_next_period() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = settings(dir.path(), RollingInterval::Minute);
        config.size_limit_bytes = Some(4);
        config.roll_on_size_limit = false;
        let first = datetime!(2026-12-01 10:30:00 UTC);
        let mut log = RollingLogFile::open_at(config, first).unwrap();
        log.write_line(b"1234\n", first).unwrap();
        log.write_line(b"dropped\n", first).unwrap();
        log.write_line(b"next\n", datetime!(2026-12-01 10:31:00 UTC))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log202612011030.txt")).unwrap(),
            "1234\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log202612011031.txt")).unwrap(),
            "next\n"
        );
    }

    #[test]
    fn an_infinite_interval_writes_the_configured_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut log =
            RollingLogFile::open(settings(dir.path(), RollingInterval::Infinite)).unwrap();
        log.write_all(b"line\n").unwrap();
        assert_eq!(names(dir.path()), vec!["log.txt"]);
    }

    #[test]
    fn other_files_in_the_directory_are_never_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["log.txt.bak", "logbook.txt", "log2026_1.txt", "other.txt"] {
            std::fs::write(dir.path().join(name), "keep").unwrap();
        }
        let mut config = settings(dir.path(), RollingInterval::Day);
        config.retained_files = Some(1);
        let at = datetime!(2030-01-01 00:00:00 UTC);
        let mut log = RollingLogFile::open_at(config, at).unwrap();
        log.write_line(b"a\n", at).unwrap();
        let left = names(dir.path());
        assert_eq!(left.len(), 5, "{left:?}");
        assert!(left.contains(&"log20300101.txt".to_owned()));
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_an_error_at_open_and_never_one_for_the_logger() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-directory");
        std::fs::write(&blocker, "").unwrap();
        let config = settings(&blocker, RollingInterval::Day);
        assert!(RollingLogFile::open(config.clone()).is_err());
        let mut log = RollingLogFile {
            directory: blocker.clone(),
            stem: "log".into(),
            extension: ".txt".into(),
            settings: config,
            current: None,
            full_until_period_after: None,
            retry_at: None,
            failing: false,
        };
        assert_eq!(log.write(b"line\n").unwrap(), 5);
        assert!(log.failing);
    }
}
