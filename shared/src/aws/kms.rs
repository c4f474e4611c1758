//! Data keys from AWS KMS, for sealing delegated refresh tokens in the state
//! table (envelope encryption).
//!
//! A Secrets Manager secret per delegated connection costs $0.40 a month
//! whatever it holds; a sealed item in the state table costs a fraction of a
//! cent. KMS never sees a token: a write asks it for an AES-256 data key
//! ([`DataKeys::generate`]), the token is sealed with that key here, and
//! only the data key, encrypted under the deployment's KMS key, is stored
//! beside it. Reading asks KMS to decrypt the data key
//! ([`DataKeys::decrypt`]). A container reuses a connection's data key for a
//! while ([`CachingDataKeys`]), so most writes and reads skip these requests. Both calls carry an encryption context (the
//! connection and the purpose), which KMS binds to the encrypted key: a data
//! key made for one connection does not decrypt under another's context, and
//! the key policy refuses any call without the purpose.
//!
//! [`DataKeys`] is the port; [`KmsDataKeys`] is AWS KMS through the SDK (with
//! the project's timeouts), [`MemoryDataKeys`] a local stand-in with the same
//! context rule, for unit tests and runs without AWS, and [`CachingDataKeys`]
//! keeps a container's recent data keys so that most writes and reads need
//! no KMS request at all (as the AWS Encryption SDK's caching materials
//! manager does; the bounds and why are on [`KeyCachePolicy`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use zeroize::Zeroizing;

use crate::aws::aead;
use crate::aws::sdk::LazyClient;

/// The encryption context of a KMS call: names and values KMS binds to the
/// encrypted data key. Never secret (CloudTrail logs it).
pub type Context = BTreeMap<String, String>;

/// A failure of the key service; no variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// KMS refused to decrypt this encrypted key under this context: it was
    /// made for another context (another connection) or it is damaged. The
    /// value it protects is lost; whatever it was must be made again.
    #[error("the key service refused this encrypted data key for its context")]
    Rejected,
    /// The function's role may not use the key: fix the key policy or the IAM policy.
    #[error("use of the token key was denied ({detail}): check the key policy and the function's IAM policy")]
    AccessDenied {
        /// The service's error code.
        detail: String,
    },
    /// The key does not exist, is disabled or pending deletion: fix the key
    /// or `RELAY365_TOKEN_KEY_ID`.
    #[error(
        "the token key cannot be used ({detail}): check RELAY365_TOKEN_KEY_ID and the key's state in KMS"
    )]
    Unusable {
        /// The service's error code.
        detail: String,
    },
    /// A passing failure (throttling, network, service error): retry later.
    #[error("the key service is unavailable ({detail}): retry later")]
    Unavailable {
        /// What failed, without values.
        detail: String,
    },
}

impl KeyError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, KeyError::Unavailable { .. })
    }
}

/// A new data key: its plaintext (wiped from memory when dropped) and the
/// same key encrypted under the KMS key, which is what gets stored.
pub struct DataKey {
    /// The 32 bytes of an AES-256 key.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The key as KMS encrypted it (opaque, safe to store).
    pub encrypted: Vec<u8>,
}

crate::debug_showing!(DataKey {});

/// Where data keys come from: KMS, or memory in tests.
#[async_trait]
pub trait DataKeys: Send + Sync {
    /// A new AES-256 data key bound to `context`.
    async fn generate(&self, context: &Context) -> Result<DataKey, KeyError>;
    /// The plaintext of an encrypted data key, which only the same context opens.
    async fn decrypt(&self, encrypted: &[u8], context: &Context) -> Result<Zeroizing<Vec<u8>>, KeyError>;
    /// The KMS key the data keys are made under (id, alias or ARN as
    /// configured), which [`CachingDataKeys`] keys its entries by; empty
    /// when there is no such name (a stand-in in memory).
    fn key_id(&self) -> &str {
        ""
    }
}

// ---------------------------------------------------------------------------
// AWS KMS

/// [`DataKeys`] on AWS KMS: `GenerateDataKey` (AES_256) and `Decrypt`, both
/// with the key named in `RELAY365_TOKEN_KEY_ID` and the encryption context.
pub struct KmsDataKeys {
    client: Arc<LazyClient<aws_sdk_kms::Client>>,
    key_id: String,
}

