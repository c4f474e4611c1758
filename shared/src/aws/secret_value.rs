//! A value made from a secret (the signing key's signer, the app
//! registration's credentials) that a warm container picks up again when an
//! operator changes the secret, without a redeploy.
//!
//! The value is built once at start-up, where an unusable secret stops the
//! function with a message. After that, a use older than the TTL re-reads the
//! secret past the store's cache (one Secrets Manager call per TTL, so a
//! change is in use at most one TTL after it was written) and rebuilds the
//! value only when the secret changed. A secret that is
//! unreadable or broken after a change keeps the last good value in use and
//! says so in the log: a typo in a new key must not stop a running deployment.
//! Only a digest of the secret is kept here, never the secret.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::aws::secrets::{SecretError, SecretStore};

/// How a secret's text becomes the value; the error is words for the log.
pub type Parse<T> = fn(&str) -> Result<T, String>;

/// A value built from one secret and rebuilt when the secret changes.
pub struct SecretValue<T> {
    source: Option<Source<T>>,
    current: RwLock<Current<T>>,
    // Only one caller re-reads at a time; the others go on with the current value.
    reading: tokio::sync::Mutex<()>,
}

struct Source<T> {
    store: Arc<dyn SecretStore>,
    name: String,
    ttl: Duration,
    parse: Parse<T>,
}

struct Current<T> {
    value: Arc<T>,
    digest: String,
    checked: Instant,
}

impl<T> std::fmt::Debug for SecretValue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("secret", &self.source.as_ref().map(|s| s.name.as_str()))
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync> SecretValue<T> {
    /// A value that was built from `raw` (the secret's text at start-up),
    /// re-read from `store` at most every `ttl`.
    pub fn new(
        value: T,
        raw: &str,
        store: Arc<dyn SecretStore>,
        name: &str,
        ttl: Duration,
        parse: Parse<T>,
    ) -> Self {
        Self {
            source: Some(Source {
                store,
                name: name.to_string(),
                ttl,
                parse,
            }),
            current: RwLock::new(Current {
                value: Arc::new(value),
                digest: crate::digest::sha256_hex(raw.as_bytes()),
                checked: Instant::now(),
            }),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the secret `name` from `store` and builds the value with
    /// `build`, which may fail with the caller's own error; later re-reads
    /// (at most every `ttl`) rebuild it with `parse`. `Ok(None)` when the
    /// secret has no value.
    ///
    /// # Errors
    /// The store's error, or `build`'s.
    pub async fn load<E: From<SecretError>>(
        store: Arc<dyn SecretStore>,
        name: &str,
        ttl: Duration,
        parse: Parse<T>,
        build: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<Self>, E> {
        let Some(raw) = store.get(name).await? else {
            return Ok(None);
        };
        let value = build(&raw)?;
        Ok(Some(Self::new(value, &raw, store, name, ttl, parse)))
    }

    /// A value that never changes (tests, tools).
    pub fn fixed(value: T) -> Self {
        Self {
            source: None,
            current: RwLock::new(Current {
                value: Arc::new(value),
                digest: String::new(),
                checked: Instant::now(),
            }),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The value without re-reading (what is in use right now).
    pub fn now(&self) -> Arc<T> {
        match self.current.read() {
            Ok(c) => c.value.clone(),
            Err(poisoned) => poisoned.into_inner().value.clone(),
        }
    }

    /// The value, re-read first when the last read is older than the TTL.
    pub async fn get(&self) -> Arc<T> {
        let Some(source) = &self.source else {
            return self.now();
        };
        let stale = self
            .current
            .read()
            .map(|c| c.checked.elapsed() >= source.ttl)
            .unwrap_or(true);
        if stale && let Ok(_reading) = self.reading.try_lock() {
            self.reread(source).await;
        }
        self.now()
    }

    async fn reread(&self, source: &Source<T>) {
        let raw = match source.store.get_fresh(&source.name).await {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                tracing::error!(secret = %source.name, "the secret has no value any more; the last value stays in use");
                return self.checked();
            }
            Err(e) => {
                tracing::warn!(secret = %source.name, error = %e, "could not re-read the secret; the last value stays in use");
                return self.checked();
            }
        };
        let digest = crate::digest::sha256_hex(raw.as_bytes());
        let unchanged = self.current.read().map(|c| c.digest == digest).unwrap_or(false);
        if unchanged {
            return self.checked();
        }
        match (source.parse)(&raw) {
            Ok(value) => {
                if let Ok(mut c) = self.current.write() {
                    *c = Current {
                        value: Arc::new(value),
                        digest,
                        checked: Instant::now(),
                    };
                }
                tracing::info!(secret = %source.name, "the secret changed; its new value is in use");
            }
            Err(why) => {
                tracing::error!(secret = %source.name, error = %why, "the secret changed but cannot be used; the last value stays in use");
                self.checked();
            }
        }
    }

    fn checked(&self) {
        if let Ok(mut c) = self.current.write() {
            c.checked = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::secrets::MemorySecretStore;

    fn parse_len(raw: &str) -> Result<usize, String> {
        if raw.starts_with("bad") {
            Err("bad value".into())
        } else {
            Ok(raw.len())
        }
    }

    async fn value(ttl: Duration) -> (SecretValue<usize>, Arc<MemorySecretStore>) {
        let store = Arc::new(MemorySecretStore::with(&[("s", "abc")]));
        let v = SecretValue::new(3, "abc", store.clone(), "s", ttl, parse_len);
        (v, store)
    }

    #[tokio::test]
    async fn a_changed_secret_is_used_once_the_ttl_has_passed() {
        let (v, store) = value(Duration::ZERO).await;
        assert_eq!(*v.get().await, 3);
        store.put("s", "abcdef", "t1").await.unwrap();
        assert_eq!(*v.get().await, 6);
    }

    #[tokio::test]
    async fn within_the_ttl_the_secret_is_not_read_again() {
        let (v, store) = value(Duration::from_secs(3600)).await;
        store.put("s", "abcdef", "t1").await.unwrap();
        assert_eq!(*v.get().await, 3, "read again before the TTL");
    }

    #[tokio::test]
    async fn a_broken_or_missing_secret_keeps_the_last_good_value() {
        let (v, store) = value(Duration::ZERO).await;
        store.put("s", "bad!", "t1").await.unwrap();
        assert_eq!(*v.get().await, 3);
        store.delete("s").await.unwrap();
        assert_eq!(*v.get().await, 3);
        store.create("s", "abcd").await.unwrap();
        assert_eq!(*v.get().await, 4);
    }

    #[tokio::test]
    async fn a_fixed_value_never_reads() {
        let v = SecretValue::fixed(7usize);
        assert_eq!(*v.get().await, 7);
    }
}
