//! A certificate for the client-credentials tests, made fresh per test so no
//! key is checked in. Test crates outside `shared` include this file by path,
//! so it uses nothing from `common` and only the crates they all depend on
//! (`rcgen`, `p12-keystore`, `base64`).

/// A self-signed RSA certificate in a PFX protected by `password`: the PFX
/// in base64 (as the app secret's `certificate.pfx_base64` holds it) and the
/// certificate's DER (as the app registration holds it).
pub(crate) fn make_pfx(password: &str) -> (String, Vec<u8>) {
    use base64::Engine;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["relay365-test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let chain = p12_keystore::PrivateKeyChain::new(
        vec![1u8, 2, 3, 4],
        p12_keystore::PrivateKey::from_der(&key.serialize_der()).unwrap(),
        [p12_keystore::Certificate::from_der(cert.der()).unwrap()],
    );
    let mut ks = p12_keystore::KeyStore::new();
    ks.add_entry("relay365", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let pfx = ks.writer(password).write().unwrap();
    (
        base64::engine::general_purpose::STANDARD.encode(pfx),
        cert.der().to_vec(),
    )
}
