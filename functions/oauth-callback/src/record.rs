//! The connection record as the sign-in pages read and write it: fresh
//! reads, writes of the attributes a sign-in owns, and the subscriptions a
//! completed sign-in creates.

use relay365::aws::store::ConnectionChange;
use relay365::microsoft::tokens::TokenError;
use relay365::model::connection::Connection;
use relay365::services::Services;
use relay365::subscriptions;
use relay365::web::response::HttpResponse;

use crate::pages::page;

pub(crate) async fn load(s: &Services, id: &str) -> Result<Connection, HttpResponse> {
    match s.tokens.load(id).await {
        Ok(c) => Ok(c),
        Err(TokenError::UnknownConnection(_)) => Err(page(
            404,
            "Connection not found",
            vec![
                format!("The connection {id} no longer exists."),
                "Ask for a new connect link.".into(),
            ],
        )),
        Err(e) => {
            tracing::warn!(connection = id, error = %e, "could not load a connection");
            Err(page(
                503,
                "Please try again",
                vec![
                    "The service could not read the connection just now. Reload this page in a moment."
                        .into(),
                ],
            ))
        }
    }
}

pub(crate) fn save_failed() -> HttpResponse {
    page(
        503,
        "Please try again",
        vec!["The service could not save the connection just now. Start again from the connect link in a moment.".into()],
    )
}

/// Writes the attributes the sign-in owns (and nothing else of the record).
pub(crate) async fn save(s: &Services, id: &str, change: ConnectionChange) -> Result<(), HttpResponse> {
    s.state.update_connection(id, change).await.map_err(|e| {
        tracing::warn!(connection = id, error = %e, "could not store a connection");
        save_failed()
    })
}

/// Spends the nonce of a sign-in or consent state, whatever the outcome:
/// conditionally, so of two containers serving the same redirect only one
/// gets past here; the other gets `used()`.
pub(crate) async fn spend_nonce(
    s: &Services,
    id: &str,
    nonce: &str,
    used: impl FnOnce() -> HttpResponse,
) -> Result<(), HttpResponse> {
    match s
        .state
        .update_connection(
            id,
            ConnectionChange::new().pending_auth_nonce(None).if_nonce(nonce),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(relay365::aws::store::StoreError::Conflict { .. }) => Err(used()),
        Err(e) => {
            tracing::warn!(connection = id, error = %e, "could not spend the sign-in state");
            Err(save_failed())
        }
    }
}

/// Writes a completed sign-in or consent, conditional on the generation it
/// read (the change says so): when another one completed at the same time,
/// that one is kept and the person sees `title` and `words`.
pub(crate) async fn save_unless_beaten(
    s: &Services,
    id: &str,
    change: ConnectionChange,
    title: &str,
    words: &str,
) -> Result<(), HttpResponse> {
    match s.state.update_connection(id, change).await {
        Ok(()) => Ok(()),
        Err(relay365::aws::store::StoreError::Conflict { .. }) => Err(page(409, title, vec![words.into()])),
        Err(e) => {
            tracing::warn!(connection = id, error = %e, "could not store a connection");
            Err(save_failed())
        }
    }
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
