//! Sign-in for connections: `GET /oauth/start`, `/oauth/callback` and
//! `/oauth/admin-consent`.
//!
//! A person meets these pages, so every failure is a page that says what
//! happened and what to change, keyed on Microsoft's AADSTS code where there
//! is one, with every value from the request escaped.
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
use pages::{explained, page, public_url, sign_error_words, start_again, token_error_page};
use record::{create_subscriptions, load, note_error, save, save_failed};
use relay365::Sensitive;
use relay365::aws::store::ConnectionChange;
use relay365::microsoft::tokens::AuthorizeOptions;
use relay365::model::connection::{AuthMode, Status};
use relay365::model::scopes;
use relay365::services::Services;
use relay365::web::links;
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
        ("GET", "/oauth/start") => start(&req, s).await,
        ("GET", "/oauth/callback") => callback(&req, s).await,
        ("GET", "/oauth/admin-consent") => consent::admin_consent(&req, s).await,
        (_, "/oauth/start" | "/oauth/callback" | "/oauth/admin-consent") => {
            api::error(405, "method_not_allowed", "these sign-in pages answer GET only")
        }
        _ => api::error(404, "not_found", format!("no route {method} {path}")),
    }
}

async fn start(req: &Request, s: &Services) -> HttpResponse {
    let q = api::query(req);
    let Some(link) = api::query_param(&q, "link") else {
        return page(
            400,
            "Connect link incomplete",
            vec!["The address is missing its link parameter.".into(), start_again()],
        );
    };
    let body = match links::open_connect_link(&*s.signer().await, link) {
        Ok(b) => b,
        Err(e) => {
            return page(
                400,
                "Connect link not valid",
                vec![sign_error_words(e, "connect link"), start_again()],
            );
        }
    };
    let public = match public_url(s) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let conn = match load(s, &body.c).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if body.g != conn.generation {
        return page(
            400,
            "Connect link already used",
            vec![
                format!(
                    "This link was used to connect {} already, and a used link does not work twice.",
                    conn.mailbox.as_deref().unwrap_or("the mailbox")
                ),
                "To connect again, ask the person who manages the connection for a new link (GET /connections/{id} gives it), and open it in this browser.".into(),
            ],
        );
    }
    if conn.auth != AuthMode::Delegated {
        return page(
            400,
            "Wrong kind of link",
            vec![format!(
                "Connection {} is app-only: an administrator grants it with the admin-consent link, not by signing in.",
                conn.id
            )],
        );
    }
    let prompt =
        api::query_param(&q, "prompt").filter(|p| matches!(*p, "login" | "consent" | "select_account"));
    let options = AuthorizeOptions {
        login_hint: conn.mailbox.clone(),
        domain_hint: api::query_param(&q, "domain_hint")
            .filter(|d| {
                d.len() < 254
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            })
            .map(str::to_string),
        prompt: prompt.map(str::to_string),
    };
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let scope = scopes::delegated_scope_param(conn.cloud, &conn.scopes);
    let redirect = links::callback_uri(&public);
    let state = links::sign_in_state(&*s.signer().await, &conn.id, &nonce);
    let (url, verifier) =
        match s
            .tokens
            .client()
            .authorize_url(&conn.tenant_id, &redirect, &scope, &state, &options)
        {
            Ok(v) => v,
            Err(e) => return page(500, "Not configured", vec![e.to_string()]),
        };
    // The verifier goes only into the encrypted cookie; the URL carries its challenge.
    let cookie = links::sign_in_cookie(&*s.signer().await, &conn.id, &nonce, verifier.secret());
    // A newer start replaces the nonce: only the latest sign-in can complete.
    if let Err(r) = save(
        s,
        &conn.id,
        ConnectionChange::new().pending_auth_nonce(Some(&nonce)),
    )
    .await
    {
        return r;
    }
    tracing::info!(connection = %conn.id, "sign-in started");
    api::redirect(
        url.as_str(),
        &[api::set_cookie(
            links::OAUTH_COOKIE,
            &cookie,
            "/oauth",
            links::SIGN_IN_TTL_SECS,
        )],
    )
}

