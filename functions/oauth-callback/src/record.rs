//! The connection record as the sign-in pages read and write it: fresh
//! reads, writes of the attributes a sign-in owns, and the subscriptions a
//! completed sign-in creates.

use relay365::aws::store::{ConnectionChange, StoreError};
use relay365::microsoft::tokens::TokenError;
use relay365::model::connection::Connection;
use relay365::services::Services;
use relay365::subscriptions;
use relay365::web::links;
use relay365::web::response::{self as api, HttpResponse};

use crate::pages::{Flow, PageError};

/// The connection, read fresh.
///
/// # Errors
/// [`PageError::ConnectionGone`] when it no longer exists,
/// [`PageError::ReadFailed`] when it cannot be read just now.
pub(crate) async fn load(s: &Services, id: &str) -> Result<Connection, PageError> {
    s.tokens.load(id).await.map_err(|e| match e {
        TokenError::UnknownConnection(_) => PageError::ConnectionGone(id.to_string()),
        e => {
            tracing::warn!(connection = id, error = %e, "could not load a connection");
            PageError::ReadFailed
        }
    })
}

/// Writes the attributes the sign-in owns (and nothing else of the record).
///
/// # Errors
/// [`PageError::SaveFailed`].
pub(crate) async fn save(s: &Services, id: &str, change: ConnectionChange) -> Result<(), PageError> {
    s.state.update_connection(id, change).await.map_err(|e| {
        tracing::warn!(connection = id, error = %e, "could not store a connection");
        PageError::SaveFailed
    })
}

/// Spends the nonce of a sign-in or consent state, whatever the outcome:
/// conditionally, so of two containers serving the same redirect only one
/// gets past here.
///
/// # Errors
/// [`PageError::AlreadyUsed`] for the container that comes second,
/// [`PageError::SaveFailed`] when the record cannot be written.
pub(crate) async fn spend_nonce(s: &Services, id: &str, nonce: &str, flow: Flow) -> Result<(), PageError> {
    let change = ConnectionChange::new().pending_auth_nonce(None).if_nonce(nonce);
    save_unless(s, id, change, PageError::AlreadyUsed(flow)).await
}

/// Writes a completed sign-in or consent, conditional on the generation it
/// read (the change says so).
///
/// # Errors
/// [`PageError::Beaten`] when another one completed at the same time (that
/// one is kept), [`PageError::SaveFailed`] when the record cannot be written.
pub(crate) async fn save_unless_beaten(
    s: &Services,
    id: &str,
    change: ConnectionChange,
    flow: Flow,
) -> Result<(), PageError> {
    save_unless(s, id, change, PageError::Beaten(flow)).await
}

/// Writes a conditional change: `conflict` when its condition failed,
/// [`PageError::SaveFailed`] when the record cannot be written.
async fn save_unless(
    s: &Services,
    id: &str,
    change: ConnectionChange,
    conflict: PageError,
) -> Result<(), PageError> {
    match s.state.update_connection(id, change).await {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict { .. }) => Err(conflict),
        Err(e) => {
            tracing::warn!(connection = id, error = %e, "could not store a connection");
            Err(PageError::SaveFailed)
        }
    }
}

/// Sends the browser to Microsoft to sign in or consent (`what` names it in
/// the log), once the start's nonce is stored: a newer start replaces the
/// nonce, so only the latest one can complete. The cookie holds what the
/// callback must find again (the PKCE verifier goes only there).
///
/// # Errors
/// [`PageError::SaveFailed`] when the nonce cannot be stored.
pub(crate) async fn go_to_microsoft(
    s: &Services,
    conn_id: &str,
    nonce: &str,
    what: &str,
    url: &str,
    cookie: &str,
) -> Result<HttpResponse, PageError> {
    save(
        s,
        conn_id,
        ConnectionChange::new().pending_auth_nonce(Some(nonce)),
    )
    .await?;
    tracing::info!(connection = %conn_id, "{what} started");
    Ok(api::redirect(
        url,
        &[api::set_cookie(
            links::OAUTH_COOKIE,
            cookie,
            "/oauth",
            links::SIGN_IN_TTL_SECS,
        )],
    ))
}

/// Records why a sign-in failed; the page already says it, so a failed write is only logged.
pub(crate) async fn note_error(s: &Services, id: &str, error: &str) {
    let _ = save(s, id, ConnectionChange::new().last_error(Some(error))).await;
}

/// Creates the subscriptions asked for at connection time; returns lines for the page.
pub(crate) async fn create_subscriptions(s: &Services, id: &str) -> Vec<String> {
    // Read again: the record now has the new status and generation.
    let conn = match s.state.connection(id).await {
        Ok(Some(c)) => c,
        _ => return vec!["The subscriptions will be created by the next scheduled run.".into()],
    };
    subscriptions::ensure(s, &conn)
        .await
        .into_iter()
        .map(|e| format!("A subscription could not be created yet: {e}"))
        .collect()
}
