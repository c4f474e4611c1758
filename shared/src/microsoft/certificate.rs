//! App-only sign-in with a certificate: a PFX (PKCS#12) turned into the
//! signed client assertion Microsoft expects.
//!
//! The assertion follows the current Entra documentation: a JWT with
//! `alg: PS256` (RSA-PSS with SHA-256), the certificate's SHA-256 thumbprint in
//! `x5t#S256`, `aud` set to the token endpoint, `iss = sub = client_id`, a
//! fresh `jti`, and a five-minute lifetime. The private key stays inside
//! aws-lc-rs; nothing derived from it is ever logged.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PSS_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use time::OffsetDateTime;

use crate::digest::sha256_b64url;

/// The PFX could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Not base64.
    #[error("the certificate's pfx_base64 is not valid base64: paste the whole .pfx file, base64-encoded")]
    NotBase64,
    /// Wrong password or not a PKCS#12 file.
    #[error("the PFX could not be opened: check its password and that it is a PKCS#12 (.pfx) file")]
    Unreadable,
    /// No private key and certificate pair inside.
    #[error("the PFX holds no private key with its certificate: export it with the private key")]
    NoKey,
    /// The key is not RSA (Microsoft accepts RSA certificates for client assertions).
    #[error("the PFX's private key is not an RSA key of 2048 bits or more, which Microsoft requires")]
    NotRsa,
    /// Signing failed.
    #[error("signing the client assertion failed")]
    Signing,
}

/// A certificate credential, ready to sign client assertions.
pub struct Certificate {
    key: RsaKeyPair,
    x5t_s256: String,
}

crate::debug_showing!(Certificate { x5t_s256 });

impl Certificate {
    /// Opens a base64-encoded PFX with its password.
    ///
    /// # Errors
    /// [`CertificateError`] saying what is wrong with the file.
    pub fn from_pfx_base64(pfx_base64: &str, password: &str) -> Result<Self, CertificateError> {
        let cleaned: String = pfx_base64.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD
            .decode(cleaned)
            .map_err(|_| CertificateError::NotBase64)?;
        Self::from_pfx(&der, password)
    }

    /// Opens a PFX with its password.
    ///
    /// # Errors
    /// [`CertificateError`] saying what is wrong with the file.
    pub fn from_pfx(pfx: &[u8], password: &str) -> Result<Self, CertificateError> {
        let store =
            p12_keystore::KeyStore::from_pkcs12(pfx, password, p12_keystore::Pkcs12ImportPolicy::Relaxed)
                .map_err(|_| CertificateError::Unreadable)?;
        let (_, chain) = store.private_key_chain().ok_or(CertificateError::NoKey)?;
        let cert = chain.certs().first().ok_or(CertificateError::NoKey)?;
        let key = RsaKeyPair::from_pkcs8(chain.key().as_der()).map_err(|_| CertificateError::NotRsa)?;
        Ok(Self {
            key,
            x5t_s256: sha256_b64url(cert.as_der()),
        })
    }

    /// A signed client assertion for `client_id` at the token endpoint `audience`.
    ///
    /// # Errors
    /// [`CertificateError::Signing`] if aws-lc-rs refuses to sign.
    pub fn client_assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: OffsetDateTime,
    ) -> Result<String, CertificateError> {
        let header = serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.x5t_s256});
        let iat = now.unix_timestamp();
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": iat,
            "iat": iat,
            "exp": iat + 300,
        });
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PSS_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| CertificateError::Signing)?;
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_words_that_help() {
        assert_eq!(
            Certificate::from_pfx_base64("%%%", "x").unwrap_err(),
            CertificateError::NotBase64
        );
        let e = Certificate::from_pfx_base64("aGVsbG8=", "x").unwrap_err();
        assert_eq!(e, CertificateError::Unreadable);
        assert!(e.to_string().contains("password"));
    }
}
