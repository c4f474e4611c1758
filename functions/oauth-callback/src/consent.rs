//! `GET /oauth/admin-consent`: an administrator grants an app-only
//! connection, and relay365 checks that the grant is real before the
//! connection is active.
//!
//! The route has two steps, as a delegated sign-in has:
//!
//! * **start** (`?link=…`, the signed admin-consent link): the link must be
//!   for the connection's current generation (a link works once), a nonce is
//!   stored in the connection record and sent both in a short-lived signed
//!   `state` and in an encrypted, HttpOnly cookie, and the browser goes to
//!   Microsoft's admin-consent page;
//! * **callback** (`?state=…`, Microsoft's redirect): the state's signature,
//!   expiry and nonce must match the cookie and the record, then the nonce is
//!   spent. A link minted before the start step existed (its state goes to
//!   Microsoft directly) comes back here once and is sent through the start
//!   step, so the consent that counts is always made in the browser holding
//!   the cookie.
//!
//! Microsoft's word for the consent is not taken, and neither is the mere
//! existence of an app-only token (Entra issues one as soon as the app's
//! service principal exists, with no permission at all): the token's `roles`
//! claim must hold every application permission the connection's scopes need.
//! Otherwise the page names what is missing and how to grant it, and the
//! connection stays `pending_consent`. A completed consent moves the
//! connection's generation on, which spends the link.

use lambda_http::Request;
use relay365::Status;
use relay365::aws::store::ConnectionChange;
use relay365::microsoft::claims;
use relay365::model::connection::Connection;
use relay365::model::scopes;
use relay365::services::Services;
use relay365::web::links::{self, StateBody};
use relay365::web::response::{self as api, HttpResponse};
use relay365::web::signing::SignError;
use serde::{Deserialize, Serialize};

use crate::pages::{Flow, PageError, explained, page, public_url};
use crate::record::{
    create_subscriptions, go_to_microsoft, load, note_error, save_unless_beaten, spend_nonce,
};

/// Signing purpose of the `state` sent to Microsoft by the start step.
const CONSENT_STATE: &str = "admin-consent-bound-state";
/// Signing purpose of the cookie that binds a consent to its browser.
const CONSENT_COOKIE: &str = "admin-consent-cookie";

/// What the consent cookie carries (encrypted: the browser cannot read it).
#[derive(Serialize, Deserialize)]
struct ConsentCookie {
    c: String,
    n: String,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Answers `GET /oauth/admin-consent`: the start step or Microsoft's redirect.
pub(crate) async fn admin_consent(req: &Request, s: &Services) -> HttpResponse {
    let q = api::query(req);
    let answer = if let Some(state) = api::query_param(&q, "state") {
        callback(req, &q, state, s).await
    } else if let Some(link) = api::query_param(&q, "link") {
        start(link, s).await
    } else {
        Err(PageError::ConsentIncomplete)
    };
    answer.unwrap_or_else(HttpResponse::from)
}

fn link_not_valid(reason: SignError) -> PageError {
    PageError::LinkNotValid {
        flow: Flow::AdminConsent,
        reason,
    }
}

/// The connection, which must be app-only: a delegated one has a connect link instead.
fn app_only(conn: Connection) -> Result<Connection, PageError> {
    if conn.auth.is_app_only() {
        Ok(conn)
    } else {
        Err(PageError::WrongKindOfLink {
            flow: Flow::AdminConsent,
            connection: conn.id,
        })
    }
}

/// The start step: binds the consent to this browser, then sends it to Microsoft.
async fn start(link: &str, s: &Services) -> Result<HttpResponse, PageError> {
    let body = links::open_admin_state(&*s.signer().await, link).map_err(link_not_valid)?;
    let public = public_url(s)?;
    let conn = app_only(load(s, &body.c).await?)?;
    if body.g != conn.generation {
        return Err(PageError::ConsentLinkUsed { connection: conn.id });
    }
    let signer = s.signer().await;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let expires = now() + links::SIGN_IN_TTL_SECS;
    let state = signer.seal(
        CONSENT_STATE,
        &StateBody {
            c: conn.id.clone(),
            n: nonce.clone(),
        },
        expires,
    );
    let cookie = signer.seal_private(
        CONSENT_COOKIE,
        &ConsentCookie {
            c: conn.id.clone(),
            n: nonce.clone(),
        },
        expires,
    );
    let url = s.tokens.client().admin_consent_url(
        &conn.tenant_id,
        conn.cloud,
        &links::admin_consent_uri(&public),
        &state,
    );
    if url.is_empty() {
        return Err(PageError::NotConfigured(format!(
            "The tenant {:?} of connection {} makes no valid Microsoft address.",
            conn.tenant_id, conn.id
        )));
    }
    go_to_microsoft(s, &conn.id, &nonce, "admin consent", &url, &cookie).await
}

/// Microsoft's redirect back.
async fn callback(
    req: &Request,
    q: &[(String, String)],
    state: &str,
    s: &Services,
) -> Result<HttpResponse, PageError> {
    let public = public_url(s)?;
    let signer = s.signer().await;
    let st: StateBody = match signer.open(CONSENT_STATE, state, now()) {
        Ok(st) => st,
        Err(bound_error) => {
            return match links::open_admin_state(&signer, state) {
                Ok(_) => unbound(q, state, &public, s).await,
                Err(SignError::Expired) => Err(link_not_valid(SignError::Expired)),
                Err(_) => Err(link_not_valid(bound_error)),
            };
        }
    };
    let cookie = api::cookie(req, links::OAUTH_COOKIE)
        .and_then(|raw| {
            signer
                .open_private::<ConsentCookie>(CONSENT_COOKIE, &raw, now())
                .ok()
        })
        .filter(|cookie| cookie.c == st.c && cookie.n == st.n);
    if cookie.is_none() {
        return Err(PageError::OtherBrowser(Flow::AdminConsent));
    }
    let conn = app_only(load(s, &st.c).await?)?;
    if conn.pending_auth_nonce.as_deref() != Some(st.n.as_str()) {
        return Err(PageError::AlreadyUsed(Flow::AdminConsent));
    }
    spend_nonce(s, &conn.id, &st.n, Flow::AdminConsent).await?;
    // Microsoft can send admin_consent=True together with an error: the error wins.
    microsoft_error(q, &conn, &public, s).await?;
    if !api::query_param(q, "admin_consent").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(PageError::ConsentNotGranted);
    }
    prove(&conn, s).await
}

