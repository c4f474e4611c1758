//! Where a delegated connection's refresh token is kept, and how it is kept
//! consistent across containers: a sign-in stores its token under a new
//! generation, a rotated token is written back at most once per interval
//! (claimed in the record first, since Secrets Manager cannot write
//! conditionally), and a token secret left by an earlier version is moved
//! into the state table when tokens are sealed.

use time::OffsetDateTime;

use super::provider::Slot;
use super::{ClassifyMessage, TokenError, TokenProvider};
use crate::aws::secrets::{SecretError, new_request_token};
use crate::aws::store::{ConnectionChange, StoreError, TokenWrite};
use crate::microsoft::sealed_tokens::{SealError, SealedTokens};
use crate::microsoft::stored_token::StoredToken;
use crate::model::connection::Connection;
use crate::model::sensitive::Sensitive;

impl TokenProvider {
    /// Stores the refresh token of a new sign-in under `generation` (the
    /// secret is created on a connection's first sign-in). The record's
    /// generation is moved by the caller afterwards, so a container never sees
    /// a generation whose token is not stored yet.
    ///
    /// # Errors
    /// The secret store's error.
    pub async fn store_sign_in(
        &self,
        id: &str,
        refresh: &Sensitive,
        generation: u64,
    ) -> Result<(), TokenError> {
        let name = self.secret_name(id);
        let token = StoredToken {
            refresh_token: refresh.clone(),
            generation,
        };
        if let Some(sealed) = &self.sealed {
            match sealed.write(id, &token, TokenWrite::SignIn).await {
                Ok(()) => {}
                // A newer sign-in is stored already: this one lost the race,
                // and its caller's move of the record's generation will fail too.
                Err(SealError::State(StoreError::Conflict { .. })) => {}
                Err(e) => return Err(e.into()),
            }
            // A token secret an earlier version left is of an older sign-in.
            self.retire_secret(id).await;
        } else {
            let value = serde_json::to_string(&token).unwrap_or_default();
            match self.secrets.put(&name, &value, &new_request_token()).await {
                Ok(()) => {}
                Err(SecretError::NotFound { .. }) => self.secrets.create(&name, &value).await?,
                Err(e) => return Err(e.into()),
            }
        }
        // This container's rotated token, if any, belongs to the old sign-in.
        let slot = self.slot(id);
        let mut slot = slot.lock().await;
        *slot = Slot::default();
        Ok(())
    }

