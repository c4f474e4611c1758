//! Microsoft identity platform v2: authorize, token and admin consent.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use std::collections::HashMap;

use crate::state::{Access, AuthorizeOutcome, Code, Refresh, Shared, State, Subject, User, lock};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/v2.0/adminconsent", get(admin_consent))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        // Graph's `/me` is the signed-in user's directory profile: it is
        // answered here, with the organisations' attributes, ahead of the
        // Graph catch-all route.
        .route("/v1.0/me", get(me_profile))
}

/// The tenant's OpenID Connect discovery document (the fields MSAL and
/// other libraries read), with endpoints on this simulator. For a domain it
/// answers as Entra does: the document of the organisation that verified the
/// domain, whose `issuer` names that organisation's tenant id on the cloud's
/// login host; for the multi-tenant names the issuer is the template
/// `…/{tenantid}/v2.0`; an unknown tenant or domain is Entra's 400
/// `invalid_tenant` (AADSTS90002).
async fn openid_configuration(AxState(state): AxState<Shared>, Path(tenant): Path<String>) -> Response {
    let st = lock(&state);
    let base = st.advertised_url.clone().unwrap_or_else(|| st.base_url.clone());
    let login = st.login_host();
    let resolved = match tenant.to_ascii_lowercase().as_str() {
        "common" | "organizations" | "consumers" => None,
        _ => match st.resolve_tenant(&tenant) {
            Some(t) => Some(t),
            None => {
                drop(st);
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_tenant",
                    90002,
                    &format!(
                        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                    ),
                );
            }
        },
    };
    drop(st);
    let base = base.trim_end_matches('/');
    let path_tenant = resolved.clone().unwrap_or_else(|| tenant.clone());
    let issuer_tenant = resolved
        .as_deref()
        .map(State::tenant_guid)
        .unwrap_or_else(|| "{tenantid}".to_string());
    let tenant = path_tenant;
    let body = serde_json::json!({
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{login}/{issuer_tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "preferred_username", "oid", "tid"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    });
    aad_json(StatusCode::OK, &body)
}

/// `GET /v1.0/me`: the signed-in user's profile as Graph answers it: the
/// default properties (`id`, `userPrincipalName`, `mail`, `displayName`, …),
/// or with `$select` exactly the properties named (`proxyAddresses` only
/// then, as in Graph).
async fn me_profile(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = lock(&state);
    let access = match bearer(&st, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let graph_error = |status: StatusCode, code: &str, message: &str| {
        let body = serde_json::json!({"error": {"code": code, "message": message,
            "innerError": {"request-id": uuid::Uuid::new_v4().to_string()}}});
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    let upn = match &access.subject {
        Subject::App(_) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "/me request is only valid with delegated authentication flow.",
            );
        }
        Subject::User(upn) => upn.clone(),
    };
    let Some(user) = st.user(&upn).cloned() else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "The user no longer exists.",
        );
    };
    let all = serde_json::json!({
        "id": user.id,
        "userPrincipalName": user.upn,
        "mail": st.mail_of(&user),
        "displayName": user.display_name,
        "proxyAddresses": st.proxy_addresses_of(&user),
        "businessPhones": [], "givenName": null, "jobTitle": null, "mobilePhone": null,
        "officeLocation": null, "preferredLanguage": null, "surname": null,
    });
    let mut body = serde_json::Map::new();
    body.insert(
        "@odata.context".into(),
        format!("{}/v1.0/$metadata#users/$entity", st.graph_root).into(),
    );
    match q.get("$select") {
        Some(select) => {
            for name in select.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let Some((key, value)) = all
                    .as_object()
                    .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                else {
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        &format!("Could not find a property named '{name}' on type 'microsoft.graph.user'."),
                    );
                };
                body.insert(key.clone(), value.clone());
            }
        }
        None => {
            for (k, v) in all.as_object().into_iter().flatten() {
                if k != "proxyAddresses" {
                    body.insert(k.clone(), v.clone());
                }
            }
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; odata.metadata=minimal")],
        serde_json::Value::Object(body).to_string(),
    )
        .into_response()
}

const OIDC: [&str; 4] = ["offline_access", "openid", "email", "profile"];