crate::debug_showing!(KmsDataKeys { key_id });

impl KmsDataKeys {
    /// Data keys of the KMS key `key_id` (id, alias or ARN).
    pub fn new(client: Arc<LazyClient<aws_sdk_kms::Client>>, key_id: &str) -> Self {
        Self {
            client,
            key_id: key_id.to_string(),
        }
    }

    /// A client built on first use from the container's SDK configuration
    /// (with the project's timeouts), for the key `key_id`.
    pub fn from_env(key_id: &str) -> Self {
        Self::new(Arc::new(LazyClient::new(aws_sdk_kms::Client::new)), key_id)
    }
}

fn map_sdk<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(err: &SdkError<E, R>) -> KeyError {
    let code = err.code().unwrap_or_default().to_string();
    match code.as_str() {
        "InvalidCiphertextException" | "IncorrectKeyException" => KeyError::Rejected,
        "AccessDeniedException" | "UnrecognizedClientException" => KeyError::AccessDenied { detail: code },
        "NotFoundException"
        | "DisabledException"
        | "KMSInvalidStateException"
        | "InvalidKeyUsageException"
        | "KeyUnavailableException" => KeyError::Unusable { detail: code },
        "" => KeyError::Unavailable {
            detail: match err {
                SdkError::TimeoutError(_) => "timed out",
                SdkError::DispatchFailure(_) => "could not reach KMS",
                SdkError::ResponseError(_) => "unreadable answer",
                SdkError::ConstructionFailure(_) => "request could not be built",
                _ => "service error",
            }
            .into(),
        },
        _ => KeyError::Unavailable { detail: code },
    }
}

#[async_trait]
impl DataKeys for KmsDataKeys {
    async fn generate(&self, context: &Context) -> Result<DataKey, KeyError> {
        let out = self
            .client
            .get()
            .await
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context(Some(context.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| map_sdk(&e))?;
        let (Some(plaintext), Some(encrypted)) = (out.plaintext, out.ciphertext_blob) else {
            return Err(KeyError::Unavailable {
                detail: "GenerateDataKey answered without a key".into(),
            });
        };
        let plaintext = Zeroizing::new(plaintext.into_inner());
        if plaintext.len() != 32 {
            return Err(KeyError::Unavailable {
                detail: "GenerateDataKey answered with a key that is not 256 bits".into(),
            });
        }
        Ok(DataKey {
            plaintext,
            encrypted: encrypted.into_inner(),
        })
    }

    async fn decrypt(&self, encrypted: &[u8], context: &Context) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let out = self
            .client
            .get()
            .await
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(encrypted))
            .set_encryption_context(Some(context.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| map_sdk(&e))?;
        out.plaintext
            .map(|p| Zeroizing::new(p.into_inner()))
            .ok_or(KeyError::Unavailable {
                detail: "Decrypt answered without a key".into(),
            })
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }
}

// ---------------------------------------------------------------------------
// In memory

/// [`DataKeys`] in memory: data keys are sealed with a random master key
/// (AES-256-GCM) and the context as associated data, so a wrong context is
/// refused as KMS refuses it. For unit tests and runs without AWS.
pub struct MemoryDataKeys {
    master: Zeroizing<Vec<u8>>,
}

crate::debug_showing!(MemoryDataKeys {});

impl Default for MemoryDataKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDataKeys {
    /// A key service with a new random master key.
    pub fn new() -> Self {
        let mut master = Zeroizing::new(vec![0u8; 32]);
        // A failed fill leaves zeros: still a working (test-only) key.
        let _ = aws_lc_rs::rand::fill(master.as_mut_slice());
        Self { master }
    }
}

fn context_bytes(context: &Context) -> Vec<u8> {
    serde_json::to_vec(context).unwrap_or_default()
}

#[async_trait]
impl DataKeys for MemoryDataKeys {
    async fn generate(&self, context: &Context) -> Result<DataKey, KeyError> {
        let mut plaintext = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(plaintext.as_mut_slice()).map_err(|_| KeyError::Unavailable {
            detail: "no randomness".into(),
        })?;
        let encrypted =
            aead::seal_bytes(&self.master, &context_bytes(context), &plaintext).map_err(|_| {
                KeyError::Unavailable {
                    detail: "the local key could not seal".into(),
                }
            })?;
        Ok(DataKey { plaintext, encrypted })
    }

