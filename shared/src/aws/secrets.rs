//! Where tokens and settings live: AWS Secrets Manager in production, a
//! private directory for local runs, and a read-through cache in front of
//! either so a warm function does not call Secrets Manager on every request.
//!
//! Error variants say what a caller can do: retry (`Unavailable`), fix
//! permissions (`AccessDenied`), or treat the name as taken (`AlreadyExists`).
//! No variant ever carries a secret value.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

/// A failure of the secret store.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret exists already (or is scheduled for deletion under that name).
    #[error("secret {name} already exists{detail}")]
    AlreadyExists {
        /// The secret's name.
        name: String,
        /// Extra words, starting with a separator, or empty.
        detail: String,
    },
    /// The secret does not exist.
    #[error("secret {name} does not exist")]
    NotFound {
        /// The secret's name.
        name: String,
    },
    /// The function's role may not do this: fix the IAM policy.
    #[error("access to secret {name} was denied ({detail}): check the function's IAM policy")]
    AccessDenied {
        /// The secret's name.
        name: String,
        /// The service's error code.
        detail: String,
    },
    /// A passing failure (throttling, network, service error): retry later.
    #[error("the secret store is unavailable for {name} ({detail}): retry later")]
    Unavailable {
        /// The secret's name.
        name: String,
        /// What failed, without values.
        detail: String,
    },
}

impl SecretError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SecretError::Unavailable { .. })
    }
}

/// A store of named secret strings.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Reads a secret; `None` when it does not exist (or is scheduled for deletion).
    async fn get(&self, name: &str) -> Result<Option<String>, SecretError>;
    /// Creates a secret that must not exist yet.
    async fn create(&self, name: &str, value: &str) -> Result<(), SecretError>;
    /// Writes a new value of an existing secret. Repeating the call with the
    /// same `request_token` and value is a no-op, so a retried write never
    /// creates a second version.
    async fn put(&self, name: &str, value: &str, request_token: &str) -> Result<(), SecretError>;
    /// Deletes a secret (Secrets Manager keeps it recoverable for 7 days).
    async fn delete(&self, name: &str) -> Result<(), SecretError>;
    /// Reads a secret from the store itself, past any cache (and refreshes
    /// the cache): for answers a person acts on, such as a connection's status
    /// just after another function changed it.
    async fn get_fresh(&self, name: &str) -> Result<Option<String>, SecretError> {
        self.get(name).await
    }
    /// The value the secret had before its latest write (Secrets Manager's
    /// `AWSPREVIOUS`), where the store keeps one: a writer that finds it
    /// overwrote a newer value puts that back. `None` where there is none.
    async fn previous(&self, _name: &str) -> Result<Option<String>, SecretError> {
        Ok(None)
    }
}

/// A new idempotency token for [`SecretStore::put`] (Secrets Manager wants 32 to 64 characters).
pub fn new_request_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------
// AWS Secrets Manager

/// [`SecretStore`] on AWS Secrets Manager.
#[derive(Debug, Clone)]
pub struct AwsSecretStore {
    client: Client,
}

impl AwsSecretStore {
    /// Wraps a Secrets Manager client (built once per container).
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn map_sdk<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    name: &str,
    err: SdkError<E, R>,
) -> SecretError {
    let code = err.code().unwrap_or_default().to_string();
    let message = err.message().unwrap_or_default().to_string();
    let name = name.to_string();
    match code.as_str() {
        "ResourceNotFoundException" => SecretError::NotFound { name },
        "ResourceExistsException" => SecretError::AlreadyExists {
            name,
            detail: String::new(),
        },
        "AccessDeniedException" | "AccessDeniedException " | "UnrecognizedClientException" => {
            SecretError::AccessDenied { name, detail: code }
        }
        // Scheduled for deletion: reads see nothing; creates under that name fail.
        "InvalidRequestException" if message.contains("delet") => SecretError::AlreadyExists {
            name,
            detail: ": it is scheduled for deletion; restore it or use another id".into(),
        },
        "" => {
            let detail = match &err {
                SdkError::TimeoutError(_) => "timed out",
                SdkError::DispatchFailure(_) => "could not reach Secrets Manager",
                SdkError::ResponseError(_) => "unreadable answer",
                SdkError::ConstructionFailure(_) => "request could not be built",
                _ => "service error",
            };
            SecretError::Unavailable {
                name,
                detail: detail.into(),
            }
        }
        _ => SecretError::Unavailable { name, detail: code },
    }
}