/// Microsoft's token-endpoint error JSON.
fn aad_error(status: StatusCode, error: &str, code: u32, message: &str) -> Response {
    let trace = uuid::Uuid::new_v4();
    let now = time::OffsetDateTime::now_utc();
    let ts = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let description =
        format!("AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {trace} Timestamp: {ts}");
    let body = serde_json::json!({
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace.to_string(),
        "correlation_id": trace.to_string(),
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    aad_json(status, &body)
}

/// A JSON answer of the identity platform (`charset=utf-8`, as Entra sends it).
fn aad_json(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// Microsoft's own error page, shown instead of redirecting (unknown app, unregistered redirect URI).
fn error_page(code: u32, message: &str) -> Response {
    let html = format!(
        "<!doctype html><title>Sign in to your account</title><h1>Sorry, but we’re having trouble signing you in.</h1><p>AADSTS{code}: {}</p>",
        message.replace('&', "&amp;").replace('<', "&lt;")
    );
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return error_page(50011, "The redirect URI is not a valid URL."),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The "Permissions requested" page a browser sees in interactive mode: the
/// app, what it asks for, who signs in, and Accept / Cancel. The form repeats
/// the authorize request's own parameters, so accepting continues it exactly.
fn consent_page(
    st: &State,
    app: &crate::state::App,
    tenant: &str,
    q: &HashMap<String, String>,
    scopes: &[String],
) -> Response {
    let hidden: String = q
        .iter()
        .filter(|(k, _)| !k.starts_with("sim_"))
        .map(|(k, v)| format!("<input type=hidden name=\"{}\" value=\"{}\">", esc(k), esc(v)))
        .collect();
    let users: String = st
        .users
        .iter()
        .filter(|u| matches!(tenant, "common" | "organizations") || u.tenant == tenant)
        .map(|u| {
            let selected = if q
                .get("login_hint")
                .is_some_and(|h| h.eq_ignore_ascii_case(&u.upn))
            {
                " selected"
            } else {
                ""
            };
            format!("<option value=\"{0}\"{selected}>{0}</option>", esc(&u.upn))
        })
        .collect();
    let asks: String = scopes.iter().map(|s| format!("<li>{}</li>", esc(s))).collect();
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>Permissions requested</title>\
<body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">\
<p style=\"color:#666\">Microsoft (simulated by relay365's graph-sim)</p>\
<h1>Permissions requested</h1><p>App <b>{}</b> wants to:</p><ul>{asks}</ul>\
<form method=get action=\"\">{hidden}<p><label>Sign in as <select name=sim_user>{users}</select></label></p>\
<p><button name=sim_consent value=accept>Accept</button> <button name=sim_consent value=deny>Cancel</button></p></form>",
        esc(&app.client_id)
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn known_tenant(st: &State, tenant: &str) -> bool {
    matches!(tenant, "common" | "organizations") || st.resolve_tenant(tenant).is_some()
}

/// Where the authorize and admin-consent endpoints send the browser back:
/// the app's registered redirect URI, with the request's `state` echoed.
struct Redirect {
    uri: String,
    state: String,
}

impl Redirect {
    /// Back to the app with an OAuth error.
    fn error(&self, error: &str, description: &str) -> Response {
        self.error_after(&[], error, description)
    }

    /// Back to the app with an OAuth error, after the parameters `first`.
    fn error_after(&self, first: &[(&str, &str)], error: &str, description: &str) -> Response {
        let mut params = first.to_vec();
        params.extend([
            ("error", error),
            ("error_description", description),
            ("state", self.state.as_str()),
        ]);
        redirect_with(&self.uri, &params)
    }

    /// Back to the app with an OAuth error whose description is an AADSTS message.
    fn aadsts(&self, error: &str, code: u32, message: &str) -> Response {
        self.error(error, &format!("AADSTS{code}: {message}"))
    }
}

/// A scripted error outcome's description: the message, after its AADSTS
/// number unless that is 0.
fn outcome_description(aadsts: u32, message: String) -> String {
    if aadsts == 0 {
        message
    } else {
        format!("AADSTS{aadsts}: {message}")
    }
}

/// The app named by `client_id` and where to send the browser back. An
/// unknown app or an unregistered redirect URI gets Microsoft's own error
/// page, never a redirect; `name_app` puts the app's id in the AADSTS50011
/// message, as the authorize endpoint does and the admin-consent one does not.
#[allow(clippy::result_large_err)]
fn registered_redirect(
    st: &State,
    q: &HashMap<String, String>,
    name_app: bool,
) -> Result<(crate::state::App, Redirect), Response> {
    let param = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let Some(app) = st.app(param("client_id")).cloned() else {
        return Err(error_page(
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                param("client_id")
            ),
        ));
    };
    let uri = param("redirect_uri").to_string();
    if !app.redirect_uris.contains(&uri) {
        let whose = if name_app {
            format!(" '{}'", app.client_id)
        } else {
            String::new()
        };
        return Err(error_page(
            50011,
            &format!(
                "The redirect URI '{uri}' specified in the request does not match the redirect URIs configured for the application{whose}."
            ),
        ));
    }
    let state = param("state").to_string();
    Ok((app, Redirect { uri, state }))
}

/// What a valid authorize request asks for.
struct AuthorizeRequest {
    scopes: Vec<String>,
    /// The PKCE challenge and its method.
    challenge: Option<(String, String)>,
}

/// An authorize request's OAuth parameters, checked in Microsoft's order; a
/// bad one is the (error, AADSTS number, message) sent back to the app.
fn authorize_request(
    st: &State,
    q: &HashMap<String, String>,
) -> Result<AuthorizeRequest, (&'static str, u32, String)> {
    let param = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    if param("response_type") != "code" {
        return Err((
            "unsupported_response_type",
            700054,
            "response_type 'code' is required.".into(),
        ));
    }
    if !matches!(param("response_mode"), "" | "query") {
        return Err((
            "invalid_request",
            900144,
            "Only response_mode=query is supported by this simulator.".into(),
        ));
    }
    let scopes: Vec<String> = param("scope")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if scopes.is_empty() {
        return Err((
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.".into(),
        ));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.starts_with("https://") && !s.starts_with(&format!("{}/", st.graph_root)))
    {
        return Err((
            "invalid_resource",
            500011,
            format!("The resource principal named {bad} was not found in the tenant."),
        ));
    }
    let challenge = match (q.get("code_challenge"), param("code_challenge_method")) {
        (None, "") => None,
        (Some(c), "S256") if c.len() == 43 => Some((c.clone(), "S256".to_string())),
        (Some(c), "plain") => Some((c.clone(), "plain".to_string())),
        _ => {
            return Err((
                "invalid_request",
                501491,
                "Invalid size of Code_Challenge parameter or unsupported code_challenge_method.".into(),
            ));
        }
    };
    Ok(AuthorizeRequest { scopes, challenge })
}

/// In a browser (the demo), a consent page comes first; its buttons come
/// back to the authorize endpoint with `sim_consent` and the user chosen.
/// `None`: sign-in goes on.
fn interactive_consent(
    st: &mut State,
    app: &crate::state::App,
    tenant: &str,
    q: &HashMap<String, String>,
    scopes: &[String],
    redirect: &Redirect,
) -> Option<Response> {
    if !st.interactive_consent {
        return None;
    }
    match q.get("sim_consent").map(String::as_str) {
        None => Some(consent_page(st, app, tenant, q, scopes)),
        Some("accept") => {
            if let Some(upn) = q.get("sim_user").filter(|u| !u.is_empty()) {
                st.authorize_outcome = AuthorizeOutcome::ConsentAs(upn.clone());
            }
            None
        }
        Some(_) => Some(redirect.aadsts(
            "access_denied",
            65004,
            "User declined to consent to access the app.",
        )),
    }
}

/// Who signs in: the scripted outcome (taken), a user of the directory who
/// belongs to the tenant the request names.
#[allow(clippy::result_large_err)]
fn signed_in_user(st: &mut State, tenant: &str, redirect: &Redirect) -> Result<User, Response> {
    let no_user = || {
        redirect.aadsts(
            "invalid_request",
            50034,
            "The user account does not exist in this directory.",
        )
    };
    let upn = match std::mem::take(&mut st.authorize_outcome) {
        AuthorizeOutcome::Error {
            error,
            aadsts,
            message,
            ..
        } => return Err(redirect.error(&error, &outcome_description(aadsts, message))),
        AuthorizeOutcome::ConsentAs(upn) => upn,
        AuthorizeOutcome::Consent => match st
            .users
            .iter()
            .find(|u| tenant == "common" || tenant == "organizations" || u.tenant == tenant)
        {
            Some(u) => u.upn.clone(),
            None => return Err(no_user()),
        },
    };
    let Some(user) = st.user(&upn).cloned() else {
        return Err(no_user());
    };
    if tenant != "common"
        && tenant != "organizations"
        && st.resolve_tenant(tenant).as_deref() != Some(user.tenant.as_str())
    {
        return Err(redirect.aadsts(
            "access_denied",
            90072,
            "The user account does not exist in the tenant and cannot access the application.",
        ));
    }
    Ok(user)
}

async fn authorize(
    AxState(state): AxState<Shared>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = lock(&state);
    st.stats.authorize_requests += 1;
    if !known_tenant(&st, &tenant) {
        return error_page(
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let (app, redirect) = match registered_redirect(&st, &q, true) {
        Ok(found) => found,
        Err(page) => return page,
    };
    let request = match authorize_request(&st, &q) {
        Ok(request) => request,
        Err((error, code, message)) => return redirect.aadsts(error, code, &message),
    };
    if let Some(answer) = interactive_consent(&mut st, &app, &tenant, &q, &request.scopes, &redirect) {
        return answer;
    }
    let user = match signed_in_user(&mut st, &tenant, &redirect) {
        Ok(user) => user,
        Err(answer) => return answer,
    };
    let code = format!("sim-code-{}", uuid::Uuid::new_v4().simple());
    st.codes.insert(
        code.clone(),
        Code {
            client_id: app.client_id.clone(),
            redirect_uri: redirect.uri.clone(),
            upn: user.upn.clone(),
            tenant: user.tenant.clone(),
            scopes: request.scopes,
            challenge: request.challenge,
            issued: Instant::now(),
            used: false,
        },
    );
    redirect_with(
        &redirect.uri,
        &[
            ("code", &code),
            ("state", &redirect.state),
            ("session_state", "sim-session"),
        ],
    )
}

#[derive(Deserialize, Default)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

/// Microsoft's answer to a token request without a grant type (also what a
/// body that is not a form gets).
fn missing_grant_type() -> Response {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        "The request body must contain the following parameter: 'grant_type'.",
    )
}

/// The token request's form body; it must be sent as a form.
#[allow(clippy::result_large_err)]
fn token_form(headers: &HeaderMap, body: &[u8]) -> Result<TokenForm, Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(missing_grant_type());
    }
    serde_urlencoded::from_bytes::<TokenForm>(body).map_err(|_| {
        aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        )
    })
}

/// Client authentication: exactly one of a secret or a signed assertion.
#[allow(clippy::result_large_err)]
fn authenticate_client(
    st: &mut State,
    app: &crate::state::App,
    tenant: &str,
    form: &TokenForm,
) -> Result<(), Response> {
    let token_url = format!("{}/{tenant}/oauth2/v2.0/token", st.base_url);
    let invalid_client = |code: u32, message: &str| {
        Err(aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            message,
        ))
    };
    match (&form.client_secret, &form.client_assertion) {
        (Some(_), Some(_)) => Err(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90015,
            "Requested query string is too long or both client_secret and client_assertion were sent.",
        )),
        (None, None) => invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ),
        (Some(secret), None) if st.expired_secrets.contains(secret) => invalid_client(
            7000222,
            &format!(
                "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app.",
                app.client_id
            ),
        ),
        (Some(secret), None) if app.client_secret.as_deref() != Some(secret.as_str()) => invalid_client(
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        ),
        (Some(_), None) => Ok(()),
        (None, Some(_))
            if form.client_assertion_type.as_deref()
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") =>
        {
            Err(aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                700027,
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ))
        }
        (None, Some(assertion)) => match verify_assertion(st, app, assertion, &token_url) {
            Ok(()) => Ok(()),
            Err((code, msg)) => invalid_client(code, &msg),
        },
    }
}