    async fn decrypt(&self, encrypted: &[u8], context: &Context) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        aead::open_bytes(&self.master, &context_bytes(context), encrypted)
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Rejected)
    }
}

// ---------------------------------------------------------------------------
// The container's data-key cache

/// How long and how much [`CachingDataKeys`] may use one data key.
///
/// The defaults, and why:
///
/// - **`max_age` 90 minutes**, counted from when this container generated or
///   decrypted the key. Microsoft's access tokens live 60 to 90 minutes and a
///   warm container refreshes (and writes the rotated token) 55 to 85 minutes
///   after its last write for a mailbox: a key that lives 90 minutes serves
///   that next write too, where 15 minutes would serve almost none (a
///   connection writes at most once per ten minutes). It adds no real window
///   after KMS access is revoked (a disabled key, a changed key policy): a
///   warm container already keeps its access tokens (up to 90 minutes) and an
///   opened refresh token (as long as the item is unchanged) without KMS.
/// - **`max_uses` 1,000 seals** per key and container. A connection writes at
///   most once per ten minutes (about ten seals in 90 minutes, with sign-ins
///   and lost races), so this binds only if something loops; it is far below
///   the 2^32 messages a key may seal with random 96-bit nonces (NIST SP
///   800-38D). A key decrypted from another container's item may be reused
///   here for up to 90 minutes more; however often that chains, a key only
///   ever seals one connection's tokens, at most one write per ten minutes.
/// - **`max_entries` 1,000**, one per connection (the KMS key and the
///   encryption context, which names the connection): under a kilobyte
///   each, so under a megabyte per container. When full, expired entries go
///   first, then the least recently used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCachePolicy {
    /// How long after this container generated or decrypted a key it is used.
    pub max_age: Duration,
    /// How many values one key may seal in this container.
    pub max_uses: u64,
    /// How many keys the container keeps (one per KMS key and context).
    pub max_entries: usize,
}

impl Default for KeyCachePolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(90 * 60),
            max_uses: 1_000,
            max_entries: 1_000,
        }
    }
}

/// A clock for the cache's ages: [`Instant::now`] in production, a
/// hand-moved one in tests.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// One cached data key. The plaintext is wiped when the entry is dropped
/// (replaced, expired or evicted).
struct KeyEntry {
    plaintext: Zeroizing<Vec<u8>>,
    encrypted: Vec<u8>,
    /// When this container generated or decrypted it: the age starts here.
    obtained: Instant,
    /// Seals made with it in this container.
    uses: u64,
    /// For evicting the least recently used.
    last_used: Instant,
}

/// The cache's key: the KMS key and the whole encryption context, so a key is
/// only ever handed out for the very context KMS bound it to.
type EntryKey = (String, Context);

/// [`DataKeys`] that reuses the container's recent data keys, bounded by a
/// [`KeyCachePolicy`].
///
/// - [`DataKeys::generate`] (sealing) hands out the key this container last
///   generated or decrypted for the same KMS key and encryption context while
///   it is younger than `max_age` and has sealed fewer than `max_uses`
///   values; otherwise it asks the inner source for a new one. The caller
///   seals with a fresh random nonce each time, and stores the same encrypted
///   data key.
/// - [`DataKeys::decrypt`] (opening) answers from memory when the encrypted
///   key is byte for byte the cached one of the same KMS key and context, and
///   is younger than `max_age`; otherwise it asks the inner source, which
///   checks the context, and keeps what it answers.
///
/// Nothing weakens the context binding: an entry is found only under the
/// context KMS bound it to, so an item copied to another connection looks
/// under that connection's context, misses (or finds another encrypted
/// key), and goes to KMS, which refuses it.
pub struct CachingDataKeys {
    inner: Arc<dyn DataKeys>,
    policy: KeyCachePolicy,
    now: Clock,
    entries: Mutex<HashMap<EntryKey, KeyEntry>>,
}

crate::debug_showing!(CachingDataKeys { policy });

impl CachingDataKeys {
    /// Caches the data keys of `inner` under `policy`.
    pub fn new(inner: Arc<dyn DataKeys>, policy: KeyCachePolicy) -> Self {
        Self::with_clock(inner, policy, Arc::new(Instant::now))
    }

