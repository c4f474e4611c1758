//! Data keys from AWS KMS, for sealing delegated refresh tokens in the state
//! table (envelope encryption).
//!
//! A Secrets Manager secret per delegated connection costs $0.40 a month
//! whatever it holds; a sealed item in the state table costs a fraction of a
//! cent. KMS never sees a token: each write asks it for a fresh AES-256 data
//! key ([`DataKeys::generate`]), the token is sealed with that key here, and
//! only the data key, encrypted under the deployment's KMS key, is stored
//! beside it. Reading asks KMS to decrypt the data key
//! ([`DataKeys::decrypt`]). Both calls carry an encryption context (the
//! connection and the purpose), which KMS binds to the encrypted key: a data
//! key made for one connection does not decrypt under another's context, and
//! the key policy refuses any call without the purpose.
//!
//! [`DataKeys`] is the port; [`KmsDataKeys`] is AWS KMS through the SDK (with
//! the project's timeouts), [`MemoryDataKeys`] a local stand-in with the same
//! context rule, for unit tests and runs without AWS.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use zeroize::Zeroizing;

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

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").finish_non_exhaustive()
    }
}

/// Where data keys come from: KMS, or memory in tests.
#[async_trait]
pub trait DataKeys: Send + Sync {
    /// A new AES-256 data key bound to `context`.
    async fn generate(&self, context: &Context) -> Result<DataKey, KeyError>;
    /// The plaintext of an encrypted data key, which only the same context opens.
    async fn decrypt(&self, encrypted: &[u8], context: &Context) -> Result<Zeroizing<Vec<u8>>, KeyError>;
}

// ---------------------------------------------------------------------------
// AWS KMS

/// [`DataKeys`] on AWS KMS: `GenerateDataKey` (AES_256) and `Decrypt`, both
/// with the key named in `RELAY365_TOKEN_KEY_ID` and the encryption context.
pub struct KmsDataKeys {
    client: Arc<LazyClient<aws_sdk_kms::Client>>,
    key_id: String,
}

impl std::fmt::Debug for KmsDataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsDataKeys")
            .field("key_id", &self.key_id)
            .finish()
    }
}

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
}

// ---------------------------------------------------------------------------
// In memory

/// [`DataKeys`] in memory: data keys are sealed with a random master key
/// (AES-256-GCM) and the context as associated data, so a wrong context is
/// refused as KMS refuses it. For unit tests and runs without AWS.
pub struct MemoryDataKeys {
    master: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for MemoryDataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDataKeys").finish_non_exhaustive()
    }
}

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
        let encrypted = crate::aws::sealed::seal_bytes(&self.master, &context_bytes(context), &plaintext)
            .map_err(|_| KeyError::Unavailable {
                detail: "the local key could not seal".into(),
            })?;
        Ok(DataKey { plaintext, encrypted })
    }

    async fn decrypt(&self, encrypted: &[u8], context: &Context) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        crate::aws::sealed::open_bytes(&self.master, &context_bytes(context), encrypted)
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Rejected)
    }
}
