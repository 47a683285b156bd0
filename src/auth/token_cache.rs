//! A bounded cache of tokens that were fully verified and authorized.
//!
//! RSA verification is the cost of every authenticated request. A token is an immutable,
//! signed statement, so once one passed every check its answer (the user id) cannot change
//! until it expires. Entries are keyed by the SHA-256 of the whole token (a forged or altered
//! token has another hash and is verified from scratch), live at most until the token's own
//! expiry (plus the clock skew the full check allows) and never longer than [`MAX_ENTRY_TTL`],
//! so a signing key withdrawn from the JWKS stops being honoured within minutes. Only accepted
//! tokens are cached; rejections are always re-checked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Upper bound on how long a verified token is trusted without re-verification.
pub const MAX_ENTRY_TTL: Duration = Duration::from_secs(300);
const SHARDS: usize = 16;

type TokenDigest = [u8; 32];

/// Sharded map from token digest to (user, valid until).
pub struct TokenCache {
    shards: Vec<Mutex<HashMap<TokenDigest, (Uuid, Instant)>>>,
    capacity_per_shard: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            capacity_per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    pub fn digest(token: &str) -> TokenDigest {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    fn shard(&self, digest: &TokenDigest) -> &Mutex<HashMap<TokenDigest, (Uuid, Instant)>> {
        &self.shards[usize::from(digest[0]) % SHARDS]
    }

    /// The user of a cached, still valid token.
    pub fn get(&self, digest: &TokenDigest) -> Option<Uuid> {
        let shard = self.shard(digest).lock().unwrap_or_else(|p| p.into_inner());
        match shard.get(digest) {
            Some((user, valid_until)) if *valid_until > Instant::now() => Some(*user),
            _ => None,
        }
    }

    /// Remembers an accepted token until `valid_until` (capped by [`MAX_ENTRY_TTL`]).
    pub fn insert(&self, digest: TokenDigest, user: Uuid, valid_until: Instant) {
        let now = Instant::now();
        let valid_until = valid_until.min(now + MAX_ENTRY_TTL);
        if valid_until <= now {
            return;
        }
        let mut shard = self
            .shard(&digest)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.capacity_per_shard {
            shard.retain(|_, (_, until)| *until > now);
            if shard.len() >= self.capacity_per_shard {
                // Still full of live entries: start over rather than grow without bound.
                shard.clear();
            }
        }
        shard.insert(digest, (user, valid_until));
    }

    /// Forgets everything (the signing keys changed).
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_are_not_returned() {
        let cache = TokenCache::new(10);
        let digest = TokenCache::digest("a");
        cache.insert(
            digest,
            Uuid::nil(),
            Instant::now() + Duration::from_millis(20),
        );
        assert_eq!(cache.get(&digest), Some(Uuid::nil()));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&digest), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TokenCache::new(32);
        for i in 0..10_000 {
            let digest = TokenCache::digest(&i.to_string());
            cache.insert(
                digest,
                Uuid::nil(),
                Instant::now() + Duration::from_secs(60),
            );
        }
        let total: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= 32 + SHARDS, "{total}");
    }
}
