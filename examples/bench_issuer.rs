//! Benchmark helper: a token issuer on 127.0.0.1 that writes many distinct valid tokens.
//!
//! `bench_issuer PORT TOKENS_FILE COUNT [USERS]` serves OIDC discovery and JWKS on PORT and
//! writes COUNT tokens, one per line, then serves until killed. Without USERS each token is
//! for a different random user; with it, token `i` is for user `i % USERS` (several logins of
//! one user, each with a fresh token). Every token is distinct (its own `jti` and device).
//! Tokens are signed on every core, since a cold benchmark needs hundreds of thousands.
//! Used by `bench/run` and `bench/soak`.
//!
//! `bench_issuer --rsa-verify-rate` prints how many RSA-2048 PKCS#1 SHA-256 signatures one
//! core verifies per second with aws-lc (the key parsed once), the figure the token check
//! is measured against.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use key_connector::dev::issuer::DevIssuer;
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: bench_issuer PORT TOKENS_FILE COUNT [USERS] | bench_issuer --rsa-verify-rate";
    let first = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    if first == "--rsa-verify-rate" {
        println!("{:.0}", rsa_verify_rate()?);
        return Ok(());
    }
    let port: u16 = first.parse()?;
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
    let started = Instant::now();
    let tokens = mint_in_parallel(&issuer, &url, count, &users);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tokens_file)?);
    for token in &tokens {
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    eprintln!(
        "bench_issuer: {count} tokens in {tokens_file} ({:.1} s), issuer {url}",
        started.elapsed().as_secs_f64()
    );
    drop(tokens);
    Arc::clone(&issuer).spawn(listener, url).await?;
    Ok(())
}

/// Token `i` for user `i % users.len()` (or a fresh user), signed on every core.
fn mint_in_parallel(issuer: &DevIssuer, url: &str, count: usize, users: &[Uuid]) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let range = (t * per_thread)..((t + 1) * per_thread).min(count);
                    range
                        .map(|i| {
                            let user = users.get(i % users.len().max(1)).copied();
                            let user = user.unwrap_or_else(Uuid::new_v4);
                            issuer.mint_user_token(url, user, Duration::from_secs(4 * 3600))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_default())
            .collect()
    })
}

/// Single-core RSA-2048 PKCS#1 v1.5 SHA-256 verifications per second, over about a second.
fn rsa_verify_rate() -> anyhow::Result<f64> {
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey};
    let key = KeyPair::generate(KeySize::Rsa2048)?;
    let message = b"header.payload of a typical access token, about this long........";
    let mut signature_bytes = vec![0; key.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &rng,
        message,
        &mut signature_bytes,
    )?;
    let public = ParsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        key.public_key().as_ref(),
    )?;
    let started = Instant::now();
    let mut verified = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            public
                .verify_sig(message, &signature_bytes)
                .map_err(|_| anyhow::anyhow!("verification failed"))?;
        }
        verified += 100;
    }
    Ok(verified as f64 / started.elapsed().as_secs_f64())
}