    /// As [`CachingDataKeys::new`], with ages measured by `now` (for tests).
    pub fn with_clock(inner: Arc<dyn DataKeys>, policy: KeyCachePolicy, now: Clock) -> Self {
        Self {
            inner,
            policy,
            now,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Drops the cached key of `context` (a deleted connection), wiping it.
    pub fn forget(&self, context: &Context) {
        let key = self.entry_key(context);
        self.lock().remove(&key);
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EntryKey, KeyEntry>> {
        // A panic elsewhere cannot leave an entry half-written (each change
        // is one insert or remove), so a poisoned lock is still sound.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry_key(&self, context: &Context) -> EntryKey {
        (self.inner.key_id().to_string(), context.clone())
    }

    fn fresh(&self, entry: &KeyEntry, now: Instant) -> bool {
        now.saturating_duration_since(entry.obtained) < self.policy.max_age
    }

    /// Keeps a key just generated or decrypted, making room if needed.
    fn keep(&self, key: EntryKey, plaintext: Zeroizing<Vec<u8>>, encrypted: Vec<u8>, uses: u64) {
        if self.policy.max_entries == 0 {
            return;
        }
        let now = (self.now)();
        let mut entries = self.lock();
        if !entries.contains_key(&key) && entries.len() >= self.policy.max_entries {
            entries.retain(|_, e| now.saturating_duration_since(e.obtained) < self.policy.max_age);
            while entries.len() >= self.policy.max_entries {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(
            key,
            KeyEntry {
                plaintext,
                encrypted,
                obtained: now,
                uses,
                last_used: now,
            },
        );
    }
}

#[async_trait]
impl DataKeys for CachingDataKeys {
    async fn generate(&self, context: &Context) -> Result<DataKey, KeyError> {
        let key = self.entry_key(context);
        {
            let now = (self.now)();
            let mut entries = self.lock();
            if let Some(entry) = entries.get_mut(&key) {
                if self.fresh(entry, now) && entry.uses < self.policy.max_uses {
                    entry.uses += 1;
                    entry.last_used = now;
                    return Ok(DataKey {
                        plaintext: entry.plaintext.clone(),
                        encrypted: entry.encrypted.clone(),
                    });
                }
                // Too old or used up: wipe it now rather than at the next insert.
                entries.remove(&key);
            }
        }
        // The lock is not held across the request: two seals racing here
        // each get a new key, and the later one stays cached.
        let new = self.inner.generate(context).await?;
        self.keep(key, new.plaintext.clone(), new.encrypted.clone(), 1);
        Ok(new)
    }

    async fn decrypt(&self, encrypted: &[u8], context: &Context) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let key = self.entry_key(context);
        {
            let now = (self.now)();
            let mut entries = self.lock();
            if let Some(entry) = entries.get_mut(&key)
                && entry.encrypted == encrypted
                && self.fresh(entry, now)
            {
                entry.last_used = now;
                return Ok(entry.plaintext.clone());
            }
        }
        // A refusal changes nothing: the entry this context holds (if any)
        // is still the right one for it.
        let plaintext = self.inner.decrypt(encrypted, context).await?;
        self.keep(key, plaintext.clone(), encrypted.to_vec(), 0);
        Ok(plaintext)
    }

    fn key_id(&self) -> &str {
        self.inner.key_id()
    }
}

/// [`MemoryDataKeys`] that count their requests, for tests of the cache.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct CountingDataKeys {
    inner: MemoryDataKeys,
    /// `generate` calls that reached this source.
    pub(crate) generated: std::sync::atomic::AtomicU32,
    /// `decrypt` calls that reached this source.
    pub(crate) decrypted: std::sync::atomic::AtomicU32,
}

#[cfg(test)]
impl CountingDataKeys {
    /// (generate, decrypt) calls so far.
    pub(crate) fn counts(&self) -> (u32, u32) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.generated.load(SeqCst), self.decrypted.load(SeqCst))
    }
}

#[cfg(test)]
#[async_trait]
impl DataKeys for CountingDataKeys {
    async fn generate(&self, context: &Context) -> Result<DataKey, KeyError> {
        self.generated.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.generate(context).await
    }

    async fn decrypt(&self, encrypted: &[u8], context: &Context) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.decrypted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.decrypt(encrypted, context).await
    }

    fn key_id(&self) -> &str {
        "test-key"
    }
}

#[cfg(test)]
mod tests;
