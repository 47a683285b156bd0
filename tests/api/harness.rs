//! The harness that runs this binary's tests, in place of libtest's.
//!
//! Many tests need something outside the project (a database server, podman, SoftHSM, moto,
//! Azurite, OpenBao) and learn only once they run whether it is here. libtest cannot mark a
//! test as ignored once it has started, so such a test used to return early and be counted
//! as passed. Here each test is a `libtest-mimic` trial: a test that finds its backend absent
//! calls [`skip`] (the `skip_or_fail!` family of macros does), which leaves the test from
//! any depth, and the summary counts it as ignored, with the reason on its line. Under
//! `KC_REQUIRE_BACKENDS=1` those macros fail the test instead, as before.
//!
//! Each file lists its tests once with [`tests!`](crate::tests), giving each the runtime
//! `#[tokio::test]` would have given it. A test function left out of the list is never called,
//! which the compiler reports as dead code (and CI's `-D warnings` refuses); a function still
//! marked `#[test]` or `#[tokio::test]` would be dropped silently under this harness, which
//! [`no_test_is_marked_for_libtest`] refuses.
//!
//! libtest-mimic does not capture a passing test's output as libtest does, and reads the
//! number of threads from `--test-threads` only (not `RUST_TEST_THREADS`). Each test runs on
//! a thread of its own named after it, as under libtest, so a panic's own line names it.

use std::future::Future;
use std::pin::Pin;

use libtest_mimic::{Completion, Failed, Trial};

/// The runtime a test runs on: what `#[tokio::test]`'s arguments chose.
#[derive(Clone, Copy)]
pub enum Runtime {
    /// `#[tokio::test]`: one thread, the real clock.
    CurrentThread,
    /// `#[tokio::test(start_paused = true)]`: one thread, tokio's clock paused at the start
    /// and advanced only by the test or when every task waits on a timer.
    Paused,
    /// `#[tokio::test(flavor = "multi_thread", worker_threads = N)]`.
    MultiThread(usize),
}

/// A test body: an `async fn` run on its [`Runtime`], or a plain `fn`.
pub enum Body {
    Async(Runtime, fn() -> Pin<Box<dyn Future<Output = ()>>>),
    Sync(fn()),
}

/// One test as a file lists it: its module path, its name and its body.
pub struct Test {
    pub module: &'static str,
    pub name: &'static str,
    pub body: Body,
}

/// What [`skip`] unwinds with: why the test did not run.
struct Skipped(String);

/// Marks the running test as not run, for `reason` (printed on its line), and leaves it: it
/// unwinds like a panic, so a helper that skips ends the whole test, not just itself. Called
/// inside a spawned task it ends that task, whose `JoinError` then fails the test if joined:
/// a skip is never counted as a pass.
pub fn skip(reason: String) -> ! {
    std::panic::resume_unwind(Box::new(Skipped(reason)))
}

impl Test {
    /// The trial libtest-mimic runs: named as libtest named it (`file::test`), counted as
    /// ignored when the body called [`skip`].
    pub fn into_trial(self) -> Trial {
        // `module_path!()` starts with the crate's name ("api"), which libtest left out.
        let module = self.module.split_once("::").map_or("", |(_, rest)| rest);
        let name = if module.is_empty() {
            self.name.to_owned()
        } else {
            format!("{module}::{}", self.name)
        };
        let body = self.body;
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .stack_size(TEST_THREAD_STACK);
        Trial::ignorable_test(name, move || {
            let ran = thread
                .spawn(move || run(body))
                .map_err(|error| Failed::from(format!("the test's thread did not start: {error}")))?
                .join();
            match ran {
                Ok(ran) => ran.map(|()| Completion::Completed),
                Err(payload) => match payload.downcast::<Skipped>() {
                    Ok(skipped) => Ok(Completion::ignored_with(skipped.0)),
                    // A failure: libtest-mimic reports the panic with its message.
                    Err(payload) => std::panic::resume_unwind(payload),
                },
            }
        })
    }
}

