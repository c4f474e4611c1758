//! Delegated refresh tokens sealed with KMS in the state table, used instead
//! of one Secrets Manager secret per connection when `RELAY365_TOKEN_KEY_ID`
//! is set.
//!
//! A token secret costs $0.40 a month per delegated mailbox; a sealed item
//! costs a small fraction of a cent (docs/architecture.md has the sums). The
//! item (`conn#{id}` / `tok`) keeps what the secret kept, the refresh token
//! and its sign-in `generation`, and the same rules hold: writes are
//! conditional on the generation, so a rotated token never replaces a newer
//! sign-in's and two containers never undo each other's write.
//!
//! The token JSON is sealed with a fresh random nonce per write and a data
//! key from the container's cache ([`CachingDataKeys`]): the key this
//! container generated or decrypted for the connection within the last 90
//! minutes, else a new one from KMS. So a rotated write after a cold read,
//! and the next refresh's write in a warm container, ask KMS nothing, and
//! opening an item this container sealed needs no `Decrypt`. The connection
//! id is in the KMS encryption context (which also keys the cache) and, with
//! the generation, in the AES-GCM associated data, so an item copied into
//! another connection's partition (or given another generation) does not
//! open: [`SealError::Unopenable`], which means the connection needs a new
//! sign-in.
//!
//! Opened tokens are kept in memory for the secret TTL, as the secret cache
//! keeps token secrets: a warm container reads the item again only after
//! that, and asks KMS to decrypt only when the item changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::aws::kms::{CachingDataKeys, Context, DataKeys, KeyCachePolicy, KeyError};
use crate::aws::sealed::{self, OpenError};
use crate::aws::store::{SealedTokenItem, Store, StoreError, TokenWrite};
use crate::microsoft::stored_token::StoredToken;
use crate::model::sensitive::Sensitive;

/// The encryption context key naming what a data key protects; the key
/// policy requires it on every use of the token key.
pub const PURPOSE_KEY: &str = "relay365:purpose";
/// The purpose of refresh-token data keys.
pub const PURPOSE: &str = "refresh-token";
/// The encryption context key naming the connection.
pub const CONNECTION_KEY: &str = "relay365:connection";

/// Why a sealed token could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The stored token was sealed for another connection (or another
    /// sign-in), or it is damaged: the connection needs a new sign-in.
    #[error(
        "the stored refresh token of connection {id} cannot be opened for it (it was sealed for another connection, or it is damaged): connect the mailbox again from its connect link"
    )]
    Unopenable {
        /// The connection.
        id: String,
    },
    /// KMS failed; the variant says what to do.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The state table failed.
    #[error(transparent)]
    State(#[from] StoreError),
}

impl SealError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SealError::Unopenable { .. } => false,
            SealError::Key(e) => e.is_retryable(),
            SealError::State(e) => e.is_retryable(),
        }
    }
}

/// The encryption context of a connection's token data keys.
pub fn context(id: &str) -> Context {
    [
        (PURPOSE_KEY.to_string(), PURPOSE.to_string()),
        (CONNECTION_KEY.to_string(), id.to_string()),
    ]
    .into_iter()
    .collect()
}

/// The AES-GCM associated data: the purpose, the connection and the generation.
fn aad(id: &str, generation: u64) -> Vec<u8> {
    format!("relay365:{PURPOSE}:v1\0{id}\0{generation}").into_bytes()
}

struct Cached {
    item: SealedTokenItem,
    token: StoredToken,
    read_at: Instant,
}

/// Sealed refresh tokens in the state table, with the opened ones cached.
pub struct SealedTokens {
    /// The container's data keys, cached per connection.
    keys: CachingDataKeys,
    state: Store,
    ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

crate::debug_showing!(SealedTokens { ttl });

impl SealedTokens {
    /// Sealed tokens in `state`, with data keys from `keys` cached under the
    /// default [`KeyCachePolicy`]; an opened token is trusted from memory
    /// for `ttl`. One per container: the caches are this value's.
    pub fn new(keys: Arc<dyn DataKeys>, state: Store, ttl: Duration) -> Self {
        Self::with_key_cache(CachingDataKeys::new(keys, KeyCachePolicy::default()), state, ttl)
    }