/// Microsoft's `error`, if it sent one, explained and noted on the connection.
async fn microsoft_error(
    q: &[(String, String)],
    conn: &Connection,
    public: &url::Url,
    s: &Services,
) -> Result<(), PageError> {
    let Some(error) = api::query_param(q, "error") else {
        return Ok(());
    };
    let description = api::query_param(q, "error_description").unwrap_or("");
    let e = explained(s, conn, &links::admin_consent_uri(public), error, description);
    note_error(s, &conn.id, &format!("{} {} ({})", e.title, e.fix, e.code)).await;
    Err(PageError::Microsoft(e))
}

/// A redirect whose state is the admin-consent link itself (a link that went
/// to Microsoft without the start step): Microsoft's error is shown as it is;
/// a consent is sent through the start step, so the one that counts is made
/// in a browser bound to it.
async fn unbound(
    q: &[(String, String)],
    link: &str,
    public: &url::Url,
    s: &Services,
) -> Result<HttpResponse, PageError> {
    let body = links::open_admin_state(&*s.signer().await, link).map_err(|_| PageError::ConsentNotGranted)?;
    let conn = app_only(load(s, &body.c).await?)?;
    microsoft_error(q, &conn, public, s).await?;
    let mut start = public.clone();
    start.set_path("/oauth/admin-consent");
    start.set_query(None);
    start.query_pairs_mut().append_pair("link", link);
    Ok(api::redirect(start.as_str(), &[]))
}

/// Proves the consent with an app-only token whose `roles` hold every
/// application permission the connection needs, then activates it.
async fn prove(conn: &Connection, s: &Services) -> Result<HttpResponse, PageError> {
    let required = scopes::graph_permissions(&conn.scopes);
    check_roles(conn, &required, s).await?;
    // Active, and the generation moves on: the link that got here is spent.
    let change = ConnectionChange::new()
        .status(Status::Active)
        .generation(conn.generation + 1)
        .last_error(None)
        .if_generation(conn.generation);
    save_unless_beaten(s, &conn.id, change, Flow::AdminConsent).await?;
    s.tokens.invalidate(&conn.id).await;
    tracing::info!(connection = %conn.id, "admin consent verified");
    let problems = create_subscriptions(s, &conn.id).await;
    Ok(page(
        200,
        "Consent granted",
        vec![
            format!(
                "Connection {} for {} is active: tenant {} granted {}.",
                conn.id,
                conn.mailbox.as_deref().unwrap_or("the mailbox"),
                conn.tenant_id,
                required.join(", ")
            ),
            "You can close this window.".into(),
        ]
        .into_iter()
        .chain(problems)
        .collect(),
    ))
}

/// Checks that an app-only token's `roles` hold every permission in
/// `required`; what is missing is noted on the connection and named on the page.
async fn check_roles(conn: &Connection, required: &[&str], s: &Services) -> Result<(), PageError> {
    let tokens = match s
        .tokens
        .client()
        .client_credentials(&conn.tenant_id, conn.cloud, conn.auth)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(connection = %conn.id, error = %e, "admin consent could not be proven");
            note_error(s, &conn.id, &e.to_string()).await;
            return Err(e.into());
        }
    };
    // The token came over TLS from Microsoft's token endpoint, in answer to
    // our own client credentials: its claims are read, not verified.
    let roles = claims::token_roles(tokens.access_token.expose()).map_err(|e| {
        tracing::warn!(connection = %conn.id, error = %e, "the app-only token's permissions could not be read");
        PageError::RolesUnreadable
    })?;
    let missing = claims::missing_roles(required, &roles);
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(", ");
    let why = format!(
        "The consent for tenant {} does not include the application permission{} {list}, which connection {} needs for {}.",
        conn.tenant_id,
        if missing.len() == 1 { "" } else { "s" },
        conn.id,
        conn.scopes
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    tracing::warn!(connection = %conn.id, missing = %list, "admin consent lacks application permissions");
    note_error(
        s,
        &conn.id,
        &format!("{why} Grant them and open the admin-consent link again."),
    )
    .await;
    Err(PageError::PermissionMissing {
        why,
        missing: list,
        count: missing.len(),
        client_id: s.client_id(),
    })
}
