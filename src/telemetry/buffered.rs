//! A log writer that never makes a request wait for a system call or a thread wake-up.
//!
//! A formatted line is appended to a shared in-memory buffer under a lock held only for the
//! copy; a background thread writes the buffer out every [`FLUSH_INTERVAL`] (sooner when it
//! passes [`EARLY_FLUSH_BYTES`]), so many lines leave in one `write`. When the writer falls
//! behind by more than [`MAX_PENDING_BYTES`], new lines are dropped rather than slowing the
//! service, counted, and the count is written as a line of its own once there is room.
//! Dropping the [`FlushGuard`] writes everything still buffered (at the end of `main`).
//!
//! Written here because `tracing-appender`'s non-blocking writer wakes its thread for every
//! line and sends each line as its own allocation, which on a busy two-core machine costs
//! more than formatting the line did.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Buffered bytes that make the writer thread write at once.
const EARLY_FLUSH_BYTES: usize = 64 * 1024;
/// Buffered bytes beyond which new lines are dropped.
const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;

struct Shared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
    stopping: AtomicBool,
}

/// The `MakeWriter` handed to a `tracing_subscriber::fmt` layer.
#[derive(Clone)]
pub struct BufferedWriter {
    shared: Arc<Shared>,
}

/// Keeps the writer thread; dropping it writes what is buffered and stops the thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BufferedWriter {
    /// Starts the thread that writes to `out`.
    pub fn spawn<W: Write + Send + 'static>(
        out: W,
        thread_name: &str,
    ) -> io::Result<(Self, FlushGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(EARLY_FLUSH_BYTES)),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(thread_name.to_owned())
                .spawn(move || write_until_stopped(&shared, out))?
        };
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            FlushGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if pending.len() + line.len() > MAX_PENDING_BYTES {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_below = pending.len() < EARLY_FLUSH_BYTES;
        pending.extend_from_slice(line);
        let now_above = pending.len() >= EARLY_FLUSH_BYTES;
        drop(pending);
        if was_below && now_above {
            self.shared.wake.notify_one();
        }
    }
}

fn write_until_stopped<W: Write>(shared: &Shared, mut out: W) {
    let mut writing = Vec::with_capacity(EARLY_FLUSH_BYTES);
    loop {
        let stopping = {
            let pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            let (mut pending, _) = shared
                .wake
                .wait_timeout_while(pending, FLUSH_INTERVAL, |pending| {
                    pending.len() < EARLY_FLUSH_BYTES && !shared.stopping.load(Ordering::Acquire)
                })
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *pending, &mut writing);
            shared.stopping.load(Ordering::Acquire)
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            writing.extend_from_slice(
                format!("{dropped} log lines were dropped: the log output could not keep up\n")
                    .as_bytes(),
            );
        }
        if !writing.is_empty() {
            // Nowhere to report a failing log output but the output itself: keep going.
            let _ = out.write_all(&writing).and_then(|()| out.flush());
            writing.clear();
            if writing.capacity() > 4 * EARLY_FLUSH_BYTES {
                writing.shrink_to(EARLY_FLUSH_BYTES);
            }
        }
        if stopping {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's bytes: the fmt layer writes a whole line, then drops the writer.
pub struct LineWriter<'a> {
    writer: &'a BufferedWriter,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.append(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedWriter {
    type Writer = LineWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { writer: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_the_guard_flushes_the_rest() {
        let sink = Sink::default();
        let (writer, guard) = BufferedWriter::spawn(sink.clone(), "test-log").unwrap();
        for i in 0..1000 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| *l == format!("line {i}"))
        );
    }

    #[test]
    fn lines_are_written_without_waiting_for_the_guard() {
        let sink = Sink::default();
        let (writer, _guard) = BufferedWriter::spawn(sink.clone(), "test-log").unwrap();
        writer.make_writer().write_all(b"soon\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(FLUSH_INTERVAL);
        }
    }

    #[test]
    fn a_stuck_output_drops_and_counts_lines_instead_of_growing() {
        struct Stuck(Arc<Mutex<()>>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let _wait = self.0.lock().unwrap();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (writer, guard) = BufferedWriter::spawn(Stuck(Arc::clone(&gate)), "test-log").unwrap();
        let line = vec![b'x'; 1023];
        for _ in 0..(3 * MAX_PENDING_BYTES / 1024) {
            writer.make_writer().write_all(&line).unwrap();
        }
        let pending = writer.shared.pending.lock().unwrap().len();
        assert!(pending <= MAX_PENDING_BYTES, "{pending}");
        assert!(writer.shared.dropped.load(Ordering::Relaxed) > 0);
        drop(held);
        drop(guard);
    }
}
