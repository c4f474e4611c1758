//! Connecting mailboxes end to end: the connections API mints the link, the
//! sign-in handlers run the flow against the Microsoft simulator over HTTP,
//! moto keeps the records. Assertions are on what a person reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../../shared/tests/common/pfx.rs"]
mod pfx;

use common::{assert_page, assert_stored, create, get, through_microsoft};
use graph_sim::AuthorizeOutcome;
use relay365::model::connection::Status;
use relay365_harness::*;
use serde_json::json;

/// Creates a delegated connection `id` that reads mail: its connect link.
async fn create_reader(s: &Stack, id: &str) -> String {
    let v = create(
        s,
        json!({"id": id, "auth": "delegated", "scopes": ["Mail.ReadOnly"]}),
    )
    .await;
    v["connect_url"].as_str().unwrap().to_string()
}

/// Opens the connect link: returns Microsoft's authorize URL and the cookie set.
async fn start(s: &Stack, connect_url: &str) -> (String, String) {
    common::start(s, &path_and_query(connect_url)).await
}

/// The whole delegated flow; returns the callback's response.
async fn connect(s: &Stack, connect_url: &str) -> lambda_http::Response<lambda_http::Body> {
    let (authorize, cookie) = start(s, connect_url).await;
    let back = s.follow(&authorize).await;
    assert!(
        back.starts_with("https://relay.example/oauth/callback?"),
        "{back}"
    );
    get(s, &path_and_query(&back), &[&cookie]).await
}

/// Admin consent through the link `POST /connections` gives: its start step
/// binds the browser and sends it to Microsoft; returns the final page and
/// the cookie of the start.
async fn consent(s: &Stack, consent_url: &str) -> (lambda_http::Response<lambda_http::Body>, String) {
    assert!(
        consent_url.starts_with("https://relay.example/oauth/admin-consent?link="),
        "{consent_url}"
    );
    through_microsoft(s, &path_and_query(consent_url)).await
}

#[tokio::test]
async fn delegated_connect_end_to_end() {
    let logs = relay365_testkit::LogCapture::start();
    let s = Stack::start().await;
    let v = create(&s, json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly", "Mail.Send"], "mailbox": UPN})).await;
    let connect_url = v["connect_url"].as_str().unwrap();
    let (authorize, _) = start(&s, connect_url).await;
    let q: std::collections::HashMap<_, _> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert!(
        authorize.starts_with(&format!("{}/{TENANT}/oauth2/v2.0/authorize?", s.sim.url())),
        "{authorize}"
    );
    assert_eq!(q["redirect_uri"], "https://relay.example/oauth/callback");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["login_hint"], UPN);
    assert_eq!(
        q["scope"],
        "offline_access openid email profile User.Read MailboxSettings.Read Mail.Read Mail.Send"
    );
    assert!(!q.contains_key("code_verifier"));

    let resp = connect(&s, connect_url).await;
    assert_page(
        &resp,
        200,
        "ann@contoso.com is connected to relay365 as connection support",
    );
    let stored = s.stored("support").await.unwrap();
    assert_eq!(stored.status, Status::Active);
    let (refresh, generation) = s.stored_refresh_token("support").await.expect("a token secret");
    assert_eq!(
        (stored.generation, generation),
        (1, 1),
        "the sign-in is generation 1, in the record and the secret"
    );
    assert!(
        stored.granted_scopes.iter().any(|p| p == "Mail.Send"),
        "{:?}",
        stored.granted_scopes
    );
    assert!(stored.pending_auth_nonce.is_none());
    // The connection works: a token for it comes from the stored refresh token.
    s.services.tokens.invalidate("support").await;
    assert!(s.services.tokens.token_for("support").await.is_ok());
    let api = connections::handle(request("GET", "/connections/support", None, &[]), &s.services).await;
    let view = body_json(&api);
    assert_eq!(view["status"], "active");
    assert!(!body_text(&api).contains(&refresh));

    // Nothing secret in the logs: codes, tokens, the state, the cookie, the keys.
    let text = logs.text();
    assert!(text.contains("mailbox connected"), "the capture works");
    let mut secrets = s.sim.issued_secrets();
    secrets.extend([
        CLIENT_SECRET.to_string(),
        SIGNING_KEY.to_string(),
        EVENT_SIGNING_KEY.to_string(),
    ]);
    let link = connect_url.split("link=").nth(1).unwrap().to_string();
    secrets.push(link);
    assert!(secrets.len() >= 5);
    for secret in secrets {
        assert!(!text.contains(&secret), "a secret reached the logs");
    }
}