/// The stack of the thread a test runs on, named after the test. The service builds its
/// application on the main thread (`#[tokio::main]`), whose stack is 8 MiB; the tests build
/// it on the test's thread, which libtest-mimic would give 2 MiB. Unoptimised, a start-up
/// `transferTo` into SQL Server needs more than that: each caller's poll frame (over 100 KiB
/// apiece) lies under the TLS handshake's ML-KEM key share.
const TEST_THREAD_STACK: usize = 8 * 1024 * 1024;

fn run(body: Body) -> Result<(), Failed> {
    let (runtime, test) = match body {
        Body::Sync(test) => {
            test();
            return Ok(());
        }
        Body::Async(runtime, test) => (runtime, test),
    };
    let runtime = match runtime {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Runtime::Paused => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build(),
        Runtime::MultiThread(workers) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build(),
    }
    .map_err(|error| Failed::from(format!("the test's tokio runtime did not start: {error}")))?;
    runtime.block_on(test());
    Ok(())
}

/// Lists a file's tests for the harness, each under the runtime it needs:
///
/// ```ignore
/// crate::tests! {
///     current_thread: [get_without_token_is_401, #[cfg(feature = "awskms")] an_aws_test],
///     multi_thread(2): [a_test_that_spawns],
///     paused: [a_test_on_tokio_s_paused_clock],
///     sync: [a_plain_fn_test],
/// }
/// ```
///
/// It defines the file's `tests()`, which `main.rs` collects.
#[macro_export]
macro_rules! tests {
    ($($runtime:ident $(($workers:literal))? : [$($(#[$meta:meta])* $name:ident),* $(,)?]),* $(,)?) => {
        // Pushed one by one, not `vec![..]`: a `#[cfg]` applies to a statement, not to an
        // element of a list.
        #[allow(clippy::vec_init_then_push, reason = "cfg attributes need statements")]
        pub(crate) fn tests() -> Vec<$crate::harness::Test> {
            let mut tests = Vec::new();
            $($crate::tests!(@group tests ($runtime $(($workers))?) [$($(#[$meta])* $name),*]);)*
            tests
        }
    };
    (@group $tests:ident $runtime:tt [$($(#[$meta:meta])* $name:ident),*]) => {
        $(
            $(#[$meta])*
            $tests.push($crate::tests!(@one $runtime $name));
        )*
    };
    (@one (sync) $name:ident) => {
        $crate::harness::Test {
            module: module_path!(),
            name: stringify!($name),
            body: $crate::harness::Body::Sync($name),
        }
    };
    (@one ($($runtime:tt)*) $name:ident) => {
        $crate::harness::Test {
            module: module_path!(),
            name: stringify!($name),
            body: $crate::harness::Body::Async(
                $crate::tests!(@runtime $($runtime)*),
                || Box::pin($name()),
            ),
        }
    };
    (@runtime current_thread) => { $crate::harness::Runtime::CurrentThread };
    (@runtime paused) => { $crate::harness::Runtime::Paused };
    (@runtime multi_thread($workers:literal)) => { $crate::harness::Runtime::MultiThread($workers) };
}

/// Tests still marked for libtest's harness are compiled away under this one without a
/// word: refuse them, so that every test is in a `tests!` list.
fn no_test_is_marked_for_libtest() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api");
    let mut marked = Vec::new();
    let mut folders = vec![root];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (number, line) in text.lines().enumerate() {
                    let line = line.trim_start();
                    if line.starts_with("#[test]") || line.starts_with("#[tokio::test") {
                        marked.push(format!("{}:{}", path.display(), number + 1));
                    }
                }
            }
        }
    }
    assert!(
        marked.is_empty(),
        "list these in the file's tests! instead of marking them: {marked:?}"
    );
}

crate::tests! {
    sync: [no_test_is_marked_for_libtest],
}
