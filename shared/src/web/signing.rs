//! HMAC-SHA256 signing: what relay365 signs for itself (OAuth `state`,
//! connect links, subscription `clientState`, the browser cookie) with keys
//! derived from the deployment's signing key, and what it signs for flow
//! receivers (`Relay365-Signature`) with the separate event signing secret.
//!
//! The signing key is never used directly: each purpose has its own key,
//! HKDF-SHA256 of the signing key with the purpose as `info`, and every MAC
//! also covers the purpose label. A value minted for one purpose (a connect
//! link) can never pass as another (an OAuth state), and the only key a flow
//! receiver ever holds, the event signing secret, opens nothing else.
//! Verification is constant time (`aws_lc_rs::hmac::verify`).

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::sensitive::Sensitive;

/// The shortest signing key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Why a signed value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Not in the `payload.signature` shape, or the payload is not what was expected.
    #[error("the signed value is malformed")]
    Malformed,
    /// The signature does not match: forged, altered, or made for another purpose or key.
    #[error("the signature does not match")]
    BadSignature,
    /// Valid but past its expiry.
    #[error("the signed value has expired")]
    Expired,
}

/// The key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the signing key must be at least {MIN_KEY_LEN} characters long (it has {0}); the template generates one of 64"
)]
pub struct WeakKey(pub usize);

/// An HMAC-SHA256 signer holding the deployment's signing key (the root
/// every purpose's key is derived from).
#[derive(Clone)]
pub struct Signer {
    root: aws_lc_rs::hkdf::Prk,
    /// During a rotation: the previous key, still accepted (never used to sign),
    /// until the unix time given (subscriptions made with it are recreated
    /// with the current key meanwhile; Graph cannot change a clientState).
    previous: Option<(Box<Signer>, i64)>,
}

/// The HKDF output length: one HMAC-SHA256 (or AES-256) key.
struct KeyLen;

impl aws_lc_rs::hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(**key redacted**)")
    }
}

#[derive(Serialize, serde::Deserialize)]
struct Envelope<T> {
    exp: i64,
    #[serde(flatten)]
    body: T,
}