async fn app_only_flow(s: &Stack, auth: &str) {
    let v = create(s, json!({"id": "fabrikam", "auth": auth, "scopes": ["Mail.ReadOnly", "Mail.Send"], "mailbox": SHARED_UPN, "tenant_id": CUSTOMER_TENANT})).await;
    let consent_url = v["admin_consent_url"].as_str().unwrap();
    assert!(!s.sim.is_consented(CLIENT_ID, CUSTOMER_TENANT));
    let (resp, _) = consent(s, consent_url).await;
    assert_page(
        &resp,
        200,
        "Connection fabrikam for support@fabrikam.com is active",
    );
    assert_eq!(s.stored("fabrikam").await.unwrap().status, Status::Active);
    assert!(
        s.stored_refresh_token("fabrikam").await.is_none(),
        "an app-only connection owns no secret"
    );
    assert_eq!(
        s.aws.count("secretsmanager.CreateSecret"),
        3,
        "only the deployment's own secrets exist (app, signing key, event signing secret)"
    );
    assert!(s.services.tokens.token_for("fabrikam").await.is_ok());
}

#[tokio::test]
async fn app_only_with_a_client_secret() {
    let s = Stack::start().await;
    app_only_flow(&s, "app_secret").await;
    assert_eq!(
        s.sim.stats().by_grant["client_credentials"],
        2,
        "one to prove consent, one for the token"
    );
}

#[tokio::test]
async fn app_only_with_a_certificate() {
    let (pfx, cert_der) = pfx::make_pfx("pw");
    let s = Stack::start_with(Options {
        certificate: Some((cert_der, json!({"pfx_base64": pfx, "password": "pw"}))),
        ..Default::default()
    })
    .await;
    app_only_flow(&s, "app_certificate").await;
}

#[tokio::test]
async fn admin_consent_is_proven_not_trusted() {
    let s = Stack::start().await;
    let v = create(&s, json!({"id": "fabrikam", "auth": "app_secret", "scopes": ["Mail.ReadOnly"], "mailbox": SHARED_UPN, "tenant_id": CUSTOMER_TENANT})).await;
    let link = v["admin_consent_url"].as_str().unwrap().to_string();
    // A forged callback claiming consent, with a real bound state and its
    // cookie, but no consent at Microsoft: no token can be had, so it is refused.
    let start = get(&s, &path_and_query(&link), &[]).await;
    assert_eq!(start.status(), 302, "{}", body_text(&start));
    let cookie = cookies(&start).remove(0);
    let state = url::Url::parse(&location(&start))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let forged = format!(
        "/oauth/admin-consent?admin_consent=True&tenant={CUSTOMER_TENANT}&state={}",
        url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
    );
    let resp = get(&s, &forged, &[&cookie]).await;
    assert_page(&resp, 400, "not found in this tenant");
    assert_eq!(s.stored("fabrikam").await.unwrap().status, Status::PendingConsent);

    // Microsoft can report admin_consent=True with an error: the error wins.
    s.sim.set_admin_consent_outcome(AuthorizeOutcome::Error {
        error: "consent_required".into(),
        aadsts: 65004,
        message: "User declined to consent to access the app.".into(),
        admin_consent_flag: true,
    });
    // The administrator opens the link again (a new start, in the same browser).
    let again = get(&s, &path_and_query(&link), &[]).await;
    assert_eq!(again.status(), 302, "{}", body_text(&again));
    let cookie = cookies(&again).remove(0);
    let back = s.follow(&location(&again)).await;
    assert!(
        back.contains("admin_consent=True") && back.contains("error=consent_required"),
        "{back}"
    );
    assert_page(
        &get(&s, &path_and_query(&back), &[&cookie]).await,
        400,
        "consent was declined",
    );
}

