//! Organisations as Entra keeps them: each domain belongs to one tenant,
//! whose OpenID discovery document names it; a user signs in to their own
//! tenant (the ID token's `tid`, `oid`); `mail` and `proxyAddresses` are
//! whatever that organisation's administrator set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    CLIENT, REDIRECT, TENANT, UPN, claims, client, code_of, discovery_url, get_json, sim, token_at,
};
use graph_sim::{AuthorizeOutcome, Sim, User};
use serde_json::Value;

const OTHER_TENANT: &str = "0badc0de-0000-4000-8000-00000000e7e0";
const EVE: &str = "eve@fabrikam-labs.com";

fn eve() -> User {
    User {
        id: "u-eve".into(),
        upn: EVE.into(),
        display_name: "Eve".into(),
        tenant: OTHER_TENANT.into(),
    }
}

/// Signs `upn` in through `/organizations` and redeems the code: the token answer.
async fn sign_in(sim: &Sim, upn: &str) -> Value {
    sim.set_authorize_outcome(AuthorizeOutcome::ConsentAs(upn.into()));
    let mut url = url::Url::parse(&format!("{}/organizations/oauth2/v2.0/authorize", sim.url())).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "offline_access openid profile User.Read");
    let code = code_of(&client().get(url).send().await.unwrap());
    token_at(
        sim,
        "organizations",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("client_secret", "s"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("scope", "offline_access openid profile User.Read"),
        ],
    )
    .await
}

async fn me(sim: &Sim, token: &str, query: &str) -> (u16, Value) {
    let resp = client()
        .get(format!("{}/v1.0/me{query}", sim.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_domains_discovery_document_names_the_tenant_that_verified_it() {
    let sim = sim().await;
    sim.add_user(eve());
    sim.add_domain("contoso.net", TENANT);
    for (name, tenant) in [
        ("contoso.com", TENANT),
        ("CONTOSO.NET", TENANT),
        (TENANT, TENANT),
        ("fabrikam-labs.com", OTHER_TENANT),
    ] {
        let doc = get_json(discovery_url(&sim, name)).await;
        assert_eq!(
            doc["issuer"],
            format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            "{name}"
        );
        assert_eq!(
            doc["token_endpoint"],
            format!("{}/{tenant}/oauth2/v2.0/token", sim.url())
        );
    }
    // The multi-tenant documents name a template.
    let doc = get_json(discovery_url(&sim, "organizations")).await;
    assert_eq!(doc["issuer"], "https://login.microsoftonline.com/{tenantid}/v2.0");

    // A domain no organisation verified: Entra's 400 invalid_tenant, AADSTS90002.
    let resp = client()
        .get(discovery_url(&sim, "nobody-owns-this.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "invalid_tenant");
    assert_eq!(err["error_codes"][0], 90002);
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS90002: Tenant 'nobody-owns-this.example' not found."),
        "{err}"
    );
}

#[tokio::test]
async fn a_user_of_another_organisation_signs_in_to_their_own_tenant() {
    let sim = sim().await;
    sim.add_user(eve());
    // Eve's administrator gives her Ann's address as `mail`.
    sim.set_user_mail(EVE, Some(UPN));
    let answer = sign_in(&sim, EVE).await;
    let id = claims(answer["id_token"].as_str().unwrap());
    assert_eq!(id["tid"], OTHER_TENANT);
    assert_eq!(id["oid"], "u-eve");
    assert_eq!(id["aud"], CLIENT);
    assert_eq!(id["preferred_username"], EVE);
    assert_eq!(
        id["iss"],
        format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0")
    );
    let token = answer["access_token"].as_str().unwrap();
    let (status, profile) = me(&sim, token, "").await;
    assert_eq!(status, 200);
    assert_eq!(profile["userPrincipalName"], EVE);
    assert_eq!(profile["mail"], UPN);
    assert_eq!(profile["id"], "u-eve");
    assert!(
        profile.get("proxyAddresses").is_none(),
        "only with $select: {profile}"
    );
}

#[tokio::test]
async fn me_answers_what_select_names_with_the_proxy_addresses_set() {
    let sim = sim().await;
    let answer = sign_in(&sim, UPN).await;
    let token = answer["access_token"].as_str().unwrap();
    let (_, profile) = me(&sim, token, "?$select=id,userPrincipalName,mail,proxyAddresses").await;
    assert_eq!(
        profile["proxyAddresses"],
        serde_json::json!(["SMTP:ann@contoso.com"])
    );
    assert!(profile.get("displayName").is_none(), "{profile}");

    sim.set_proxy_addresses(UPN, &["SMTP:ann@contoso.com", "smtp:support@contoso.com"]);
    sim.set_user_mail(UPN, None);
    let (status, profile) = me(&sim, token, "?$select=proxyAddresses,mail").await;
    assert_eq!(status, 200);
    assert_eq!(
        profile["proxyAddresses"],
        serde_json::json!(["SMTP:ann@contoso.com", "smtp:support@contoso.com"])
    );
    assert!(profile["mail"].is_null());
    let (status, err) = me(&sim, token, "?$select=nonsense").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "Request_BadRequest");
}

/// A tenant given to the simulator by name (as `graph-sim --tenant
/// demo.onmicrosoft.com` does) still shows a tenant id, the same in ID tokens
/// and in the discovery document of its domain.
#[tokio::test]
async fn a_tenant_named_by_domain_shows_one_tenant_id_everywhere() {
    let sim = sim().await;
    sim.add_user(User {
        id: "u-desk".into(),
        upn: "desk@demo.onmicrosoft.com".into(),
        display_name: "Desk".into(),
        tenant: "demo.onmicrosoft.com".into(),
    });
    let answer = sign_in(&sim, "desk@demo.onmicrosoft.com").await;
    let id = claims(answer["id_token"].as_str().unwrap());
    let tid = id["tid"].as_str().unwrap().to_string();
    assert!(uuid_like(&tid), "{tid}");
    assert_eq!(id["iss"], format!("https://login.microsoftonline.com/{tid}/v2.0"));
    let doc = get_json(discovery_url(&sim, "demo.onmicrosoft.com")).await;
    assert_eq!(
        doc["issuer"],
        format!("https://login.microsoftonline.com/{tid}/v2.0")
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}