    /// As [`SealedTokens::new`], with a data-key cache of one's own (another
    /// policy, or a test clock).
    pub fn with_key_cache(keys: CachingDataKeys, state: Store, ttl: Duration) -> Self {
        Self {
            keys,
            state,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, id: &str) -> Option<(SealedTokenItem, StoredToken, Instant)> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(id)
            .map(|c| (c.item.clone(), c.token.clone(), c.read_at))
    }

    fn remember(&self, id: &str, item: SealedTokenItem, token: StoredToken) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            id.to_string(),
            Cached {
                item,
                token,
                read_at: Instant::now(),
            },
        );
    }

    fn forget(&self, id: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(id);
    }

    /// Seals a token for connection `id` (not stored yet).
    ///
    /// # Errors
    /// [`SealError::Key`] when KMS failed.
    pub async fn seal(&self, id: &str, token: &StoredToken) -> Result<SealedTokenItem, SealError> {
        let json = zeroize::Zeroizing::new(serde_json::to_vec(token).unwrap_or_default());
        let envelope = sealed::seal(&self.keys, &context(id), &aad(id, token.generation), &json).await?;
        Ok(SealedTokenItem {
            generation: token.generation,
            written_at: OffsetDateTime::now_utc().unix_timestamp(),
            envelope,
        })
    }

    /// Opens the sealed token of connection `id`.
    ///
    /// # Errors
    /// [`SealError::Unopenable`] when it was sealed for another connection or
    /// generation or is damaged; [`SealError::Key`] when KMS failed.
    pub async fn open(&self, id: &str, item: &SealedTokenItem) -> Result<StoredToken, SealError> {
        let unopenable = || SealError::Unopenable { id: id.to_string() };
        let json = sealed::open(
            &self.keys,
            &context(id),
            &aad(id, item.generation),
            &item.envelope,
        )
        .await
        .map_err(|e| match e {
            OpenError::Rejected => unopenable(),
            OpenError::Key(k) => SealError::Key(k),
        })?;
        let token: StoredToken = serde_json::from_slice(&json).map_err(|_| unopenable())?;
        if token.generation != item.generation {
            return Err(unopenable());
        }
        Ok(token)
    }

    /// The stored token of connection `id`: from memory when read within the
    /// TTL and of at least `min_generation` (unless `fresh`), else read from
    /// the table and opened (KMS is asked only when the item changed).
    ///
    /// # Errors
    /// [`SealError`].
    pub async fn read(
        &self,
        id: &str,
        min_generation: u64,
        fresh: bool,
    ) -> Result<Option<StoredToken>, SealError> {
        let cached = self.cached(id);
        if !fresh
            && let Some((_, token, read_at)) = &cached
            && token.generation >= min_generation
            && read_at.elapsed() < self.ttl
        {
            return Ok(Some(token.clone()));
        }
        let Some(item) = self.state.sealed_token(id).await? else {
            self.forget(id);
            return Ok(None);
        };
        let token = match cached {
            Some((was, token, _)) if was == item => token,
            _ => self.open(id, &item).await?,
        };
        self.remember(id, item, token.clone());
        Ok(Some(token))
    }

    /// Stores `token` under the condition `mode`, and remembers it.
    ///
    /// # Errors
    /// `SealError::State(StoreError::Conflict)` when the condition failed;
    /// other [`SealError`]s.
    pub async fn write(&self, id: &str, token: &StoredToken, mode: TokenWrite) -> Result<(), SealError> {
        let item = self.seal(id, token).await?;
        match self.state.put_sealed_token(id, &item, mode).await {
            Ok(()) => {
                self.remember(id, item, token.clone());
                Ok(())
            }
            Err(e) => {
                self.forget(id);
                Err(e.into())
            }
        }
    }

    /// Stores a rotated token of connection `id` if the stored one is of
    /// the same generation and was written before `written_before` (unix
    /// seconds); true when it was written. What this container knows and one
    /// consistent read (far cheaper than a data key) skip a write that is not
    /// due before KMS is asked; the write itself is conditional, so of two
    /// containers only one writes per interval.
    ///
    /// # Errors
    /// [`SealError`] other than a lost race, which is `Ok(false)`.
    pub async fn write_rotated(
        &self,
        id: &str,
        token: &StoredToken,
        written_before: i64,
    ) -> Result<bool, SealError> {
        let due =
            |item: &SealedTokenItem| item.generation == token.generation && item.written_at < written_before;
        if let Some((item, _, _)) = self.cached(id)
            && item.generation == token.generation
            && !due(&item)
        {
            return Ok(false);
        }
        match self.state.sealed_token(id).await? {
            Some(item) if due(&item) => {}
            _ => return Ok(false),
        }
        match self
            .write(id, token, TokenWrite::Rotation { written_before })
            .await
        {
            Ok(()) => Ok(true),
            Err(SealError::State(StoreError::Conflict { .. })) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A token sealed for generation `generation` of connection `id`.
    pub fn stored(refresh: &Sensitive, generation: u64) -> StoredToken {
        StoredToken {
            refresh_token: refresh.clone(),
            generation,
        }
    }

    /// Deletes the sealed token of connection `id` (missing is fine).
    ///
    /// # Errors
    /// The state table's error.
    pub async fn delete(&self, id: &str) -> Result<(), SealError> {
        self.forget(id);
        self.keys.forget(&context(id));
        self.state.delete_sealed_token(id).await.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::kms::MemoryDataKeys;

    fn vault(state: &Store) -> SealedTokens {
        SealedTokens::new(
            Arc::new(MemoryDataKeys::new()),
            state.clone(),
            Duration::from_secs(300),
        )
    }

    /// A vault whose KMS requests are counted: (generate, decrypt).
    fn counted(state: &Store) -> (Arc<crate::aws::kms::CountingDataKeys>, SealedTokens) {
        let keys = Arc::new(crate::aws::kms::CountingDataKeys::default());
        let v = SealedTokens::new(keys.clone(), state.clone(), Duration::from_secs(300));
        (keys, v)
    }

    fn t(refresh_token: &str, generation: u64) -> StoredToken {
        SealedTokens::stored(&Sensitive::new(refresh_token), generation)
    }

    /// Copies `item` to connection b, as a table reader could, and reads b:
    /// it does not open, with the error that says to connect b again.
    async fn copied_to_b(state: &Store, v: &SealedTokens, item: &SealedTokenItem) -> SealError {
        state
            .put_sealed_token("b", item, TokenWrite::IfAbsent)
            .await
            .unwrap();
        let err = v.read("b", 0, true).await.unwrap_err();
        assert!(
            matches!(err, SealError::Unopenable { ref id } if id == "b"),
            "{err:?}"
        );
        assert!(err.to_string().contains("connect the mailbox again"), "{err}");
        err
    }

    #[tokio::test]
    async fn a_token_round_trips_and_an_item_copied_to_another_connection_does_not_open() {
        let state = Store::memory();
        let v = vault(&state);
        let token = SealedTokens::stored(&Sensitive::new("rt-secret-value"), 3);
        v.write("a", &token, TokenWrite::SignIn).await.unwrap();
        let item = state.sealed_token("a").await.unwrap().unwrap();
        assert!(!format!("{item:?}").contains("rt-secret-value"));
        let back = v.open("a", &item).await.unwrap();
        assert_eq!(
            (back.refresh_token.expose(), back.generation),
            ("rt-secret-value", 3)
        );
        // Copied to connection b, as a table reader could.
        let err = copied_to_b(&state, &v, &item).await;
        assert!(!err.is_retryable());
        // Another generation's label on the same envelope does not open either.
        let mut relabelled = item.clone();
        relabelled.generation = 4;
        assert!(matches!(
            v.open("a", &relabelled).await,
            Err(SealError::Unopenable { .. })
        ));
    }

    #[tokio::test]
    async fn a_container_reuses_its_data_key_per_connection_and_opens_its_own_items_without_kms() {
        let state = Store::memory();
        let (keys, v) = counted(&state);
        v.write("a", &t("one", 1), TokenWrite::SignIn).await.unwrap();
        assert_eq!(keys.counts(), (1, 0));
        let first = state.sealed_token("a").await.unwrap().unwrap();
        // A rotated write, due: the same data key, a new nonce, no KMS request.
        let due = OffsetDateTime::now_utc().unix_timestamp() + 1;
        assert!(v.write_rotated("a", &t("two", 1), due).await.unwrap());
        assert_eq!(keys.counts(), (1, 0));
        let second = state.sealed_token("a").await.unwrap().unwrap();
        assert_eq!(second.envelope.encrypted_key, first.envelope.encrypted_key);
        assert_ne!(second.envelope.nonce, first.envelope.nonce);
        // Opening what this container sealed asks KMS nothing.
        assert_eq!(v.open("a", &second).await.unwrap().refresh_token.expose(), "two");
        assert_eq!(keys.counts(), (1, 0));
        // Another connection gets a key of its own.
        v.write("b", &t("bee", 1), TokenWrite::SignIn).await.unwrap();
        assert_eq!(keys.counts(), (2, 0));
        // Another container decrypts once, then writes with that key.
        let other = SealedTokens::new(keys.clone(), state.clone(), Duration::from_secs(300));
        assert_eq!(
            other
                .read("a", 0, true)
                .await
                .unwrap()
                .unwrap()
                .refresh_token
                .expose(),
            "two"
        );
        assert_eq!(keys.counts(), (2, 1));
        other
            .write("a", &t("three", 2), TokenWrite::SignIn)
            .await
            .unwrap();
        assert_eq!(keys.counts(), (2, 1));
        // A deleted connection's key is dropped: a new sign-in makes a new one.
        other.delete("a").await.unwrap();
        other.write("a", &t("four", 3), TokenWrite::SignIn).await.unwrap();
        assert_eq!(keys.counts(), (3, 1));
    }

    #[tokio::test]
    async fn a_cached_key_does_not_open_an_item_copied_to_another_connection() {
        let state = Store::memory();
        let (keys, v) = counted(&state);
        // The container holds connection a's data key (it just sealed a's token).
        v.write("a", &t("a-secret-token", 1), TokenWrite::SignIn)
            .await
            .unwrap();
        let item = state.sealed_token("a").await.unwrap().unwrap();
        assert_eq!(
            v.open("a", &item).await.unwrap().refresh_token.expose(),
            "a-secret-token"
        );
        assert_eq!(keys.counts(), (1, 0), "opened from the cache");
        // Copied to b and opened as b: the cache has nothing under b's
        // context, KMS is asked and refuses.
        copied_to_b(&state, &v, &item).await;
        assert_eq!(keys.counts(), (1, 1));
        // Also when b has a key of its own cached.
        v.write("b", &t("b-token", 2), TokenWrite::SignIn).await.unwrap();
        assert!(matches!(
            v.open("b", &item).await,
            Err(SealError::Unopenable { .. })
        ));
        assert_eq!(keys.counts(), (2, 2));
        // a's own item still opens, from the cache.
        assert_eq!(
            v.open("a", &item).await.unwrap().refresh_token.expose(),
            "a-secret-token"
        );
        assert_eq!(keys.counts(), (2, 2));
    }

    #[tokio::test]
    async fn writes_never_replace_a_newer_sign_in() {
        let state = Store::memory();
        let v = vault(&state);
        let t = |rt: &str, g| SealedTokens::stored(&Sensitive::new(rt), g);
        v.write("a", &t("one", 1), TokenWrite::SignIn).await.unwrap();
        // The sign-in's write is recent: a rotation within the interval is skipped.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let recent = TokenWrite::Rotation {
            written_before: now - 600,
        };
        assert!(matches!(
            v.write("a", &t("too-soon", 1), recent).await,
            Err(SealError::State(StoreError::Conflict { .. }))
        ));
        assert!(!v.write_rotated("a", &t("too-soon", 1), now - 600).await.unwrap());
        let due = TokenWrite::Rotation {
            written_before: now + 1,
        };
        v.write("a", &t("one-rotated", 1), due).await.unwrap();
        v.write("a", &t("two", 2), TokenWrite::SignIn).await.unwrap();
        // A rotation of generation 1 that lands late, and an older sign-in.
        assert!(matches!(
            v.write("a", &t("late", 1), due).await,
            Err(SealError::State(StoreError::Conflict { .. }))
        ));
        assert!(matches!(
            v.write("a", &t("old", 1), TokenWrite::SignIn).await,
            Err(SealError::State(StoreError::Conflict { .. }))
        ));
        assert!(matches!(
            v.write("a", &t("again", 2), TokenWrite::IfAbsent).await,
            Err(SealError::State(StoreError::Conflict { .. }))
        ));
        let now = v.read("a", 0, true).await.unwrap().unwrap();
        assert_eq!((now.refresh_token.expose(), now.generation), ("two", 2));
        // A rotation with no item is a conflict too (nothing to rotate).
        assert!(matches!(
            v.write("z", &t("x", 1), due).await,
            Err(SealError::State(StoreError::Conflict { .. }))
        ));
        v.delete("a").await.unwrap();
        assert!(v.read("a", 0, true).await.unwrap().is_none());
    }
}