    /// Deletes a deleted connection's tokens: the sealed token item, if
    /// tokens are sealed, and the token secret, scheduled for deletion
    /// (missing is fine).
    ///
    /// # Errors
    /// The state table's or the secret store's error.
    pub async fn delete_tokens(&self, id: &str) -> Result<(), TokenError> {
        if let Some(sealed) = &self.sealed {
            sealed.delete(id).await?;
        }
        match self.secrets.delete(&self.secret_name(id)).await {
            // Missing, or scheduled for deletion already (a moved token secret).
            Ok(()) | Err(SecretError::NotFound { .. } | SecretError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored refresh token for the record's generation; past the cache
    /// when the cached copy is older than the record.
    pub(super) async fn stored_token(
        &self,
        conn: &Connection,
        fresh: bool,
    ) -> Result<Option<StoredToken>, TokenError> {
        if let Some(sealed) = &self.sealed {
            return match sealed.read(&conn.id, conn.generation, fresh).await? {
                Some(t) => Ok(Some(t)),
                None => self.migrate_secret(sealed, conn).await,
            };
        }
        let name = self.secret_name(&conn.id);
        let parse = |raw: Option<String>| raw.map(|r| parse_secret(&conn.id, &r)).transpose();
        let cached = if fresh {
            None
        } else {
            parse(self.secrets.get(&name).await?)?
        };
        match cached {
            Some(t) if t.generation >= conn.generation => Ok(Some(t)),
            _ => parse(self.secrets.get_fresh(&name).await?),
        }
    }

    /// Moves a token secret an earlier version wrote into the state table:
    /// read it past the cache, seal it, store it only if no sealed token
    /// exists yet, then schedule the secret for deletion. `None` when there
    /// is no secret either.
    async fn migrate_secret(
        &self,
        sealed: &SealedTokens,
        conn: &Connection,
    ) -> Result<Option<StoredToken>, TokenError> {
        let name = self.secret_name(&conn.id);
        let Some(raw) = self.secrets.get_fresh(&name).await? else {
            return Ok(None);
        };
        let token = parse_secret(&conn.id, &raw)?;
        let token = match sealed.write(&conn.id, &token, TokenWrite::IfAbsent).await {
            Ok(()) => {
                tracing::info!(connection = %conn.id, "moved the token secret into the state table, sealed");
                Some(token)
            }
            // Another container moved it (or a sign-in stored one) first: use that.
            Err(SealError::State(StoreError::Conflict { .. })) => sealed.read(&conn.id, 0, true).await?,
            Err(e) => return Err(e.into()),
        };
        self.retire_secret(&conn.id).await;
        Ok(token)
    }

    /// Schedules the token secret of a connection whose token is sealed for
    /// deletion; a failure is logged and tried again on the next sign-in.
    async fn retire_secret(&self, id: &str) {
        match self.secrets.delete(&self.secret_name(id)).await {
            Ok(()) | Err(SecretError::NotFound { .. } | SecretError::AlreadyExists { .. }) => {}
            Err(e) => {
                tracing::warn!(connection = %id, error = %e, "could not schedule the old token secret for deletion");
            }
        }
    }

    /// Writes a rotated refresh token if none was written in the last
    /// interval, by any container: the interval is claimed in the record
    /// first, conditionally, so only one container writes. The old token
    /// stays valid, so a skipped or failed write loses nothing.
    pub(super) async fn write_rotated(&self, conn: &Connection, new_rt: &Sensitive) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let written_before = now - self.write_interval.whole_seconds() + 1;
        let token = StoredToken {
            refresh_token: new_rt.clone(),
            generation: conn.generation,
        };
        if let Some(sealed) = &self.sealed {
            // One conditional write claims the interval and stores the token:
            // only if the stored token is of this generation (a sign-in that
            // landed meanwhile keeps its token) and older than the interval.
            match sealed.write_rotated(&conn.id, &token, written_before).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(connection = %conn.id, error = %e, "could not store the rotated refresh token");
                }
            }
            return;
        }
        let claim = ConnectionChange::new()
            .token_written_at(now)
            .if_generation(conn.generation)
            .if_token_written_before(written_before);
        match self.state.update_connection(&conn.id, claim).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => return,
            Err(e) => {
                tracing::warn!(connection = %conn.id, error = %e, "could not claim the refresh-token write");
                return;
            }
        }
        let value = serde_json::to_string(&token).unwrap_or_default();
        let name = self.secret_name(&conn.id);
        if let Err(e) = self.secrets.put(&name, &value, &new_request_token()).await {
            tracing::warn!(connection = %conn.id, error = %e, "could not store the rotated refresh token");
            return;
        }
        self.undo_if_overwrote_a_sign_in(conn, &name).await;
    }

    /// Secrets Manager cannot write conditionally, so a rotated token's
    /// write (claimed under generation G) can land after a new sign-in
    /// stored generation G+1 and moved the record. Once the record says a
    /// newer generation, the secret must hold it: if it holds an older one,
    /// this write overwrote the sign-in's, whose value is the secret's
    /// previous version, and that is put back.
    async fn undo_if_overwrote_a_sign_in(&self, conn: &Connection, name: &str) {
        let record = match self.state.connection(&conn.id).await {
            Ok(Some(c)) => c.generation,
            _ => return,
        };
        if record <= conn.generation {
            return;
        }
        let generation_of = |raw: Option<String>| {
            raw.and_then(|r| serde_json::from_str::<StoredToken>(&r).ok())
                .map(|t| t.generation)
        };
        let now_stored = generation_of(self.secrets.get_fresh(name).await.ok().flatten());
        if now_stored.is_some_and(|g| g >= record) {
            return;
        }
        let Ok(Some(previous)) = self.secrets.previous(name).await else {
            tracing::error!(connection = %conn.id, "a rotated token may have overwritten a newer sign-in's, and no earlier version is left: the connection will ask for a new sign-in");
            return;
        };
        if generation_of(Some(previous.clone())).is_some_and(|g| g >= record) {
            tracing::warn!(connection = %conn.id, "a rotated token landed after a newer sign-in; the sign-in's token is put back");
            if let Err(e) = self.secrets.put(name, &previous, &new_request_token()).await {
                tracing::error!(connection = %conn.id, error = %e, "could not put the newer sign-in's token back");
            }
        }
    }
}

/// Reads a token secret's value; a damaged one can only be replaced by a
/// new sign-in, which the error says.
fn parse_secret(id: &str, raw: &str) -> Result<StoredToken, TokenError> {
    serde_json::from_str::<StoredToken>(raw).map_err(|e| {
        TokenError::Misconfigured(format!(
            "the token secret of connection {id} is damaged ({}); connect the mailbox again",
            e.classify_message()
        ))
    })
}
