//! Sign-in for connections: `GET /oauth/start`, `/oauth/callback` and
//! `/oauth/admin-consent`.
//!
//! A person meets these pages, so every failure is a page that says what
//! happened and what to change, keyed on Microsoft's AADSTS code where there
//! is one, with every value from the request escaped. Each step of a flow
//! returns a `pages::PageError` naming what the person can do, and the one
//! conversion in `pages` makes its page.
//!
//! Security: the connect link is signed and expires; `/oauth/start` creates a
//! nonce, stores it in the connection record, and sends it both in the signed
//! `state` and in an encrypted, HttpOnly cookie that also carries the PKCE
//! verifier. The callback accepts only a state whose signature, expiry, nonce
//! and cookie all match, then clears the nonce: a state works once, in the
//! browser that started it, for the connection it names.
//!
//! Who signs in is bound too (see `binding`): the ID token's organisation
//! (`tid`) must be the mailbox's, the user must be the mailbox (its UPN or
//! one of its proxy addresses, never the `mail` attribute), and after the
//! first sign-in the same user (`oid`). Admin consent is proven by the
//! application permissions in an app-only token, not by Microsoft's redirect.

mod binding;
mod consent;
mod exchange;
mod pages;
mod record;

use lambda_http::Request;
use pages::{Flow, PageError, explained, page, public_url};
use record::{create_subscriptions, load, note_error};
use relay365::Sensitive;
use relay365::aws::store::ConnectionChange;
use relay365::microsoft::claims::IdClaims;
use relay365::microsoft::tokens::AuthorizeOptions;
use relay365::model::connection::{AuthMode, Connection, Status};
use relay365::model::scopes;
use relay365::services::Services;
use relay365::web::links::{self, StateBody};
use relay365::web::response::{self as api, HttpResponse};

/// Any invocation: an API Gateway event, answered in API Gateway's shape.
pub async fn handle_event(payload: serde_json::Value, s: &Services) -> serde_json::Value {
    api::to_apigw_v2(match api::http_event(&payload) {
        Ok(req) => handle(req, s).await,
        Err(r) => r,
    })
}

/// Answers one request.
pub async fn handle(req: Request, s: &Services) -> HttpResponse {
    let path = api::path(&req);
    let method = req.method().as_str();
    match (method, path.trim_end_matches('/')) {
        ("GET", "/oauth/start") => start(&req, s).await.unwrap_or_else(HttpResponse::from),
        ("GET", "/oauth/callback") => callback(&req, s).await.unwrap_or_else(HttpResponse::from),
        ("GET", "/oauth/admin-consent") => consent::admin_consent(&req, s).await,
        (_, "/oauth/start" | "/oauth/callback" | "/oauth/admin-consent") => {
            api::error(405, "method_not_allowed", "these sign-in pages answer GET only")
        }
        _ => api::error(404, "not_found", format!("no route {method} {path}")),
    }
}

/// `GET /oauth/start?link=…`: checks the connect link, binds the sign-in to
/// this browser (a nonce in the record, the signed state and the encrypted
/// cookie), then sends the browser to Microsoft.
async fn start(req: &Request, s: &Services) -> Result<HttpResponse, PageError> {
    let q = api::query(req);
    let link = api::query_param(&q, "link").ok_or(PageError::ConnectLinkIncomplete)?;
    let body =
        links::open_connect_link(&*s.signer().await, link).map_err(|reason| PageError::LinkNotValid {
            flow: Flow::SignIn,
            reason,
        })?;
    let public = public_url(s)?;
    let conn = load(s, &body.c).await?;
    if body.g != conn.generation {
        return Err(PageError::ConnectLinkUsed {
            mailbox: conn.mailbox.as_deref().unwrap_or("the mailbox").to_string(),
        });
    }
    if conn.auth != AuthMode::Delegated {
        return Err(PageError::WrongKindOfLink {
            flow: Flow::SignIn,
            connection: conn.id,
        });
    }
    let options = authorize_options(&q, &conn);
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let scope = scopes::delegated_scope_param(conn.cloud, &conn.scopes);
    let redirect = links::callback_uri(&public);
    let state = links::sign_in_state(&*s.signer().await, &conn.id, &nonce);
    let (url, verifier) = s
        .tokens
        .client()
        .authorize_url(&conn.tenant_id, &redirect, &scope, &state, &options)
        .map_err(|e| PageError::NotConfigured(e.to_string()))?;
    // The verifier goes only into the encrypted cookie; the URL carries its challenge.
    let cookie = links::sign_in_cookie(&*s.signer().await, &conn.id, &nonce, verifier.secret());
    record::go_to_microsoft(s, &conn.id, &nonce, "sign-in", url.as_str(), &cookie).await
}

