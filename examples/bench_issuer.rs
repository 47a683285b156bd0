//! Benchmark helper: a token issuer on 127.0.0.1 that writes many distinct valid tokens.
//!
//! `bench_issuer PORT TOKENS_FILE COUNT [USERS]` serves OIDC discovery and JWKS on PORT and
//! writes COUNT tokens, one per line, then serves until killed. Without USERS each token is
//! for a different random user; with it, token `i` is for user `i % USERS` (several logins of
//! one user, each with a fresh token). Used by `bench/run` and `bench/soak`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use key_connector::dev::issuer::DevIssuer;
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_issuer PORT TOKENS_FILE COUNT [USERS]";
    let port: u16 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let tokens_file = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let count: usize = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let users: Vec<Uuid> = match args.next() {
        Some(users) => (0..users.parse::<usize>()?.max(1))
            .map(|_| Uuid::new_v4())
            .collect(),
        None => Vec::new(),
    };

    let issuer = Arc::new(DevIssuer::generate()?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tokens_file)?);
    for i in 0..count {
        let user = users.get(i % users.len().max(1)).copied();
        let user = user.unwrap_or_else(Uuid::new_v4);
        let token = issuer.mint_user_token(&url, user, Duration::from_secs(4 * 3600));
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    eprintln!("bench_issuer: {count} tokens in {tokens_file}, issuer {url}");
    Arc::clone(&issuer).spawn(listener, url).await?;
    Ok(())
}
