//! Benchmark helper: a token issuer on 127.0.0.1 that writes many distinct valid tokens.
//!
//! `bench_issuer PORT TOKENS_FILE COUNT` serves OIDC discovery and JWKS on PORT and writes
//! COUNT tokens, one per line, each for a different random user, then serves until killed.
//! Used by `bench/run` only.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use key_connector::dev::issuer::DevIssuer;
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_issuer PORT TOKENS_FILE COUNT";
    let port: u16 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let tokens_file = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let count: usize = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;

    let issuer = Arc::new(DevIssuer::generate()?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tokens_file)?);
    for _ in 0..count {
        let token = issuer.mint_user_token(&url, Uuid::new_v4(), Duration::from_secs(4 * 3600));
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    eprintln!("bench_issuer: {count} tokens in {tokens_file}, issuer {url}");
    Arc::clone(&issuer).spawn(listener, url).await?;
    Ok(())
}