#[tokio::test]
async fn reconnect_after_invalid_grant_keeps_id_and_subscriptions() {
    let s = Stack::start().await;
    let v = create(
        &s,
        json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly"],
        "subscriptions": [{"resource": "mail", "target": "https://flow.example/hook"}]}),
    )
    .await;
    let connect_url = v["connect_url"].as_str().unwrap().to_string();
    assert_eq!(connect(&s, &connect_url).await.status(), 200);
    s.sim.revoke_refresh_tokens(UPN, 50173);
    s.services.tokens.invalidate("support").await;
    assert!(s.services.tokens.token_for("support").await.is_err());
    let (_, api) = common::connection(&s, "support").await;
    assert_eq!(api["status"], "reauth_required");
    assert!(api["last_error"].as_str().unwrap().contains("password"), "{api}");

    // The same link (or a fresh one from the API) connects it again.
    let fresh = api["connect_url"].as_str().unwrap();
    let resp = connect(&s, fresh).await;
    assert_eq!(resp.status(), 200, "{}", body_text(&resp));
    let stored = s.stored("support").await.unwrap();
    assert_eq!(stored.status, Status::Active);
    assert_eq!(stored.id, "support");
    assert_eq!(stored.subscriptions.len(), 1);
    assert!(stored.last_error.is_none());
    s.services.tokens.invalidate("support").await;
    assert!(s.services.tokens.token_for("support").await.is_ok());
}

/// Every error Microsoft can send back: a 400 page in plain words with the fix.
#[tokio::test]
async fn each_microsoft_error_has_its_explanation_page() {
    let s = Stack::start().await;
    let connect_url = create_reader(&s, "support").await;
    let cases: [(&str, u32, &str); 14] = [
        ("invalid_request", 50011, "https://relay.example/oauth/callback"),
        ("unauthorized_client", 700016, "not found in this tenant"),
        ("invalid_client", 7000222, "client secret has expired"),
        ("consent_required", 65001, "Nobody has consented"),
        ("access_denied", 65004, "consent was declined"),
        ("consent_required", 90094, "administrator must approve"),
        (
            "interaction_required",
            50076,
            "Multi-factor authentication is required",
        ),
        ("interaction_required", 50079, "register for multi-factor"),
        ("access_denied", 90072, "not in this tenant"),
        ("invalid_request", 50194, "single-tenant"),
        ("invalid_request", 90002, "another Microsoft cloud"),
        ("invalid_request", 90038, "RELAY365_CLOUD"),
        ("access_denied", 53003, "Conditional Access"),
        ("access_denied", 0, "cancelled"),
    ];
    for (error, code, words) in cases {
        s.sim.set_authorize_outcome(AuthorizeOutcome::Error {
            error: error.into(),
            aadsts: code,
            message: "<script>alert('x')</script> as Microsoft says".into(),
            admin_consent_flag: false,
        });
        let resp = connect(&s, &connect_url).await;
        let page = body_text(&resp);
        assert_eq!(resp.status(), 400, "{code}: {page}");
        assert!(
            page.contains(words),
            "AADSTS{code}: page should say {words:?}: {page}"
        );
        assert!(!page.contains("<script>"), "raw query text must be escaped");
        if code != 0 {
            assert!(page.contains(&format!("AADSTS{code}")), "{page}");
        }
        assert_eq!(s.stored("support").await.unwrap().status, Status::PendingConsent);
    }
    // A failed code exchange (wrong client secret) is explained too.
    s.sim
        .fail_next_token("invalid_client", 7000215, "Invalid client secret provided.");
    assert_page(&connect(&s, &connect_url).await, 400, "client secret is wrong");
}

#[tokio::test]
async fn forged_expired_replayed_and_cookieless_states_are_refused() {
    let s = Stack::start().await;
    let a = create_reader(&s, "alpha").await;
    let b = create_reader(&s, "beta").await;
    let (authorize, cookie) = start(&s, &a).await;
    let back = path_and_query(&s.follow(&authorize).await);

    // No cookie: another browser.
    assert_page(&get(&s, &back, &[]).await, 400, "same browser");
    // A forged state.
    let forged = back.replace("state=", "state=x");
    assert!(body_text(&get(&s, &forged, &[&cookie]).await).contains("not valid"));
    // An expired state, correctly signed.
    let expired = s.services.signer().await.seal(
        relay365::web::links::OAUTH_STATE,
        &relay365::web::links::StateBody {
            c: "alpha".into(),
            n: "n".into(),
        },
        time::OffsetDateTime::now_utc().unix_timestamp() - 1,
    );
    let resp = get(&s, &format!("/oauth/callback?code=x&state={expired}"), &[&cookie]).await;
    assert!(body_text(&resp).contains("has expired"), "{}", body_text(&resp));
    // beta's cookie with alpha's state: the flows don't mix.
    let (_, beta_cookie) = start(&s, &b).await;
    assert_page(&get(&s, &back, &[&beta_cookie]).await, 400, "same browser");
    // A link for one connection cannot be turned into one for another.
    let link_a = a.split("link=").nth(1).unwrap();
    let (payload, sig) = link_a.split_once('.').unwrap();
    let link_b = b.split("link=").nth(1).unwrap();
    let mixed = format!("/oauth/start?link={}.{sig}", link_b.split_once('.').unwrap().0);
    assert_ne!(payload, link_b.split_once('.').unwrap().0);
    assert_page(&get(&s, &mixed, &[]).await, 400, "not valid");

    // The genuine callback works once; the replay is refused.
    let ok = get(&s, &back, &[&cookie]).await;
    assert_eq!(ok.status(), 200, "{}", body_text(&ok));
    assert_page(&get(&s, &back, &[&cookie]).await, 400, "already completed");
    assert!(
        s.stored_refresh_token("beta").await.is_none(),
        "a refused sign-in stores no token"
    );
}