async fn token(
    AxState(state): AxState<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&state);
    st.stats.token_requests += 1;
    let form = match token_form(&headers, &body) {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    let grant = form.grant_type.clone().unwrap_or_default();
    *st.stats.by_grant.entry(grant.clone()).or_default() += 1;
    if let Some((error, code, message)) = st.fail_next_token.take() {
        let status = if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        return aad_error(status, &error, code, &message);
    }
    if !known_tenant(&st, &tenant) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let client_id = form.client_id.clone().unwrap_or_default();
    let Some(app) = st.app(&client_id).cloned() else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    };
    if let Err(answer) = authenticate_client(&mut st, &app, &tenant, &form) {
        return answer;
    }
    match grant.as_str() {
        "authorization_code" => redeem_code(&mut st, &app.client_id, &form),
        "refresh_token" => redeem_refresh(&mut st, &app.client_id, &form),
        "client_credentials" => client_credentials(&mut st, &app.client_id, &tenant, &form),
        "" => missing_grant_type(),
        other => aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
    }
}

fn verify_assertion(
    st: &mut State,
    app: &crate::App,
    jwt: &str,
    token_url: &str,
) -> Result<(), (u32, String)> {
    let bad = |m: &str| {
        (
            700027,
            format!("Client assertion failed signature validation. [Reason - {m}]"),
        )
    };
    let Some(cert_der) = &app.certificate_der else {
        return Err(bad("The key was not found."));
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err(bad("The assertion is not a JWT."));
    }
    let decode = |p: &str| {
        B64.decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    };
    let (Some(hdr), Some(claims), Ok(sig)) = (decode(parts[0]), decode(parts[1]), B64.decode(parts[2]))
    else {
        return Err(bad("The assertion is not a JWT."));
    };
    let sha256 = B64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der));
    let sha1 = B64.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        cert_der,
    ));
    let thumb_ok = hdr.get("x5t#S256").and_then(|v| v.as_str()) == Some(sha256.as_str())
        || hdr.get("x5t").and_then(|v| v.as_str()) == Some(sha1.as_str());
    if !thumb_ok {
        return Err(bad(
            "The key used to sign the assertion was not found on the app (x5t#S256 does not match an uploaded certificate).",
        ));
    }
    let alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm =
        match hdr.get("alg").and_then(|v| v.as_str()) {
            Some("PS256") => &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256,
            Some("RS256") => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            _ => return Err(bad("Unsupported alg; use PS256.")),
        };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return Err(bad("The registered certificate is unreadable."));
    };
    let public_key = cert.public_key().subject_public_key.data.to_vec();
    let signed = format!("{}.{}", parts[0], parts[1]);
    if aws_lc_rs::signature::UnparsedPublicKey::new(alg, &public_key)
        .verify(signed.as_bytes(), &sig)
        .is_err()
    {
        return Err(bad(
            "The signature does not verify with the uploaded certificate.",
        ));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claim = |k: &str| claims.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let num = |k: &str| claims.get(k).and_then(|v| v.as_i64());
    if claim("aud") != token_url {
        return Err((
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. Expected {token_url}.",
                claim("aud")
            ),
        ));
    }
    if claim("iss") != app.client_id || claim("sub") != app.client_id {
        return Err((
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.".into(),
        ));
    }
    match (num("nbf"), num("exp")) {
        (Some(nbf), Some(exp)) if nbf <= now + 60 && exp > now && exp - nbf <= 600 => {}
        _ => {
            return Err((
                700024,
                "Client assertion is not within its valid time range.".into(),
            ));
        }
    }
    let jti = claim("jti");
    if jti.is_empty() || !st.seen_jti.insert(jti.to_string()) {
        return Err(bad("The assertion's jti is missing or was already used."));
    }
    Ok(())
}

