//! Envelope encryption: a value sealed with a fresh KMS data key
//! (AES-256-GCM), stored with that data key encrypted by KMS.
//!
//! This exists so a secret value (a refresh token) can live in the state
//! table, which anyone with read access to the table could copy, without
//! being readable or movable there: opening needs KMS (the key policy lets
//! only the functions that use tokens decrypt, and only with the purpose in
//! the encryption context), and the value is bound twice to where it belongs,
//! by the KMS encryption context and by the AES-GCM associated data. A sealed
//! value copied elsewhere fails to open with [`OpenError::Rejected`].
//!
//! AES-256-GCM is aws-lc-rs's, the library already behind every TLS
//! connection and signature of the functions. Each seal uses a random 96-bit
//! nonce and the data key `keys` hands out: a new one from KMS each time, or
//! with [`crate::aws::kms::CachingDataKeys`] the container's recent key for
//! the same context (bounded in age and uses), stored with the same
//! encrypted data key. Random nonces make that reuse safe far beyond its
//! bound: NIST SP 800-38D allows 2^32 messages per key.

use zeroize::Zeroizing;

use crate::aws::aead::{open_parts, seal_parts};
use crate::aws::kms::{Context, DataKeys, KeyError};

/// A sealed value as it is stored: three opaque byte strings, none secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The data key, encrypted by KMS under the encryption context.
    pub encrypted_key: Vec<u8>,
    /// The AES-GCM nonce (12 bytes).
    pub nonce: Vec<u8>,
    /// The sealed value with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

crate::debug_showing!(Envelope {});

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// It was not sealed for this context and associated data (copied from
    /// elsewhere), or it is damaged: what it held must be made again.
    #[error("the sealed value does not belong here or is damaged")]
    Rejected,
    /// The key service failed; its variant says what to do.
    #[error(transparent)]
    Key(KeyError),
}

impl From<KeyError> for OpenError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Rejected => OpenError::Rejected,
            other => OpenError::Key(other),
        }
    }
}

/// Seals `plaintext` with a data key from `keys` bound to `context` (new, or
/// a cached one if `keys` caches) and a fresh random nonce, with `aad` as
/// AES-GCM associated data.
///
/// # Errors
/// The key service's error; [`KeyError::Unavailable`] if sealing itself fails.
pub async fn seal(
    keys: &dyn DataKeys,
    context: &Context,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Envelope, KeyError> {
    let data_key = keys.generate(context).await?;
    let (nonce, ciphertext) =
        seal_parts(&data_key.plaintext, aad, plaintext).map_err(|()| KeyError::Unavailable {
            detail: "the data key could not seal".into(),
        })?;
    Ok(Envelope {
        encrypted_key: data_key.encrypted,
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Opens an [`Envelope`] with the same context and associated data it was sealed with.
///
/// # Errors
/// [`OpenError::Rejected`] when the context or the associated data differ or
/// anything was changed; [`OpenError::Key`] when the key service failed.
pub async fn open(
    keys: &dyn DataKeys,
    context: &Context,
    aad: &[u8],
    envelope: &Envelope,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let data_key = keys.decrypt(&envelope.encrypted_key, context).await?;
    open_parts(&data_key, aad, &envelope.nonce, &envelope.ciphertext).map_err(|()| OpenError::Rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::kms::MemoryDataKeys;

    fn context(id: &str) -> Context {
        [
            ("relay365:purpose".to_string(), "test".to_string()),
            ("relay365:connection".to_string(), id.to_string()),
        ]
        .into_iter()
        .collect()
    }

    #[tokio::test]
    async fn a_sealed_value_opens_only_with_its_context_and_associated_data() {
        let keys = MemoryDataKeys::new();
        let sealed = seal(&keys, &context("a"), b"aad-a", b"the value").await.unwrap();
        assert!(!sealed.ciphertext.windows(9).any(|w| w == b"the value"));
        let opened = open(&keys, &context("a"), b"aad-a", &sealed).await.unwrap();
        assert_eq!(opened.as_slice(), b"the value");
        let mut changed = sealed.clone();
        changed.ciphertext[0] ^= 1;
        let mut short = sealed.clone();
        short.nonce.truncate(3);
        for (what, ctx, aad, envelope) in [
            ("another context", "b", &b"aad-a"[..], &sealed),
            ("other associated data", "a", b"aad-b", &sealed),
            ("a changed ciphertext", "a", b"aad-a", &changed),
            ("a short nonce", "a", b"aad-a", &short),
        ] {
            assert_eq!(
                open(&keys, &context(ctx), aad, envelope).await,
                Err(OpenError::Rejected),
                "{what}"
            );
        }
        assert!(!format!("{sealed:?}").contains(&format!("{:?}", sealed.ciphertext)));
    }

    #[tokio::test]
    async fn each_seal_has_its_own_data_key_and_nonce() {
        let keys = MemoryDataKeys::new();
        let one = seal(&keys, &context("a"), b"x", b"same").await.unwrap();
        let two = seal(&keys, &context("a"), b"x", b"same").await.unwrap();
        assert_ne!(one.encrypted_key, two.encrypted_key);
        assert_ne!(one.nonce, two.nonce);
        assert_ne!(one.ciphertext, two.ciphertext);
    }

    #[tokio::test]
    async fn a_cached_data_key_seals_with_a_new_nonce_each_time_and_opens_without_a_request() {
        use crate::aws::kms::{CachingDataKeys, CountingDataKeys, KeyCachePolicy};
        use std::sync::Arc;
        let inner = Arc::new(CountingDataKeys::default());
        let keys = CachingDataKeys::new(inner.clone(), KeyCachePolicy::default());
        let one = seal(&keys, &context("a"), b"x", b"same").await.unwrap();
        let two = seal(&keys, &context("a"), b"x", b"same").await.unwrap();
        assert_eq!(one.encrypted_key, two.encrypted_key);
        assert_ne!(one.nonce, two.nonce);
        assert_ne!(one.ciphertext, two.ciphertext);
        for sealed in [&one, &two] {
            let opened = open(&keys, &context("a"), b"x", sealed).await.unwrap();
            assert_eq!(opened.as_slice(), b"same");
        }
        assert_eq!(inner.counts(), (1, 0));
        // Still bound to its context and associated data.
        for (ctx, aad) in [("b", b"x"), ("a", b"y")] {
            assert_eq!(
                open(&keys, &context(ctx), aad, &one).await,
                Err(OpenError::Rejected),
                "{ctx}"
            );
        }
    }
}
