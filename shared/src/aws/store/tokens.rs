//! Sealed refresh tokens (with `RELAY365_TOKEN_KEY_ID`): the item
//! `conn#{id}` / `tok` in the connection's partition, written under the
//! condition its writer needs so a newer sign-in is never replaced.

use serde_json::Value;

use super::table::{Expect, PutMode, Update};
use super::{Item, Store, StoreError, conn_pk, rename};

/// The sort key of a connection's sealed refresh token, in the connection's
/// partition (so deleting the connection deletes it too).
const TOKEN_SK: &str = "tok";

/// A delegated connection's sealed refresh token as the state table keeps
/// it (`conn#{id}` / `tok`): the sign-in generation and write time in the
/// clear (writes are conditional on the generation), the envelope opaque.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedTokenItem {
    /// The sign-in the token belongs to (the connection record's `generation`).
    pub generation: u64,
    /// When it was written (unix seconds).
    pub written_at: i64,
    /// The KMS-encrypted data key, the nonce and the sealed token.
    pub envelope: crate::aws::sealed::Envelope,
}

crate::debug_showing!(SealedTokenItem {
    generation,
    written_at
});

/// The condition a sealed token write needs, so two containers never undo
/// each other's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWrite {
    /// Only when the connection has no sealed token yet (moving a token
    /// secret into the table).
    IfAbsent,
    /// A new sign-in: only when there is none or it is of an older or the
    /// same generation (a newer sign-in is never replaced).
    SignIn,
    /// A rotated token: only when the stored one is of the same generation
    /// (a sign-in that landed meanwhile is never replaced) and was written
    /// before `written_before` (unix seconds): the write interval is claimed
    /// by the write itself, so one container writes per interval.
    Rotation {
        /// The stored token must be older than this.
        written_before: i64,
    },
}

const TOKEN_FORMAT: u64 = 1;

fn token_attributes(item: &SealedTokenItem) -> Vec<(String, Value)> {
    use base64::Engine;
    let b64 = |b: &[u8]| Value::from(base64::engine::general_purpose::STANDARD.encode(b));
    vec![
        ("format".into(), TOKEN_FORMAT.into()),
        ("generation".into(), item.generation.into()),
        ("written_at".into(), item.written_at.into()),
        ("data_key".into(), b64(&item.envelope.encrypted_key)),
        ("nonce".into(), b64(&item.envelope.nonce)),
        ("sealed".into(), b64(&item.envelope.ciphertext)),
    ]
}

fn parse_token_item(id: &str, item: &Item) -> Result<SealedTokenItem, StoreError> {
    use base64::Engine;
    let damaged = |detail: &str| StoreError::Damaged {
        what: format!("sealed refresh token of connection {id}"),
        id: id.to_string(),
        detail: detail.to_string(),
    };
    if item.get("format").and_then(Value::as_u64) != Some(TOKEN_FORMAT) {
        return Err(damaged("unknown format"));
    }
    let number = |k: &str| {
        item.get(k)
            .and_then(Value::as_i64)
            .ok_or_else(|| damaged(&format!("no {k}")))
    };
    let bytes = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or_else(|| damaged(&format!("no readable {k}")))
    };
    Ok(SealedTokenItem {
        generation: u64::try_from(number("generation")?).map_err(|_| damaged("negative generation"))?,
        written_at: number("written_at")?,
        envelope: crate::aws::sealed::Envelope {
            encrypted_key: bytes("data_key")?,
            nonce: bytes("nonce")?,
            ciphertext: bytes("sealed")?,
        },
    })
}

fn token_what(id: &str) -> String {
    format!("sealed refresh token of connection {id}")
}

impl Store {
    /// A connection's sealed refresh token, read fresh; `None` when it has none.
    ///
    /// # Errors
    /// [`StoreError`]; `Damaged` names the connection.
    pub async fn sealed_token(&self, id: &str) -> Result<Option<SealedTokenItem>, StoreError> {
        match self.table.get(&conn_pk(id), TOKEN_SK).await? {
            Some(item) => parse_token_item(id, &item).map(Some),
            None => Ok(None),
        }
    }

    /// Writes a connection's sealed refresh token under the condition `mode`.
    ///
    /// # Errors
    /// `Conflict` when the condition failed (read again: another writer was
    /// first or a newer sign-in is stored), or another [`StoreError`].
    pub async fn put_sealed_token(
        &self,
        id: &str,
        token: &SealedTokenItem,
        mode: TokenWrite,
    ) -> Result<(), StoreError> {
        let pk = conn_pk(id);
        let attributes = token_attributes(token);
        let whole = || {
            let mut item: Item = attributes.iter().cloned().collect();
            item.insert("pk".into(), pk.clone().into());
            item.insert("sk".into(), TOKEN_SK.into());
            item
        };
        let replace = |expect: Expect| Update {
            set: attributes.clone(),
            expect: vec![expect],
            ..Update::default()
        };
        let result = match mode {
            TokenWrite::IfAbsent => self.table.put_all(vec![whole()], PutMode::IfAbsent).await,
            TokenWrite::Rotation { written_before } => {
                let mut update = replace(Expect::Equals("generation".into(), token.generation.into()));
                update
                    .expect
                    .push(Expect::MissingOrBelow("written_at".into(), written_before.into()));
                match self.table.update(&pk, TOKEN_SK, &update).await {
                    // Nothing to rotate: deleted meanwhile, or never stored.
                    Err(StoreError::NotFound { .. }) => Err(StoreError::Conflict { what: String::new() }),
                    other => other,
                }
            }
            TokenWrite::SignIn => match self.table.put_all(vec![whole()], PutMode::IfAbsent).await {
                Err(StoreError::Conflict { .. }) => {
                    let update = replace(Expect::MissingOrBelow(
                        "generation".into(),
                        token.generation.saturating_add(1).into(),
                    ));
                    match self.table.update(&pk, TOKEN_SK, &update).await {
                        // Deleted between the two writes: the put is free again.
                        Err(StoreError::NotFound { .. }) => {
                            self.table.put_all(vec![whole()], PutMode::IfAbsent).await
                        }
                        other => other,
                    }
                }
                other => other,
            },
        };
        result.map_err(|e| rename(e, &token_what(id)))
    }

    /// Deletes a connection's sealed refresh token (missing is fine).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn delete_sealed_token(&self, id: &str) -> Result<(), StoreError> {
        self.table.delete(&conn_pk(id), TOKEN_SK).await
    }
}