fn token_response(
    st: &mut State,
    subject: Subject,
    tenant: &str,
    scopes: &[String],
    with_refresh: Option<(&str, &str)>,
) -> Response {
    let access = st.issue_access(subject, tenant);
    let mut body = serde_json::json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": access,
    });
    let granted: Vec<String> = scopes
        .iter()
        .filter(|s| *s != "offline_access")
        .cloned()
        .collect();
    body["scope"] = serde_json::Value::String(granted.join(" "));
    if let Some((client_id, upn)) = with_refresh
        && scopes.iter().any(|s| s == "offline_access")
    {
        let rt = format!("sim-rt-{}", uuid::Uuid::new_v4().simple());
        st.refresh_tokens.insert(
            rt.clone(),
            Refresh {
                client_id: client_id.to_string(),
                upn: upn.to_string(),
                tenant: tenant.to_string(),
                scopes: scopes.to_vec(),
                revoked: None,
            },
        );
        body["refresh_token"] = serde_json::Value::String(rt);
    }
    if scopes.iter().any(|s| s == "openid") {
        // The claims of Microsoft's v2.0 ID token that libraries read (MSAL
        // keys its account cache on `oid`/`sub` and `tid`).
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (client_id, upn) = with_refresh.unwrap_or_default();
        let user = st.user(upn);
        let oid = user.map(|u| u.id.clone()).unwrap_or_default();
        let name = user.map(|u| u.display_name.clone()).unwrap_or_default();
        let claims = serde_json::json!({
            "aud": client_id, "iss": format!("{}/{}/v2.0", st.login_host(), State::tenant_guid(tenant)),
            "iat": now, "nbf": now, "exp": now + 3600, "name": name, "oid": oid,
            "preferred_username": upn, "sub": B64.encode(format!("{client_id}:{oid}")),
            "tid": State::tenant_guid(tenant), "ver": "2.0",
        });
        body["id_token"] = serde_json::Value::String(format!(
            "{}.{}.sim",
            B64.encode(r#"{"alg":"none"}"#),
            B64.encode(claims.to_string())
        ));
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The token endpoint's `400 invalid_grant`: the code or refresh token
/// cannot be redeemed.
fn invalid_grant(code: u32, message: &str) -> Response {
    aad_error(StatusCode::BAD_REQUEST, "invalid_grant", code, message)
}

/// The tokens of a signed-in user (a refresh token too when `offline_access`
/// is among the scopes).
fn user_tokens(st: &mut State, client_id: &str, upn: &str, tenant: &str, scopes: &[String]) -> Response {
    token_response(
        st,
        Subject::User(upn.to_string()),
        tenant,
        scopes,
        Some((client_id, upn)),
    )
}

fn normalized(st: &State, raw: &str) -> Vec<String> {
    raw.split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| st.normalize_scope(s))
        .collect()
}

fn redeem_code(st: &mut State, client_id: &str, form: &TokenForm) -> Response {
    let code_value = form.code.clone().unwrap_or_default();
    let Some(code) = st.codes.get_mut(&code_value) else {
        return invalid_grant(
            9002313,
            "Invalid request. Request is malformed or invalid. The code is not valid.",
        );
    };
    if code.used {
        return invalid_grant(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        );
    }
    code.used = true;
    if code.issued.elapsed() > Duration::from_secs(600) {
        return invalid_grant(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity.",
        );
    }
    if code.client_id != client_id {
        return invalid_grant(70000, "The provided grant was issued to another client.");
    }
    if form.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
        return invalid_grant(
            500112,
            "The reply address does not match the reply address provided when requesting Authorization code.",
        );
    }
    if let Some((challenge, method)) = &code.challenge {
        let Some(verifier) = &form.code_verifier else {
            return invalid_grant(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            );
        };
        let computed = if method == "S256" {
            B64.encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                verifier.as_bytes(),
            ))
        } else {
            verifier.clone()
        };
        if &computed != challenge || verifier.len() < 43 || verifier.len() > 128 {
            return invalid_grant(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            );
        }
    } else if form.code_verifier.is_some() {
        return invalid_grant(
            501481,
            "A code_verifier was sent but no code_challenge was supplied in the authorization request.",
        );
    }
    let (upn, tenant, scopes) = (code.upn.clone(), code.tenant.clone(), code.scopes.clone());
    let scopes: Vec<String> = scopes.iter().map(|s| st.normalize_scope(s)).collect();
    user_tokens(st, client_id, &upn, &tenant, &scopes)
}