#[async_trait]
impl SecretStore for AwsSecretStore {
    async fn get(&self, name: &str) -> Result<Option<String>, SecretError> {
        match self.client.get_secret_value().secret_id(name).send().await {
            Ok(out) => Ok(out.secret_string().map(str::to_string)),
            Err(err) => match map_sdk(name, err) {
                SecretError::NotFound { .. } | SecretError::AlreadyExists { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn previous(&self, name: &str) -> Result<Option<String>, SecretError> {
        match self
            .client
            .get_secret_value()
            .secret_id(name)
            .version_stage("AWSPREVIOUS")
            .send()
            .await
        {
            Ok(out) => Ok(out.secret_string().map(str::to_string)),
            Err(err) => match map_sdk(name, err) {
                SecretError::NotFound { .. } | SecretError::AlreadyExists { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn create(&self, name: &str, value: &str) -> Result<(), SecretError> {
        self.client
            .create_secret()
            .name(name)
            .secret_string(value)
            .client_request_token(new_request_token())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk(name, e))
    }

    async fn put(&self, name: &str, value: &str, request_token: &str) -> Result<(), SecretError> {
        self.client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .client_request_token(request_token)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk(name, e))
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.client
            .delete_secret()
            .secret_id(name)
            .recovery_window_in_days(7)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk(name, e))
    }
}

// ---------------------------------------------------------------------------
// Local directory

/// [`SecretStore`] on a local directory, for `make demo` and runs without AWS:
/// one file per secret, written atomically (temporary file + rename) with
/// mode 0600.
#[derive(Debug, Clone)]
pub struct FileSecretStore {
    dir: PathBuf,
}

impl FileSecretStore {
    /// A store in `dir` (created, mode 0700, if missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self { dir })
    }

    /// Secret names contain `/`; they are stored as flat, percent-encoded file names.
    fn path(&self, name: &str) -> PathBuf {
        let encoded: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        self.dir.join(encoded)
    }

    fn io_err(name: &str, e: &std::io::Error) -> SecretError {
        SecretError::Unavailable {
            name: name.to_string(),
            detail: e.kind().to_string(),
        }
    }

    fn write(&self, name: &str, value: &str) -> Result<(), SecretError> {
        use std::io::Write;
        let path = self.path(name);
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let result = (|| {
            let mut f = opts.open(&tmp)?;
            f.write_all(value.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Self::io_err(name, &e)
        })
    }
}

#[async_trait]
impl SecretStore for FileSecretStore {
    async fn get(&self, name: &str) -> Result<Option<String>, SecretError> {
        match std::fs::read_to_string(self.path(name)) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io_err(name, &e)),
        }
    }

    async fn create(&self, name: &str, value: &str) -> Result<(), SecretError> {
        if self.path(name).exists() {
            return Err(SecretError::AlreadyExists {
                name: name.to_string(),
                detail: String::new(),
            });
        }
        self.write(name, value)
    }

    async fn put(&self, name: &str, value: &str, _request_token: &str) -> Result<(), SecretError> {
        // Writing the same value twice leaves the same file: idempotent by nature.
        if !self.path(name).exists() {
            return Err(SecretError::NotFound {
                name: name.to_string(),
            });
        }
        self.write(name, value)
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        match std::fs::remove_file(self.path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SecretError::NotFound {
                name: name.to_string(),
            }),
            Err(e) => Err(Self::io_err(name, &e)),
        }
    }
}

// ---------------------------------------------------------------------------
// In memory

/// [`SecretStore`] in memory, for unit tests: the same answers as the other
/// stores, gone with the process.
#[derive(Debug, Default)]
pub struct MemorySecretStore {
    secrets: Mutex<std::collections::BTreeMap<String, String>>,
    previous: Mutex<std::collections::BTreeMap<String, String>>,
}

impl MemorySecretStore {
    /// A store holding these secrets.
    pub fn with(secrets: &[(&str, &str)]) -> Self {
        Self {
            secrets: Mutex::new(
                secrets
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            previous: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, String>> {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SecretStore for MemorySecretStore {
    async fn get(&self, name: &str) -> Result<Option<String>, SecretError> {
        Ok(self.map().get(name).cloned())
    }

    async fn create(&self, name: &str, value: &str) -> Result<(), SecretError> {
        let mut map = self.map();
        if map.contains_key(name) {
            return Err(SecretError::AlreadyExists {
                name: name.to_string(),
                detail: String::new(),
            });
        }
        map.insert(name.to_string(), value.to_string());
        Ok(())
    }

    async fn put(&self, name: &str, value: &str, _request_token: &str) -> Result<(), SecretError> {
        match self.map().get_mut(name) {
            Some(v) => {
                let old = std::mem::replace(v, value.to_string());
                self.previous
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string(), old);
                Ok(())
            }
            None => Err(SecretError::NotFound {
                name: name.to_string(),
            }),
        }
    }

    async fn previous(&self, name: &str) -> Result<Option<String>, SecretError> {
        Ok(self
            .previous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned())
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        match self.map().remove(name) {
            Some(_) => Ok(()),
            None => Err(SecretError::NotFound {
                name: name.to_string(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Read-through cache

/// A read-through cache with a time to live in front of another store.
///
/// Writes made through the cache update it at once, so a function reads its
/// own writes; writes by other containers are seen after at most the TTL.
pub struct CachedSecretStore<S> {
    inner: S,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl<S: SecretStore> CachedSecretStore<S> {
    /// Caches `inner` for `ttl`.
    pub fn new(inner: S, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn remember(&self, name: &str, value: Option<String>) {
        if let Ok(mut map) = self.entries.lock() {
            map.insert(name.to_string(), (Instant::now(), value));
        }
    }

    /// Forgets a cached entry so the next read goes to the store.
    pub fn invalidate(&self, name: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(name);
        }
    }
}

#[async_trait]
impl<S: SecretStore> SecretStore for CachedSecretStore<S> {
    async fn get(&self, name: &str) -> Result<Option<String>, SecretError> {
        if let Ok(map) = self.entries.lock()
            && let Some((at, value)) = map.get(name)
            && at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        let value = self.inner.get(name).await?;
        self.remember(name, value.clone());
        Ok(value)
    }

    async fn create(&self, name: &str, value: &str) -> Result<(), SecretError> {
        self.inner.create(name, value).await?;
        self.remember(name, Some(value.to_string()));
        Ok(())
    }

    async fn put(&self, name: &str, value: &str, request_token: &str) -> Result<(), SecretError> {
        match self.inner.put(name, value, request_token).await {
            Ok(()) => {
                self.remember(name, Some(value.to_string()));
                Ok(())
            }
            Err(e) => {
                self.invalidate(name);
                Err(e)
            }
        }
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.invalidate(name);
        self.inner.delete(name).await
    }

    async fn get_fresh(&self, name: &str) -> Result<Option<String>, SecretError> {
        let value = self.inner.get(name).await?;
        self.remember(name, value.clone());
        Ok(value)
    }

    async fn previous(&self, name: &str) -> Result<Option<String>, SecretError> {
        self.inner.previous(name).await
    }
}

#[async_trait]
impl<T: SecretStore + ?Sized> SecretStore for std::sync::Arc<T> {
    async fn get(&self, name: &str) -> Result<Option<String>, SecretError> {
        (**self).get(name).await
    }
    async fn create(&self, name: &str, value: &str) -> Result<(), SecretError> {
        (**self).create(name, value).await
    }
    async fn put(&self, name: &str, value: &str, request_token: &str) -> Result<(), SecretError> {
        (**self).put(name, value, request_token).await
    }
    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        (**self).delete(name).await
    }
    async fn get_fresh(&self, name: &str) -> Result<Option<String>, SecretError> {
        (**self).get_fresh(name).await
    }
    async fn previous(&self, name: &str) -> Result<Option<String>, SecretError> {
        (**self).previous(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("relay365-secrets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn file_store_round_trip_with_private_files() {
        let dir = tmpdir();
        let store = FileSecretStore::new(&dir).unwrap();
        assert_eq!(store.get("relay365/tokens/a").await.unwrap(), None);
        store.create("relay365/tokens/a", "one").await.unwrap();
        assert!(matches!(
            store.create("relay365/tokens/a", "x").await,
            Err(SecretError::AlreadyExists { .. })
        ));
        store.put("relay365/tokens/a", "two", "tok").await.unwrap();
        store.put("relay365/tokens/a", "two", "tok").await.unwrap();
        assert_eq!(
            store.get("relay365/tokens/a").await.unwrap().as_deref(),
            Some("two")
        );
        assert!(matches!(
            store.put("relay365/nope", "v", "t").await,
            Err(SecretError::NotFound { .. })
        ));
        store.create("relay365/tokens/b", "b").await.unwrap();
        assert_eq!(
            store.get("relay365/tokens/b").await.unwrap().as_deref(),
            Some("b")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for entry in std::fs::read_dir(&dir).unwrap() {
                let mode = entry.unwrap().metadata().unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
        store.delete("relay365/tokens/a").await.unwrap();
        assert_eq!(store.get("relay365/tokens/a").await.unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_fresh_read_sees_another_containers_write_that_the_cache_hides() {
        let dir = tmpdir();
        let other_container = FileSecretStore::new(&dir).unwrap();
        let cached = CachedSecretStore::new(FileSecretStore::new(&dir).unwrap(), Duration::from_secs(300));
        other_container
            .create("relay365/tokens/a", "pending")
            .await
            .unwrap();
        assert_eq!(
            cached.get("relay365/tokens/a").await.unwrap().as_deref(),
            Some("pending")
        );
        other_container
            .put("relay365/tokens/a", "active", "t1")
            .await
            .unwrap();
        assert_eq!(
            cached.get("relay365/tokens/a").await.unwrap().as_deref(),
            Some("pending")
        );
        assert_eq!(
            cached.get_fresh("relay365/tokens/a").await.unwrap().as_deref(),
            Some("active")
        );
        // The fresh read refreshed the cache too.
        assert_eq!(
            cached.get("relay365/tokens/a").await.unwrap().as_deref(),
            Some("active")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