/// The hints passed on to Microsoft's sign-in page: the mailbox as login
/// hint, and the `prompt` and `domain_hint` of the start address when they
/// are ones Microsoft knows.
fn authorize_options(q: &[(String, String)], conn: &Connection) -> AuthorizeOptions {
    let domain_hint = api::query_param(q, "domain_hint").filter(|d| {
        d.len() < 254
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    });
    let prompt =
        api::query_param(q, "prompt").filter(|p| matches!(*p, "login" | "consent" | "select_account"));
    AuthorizeOptions {
        login_hint: conn.mailbox.clone(),
        domain_hint: domain_hint.map(str::to_string),
        prompt: prompt.map(str::to_string),
    }
}

/// `GET /oauth/callback`: Microsoft's redirect back after a sign-in. Each
/// step either hands the next one what it needs or says, as a
/// [`PageError`], why the sign-in stops here.
async fn callback(req: &Request, s: &Services) -> Result<HttpResponse, PageError> {
    let q = api::query(req);
    let redirect = links::callback_uri(&public_url(s)?);
    let (state, verifier) = bound_state(req, &q, s).await?;
    let conn = load(s, &state.c).await?;
    spend_state(s, &conn, &state).await?;
    let code = authorization_code(&q, &conn, &redirect, s).await?;
    let signed = redeem(s, &conn, code, verifier, &redirect).await?;
    let refresh = signed
        .tokens
        .refresh_token
        .clone()
        .ok_or(PageError::NoOfflineAccess)?;
    let who = identify(s, &conn, &signed).await?;
    store_sign_in(s, &conn, &who, &refresh, &signed.tokens.scopes).await?;
    let mut lines = vec![
        format!(
            "{} is connected to relay365 as connection {}.",
            who.mailbox, conn.id
        ),
        "You can close this window.".into(),
    ];
    lines.extend(create_subscriptions(s, &conn.id).await);
    Ok(page(200, "Connected", lines))
}

/// The signed `state` of Microsoft's redirect, and the PKCE verifier of the
/// cookie that names the same connection and nonce: proof that the sign-in
/// ends in the browser that started it.
async fn bound_state(
    req: &Request,
    q: &[(String, String)],
    s: &Services,
) -> Result<(StateBody, Sensitive), PageError> {
    let state = api::query_param(q, "state").ok_or(PageError::SignInIncomplete {
        missing: "Microsoft's answer has no state parameter.",
    })?;
    let signer = s.signer().await;
    let st = links::open_state(&signer, state).map_err(PageError::StateNotValid)?;
    let cookie = api::cookie(req, links::OAUTH_COOKIE)
        .and_then(|raw| links::open_cookie(&signer, &raw).ok())
        .filter(|cookie| cookie.c == st.c && cookie.n == st.n)
        .ok_or(PageError::OtherBrowser(Flow::SignIn))?;
    Ok((st, Sensitive::new(cookie.v)))
}

/// Spends the state's nonce: it must be the record's latest, and of two
/// containers serving the same redirect only one gets past here.
async fn spend_state(s: &Services, conn: &Connection, st: &StateBody) -> Result<(), PageError> {
    if conn.pending_auth_nonce.as_deref() != Some(st.n.as_str()) {
        return Err(PageError::AlreadyUsed(Flow::SignIn));
    }
    record::spend_nonce(s, &conn.id, &st.n, Flow::SignIn).await
}