#[tokio::test]
async fn malformed_queries_get_4xx_never_5xx() {
    let s = Stack::start().await;
    let queries = [
        "",
        "?",
        "?link",
        "?link=",
        "?link=%",
        "?link=%zz",
        "?link=a.b",
        "?link=....",
        "?state=&code=",
        "?state=%00%01",
        "?error=access_denied",
        "?error=x&error_description=%3Cb%3E&state=bad",
        "?code=abc",
        "?admin_consent=True",
        "?admin_consent=True&tenant=x&state=y",
        &format!("?link={}", "A".repeat(5000)),
        "?link=eyJ.eyJ&&&&",
        "?%%%%=%%%%",
    ];
    for route in ["/oauth/start", "/oauth/callback", "/oauth/admin-consent"] {
        for q in queries {
            let resp = get(&s, &format!("{route}{q}"), &["relay365_oauth=garbage", "other=1"]).await;
            let status = resp.status().as_u16();
            assert!((400..500).contains(&status), "{route}{q} -> {status}");
            assert!(!body_text(&resp).contains("<b>"), "{route}{q}");
        }
    }
    for (m, p) in [
        ("POST", "/oauth/start"),
        ("GET", "/oauth"),
        ("GET", "/oauth/start/x"),
    ] {
        let resp = oauth_callback::handle(request(m, p, None, &[]), &s.services).await;
        assert!((400..500).contains(&resp.status().as_u16()), "{m} {p}");
        assert!(body_json(&resp)["error"]["code"].is_string());
    }
}

#[tokio::test]
async fn signing_in_as_someone_else_is_refused_and_nothing_is_stored() {
    let s = Stack::start().await;
    s.sim.add_user(graph_sim::User {
        id: "u-eve".into(),
        upn: "eve@contoso.com".into(),
        display_name: "Eve".into(),
        tenant: TENANT.into(),
    });
    let v = create(
        &s,
        json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly"], "mailbox": UPN}),
    )
    .await;
    let link = v["connect_url"].as_str().unwrap().to_string();
    s.sim
        .set_authorize_outcome(AuthorizeOutcome::ConsentAs("eve@contoso.com".into()));
    let resp = connect(&s, &link).await;
    let page = assert_page(
        &resp,
        403,
        &format!("This link connects {UPN}, but you signed in as eve@contoso.com"),
    );
    assert!(page.contains("Sign out of Microsoft"), "{page}");
    assert_stored(&s, "support", Status::PendingConsent, 0).await;
    assert!(
        s.stored_refresh_token("support").await.is_none(),
        "Eve's token was stored"
    );

    // The right person, with the same link, connects.
    s.sim
        .set_authorize_outcome(AuthorizeOutcome::ConsentAs(UPN.into()));
    let resp = connect(&s, &link).await;
    assert_eq!(resp.status(), 200, "{}", body_text(&resp));

    // A link that completed a sign-in is spent.
    let again = get(&s, &path_and_query(&link), &[]).await;
    let page = assert_page(&again, 400, "Connect link already used");
    assert!(page.contains("GET /connections/"), "{page}");
    // The connection's current link works (a reconnect).
    let (status, fresh) = common::connection(&s, "support").await;
    assert_eq!(status, 200);
    let (_, _) = start(&s, fresh["connect_url"].as_str().unwrap()).await;
}