impl Signer {
    /// A signer over the key secret: the key itself, or during a rotation
    /// `{"current": KEY, "previous": KEY, "previous_until": UNIX_SECONDS}`
    /// (what `infra/rotate-signing-key.sh` writes).
    ///
    /// # Errors
    /// [`WeakKey`] when a key is shorter than [`MIN_KEY_LEN`].
    pub fn new(key: &Sensitive) -> Result<Self, WeakKey> {
        #[derive(serde::Deserialize)]
        struct Rotating {
            current: String,
            previous: Option<String>,
            previous_until: Option<i64>,
        }
        match serde_json::from_str::<Rotating>(key.expose()) {
            Ok(r) => {
                let mut signer = Self::from_bytes(r.current.as_bytes())?;
                if let (Some(p), Some(until)) = (r.previous, r.previous_until) {
                    signer.previous = Some((Box::new(Self::from_bytes(p.as_bytes())?), until));
                }
                Ok(signer)
            }
            Err(_) => Self::from_bytes(key.expose().as_bytes()),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, WeakKey> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(WeakKey(bytes.len()));
        }
        let salt = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, b"relay365 signing key");
        Ok(Self {
            root: salt.extract(bytes),
            previous: None,
        })
    }

    /// The key of one purpose: HKDF-SHA256 expand with the purpose as `info`.
    fn key(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        let info = [purpose.as_bytes()];
        // Expanding 32 bytes from SHA-256 cannot fail (the limit is 255 × 32).
        if let Ok(okm) = self.root.expand(&info, KeyLen) {
            let _ = okm.fill(&mut out);
        }
        out
    }

    fn hmac_key(&self, purpose: &str) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.key(purpose))
    }

    fn tag(&self, purpose: &str, data: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.hmac_key(purpose));
        ctx.update(purpose.as_bytes());
        ctx.update(b"\n");
        ctx.update(data);
        ctx.sign()
    }

    fn verify(&self, purpose: &str, data: &[u8], tag: &[u8]) -> bool {
        let mut msg = Vec::with_capacity(purpose.len() + 1 + data.len());
        msg.extend_from_slice(purpose.as_bytes());
        msg.push(b'\n');
        msg.extend_from_slice(data);
        hmac::verify(&self.hmac_key(purpose), &msg, tag).is_ok()
    }

    /// Signs `body` with an expiry, as `base64url(json).base64url(mac)`:
    /// URL-safe, so it fits a query parameter or a cookie.
    pub fn seal<T: Serialize>(&self, purpose: &str, body: &T, expires_at_unix: i64) -> String {
        let json = serde_json::to_vec(&Envelope {
            exp: expires_at_unix,
            body,
        })
        .unwrap_or_default();
        let payload = B64.encode(json);
        let tag = self.tag(purpose, payload.as_bytes());
        format!("{payload}.{}", B64.encode(tag.as_ref()))
    }

    /// Verifies and decodes a value made by [`Signer::seal`] for the same
    /// purpose. During a rotation, a value sealed with the previous key
    /// opens until the grace period ends (a warm container may still have
    /// sealed it with the key it had read).
    ///
    /// # Errors
    /// [`SignError`] saying whether it was malformed, forged or expired.
    pub fn open<T: DeserializeOwned>(
        &self,
        purpose: &str,
        token: &str,
        now_unix: i64,
    ) -> Result<T, SignError> {
        match (self.open_one(purpose, token, now_unix), &self.previous) {
            (Err(SignError::BadSignature), Some((old, until))) if now_unix < *until => {
                old.open_one(purpose, token, now_unix)
            }
            (r, _) => r,
        }
    }

    fn open_one<T: DeserializeOwned>(
        &self,
        purpose: &str,
        token: &str,
        now_unix: i64,
    ) -> Result<T, SignError> {
        let (payload, sig) = token.split_once('.').ok_or(SignError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| SignError::Malformed)?;
        if !self.verify(purpose, payload.as_bytes(), &sig) {
            return Err(SignError::BadSignature);
        }
        let json = B64.decode(payload).map_err(|_| SignError::Malformed)?;
        let env: Envelope<T> = serde_json::from_slice(&json).map_err(|_| SignError::Malformed)?;
        if env.exp <= now_unix {
            return Err(SignError::Expired);
        }
        Ok(env.body)
    }

    /// Like [`Signer::seal`], but encrypted (AES-256-GCM with a key derived
    /// from the signing key): for values the browser must carry but not read,
    /// such as the PKCE verifier in the OAuth cookie.
    pub fn seal_private<T: Serialize>(&self, purpose: &str, body: &T, expires_at_unix: i64) -> String {
        let json = serde_json::to_vec(&Envelope {
            exp: expires_at_unix,
            body,
        })
        .unwrap_or_default();
        let key_bytes = self.key(&format!("aead:{purpose}"));
        crate::aws::aead::seal_bytes(&key_bytes, purpose.as_bytes(), &json)
            .map(|sealed| B64.encode(sealed))
            .unwrap_or_default()
    }

    /// Decrypts and checks a value made by [`Signer::seal_private`]; during
    /// a rotation, the previous key's values open until the grace period ends.
    ///
    /// # Errors
    /// [`SignError`]: malformed, forged (any change fails authentication) or expired.
    pub fn open_private<T: DeserializeOwned>(
        &self,
        purpose: &str,
        token: &str,
        now_unix: i64,
    ) -> Result<T, SignError> {
        match (self.open_private_one(purpose, token, now_unix), &self.previous) {
            (Err(SignError::BadSignature), Some((old, until))) if now_unix < *until => {
                old.open_private_one(purpose, token, now_unix)
            }
            (r, _) => r,
        }
    }

    fn open_private_one<T: DeserializeOwned>(
        &self,
        purpose: &str,
        token: &str,
        now_unix: i64,
    ) -> Result<T, SignError> {
        let raw = B64.decode(token).map_err(|_| SignError::Malformed)?;
        // A nonce and a tag at least: shorter is no sealed value at all.
        if raw.len() < aws_lc_rs::aead::NONCE_LEN + 16 {
            return Err(SignError::Malformed);
        }
        let key_bytes = self.key(&format!("aead:{purpose}"));
        let plain = crate::aws::aead::open_bytes(&key_bytes, purpose.as_bytes(), &raw)
            .map_err(|_| SignError::BadSignature)?;
        let env: Envelope<T> = serde_json::from_slice(&plain).map_err(|_| SignError::Malformed)?;
        if env.exp <= now_unix {
            return Err(SignError::Expired);
        }
        Ok(env.body)
    }

    /// The `clientState` of a connection's subscriptions:
    /// `{connection_id}.{mac}`, at most 64 + 1 + 43 characters (Graph allows 128).
    /// The webhook verifies it without reading any store.
    pub fn client_state(&self, connection_id: &str) -> Sensitive {
        let tag = self.tag("client-state", connection_id.as_bytes());
        Sensitive::new(format!("{connection_id}.{}", B64.encode(tag.as_ref())))
    }

    /// A name for the key `clientState` values are made with, safe to store
    /// and show (12 hex digits of a MAC; it reveals nothing of the key): a
    /// subscription records it, so the renewal run finds the subscriptions
    /// still made with a previous key and recreates them.
    pub fn key_id(&self) -> String {
        let tag = self.tag("key-id", b"client-state");
        tag.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Verifies a `clientState` in constant time and returns its connection id.
    /// During a rotation, a `clientState` made with the previous key is
    /// accepted until the grace period ends.
    pub fn verify_client_state<'a>(&self, client_state: &'a str) -> Option<&'a str> {
        self.verify_client_state_at(client_state, time::OffsetDateTime::now_utc().unix_timestamp())
    }

    /// [`Signer::verify_client_state`] at a given time (unix seconds).
    pub fn verify_client_state_at<'a>(&self, client_state: &'a str, now_unix: i64) -> Option<&'a str> {
        let (id, mac) = client_state.rsplit_once('.')?;
        let mac = B64.decode(mac).ok()?;
        if self.verify("client-state", id.as_bytes(), &mac) {
            return Some(id);
        }
        match &self.previous {
            Some((old, until)) if now_unix < *until => {
                old.verify("client-state", id.as_bytes(), &mac).then_some(id)
            }
            _ => None,
        }
    }
}

