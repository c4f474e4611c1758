//! AES-256-GCM with a random nonce, the one cipher of the crate's sealing.
//!
//! Three places seal bytes with it: the envelope of a sealed value
//! ([`crate::aws::sealed`]), under a data key; the in-memory key service
//! ([`crate::aws::kms::MemoryDataKeys`]), which seals its data keys under a
//! master key as KMS would; and the signer's private values
//! ([`crate::web::signing::Signer::seal_private`], the OAuth cookie). It
//! lives apart from all three so that the key service stays below the
//! envelope that uses it.
//!
//! The cipher is aws-lc-rs's, the library already behind every TLS
//! connection and signature of the functions. Errors carry nothing: a wrong
//! key, nonce, associated data or a changed byte all fail alike.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

fn key(bytes: &[u8]) -> Result<LessSafeKey, ()> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| ())
}

/// AES-256-GCM with a random nonce; returns the nonce followed by the
/// ciphertext and tag.
pub(crate) fn seal_bytes(key_bytes: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, ()> {
    let (nonce, sealed) = seal_parts(key_bytes, aad, plaintext)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`seal_bytes`] made.
pub(crate) fn open_bytes(key_bytes: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, ()> {
    if sealed.len() < NONCE_LEN {
        return Err(());
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    open_parts(key_bytes, aad, nonce, rest).map(|p| p.to_vec())
}

/// AES-256-GCM with a random nonce; returns the nonce and, apart, the
/// ciphertext with its tag.
pub(crate) fn seal_parts(
    key_bytes: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; NONCE_LEN], Vec<u8>), ()> {
    let key = key(key_bytes)?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ())?;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
        .map_err(|_| ())?;
    Ok((nonce, in_out))
}

/// Opens what [`seal_parts`] made, given its nonce apart.
pub(crate) fn open_parts(
    key_bytes: &[u8],
    aad: &[u8],
    nonce: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ()> {
    let key = key(key_bytes)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| ())?;
    let mut in_out = Zeroizing::new(sealed.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), in_out.as_mut_slice())
        .map_err(|_| ())?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}
