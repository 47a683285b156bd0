//! The harness that runs this binary's tests, in place of libtest's.
//!
//! Many tests need something outside the project (a database server, podman, SoftHSM, moto,
//! Azurite, OpenBao) and learn only once they run whether it is here. libtest cannot mark a
//! test as ignored once it has started, so such a test used to return early and be counted
//! as passed. Here each test is a `libtest-mimic` trial: a test that finds its backend absent
//! says so through [`skip`] (the `skip_or_fail!` family of macros does), and the summary
//! counts it as ignored, with the reason on its line. Under `KC_REQUIRE_BACKENDS=1` those
//! macros fail the test instead, as before.
//!
//! Each file lists its tests once with [`tests!`](crate::tests), giving each the runtime
//! `#[tokio::test]` would have given it. A test function left out of the list is never called,
//! which the compiler reports as dead code (and CI's `-D warnings` refuses).
//!
//! libtest-mimic does not capture a passing test's output as libtest does; the tests print
//! little, and a failure's panic message is repeated in the summary.

use std::cell::RefCell;
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

thread_local! {
    /// Why the test running on this thread did not run, once it has said so.
    static SKIPPED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks the test running on this thread as not run, for `reason` (printed on its line).
/// The caller returns from the test right after. Tests run their body on the thread that
/// started them (`block_on`), so the mark is read back by [`Test::into_trial`].
pub fn skip(reason: String) {
    SKIPPED.with(|skipped| *skipped.borrow_mut() = Some(reason));
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
        Trial::ignorable_test(name, move || {
            SKIPPED.with(|skipped| skipped.borrow_mut().take());
            run(body)?;
            Ok(match SKIPPED.with(|skipped| skipped.borrow_mut().take()) {
                Some(reason) => Completion::ignored_with(reason),
                None => Completion::Completed,
            })
        })
    }
}

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