/// Signs delivered events with the event signing secret: the one key a flow
/// receiver holds. Its secret is one key, or during a rotation
/// `{"keys": ["new", "old"]}`; each key adds one `v1=` to the header, so a
/// receiver that knows either key verifies every event of the overlap.
#[derive(Clone)]
pub struct EventSigner {
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for EventSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventSigner({} keys, **redacted**)", self.keys.len())
    }
}

impl EventSigner {
    /// Reads the event signing secret: a key of at least [`MIN_KEY_LEN`]
    /// characters, or `{"keys": [...]}` with one or two of them.
    ///
    /// # Errors
    /// [`WeakKey`] when a key is too short or there is none.
    pub fn from_secret(secret: &Sensitive) -> Result<Self, WeakKey> {
        #[derive(serde::Deserialize)]
        struct Keys {
            keys: Vec<String>,
        }
        let raw = secret.expose().trim();
        let keys: Vec<String> = match serde_json::from_str::<Keys>(raw) {
            Ok(k) => k.keys,
            Err(_) => vec![raw.to_string()],
        };
        if keys.is_empty() {
            return Err(WeakKey(0));
        }
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if k.len() < MIN_KEY_LEN {
                return Err(WeakKey(k.len()));
            }
            out.push(hmac::Key::new(hmac::HMAC_SHA256, k.as_bytes()));
        }
        Ok(Self { keys: out })
    }

    /// The `Relay365-Signature` header of a delivered event:
    /// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`, one `v1=` per key.
    /// Keyed with the secret's bytes as they are, so receivers can verify it
    /// with any HMAC library exactly as documented.
    pub fn signature(&self, unix_seconds: i64, body: &[u8]) -> String {
        let mut header = format!("t={unix_seconds}");
        for key in &self.keys {
            let mut ctx = hmac::Context::with_key(key);
            ctx.update(unix_seconds.to_string().as_bytes());
            ctx.update(b".");
            ctx.update(body);
            header.push_str(&format!(",v1={}", crate::digest::hex(ctx.sign().as_ref())));
        }
        header
    }

    /// What a receiver does with a `Relay365-Signature` header: recompute the
    /// `v1=` of `t.body` with each key and accept when any `v1=` of the header
    /// equals one of them (during a rotation the header carries one per key),
    /// compared in constant time. Returns the header's `t` (unix seconds) when
    /// genuine, so the caller can refuse old events; `None` otherwise.
    pub fn verify(&self, header: &str, body: &[u8]) -> Option<i64> {
        let t = header
            .split(',')
            .find_map(|p| p.trim().strip_prefix("t="))
            .and_then(|t| t.parse::<i64>().ok())?;
        let expected = self.signature(t, body);
        let mine: Vec<&str> = expected.split(",v1=").skip(1).collect();
        let genuine = header
            .split(',')
            .filter_map(|p| p.trim().strip_prefix("v1="))
            .any(|given| {
                mine.iter().any(|m| {
                    given.len() == m.len()
                        && aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), m.as_bytes())
                            .is_ok()
                })
            });
        genuine.then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(&Sensitive::new("k".repeat(40))).unwrap()
    }

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Body {
        c: String,
    }

    #[test]
    fn seal_and_open_round_trip() {
        let s = signer();
        let tok = s.seal("link", &Body { c: "support".into() }, 2_000);
        assert_eq!(
            s.open::<Body>("link", &tok, 1_000).unwrap(),
            Body { c: "support".into() }
        );
        assert_eq!(
            s.open::<Body>("link", &tok, 2_000).unwrap_err(),
            SignError::Expired
        );
        assert_eq!(
            s.open::<Body>("state", &tok, 1_000).unwrap_err(),
            SignError::BadSignature
        );
        let other = Signer::new(&Sensitive::new("z".repeat(40))).unwrap();
        assert_eq!(
            other.open::<Body>("link", &tok, 1_000).unwrap_err(),
            SignError::BadSignature
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let s = signer();
        let tok = s.seal("link", &Body { c: "support".into() }, 2_000);
        let (_, sig) = tok.split_once('.').unwrap();
        let forged = format!("{}.{sig}", B64.encode(br#"{"exp":2000,"c":"other"}"#));
        assert_eq!(
            s.open::<Body>("link", &forged, 1_000).unwrap_err(),
            SignError::BadSignature
        );
        assert_eq!(
            s.open::<Body>("link", "garbage", 1_000).unwrap_err(),
            SignError::Malformed
        );
        assert_eq!(
            s.open::<Body>("link", "a.b!c", 1_000).unwrap_err(),
            SignError::Malformed
        );
    }

    #[test]
    fn private_values_are_unreadable_and_tamper_proof() {
        let s = signer();
        let tok = s.seal_private(
            "cookie",
            &Body {
                c: "verifier-secret".into(),
            },
            2_000,
        );
        assert!(!tok.contains("verifier"));
        assert!(!String::from_utf8_lossy(&B64.decode(&tok).unwrap()).contains("verifier-secret"));
        assert_eq!(
            s.open_private::<Body>("cookie", &tok, 1_000).unwrap().c,
            "verifier-secret"
        );
        assert_eq!(
            s.open_private::<Body>("cookie", &tok, 3_000).unwrap_err(),
            SignError::Expired
        );
        assert_eq!(
            s.open_private::<Body>("other", &tok, 1_000).unwrap_err(),
            SignError::BadSignature
        );
        let mut raw = B64.decode(&tok).unwrap();
        raw[20] ^= 1;
        assert_eq!(
            s.open_private::<Body>("cookie", &B64.encode(raw), 1_000)
                .unwrap_err(),
            SignError::BadSignature
        );
        assert_eq!(
            s.open_private::<Body>("cookie", "!!", 1_000).unwrap_err(),
            SignError::Malformed
        );
    }

    #[test]
    fn client_state_fits_graph_and_verifies() {
        let s = signer();
        let id = "c".repeat(64);
        let cs = s.client_state(&id);
        assert!(cs.expose().len() <= 128);
        assert_eq!(s.verify_client_state(cs.expose()), Some(id.as_str()));
        let forged = cs.expose().replacen('c', "d", 1);
        assert_eq!(s.verify_client_state(&forged), None);
        assert_eq!(s.verify_client_state("no-dot"), None);
    }

    #[test]
    fn a_receiver_accepts_either_key_and_refuses_a_forgery() {
        let old = "o".repeat(40);
        let new = "n".repeat(40);
        let both =
            EventSigner::from_secret(&Sensitive::new(format!("{{\"keys\":[\"{new}\",\"{old}\"]}}"))).unwrap();
        let header = both.signature(1_700_000_000, b"{}");
        for key in [&old, &new] {
            let receiver = EventSigner::from_secret(&Sensitive::new(key.clone())).unwrap();
            assert_eq!(receiver.verify(&header, b"{}"), Some(1_700_000_000));
            assert_eq!(receiver.verify(&header, b"{ }"), None);
        }
        let other = EventSigner::from_secret(&Sensitive::new("x".repeat(40))).unwrap();
        assert_eq!(other.verify(&header, b"{}"), None);
        let receiver = EventSigner::from_secret(&Sensitive::new(new.clone())).unwrap();
        let forged = header.replace("t=1700000000", "t=1700000001");
        assert_eq!(receiver.verify(&forged, b"{}"), None);
        for junk in ["", "v1=", "t=x,v1=00", "t=1,v1=", "t=1"] {
            assert_eq!(receiver.verify(junk, b"{}"), None, "{junk}");
        }
    }

    #[test]
    fn event_signature_matches_a_plain_hmac() {
        let e = EventSigner::from_secret(&Sensitive::new("e".repeat(40))).unwrap();
        let sig = e.signature(1_700_000_000, b"{}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, "e".repeat(40).as_bytes());
        let expect = hmac::sign(&key, b"1700000000.{}");
        assert_eq!(
            sig,
            format!("t=1700000000,v1={}", crate::digest::hex(expect.as_ref()))
        );
    }

    #[test]
    fn during_a_rotation_each_key_adds_a_v1() {
        let (new, old) = ("n".repeat(40), "o".repeat(40));
        let both =
            EventSigner::from_secret(&Sensitive::new(format!(r#"{{"keys": ["{new}", "{old}"]}}"#))).unwrap();
        let sig = both.signature(1_700_000_000, b"{}");
        let only = |k: &str| {
            EventSigner::from_secret(&Sensitive::new(k))
                .unwrap()
                .signature(1_700_000_000, b"{}")
        };
        let v1 = |h: String| h.split(',').nth(1).unwrap().to_string();
        assert_eq!(sig, format!("t=1700000000,{},{}", v1(only(&new)), v1(only(&old))));
        assert!(EventSigner::from_secret(&Sensitive::new(r#"{"keys": []}"#)).is_err());
        assert!(EventSigner::from_secret(&Sensitive::new("short")).is_err());
        assert!(!format!("{both:?}").contains(&new));
    }

    #[test]
    fn during_a_rotation_the_previous_key_s_client_state_is_accepted_until_the_grace_ends() {
        let (old, new) = ("o".repeat(40), "n".repeat(40));
        let before = Signer::new(&Sensitive::new(&old)).unwrap();
        let old_state = before.client_state("support");
        let rotating = Signer::new(&Sensitive::new(format!(
            r#"{{"current": "{new}", "previous": "{old}", "previous_until": 2000}}"#
        )))
        .unwrap();
        assert_eq!(
            rotating.verify_client_state_at(old_state.expose(), 1999),
            Some("support")
        );
        assert_eq!(
            rotating.verify_client_state_at(old_state.expose(), 2000),
            None,
            "the grace is over"
        );
        // New values are made with the new key only.
        let new_state = rotating.client_state("support");
        assert_eq!(
            Signer::new(&Sensitive::new(&new))
                .unwrap()
                .verify_client_state(new_state.expose()),
            Some("support")
        );
        assert_eq!(before.verify_client_state(new_state.expose()), None);
        let link = rotating.seal("connect-link", &serde_json::json!({"c": "x"}), 4_000_000_000);
        assert!(
            before
                .open::<serde_json::Value>("connect-link", &link, 0)
                .is_err()
        );
        // A link or cookie a warm container sealed with the old key opens
        // during the grace, not after.
        let old_link = before.seal("connect-link", &serde_json::json!({"c": "x"}), 4_000_000_000);
        assert!(
            rotating
                .open::<serde_json::Value>("connect-link", &old_link, 1999)
                .is_ok()
        );
        assert_eq!(
            rotating
                .open::<serde_json::Value>("connect-link", &old_link, 2000)
                .unwrap_err(),
            SignError::BadSignature
        );
        let old_cookie = before.seal_private("oauth-cookie", &serde_json::json!({"v": "x"}), 4_000_000_000);
        assert!(
            rotating
                .open_private::<serde_json::Value>("oauth-cookie", &old_cookie, 1999)
                .is_ok()
        );
        assert!(
            rotating
                .open_private::<serde_json::Value>("oauth-cookie", &old_cookie, 2000)
                .is_err()
        );
        // The key id names the current key only, and differs from the old one's.
        assert_eq!(
            rotating.key_id(),
            Signer::new(&Sensitive::new(&new)).unwrap().key_id()
        );
        assert_ne!(rotating.key_id(), before.key_id());
        assert_eq!(rotating.key_id().len(), 12);
        assert!(Signer::new(&Sensitive::new(r#"{"current": "short"}"#)).is_err());
        assert!(!format!("{rotating:?}").contains(&old));
    }

    #[test]
    fn a_receiver_key_opens_nothing_the_deployment_signs() {
        // A receiver holds the event signing secret. Used as a signing key it
        // mints values the deployment refuses: purpose keys derive from the
        // signing key, which never leaves the deployment.
        let deployment = signer();
        let receiver_secret = "r".repeat(48);
        let forger = Signer::new(&Sensitive::new(&receiver_secret)).unwrap();
        let cs = forger.client_state("support");
        assert_eq!(deployment.verify_client_state(cs.expose()), None);
        let link = forger.seal(
            "connect-link",
            &serde_json::json!({"c": "support"}),
            4_000_000_000,
        );
        assert!(
            deployment
                .open::<serde_json::Value>("connect-link", &link, 0)
                .is_err()
        );
        let state = forger.seal(
            "oauth-state",
            &serde_json::json!({"c": "support", "n": "x"}),
            4_000_000_000,
        );
        assert!(
            deployment
                .open::<serde_json::Value>("oauth-state", &state, 0)
                .is_err()
        );
        let cookie = forger.seal_private("oauth-cookie", &serde_json::json!({"c": "s"}), 4_000_000_000);
        assert!(
            deployment
                .open_private::<serde_json::Value>("oauth-cookie", &cookie, 0)
                .is_err()
        );
        // Nor does a plain HMAC with the deployment's own signing key: the purposes use derived keys.
        let raw = hmac::Key::new(hmac::HMAC_SHA256, "k".repeat(40).as_bytes());
        let mut ctx = hmac::Context::with_key(&raw);
        ctx.update(b"client-state\nsupport");
        let legacy = format!("support.{}", B64.encode(ctx.sign().as_ref()));
        assert_eq!(deployment.verify_client_state(&legacy), None);
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(Signer::new(&Sensitive::new("short")).unwrap_err(), WeakKey(5));
    }
}
