//! The `key-connector` binary: everything happens in [`key_connector::cli`].
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> std::process::ExitCode {
    key_connector::cli::run().await
}
