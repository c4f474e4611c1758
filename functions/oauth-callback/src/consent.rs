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

use crate::pages::{explained, page, public_url, sign_error_words, token_error_page};
use crate::record::{create_subscriptions, load, note_error, save};

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

fn new_link() -> String {
    "Ask the person who manages the connection for a new admin-consent link (GET /connections/{id} gives it), and open it in this browser.".into()
}

/// Answers `GET /oauth/admin-consent`: the start step or Microsoft's redirect.
pub(crate) async fn admin_consent(req: &Request, s: &Services) -> HttpResponse {
    let q = api::query(req);
    if let Some(state) = api::query_param(&q, "state") {
        return callback(req, &q, state, s).await;
    }
    if let Some(link) = api::query_param(&q, "link") {
        return start(link, s).await;
    }
    page(
        400,
        "Consent incomplete",
        vec![
            "The address has neither a consent link nor Microsoft's answer.".into(),
            "Open the admin-consent link again.".into(),
        ],
    )
}

/// The start step: binds the consent to this browser, then sends it to Microsoft.
async fn start(link: &str, s: &Services) -> HttpResponse {
    let body = match links::open_admin_state(&*s.signer().await, link) {
        Ok(b) => b,
        Err(e) => {
            return page(
                400,
                "Consent link not valid",
                vec![sign_error_words(e, "admin-consent link"), new_link()],
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
    if !conn.auth.is_app_only() {
        return wrong_kind(&conn);
    }
    if body.g != conn.generation {
        return page(
            400,
            "Consent link already used",
            vec![
                format!(
                    "This link was used to grant connection {} already, and a used link does not work twice.",
                    conn.id
                ),
                new_link(),
            ],
        );
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
        return page(
            500,
            "Not configured",
            vec![format!(
                "The tenant {:?} of connection {} makes no valid Microsoft address.",
                conn.tenant_id, conn.id
            )],
        );
    }
    // A newer start replaces the nonce: only the latest consent can complete.
    if let Err(r) = save(
        s,
        &conn.id,
        ConnectionChange::new().pending_auth_nonce(Some(&nonce)),
    )
    .await
    {
        return r;
    }
    tracing::info!(connection = %conn.id, "admin consent started");
    api::redirect(
        &url,
        &[api::set_cookie(
            links::OAUTH_COOKIE,
            &cookie,
            "/oauth",
            links::SIGN_IN_TTL_SECS,
        )],
    )
}

fn wrong_kind(conn: &Connection) -> HttpResponse {
    page(
        400,
        "Wrong kind of link",
        vec![format!(
            "Connection {} signs in as a user: use its connect link.",
            conn.id
        )],
    )
}

/// Microsoft's redirect back.
async fn callback(req: &Request, q: &[(String, String)], state: &str, s: &Services) -> HttpResponse {
    let public = match public_url(s) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let signer = s.signer().await;
    let st: StateBody = match signer.open(CONSENT_STATE, state, now()) {
        Ok(st) => st,
        Err(bound_error) => {
            return match links::open_admin_state(&signer, state) {
                Ok(_) => unbound(q, state, &public, s).await,
                Err(SignError::Expired) => page(
                    400,
                    "Consent link not valid",
                    vec![
                        sign_error_words(SignError::Expired, "admin-consent link"),
                        new_link(),
                    ],
                ),
                Err(_) => page(
                    400,
                    "Consent link not valid",
                    vec![sign_error_words(bound_error, "admin-consent link"), new_link()],
                ),
            };
        }
    };
    let other_browser = || {
        page(
            400,
            "Finish in the same browser",
            vec![
                "This consent was started in another browser, or this browser blocked the consent cookie."
                    .into(),
                "Open the admin-consent link again in this browser and finish there.".into(),
            ],
        )
    };
    let Some(cookie) = api::cookie(req, links::OAUTH_COOKIE).and_then(|raw| {
        signer
            .open_private::<ConsentCookie>(CONSENT_COOKIE, &raw, now())
            .ok()
    }) else {
        return other_browser();
    };
    if cookie.c != st.c || cookie.n != st.n {
        return other_browser();
    }
    let conn = match load(s, &st.c).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !conn.auth.is_app_only() {
        return wrong_kind(&conn);
    }
    let used = || {
        page(
            400,
            "Consent already used",
            vec![
                "This consent was already completed, or a newer one was started since.".into(),
                "Open the admin-consent link again if the connection is not active.".into(),
            ],
        )
    };
    if conn.pending_auth_nonce.as_deref() != Some(st.n.as_str()) {
        return used();
    }
    if let Err(r) = crate::record::spend_nonce(s, &conn.id, &st.n, used).await {
        return r;
    }
    // Microsoft can send admin_consent=True together with an error: the error wins.
    if let Some(r) = microsoft_error(q, &conn, &public, s).await {
        return r;
    }
    if !api::query_param(q, "admin_consent").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return not_granted();
    }
    prove(&conn, s).await
}

fn not_granted() -> HttpResponse {
    page(
        400,
        "Consent not granted",
        vec![
            "Microsoft did not report that an administrator consented.".into(),
            "Open the admin-consent link again.".into(),
        ],
    )
}

/// The page for Microsoft's `error`, if it sent one.
async fn microsoft_error(
    q: &[(String, String)],
    conn: &Connection,
    public: &url::Url,
    s: &Services,
) -> Option<HttpResponse> {
    let error = api::query_param(q, "error")?;
    let description = api::query_param(q, "error_description").unwrap_or("");
    let (e, resp) = explained(s, conn, &links::admin_consent_uri(public), error, description);
    note_error(s, &conn.id, &format!("{} {} ({})", e.title, e.fix, e.code)).await;
    Some(resp)
}

/// A redirect whose state is the admin-consent link itself (a link that went
/// to Microsoft without the start step): Microsoft's error is shown as it is;
/// a consent is sent through the start step, so the one that counts is made
/// in a browser bound to it.
async fn unbound(q: &[(String, String)], link: &str, public: &url::Url, s: &Services) -> HttpResponse {
    let Ok(body) = links::open_admin_state(&*s.signer().await, link) else {
        return not_granted();
    };
    let conn = match load(s, &body.c).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !conn.auth.is_app_only() {
        return wrong_kind(&conn);
    }
    if let Some(r) = microsoft_error(q, &conn, public, s).await {
        return r;
    }
    let mut start = public.clone();
    start.set_path("/oauth/admin-consent");
    start.set_query(None);
    start.query_pairs_mut().append_pair("link", link);
    api::redirect(start.as_str(), &[])
}

/// Proves the consent with an app-only token whose `roles` hold every
/// application permission the connection needs, then activates it.
async fn prove(conn: &Connection, s: &Services) -> HttpResponse {
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
            return token_error_page(&e);
        }
    };
    // The token came over TLS from Microsoft's token endpoint, in answer to
    // our own client credentials: its claims are read, not verified.
    let roles = match claims::token_roles(tokens.access_token.expose()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(connection = %conn.id, error = %e, "the app-only token's permissions could not be read");
            return page(
                502,
                "Please try again",
                vec![
                    "Microsoft's token did not say which permissions were granted, so the consent could not be checked.".into(),
                    "Open the admin-consent link again in a moment.".into(),
                ],
            );
        }
    };
    let required = scopes::graph_permissions(&conn.scopes);
    let missing = claims::missing_roles(&required, &roles);
    if !missing.is_empty() {
        let list = missing.join(", ");
        let client_id = s.client_id();
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
        return page(
            403,
            "Permission missing",
            vec![
                why,
                format!(
                    "To grant {}: in the Microsoft Entra admin center, open App registrations → {client_id} → API permissions → Add a permission → Microsoft Graph → Application permissions, add {list}, then choose \"Grant admin consent\" for the organisation.",
                    if missing.len() == 1 { "it" } else { "them" }
                ),
                "Then open the admin-consent link again. The connection stays waiting for consent until then.".into(),
            ],
        );
    }
    // Active, and the generation moves on: the link that got here is spent.
    let change = ConnectionChange::new()
        .status(Status::Active)
        .generation(conn.generation + 1)
        .last_error(None)
        .if_generation(conn.generation);
    if let Err(r) = crate::record::save_unless_beaten(
        s,
        &conn.id,
        change,
        "Consent completed elsewhere meanwhile",
        "Another consent for this connection completed at the same time; that one is kept.",
    )
    .await
    {
        return r;
    }
    s.tokens.invalidate(&conn.id).await;
    tracing::info!(connection = %conn.id, "admin consent verified");
    let problems = create_subscriptions(s, &conn.id).await;
    page(
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
    )
}