/// The authorization code of Microsoft's redirect, or Microsoft's `error`
/// explained (and noted on the connection).
async fn authorization_code<'q>(
    q: &'q [(String, String)],
    conn: &Connection,
    redirect: &str,
    s: &Services,
) -> Result<&'q str, PageError> {
    if let Some(error) = api::query_param(q, "error") {
        let description = api::query_param(q, "error_description").unwrap_or("");
        let e = explained(s, conn, redirect, error, description);
        tracing::warn!(connection = %conn.id, code = %e.code, "sign-in refused by Microsoft");
        note_error(s, &conn.id, &format!("{} {} ({})", e.title, e.fix, e.code)).await;
        return Err(PageError::Microsoft(e));
    }
    api::query_param(q, "code")
        .filter(|c| !c.is_empty())
        .ok_or(PageError::SignInIncomplete {
            missing: "Microsoft's answer has neither a code nor an error.",
        })
}

/// Redeems the code for tokens (and the ID token); a refusal is noted on the connection.
async fn redeem(
    s: &Services,
    conn: &Connection,
    code: &str,
    verifier: Sensitive,
    redirect: &str,
) -> Result<exchange::SignInTokens, PageError> {
    let scope = scopes::delegated_scope_param(conn.cloud, &conn.scopes);
    match exchange::exchange_code(
        s,
        &conn.tenant_id,
        &Sensitive::new(code),
        &verifier,
        redirect,
        &scope,
    )
    .await
    {
        Ok(tokens) => Ok(tokens),
        Err(e) => {
            tracing::warn!(connection = %conn.id, error = %e, "code exchange failed");
            note_error(s, &conn.id, &e.to_string()).await;
            Err(e.into())
        }
    }
}

/// Who signed in, accepted only when it is the mailbox's own account, in the
/// mailbox's organisation, and after the first sign-in the same account:
/// anyone else is refused, and nothing of theirs is stored.
async fn identify(
    s: &Services,
    conn: &Connection,
    signed: &exchange::SignInTokens,
) -> Result<binding::Accepted, PageError> {
    let id: IdClaims = binding::id_claims(signed.id_token.as_ref().map(|t| t.expose()), &s.client_id())
        .map_err(|r| {
            tracing::warn!(connection = %conn.id, reason = %r, "sign-in refused");
            r
        })?;
    let me: binding::Me = s
        .graph
        .get_json(binding::ME_PATH, &signed.tokens.access_token)
        .await
        .map_err(|e| {
            tracing::warn!(connection = %conn.id, error = %e, "reading /me failed");
            PageError::MailboxUnknown
        })?;
    binding::check(s, conn, &id, &me).await.map_err(|r| {
        tracing::warn!(connection = %conn.id, tid = %id.tid, reason = %r, "sign-in refused");
        PageError::Refused(r)
    })
}

/// Stores the sign-in: the refresh token first, under the next generation;
/// then the record, which names that generation, so a container that reads
/// the record can always find its token.
async fn store_sign_in(
    s: &Services,
    conn: &Connection,
    who: &binding::Accepted,
    refresh: &Sensitive,
    granted: &[String],
) -> Result<(), PageError> {
    let generation = conn.generation + 1;
    s.tokens
        .store_sign_in(&conn.id, refresh, generation)
        .await
        .map_err(|e| {
            tracing::warn!(connection = %conn.id, error = %e, "could not store the refresh token");
            PageError::SaveFailed
        })?;
    let change = ConnectionChange::new()
        .status(Status::Active)
        .mailbox(&who.mailbox)
        .tid(&who.tid)
        .oid(&who.oid)
        .granted_scopes(granted)
        .generation(generation)
        .token_written_at(time::OffsetDateTime::now_utc().unix_timestamp())
        .last_error(None)
        .if_generation(conn.generation);
    record::save_unless_beaten(s, &conn.id, change, Flow::SignIn).await?;
    s.tokens.invalidate(&conn.id).await;
    tracing::info!(connection = %conn.id, "mailbox connected");
    Ok(())
}
