//! A cache of tokens that were fully verified and authorized, bounded in bytes.
//!
//! RSA verification is the cost of every authenticated request. A token is an immutable,
//! signed statement, so once one passed every check its answer (the user id) cannot change
//! until it expires. Entries are keyed by the SHA-256 of the whole token (a forged or altered
//! token has another hash and is verified from scratch), live at most until the token's own
//! expiry (plus the clock skew the full check allows) and never longer than [`MAX_ENTRY_TTL`].
//! Only accepted tokens are cached; rejections are always re-checked.
//!
//! Each entry carries the epoch of the key set it was verified against, and is served only
//! while that is the current epoch: when the identity server's keys change, the caller moves
//! to a new epoch and every older entry stops vouching at once, including one that a request
//! verified against the old keys inserts after the change.
//!
//! Most tokens are seen once: a client fetches its key once per login, with a fresh token.
//! So the cache must not let a stream of one-time tokens push out the ones clients do send
//! again. Eviction is second-chance (CLOCK): entries wait in insertion order, an entry read
//! since it was inserted (or last passed over) goes round once more, and the first one that
//! was not, or has expired, is dropped. A token sent twice stays; a flood of fresh logins
//! only replaces tokens that were never reused. Each shard's table is allocated once at its
//! full size, so memory is bounded by [`TokenCache::new`]'s budget and never rehashes.
//!
//! Entries expire on tokio's clock, as every interval of `auth/` is measured.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// Upper bound on how long a verified token is trusted without re-verification.
pub const MAX_ENTRY_TTL: Duration = Duration::from_secs(300);
const SHARDS: usize = 16;

type TokenDigest = [u8; 32];

struct Entry {
    user: Uuid,
    valid_until: Instant,
    /// The epoch of the key set the token was verified against.
    epoch: u64,
    /// Read since it was inserted or last passed over by eviction.
    referenced: bool,
}

/// What one entry costs: its slot in the table (with the table's control byte and spare
/// capacity) and its place in the eviction queue.
pub const ENTRY_BYTES: usize =
    (size_of::<(TokenDigest, Entry)>() + 1) * 8 / 7 + size_of::<TokenDigest>();

struct Shard {
    entries: HashMap<TokenDigest, Entry>,
    /// Every key of `entries` once, oldest first.
    queue: VecDeque<TokenDigest>,
    capacity: usize,
}

impl Shard {
    /// Drops one entry: the first in queue order that has expired or was not read since
    /// it was last looked at; entries that were read go round once more.
    fn evict_one(&mut self, now: Instant) {
        // Every entry is passed over at most once before one is dropped: after a full turn
        // no entry is still marked.
        for _ in 0..=self.queue.len() {
            let Some(digest) = self.queue.pop_front() else {
                return;
            };
            match self.entries.get_mut(&digest) {
                Some(entry) if entry.referenced && entry.valid_until > now => {
                    entry.referenced = false;
                    self.queue.push_back(digest);
                }
                _ => {
                    self.entries.remove(&digest);
                    return;
                }
            }
        }
    }
}

/// Sharded map from token digest to (user, valid until).
pub struct TokenCache {
    shards: Vec<Mutex<Shard>>,
}

