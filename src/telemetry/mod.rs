//! Logging: to standard error (human-readable text by default, JSON lines on request) and,
//! when the `Serilog` section configures a `File` sink as the official image does, to
//! Serilog-named rolling files as well ([`log_file`]).
//!
//! Levels come from `RUST_LOG`; without it from `Serilog:MinimumLevel`
//! ([`crate::config::logging`]); without either, `info`. Nothing secret is ever passed to
//! a log macro in this crate; request logs carry method, path, status, latency and request
//! id only, and the file receives exactly the events the console does.
//!
//! The console and the file are each written by a background thread from an in-memory
//! buffer (`buffered.rs`): a request never waits for a write or wakes a thread, lines leave
//! within milliseconds, many in one write, and when an output cannot keep up new lines
//! are dropped and counted rather than slowing the service.

mod buffered;
pub mod log_file;

use std::fmt;

use std::io::IsTerminal;
use time::OffsetDateTime;
use tracing::{Event, Level, Subscriber};

use buffered::{BufferedWriter, FlushGuard};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::logging::LogSettings;
use log_file::RollingLogFile;

/// The filter when neither `RUST_LOG` nor `Serilog:MinimumLevel` says otherwise.
const DEFAULT_FILTER: &str = "info,sqlx=warn,hyper=warn,reqwest=warn,tower_http=info";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the log file's writer thread alive; dropping it flushes what is queued. Hold it
/// until the process ends.
#[must_use = "dropping the guard stops writing the log file"]
pub struct LogGuard {
    _console_writer: Option<FlushGuard>,
    _file_writer: Option<FlushGuard>,
}

/// What [`init`] set up, to report once the subscriber is in place.
enum FileOutcome {
    NotConfigured,
    Writing(std::path::PathBuf),
    Unwritable(String),
}

/// Installs the global subscriber: the console always, the log file when `settings` has a
/// `File` sink and `write_file` is true (the service writes it; admin commands do not).
/// A log file that cannot be opened is one warning, never a failure. Later calls do nothing.
pub fn init(format: LogFormat, settings: &LogSettings, write_file: bool) -> LogGuard {
    let filter = settings
        .rust_log
        .as_deref()
        .and_then(|filter| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new(settings.filter.as_deref().unwrap_or(DEFAULT_FILTER)));
    let (file_writer, guard, outcome) = match settings.file.clone().filter(|_| write_file) {
        None => (None, None, FileOutcome::NotConfigured),
        Some(file) => {
            let directory = log_file::directory_of(&file.path).display().to_string();
            let opened = RollingLogFile::open(file).and_then(|log| {
                let path = log.current_path().unwrap_or_default();
                BufferedWriter::spawn(log, "log-file").map(|writer| (writer, path))
            });
            match opened {
                Ok(((writer, guard), path)) => {
                    (Some(writer), Some(guard), FileOutcome::Writing(path))
                }
                Err(error) => (
                    None,
                    None,
                    FileOutcome::Unwritable(format!(
                        "cannot write log files in {directory}: {error}; logging to the console only"
                    )),
                ),
            }
        }
    };
    let file_layer = file_writer.map(|writer: BufferedWriter| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(SerilogFileLine)
            .with_writer(writer)
    });
    let ansi = std::io::stderr().is_terminal();
    let (console, console_guard) = match BufferedWriter::spawn(std::io::stderr(), "log-console") {
        Ok((writer, guard)) => (console_layer(format, ansi, writer), Some(guard)),
        // No thread for the writer: write from the caller, as a last resort.
        Err(_) => (console_layer(format, ansi, std::io::stderr), None),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file_layer)
        .try_init()
        .is_ok();
    if installed {
        match outcome {
            FileOutcome::NotConfigured => {}
            FileOutcome::Writing(path) => {
                tracing::info!(path = %path.display(), "writing the log file")
            }
            FileOutcome::Unwritable(message) => tracing::warn!("{message}"),
        }
    }
    LogGuard {
        _console_writer: console_guard,
        _file_writer: guard,
    }
}

/// The console layer in `format`, writing through `writer`.
fn console_layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let console = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => console.boxed(),
        LogFormat::Json => console.json().flatten_event(true).boxed(),
    }
}

/// One line as Serilog's file sink writes it with its default template
/// (`{Timestamp:yyyy-MM-dd HH:mm:ss.fff zzz} [{Level:u3}] {Message:lj}{NewLine}`), the
/// event's fields and those of its spans (at `debug`, each request's method, path and request
/// id) following the message.
struct SerilogFileLine;

impl<S, N> FormatEvent<S, N> for SerilogFileLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_serilog_prefix(
            &mut writer,
            OffsetDateTime::now_utc(),
            *event.metadata().level(),
        )?;
        context.format_fields(writer.by_ref(), event)?;
        if let Some(scope) = context.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, " {fields}")?;
                }
            }
        }
        writeln!(writer)
    }
}

/// `2026-12-01 19:45:32.123 +00:00 [INF] `
fn write_serilog_prefix(
    writer: &mut impl fmt::Write,
    now: OffsetDateTime,
    level: Level,
) -> fmt::Result {
    let level = match level {
        Level::TRACE => "VRB",
        Level::DEBUG => "DBG",
        Level::INFO => "INF",
        Level::WARN => "WRN",
        Level::ERROR => "ERR",
    };
    write!(
        writer,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} +00:00 [{level}] ",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn lines_start_as_serilogs_default_file_template() {
        let mut line = String::new();
        write_serilog_prefix(
            &mut line,
            datetime!(2026-12-01 09:05:03.042 UTC),
            Level::WARN,
        )
        .unwrap();
        assert_eq!(line, "2026-12-01 09:05:03.042 +00:00 [WRN] ");
    }
}
