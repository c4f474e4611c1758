//! `GET /oauth/admin-consent`: an administrator granted app-only access.
//! Microsoft's word for it is not taken: consent is proven with a real
//! app-only token for the connection's tenant before the connection is active.

use lambda_http::Request;
use relay365::Status;
use relay365::aws::store::ConnectionChange;
use relay365::services::Services;
use relay365::web::links;
use relay365::web::response::{self as api, HttpResponse};

use crate::pages::{explained, page, public_url, sign_error_words, token_error_page};
use crate::record::{create_subscriptions, load, note_error, save};

/// Answers Microsoft's redirect after the admin-consent page.
pub(crate) async fn admin_consent(req: &Request, s: &Services) -> HttpResponse {
    let q = api::query(req);
    let public = match public_url(s) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(state) = api::query_param(&q, "state") else {
        return page(
            400,
            "Consent incomplete",
            vec![
                "Microsoft's answer has no state parameter.".into(),
                "Open the admin-consent link again.".into(),
            ],
        );
    };
    let body = match links::open_admin_state(&*s.signer().await, state) {
        Ok(b) => b,
        Err(e) => {
            return page(
                400,
                "Consent link not valid",
                vec![
                    sign_error_words(e, "admin-consent link"),
                    "Ask for a new admin-consent link.".into(),
                ],
            );
        }
    };
    let conn = match load(s, &body.c).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !conn.auth.is_app_only() {
        return page(
            400,
            "Wrong kind of link",
            vec![format!(
                "Connection {} signs in as a user: use its connect link.",
                conn.id
            )],
        );
    }
    // Microsoft can send admin_consent=True together with an error: the error wins.
    if let Some(error) = api::query_param(&q, "error") {
        let description = api::query_param(&q, "error_description").unwrap_or("");
        let (e, resp) = explained(s, &conn, &links::admin_consent_uri(&public), error, description);
        note_error(s, &conn.id, &format!("{} {} ({})", e.title, e.fix, e.code)).await;
        return resp;
    }
    if !api::query_param(&q, "admin_consent").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return page(
            400,
            "Consent not granted",
            vec![
                "Microsoft did not report that an administrator consented.".into(),
                "Open the admin-consent link again.".into(),
            ],
        );
    }
    // Never trust the tenant parameter: prove consent with a real token for the connection's tenant.
    match s
        .tokens
        .client()
        .client_credentials(&conn.tenant_id, conn.cloud, conn.auth)
        .await
    {
        Ok(_) => {
            let change = ConnectionChange::new().status(Status::Active).last_error(None);
            if let Err(r) = save(s, &conn.id, change).await {
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
                        "Connection {} for {} is active: relay365 obtained an app-only token for tenant {}.",
                        conn.id,
                        conn.mailbox.as_deref().unwrap_or("the mailbox"),
                        conn.tenant_id
                    ),
                    "You can close this window.".into(),
                ]
                .into_iter()
                .chain(problems)
                .collect(),
            )
        }
        Err(e) => {
            tracing::warn!(connection = %conn.id, error = %e, "admin consent could not be proven");
            note_error(s, &conn.id, &e.to_string()).await;
            token_error_page(&e)
        }
    }
}