fn redeem_refresh(st: &mut State, client_id: &str, form: &TokenForm) -> Response {
    let rt_value = form.refresh_token.clone().unwrap_or_default();
    let Some(rt) = st.refresh_tokens.get(&rt_value) else {
        return invalid_grant(
            70000,
            "The provided value for the input parameter 'refresh_token' or 'assertion' is not valid.",
        );
    };
    if let Some(code) = rt.revoked {
        st.stats.revoked_refresh_uses += 1;
        let message = match code {
            700082 => {
                "The refresh token has expired due to inactivity. The token was issued on 2026-08-01 and was inactive for 90.00:00:00."
            }
            50173 => {
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password."
            }
            70008 => "The provided authorization code or refresh token has expired due to inactivity.",
            _ => "The refresh token has been revoked.",
        };
        return invalid_grant(code, message);
    }
    if rt.client_id != client_id {
        return invalid_grant(70000, "The refresh token was issued to a different client.");
    }
    let granted = rt.scopes.clone();
    let (upn, tenant) = (rt.upn.clone(), rt.tenant.clone());
    let requested = form
        .scope
        .as_deref()
        .map(|s| normalized(st, s))
        .unwrap_or_else(|| granted.clone());
    if let Some(extra) = requested
        .iter()
        .find(|s| !granted.contains(s) && !OIDC.contains(&s.as_str()))
    {
        return invalid_grant(
            65001,
            &format!(
                "The user or administrator has not consented to use the application with ID '{client_id}' for scope '{extra}'. Send an interactive authorization request for this user and resource."
            ),
        );
    }
    // Microsoft rotates the refresh token on every use and leaves the old one valid.
    let mut scopes = requested;
    if !scopes.iter().any(|s| s == "offline_access") && granted.iter().any(|s| s == "offline_access") {
        scopes.push("offline_access".into());
    }
    user_tokens(st, client_id, &upn, &tenant, &scopes)
}