impl TokenCache {
    /// A cache that holds at most `budget_bytes` worth of entries (at least one per shard).
    pub fn new(budget_bytes: usize) -> Self {
        let capacity = (budget_bytes / ENTRY_BYTES / SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::with_capacity(capacity),
                        queue: VecDeque::with_capacity(capacity),
                        capacity,
                    })
                })
                .collect(),
        }
    }

    pub fn digest(token: &str) -> TokenDigest {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    fn shard(&self, digest: &TokenDigest) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[usize::from(digest[0]) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The user of a cached, still valid token verified against the key set of `epoch`.
    pub fn get(&self, digest: &TokenDigest, epoch: u64) -> Option<Uuid> {
        let mut shard = self.shard(digest);
        let entry = shard.entries.get_mut(digest)?;
        if entry.epoch != epoch || entry.valid_until <= Instant::now() {
            return None;
        }
        entry.referenced = true;
        Some(entry.user)
    }

    /// Remembers a token accepted by the key set of `epoch` until `valid_until` (capped by
    /// [`MAX_ENTRY_TTL`]).
    pub fn insert(&self, digest: TokenDigest, user: Uuid, valid_until: Instant, epoch: u64) {
        let now = Instant::now();
        let valid_until = valid_until.min(now + MAX_ENTRY_TTL);
        if valid_until <= now {
            return;
        }
        let mut shard = self.shard(&digest);
        if let Some(entry) = shard.entries.get_mut(&digest) {
            // An expired entry of the same token, or one of an older epoch, verified again.
            entry.user = user;
            entry.valid_until = valid_until;
            entry.epoch = epoch;
            return;
        }
        if shard.entries.len() >= shard.capacity {
            shard.evict_one(now);
        }
        shard.entries.insert(
            digest,
            Entry {
                user,
                valid_until,
                epoch,
                referenced: false,
            },
        );
        shard.queue.push_back(digest);
    }

    /// Forgets everything (the signing keys changed: the entries could not be served anyway,
    /// this frees their room).
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.entries.clear();
            shard.queue.clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().entries.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(cache: &TokenCache, token: &str) {
        cache.insert(
            TokenCache::digest(token),
            Uuid::nil(),
            Instant::now() + Duration::from_secs(60),
            0,
        );
    }

    fn cached(cache: &TokenCache, token: &str) -> bool {
        cache.get(&TokenCache::digest(token), 0).is_some()
    }

    #[test]
    fn an_entry_verified_against_an_older_key_set_is_never_served() {
        let cache = TokenCache::new(ENTRY_BYTES * SHARDS * 10);
        let digest = TokenCache::digest("a");
        let user = Uuid::new_v4();
        // A request verified the token against the keys of epoch 3, and inserts it after
        // the keys changed (epoch 4).
        cache.insert(digest, user, Instant::now() + Duration::from_secs(60), 3);
        assert_eq!(cache.get(&digest, 4), None);
        assert_eq!(cache.get(&digest, 3), Some(user));
        // Verified again against the new keys, it is served in the new epoch only.
        cache.insert(digest, user, Instant::now() + Duration::from_secs(60), 4);
        assert_eq!(cache.get(&digest, 4), Some(user));
        assert_eq!(cache.get(&digest, 3), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_served_until_it_expires_and_not_after() {
        let cache = TokenCache::new(ENTRY_BYTES * SHARDS * 10);
        let digest = TokenCache::digest("a");
        cache.insert(
            digest,
            Uuid::nil(),
            Instant::now() + Duration::from_secs(20),
            0,
        );
        tokio::time::advance(Duration::from_secs(20) - Duration::from_millis(1)).await;
        assert_eq!(cache.get(&digest, 0), Some(Uuid::nil()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(cache.get(&digest, 0), None);

        // A token valid for an hour is trusted for MAX_ENTRY_TTL, then verified again.
        let digest = TokenCache::digest("b");
        let hour = Duration::from_secs(3600);
        cache.insert(digest, Uuid::nil(), Instant::now() + hour, 0);
        tokio::time::advance(MAX_ENTRY_TTL - Duration::from_millis(1)).await;
        assert_eq!(cache.get(&digest, 0), Some(Uuid::nil()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(cache.get(&digest, 0), None);
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let cache = TokenCache::new(ENTRY_BYTES * SHARDS * 2);
        for i in 0..10_000 {
            insert(&cache, &i.to_string());
        }
        assert_eq!(cache.len(), SHARDS * 2);
        for shard in &cache.shards {
            let shard = shard.lock().unwrap();
            assert_eq!(shard.queue.len(), shard.entries.len());
            // Allocated once at its full size: never grown past the budget.
            assert!(shard.entries.capacity() < 2 * shard.capacity + 8);
        }
    }

    #[test]
    fn a_flood_of_one_time_tokens_does_not_push_out_reused_ones() {
        let cache = TokenCache::new(ENTRY_BYTES * SHARDS * 64);
        let reused: Vec<String> = (0..200).map(|i| format!("reused-{i}")).collect();
        for token in &reused {
            insert(&cache, token);
            assert!(cached(&cache, token));
        }
        // Each round, fewer fresh tokens than a shard holds: with first-in-first-out eviction
        // the reused ones would be gone by the third round.
        for round in 0..20 {
            for i in 0..500 {
                insert(&cache, &format!("login-{round}-{i}"));
            }
            // The reused tokens are sent again now and then, as retries are.
            for token in &reused {
                assert!(cached(&cache, token), "{token} evicted in round {round}");
            }
        }
        assert!(
            !cached(&cache, "login-0-0"),
            "one-time tokens are the ones evicted"
        );
    }

    #[test]
    fn clearing_forgets_everything() {
        let cache = TokenCache::new(ENTRY_BYTES * SHARDS * 4);
        insert(&cache, "a");
        cache.clear();
        assert!(!cached(&cache, "a"));
        assert_eq!(cache.len(), 0);
        insert(&cache, "a");
        assert!(cached(&cache, "a"));
    }
}