async fn callback(req: &Request, s: &Services) -> HttpResponse {
    let q = api::query(req);
    let public = match public_url(s) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let redirect = links::callback_uri(&public);
    let Some(state) = api::query_param(&q, "state") else {
        return page(
            400,
            "Sign-in incomplete",
            vec!["Microsoft's answer has no state parameter.".into(), start_again()],
        );
    };
    let st = match links::open_state(&*s.signer().await, state) {
        Ok(st) => st,
        Err(e) => {
            return page(
                400,
                "Sign-in not valid",
                vec![sign_error_words(e, "sign-in"), start_again()],
            );
        }
    };
    let other_browser = || {
        page(
            400,
            "Finish in the same browser",
            vec![
                "This sign-in was started in another browser, or this browser blocked the sign-in cookie."
                    .into(),
                "Open the connect link again in this browser and finish there.".into(),
            ],
        )
    };
    let Some(raw_cookie) = api::cookie(req, links::OAUTH_COOKIE) else {
        return other_browser();
    };
    let Ok(cookie) = links::open_cookie(&*s.signer().await, &raw_cookie) else {
        return other_browser();
    };
    if cookie.c != st.c || cookie.n != st.n {
        return other_browser();
    }
    let conn = match load(s, &st.c).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let used = || {
        page(
            400,
            "Sign-in already used",
            vec![
                "This sign-in was already completed, or a newer one was started since.".into(),
                "Start again from the connect link if the connection is not working.".into(),
            ],
        )
    };
    if conn.pending_auth_nonce.as_deref() != Some(st.n.as_str()) {
        return used();
    }
    if let Err(r) = record::spend_nonce(s, &conn.id, &st.n, used).await {
        return r;
    }
    if let Some(error) = api::query_param(&q, "error") {
        let description = api::query_param(&q, "error_description").unwrap_or("");
        let (e, resp) = explained(s, &conn, &redirect, error, description);
        tracing::warn!(connection = %conn.id, code = %e.code, "sign-in refused by Microsoft");
        note_error(s, &conn.id, &format!("{} {} ({})", e.title, e.fix, e.code)).await;
        return resp;
    }
    let Some(code) = api::query_param(&q, "code").filter(|c| !c.is_empty()) else {
        return page(
            400,
            "Sign-in incomplete",
            vec![
                "Microsoft's answer has neither a code nor an error.".into(),
                start_again(),
            ],
        );
    };
    let scope = scopes::delegated_scope_param(conn.cloud, &conn.scopes);
    let signed = match exchange::exchange_code(
        s,
        &conn.tenant_id,
        &Sensitive::new(code),
        &Sensitive::new(cookie.v),
        &redirect,
        &scope,
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(connection = %conn.id, error = %e, "code exchange failed");
            note_error(s, &conn.id, &e.to_string()).await;
            return token_error_page(&e);
        }
    };
    let tokens = signed.tokens;
    let Some(refresh) = tokens.refresh_token.clone() else {
        return page(
            400,
            "Sign-in not completed",
            vec![
                "Microsoft did not grant offline access, so the connection could not stay signed in.".into(),
                "Sign in again and accept all requested permissions.".into(),
            ],
        );
    };
    let id = match binding::id_claims(signed.id_token.as_ref().map(|t| t.expose()), &s.client_id()) {
        Ok(c) => c,
        Err(r) => {
            tracing::warn!(connection = %conn.id, reason = %r, "sign-in refused");
            return r.page();
        }
    };
    let me: binding::Me = match s.graph.get_json(binding::ME_PATH, &tokens.access_token).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(connection = %conn.id, error = %e, "reading /me failed");
            return page(502, "Please try again", vec!["Microsoft signed you in but did not say which mailbox it is. Start again from the connect link.".into()]);
        }
    };
    // The mailbox's own account, in the mailbox's organisation, and after the
    // first sign-in the same account: anyone else is refused, and nothing of
    // theirs is stored.
    let who = match binding::check(s, &conn, &id, &me).await {
        Ok(w) => w,
        Err(r) => {
            tracing::warn!(connection = %conn.id, tid = %id.tid, reason = %r, "sign-in refused");
            return r.page();
        }
    };
    let mailbox = who.mailbox.clone();
    let mut lines = vec![
        format!("{mailbox} is connected to relay365 as connection {}.", conn.id),
        "You can close this window.".into(),
    ];
    // The token first, under the next generation; then the record names that
    // generation. A container that reads the record can always find its token.
    let generation = conn.generation + 1;
    if let Err(e) = s.tokens.store_sign_in(&conn.id, &refresh, generation).await {
        tracing::warn!(connection = %conn.id, error = %e, "could not store the refresh token");
        return save_failed();
    }
    let change = ConnectionChange::new()
        .status(Status::Active)
        .mailbox(&mailbox)
        .tid(&who.tid)
        .oid(&who.oid)
        .granted_scopes(&tokens.scopes)
        .generation(generation)
        .token_written_at(time::OffsetDateTime::now_utc().unix_timestamp())
        .last_error(None)
        .if_generation(conn.generation);
    if let Err(r) = record::save_unless_beaten(
        s,
        &conn.id,
        change,
        "Signed in elsewhere meanwhile",
        "Another sign-in for this connection completed at the same time; that one is kept.",
    )
    .await
    {
        return r;
    }
    s.tokens.invalidate(&conn.id).await;
    tracing::info!(connection = %conn.id, "mailbox connected");
    lines.extend(create_subscriptions(s, &conn.id).await);
    page(200, "Connected", lines)
}