fn client_credentials(st: &mut State, client_id: &str, tenant: &str, form: &TokenForm) -> Response {
    let expected = format!("{}/.default", st.graph_root);
    if form.scope.as_deref() != Some(expected.as_str()) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier ({expected}).",
                form.scope.as_deref().unwrap_or("")
            ),
        );
    }
    if tenant == "common" || tenant == "organizations" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50194,
            "Application is not configured as a multi-tenant application for this endpoint. Use a tenant-specific endpoint.",
        );
    }
    if !st.consented(client_id, tenant) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant."
            ),
        );
    }
    let access = st.issue_access(Subject::App(client_id.to_string()), tenant);
    let body = serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access});
    aad_json(StatusCode::OK, &body)
}

async fn admin_consent(
    AxState(state): AxState<Shared>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = lock(&state);
    st.stats.admin_consent_requests += 1;
    if tenant == "common" {
        return error_page(
            90009,
            "The admin consent endpoint needs a tenant id or 'organizations', not 'common'.",
        );
    }
    if !known_tenant(&st, &tenant) {
        return error_page(90002, &format!("Tenant '{tenant}' not found."));
    }
    let (app, redirect) = match registered_redirect(&st, &q, false) {
        Ok(found) => found,
        Err(page) => return page,
    };
    let expected = format!("{}/.default", st.graph_root);
    if q.get("scope").map(String::as_str).unwrap_or("") != expected {
        return redirect.error(
            "invalid_request",
            &format!(
                "AADSTS70011: The provided value for the input parameter 'scope' is not valid. Use {expected}."
            ),
        );
    }
    match std::mem::take(&mut st.admin_consent_outcome) {
        AuthorizeOutcome::Error {
            error,
            aadsts,
            message,
            admin_consent_flag,
        } => {
            let first: &[(&str, &str)] = if admin_consent_flag {
                &[("admin_consent", "True")]
            } else {
                &[]
            };
            redirect.error_after(first, &error, &outcome_description(aadsts, message))
        }
        outcome => {
            let consenting_tenant = match (&outcome, tenant.as_str()) {
                (AuthorizeOutcome::ConsentAs(upn), _) => {
                    st.user(upn).map(|u| u.tenant.clone()).unwrap_or(tenant.clone())
                }
                (_, "organizations") => st
                    .users
                    .first()
                    .map(|u| u.tenant.clone())
                    .unwrap_or(tenant.clone()),
                _ => tenant.clone(),
            };
            st.consents
                .insert((app.client_id.clone(), consenting_tenant.clone()));
            redirect_with(
                &redirect.uri,
                &[
                    ("admin_consent", "True"),
                    ("tenant", &consenting_tenant),
                    ("scope", &expected),
                    ("state", &redirect.state),
                ],
            )
        }
    }
}

/// Resolves a bearer token to its subject, or answers Graph's 401.
#[allow(clippy::result_large_err)]
pub(crate) fn bearer(st: &State, headers: &HeaderMap) -> Result<Access, Response> {
    let unauthorized = |msg: &str| {
        let body = serde_json::json!({"error": {"code": "InvalidAuthenticationToken", "message": msg, "innerError": {"request-id": uuid::Uuid::new_v4().to_string()}}});
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized("Access token is empty."));
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return Err(unauthorized("Access token is empty."));
    };
    match st.access_tokens.get(token) {
        None => Err(unauthorized("IDX14100: JWT is not well formed.")),
        Some(a) if a.expires <= Instant::now() => {
            Err(unauthorized("Lifetime validation failed, the token is expired."))
        }
        Some(a) => Ok(a.clone()),
    }
}
