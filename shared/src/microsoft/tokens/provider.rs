//! The per-container token cache: one slot per connection holding its access
//! token and its newest rotated refresh token, each tagged with the sign-in
//! generation it came from. A slot's lock lets one request per connection go
//! to Microsoft at a time; a dead grant is checked against a fresh read of
//! the record before the connection is marked `reauth_required`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{TokenClient, TokenError, TokenSet};
use crate::aws::secrets::SecretStore;
use crate::aws::store::{ConnectionChange, Store, StoreError};
use crate::microsoft::sealed_tokens::{SealError, SealedTokens};
use crate::model::connection::{Connection, Status, token_secret_name};
use crate::model::scopes;
use crate::model::sensitive::Sensitive;

/// What this container holds for one connection.
#[derive(Default)]
pub(super) struct Slot {
    /// The access token, its expiry and the generation it was obtained for.
    pub(super) access: Option<(Sensitive, Instant, u64)>,
    /// The newest rotated refresh token, and the generation it comes from.
    pub(super) newest_refresh: Option<(Sensitive, u64)>,
}

/// Access tokens for connections, cached per container.
///
/// A cached token (access or rotated refresh token) is used only while the
/// connection record, read fresh by the caller, still has the generation it
/// came from: after a reconnect in any container, every other container
/// drops what it holds and reads the new grant.
pub struct TokenProvider {
    pub(super) client: TokenClient,
    pub(super) secrets: Arc<dyn SecretStore>,
    pub(super) state: Store,
    pub(super) prefix: String,
    pub(super) renew_before: Duration,
    pub(super) write_interval: time::Duration,
    pub(super) slots: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// With `RELAY365_TOKEN_KEY_ID`: refresh tokens sealed in the state table.
    pub(super) sealed: Option<SealedTokens>,
}

crate::debug_showing!(TokenProvider { prefix });

impl TokenProvider {
    /// A provider with token secrets under `prefix` in `secrets` and
    /// connection records in `state`.
    pub fn new(client: TokenClient, secrets: Arc<dyn SecretStore>, state: Store, prefix: &str) -> Self {
        Self {
            client,
            secrets,
            state,
            prefix: prefix.to_string(),
            renew_before: Duration::from_secs(300),
            write_interval: time::Duration::minutes(10),
            slots: std::sync::Mutex::new(HashMap::new()),
            sealed: None,
        }
    }

    /// Keeps refresh tokens sealed with data keys from `keys` in the state
    /// table instead of token secrets (`RELAY365_TOKEN_KEY_ID`); opened
    /// tokens are trusted from memory for `ttl`. Token secrets an earlier
    /// version wrote are moved on first use.
    pub fn with_sealed_tokens(mut self, keys: Arc<dyn crate::aws::kms::DataKeys>, ttl: Duration) -> Self {
        self.sealed = Some(SealedTokens::new(keys, self.state.clone(), ttl));
        self
    }

    /// Whether refresh tokens are sealed in the state table.
    pub fn seals_tokens(&self) -> bool {
        self.sealed.is_some()
    }

    /// The token client.
    pub fn client(&self) -> &TokenClient {
        &self.client
    }

    pub(super) fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    pub(super) fn secret_name(&self, id: &str) -> String {
        token_secret_name(&self.prefix, id)
    }

    /// Forgets the cached access token of a connection (after Graph answered 401).
    pub async fn invalidate(&self, id: &str) {
        self.slot(id).lock().await.access = None;
    }

    /// Reads a connection record fresh from the state table.
    ///
    /// # Errors
    /// [`TokenError::UnknownConnection`] or a store failure.
    pub async fn load(&self, id: &str) -> Result<Connection, TokenError> {
        match self.state.connection(id).await? {
            Some(c) => Ok(c),
            None => Err(TokenError::UnknownConnection(id.to_string())),
        }
    }

    /// [`TokenProvider::access_token`] for a connection read fresh by id.
    ///
    /// # Errors
    /// [`TokenError`].
    pub async fn token_for(&self, id: &str) -> Result<Sensitive, TokenError> {
        let conn = self.load(id).await?;
        self.access_token(&conn).await
    }

    /// A valid access token for the connection (as just read from the state
    /// table), from the cache when it has more than the renewal margin left
    /// and comes from the record's generation.
    ///
    /// # Errors
    /// [`TokenError`]; on `ReauthRequired` the connection has already been
    /// marked `reauth_required` (unless a newer sign-in happened meanwhile).
    pub async fn access_token(&self, conn: &Connection) -> Result<Sensitive, TokenError> {
        let slot = self.slot(&conn.id);
        let mut slot = slot.lock().await;
        if let Some((token, expires, generation)) = &slot.access
            && *generation == conn.generation
            && *expires > Instant::now() + self.renew_before
        {
            return Ok(token.clone());
        }
        match conn.status {
            Status::PendingConsent => return Err(TokenError::NotConnected(conn.id.clone())),
            Status::ReauthRequired => {
                return Err(TokenError::ReauthRequired {
                    code: None,
                    reason: conn
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "connect the mailbox again".into()),
                });
            }
            Status::Active => {}
        }
        let (tokens, generation) = if conn.auth.is_app_only() {
            let t = self
                .client
                .client_credentials(&conn.tenant_id, conn.cloud, conn.auth)
                .await?;
            (t, conn.generation)
        } else {
            self.refresh_delegated(conn, &mut slot).await?
        };
        slot.access = Some((tokens.access_token.clone(), tokens.expires_at, generation));
        tracing::info!(connection = %conn.id, "obtained a new access token");
        Ok(tokens.access_token)
    }

    async fn refresh_delegated(
        &self,
        conn: &Connection,
        slot: &mut Slot,
    ) -> Result<(TokenSet, u64), TokenError> {
        let mut conn = conn.clone();
        let mut fresh = false;
        loop {
            let from_memory = slot
                .newest_refresh
                .as_ref()
                .filter(|(_, g)| *g == conn.generation && !fresh)
                .map(|(t, _)| t.clone());
            let stored = match from_memory {
                Some(_) => None,
                None => match self.stored_token(&conn, fresh).await {
                    Err(TokenError::Sealed(SealError::Unopenable { id })) => {
                        let reason = SealError::Unopenable { id }.to_string();
                        return Err(self.mark_reauth(&conn, None, reason).await);
                    }
                    other => Some(other?),
                },
            };
            let rt = match (from_memory, stored) {
                (Some(t), _) => t,
                (None, stored) => match stored.flatten() {
                    Some(t) if t.generation >= conn.generation && !t.refresh_token.is_empty() => {
                        t.refresh_token
                    }
                    _ => {
                        let reason =
                            "no refresh token is stored: connect the mailbox again from its connect link"
                                .to_string();
                        return Err(TokenError::ReauthRequired { code: None, reason });
                    }
                },
            };
            let scope = scopes::delegated_scope_param(conn.cloud, &conn.scopes);
            match self.client.refresh(&conn.tenant_id, &rt, &scope).await {
                Ok(tokens) => {
                    if let Some(new_rt) = &tokens.refresh_token {
                        slot.newest_refresh = Some((new_rt.clone(), conn.generation));
                        self.write_rotated(&conn, new_rt).await;
                    }
                    return Ok((tokens, conn.generation));
                }
                Err(TokenError::ReauthRequired { code, reason }) => {
                    slot.newest_refresh = None;
                    if !fresh {
                        // Someone may have reconnected since this record was
                        // read: look again, past every cache, and try once more
                        // if there is a newer grant.
                        let newer = self.load(&conn.id).await?;
                        let stored = match self.stored_token(&newer, true).await {
                            // Unopenable is no newer grant: the connection is marked below.
                            Err(TokenError::Sealed(SealError::Unopenable { .. })) => None,
                            other => other?,
                        };
                        let changed = newer.generation != conn.generation
                            || stored.as_ref().is_some_and(|t| t.refresh_token != rt);
                        if changed && newer.status == Status::Active {
                            conn = newer;
                            fresh = true;
                            continue;
                        }
                    }
                    tracing::warn!(connection = %conn.id, code = code.as_deref().unwrap_or(""), "the grant is gone; the connection needs a new sign-in");
                    return Err(self.mark_reauth(&conn, code, reason).await);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Marks the connection `reauth_required` with `reason`, unless a newer
    /// sign-in landed meanwhile; returns the error to give the caller.
    async fn mark_reauth(&self, conn: &Connection, code: Option<String>, reason: String) -> TokenError {
        let change = ConnectionChange::new()
            .status(Status::ReauthRequired)
            .last_error(Some(&reason))
            .if_generation(conn.generation);
        match self.state.update_connection(&conn.id, change).await {
            Ok(()) => TokenError::ReauthRequired { code, reason },
            // A newer sign-in landed meanwhile: it is not ours to undo.
            Err(StoreError::Conflict { .. }) => {
                TokenError::Unavailable("the connection was connected again meanwhile".into())
            }
            Err(e) => e.into(),
        }
    }
}
