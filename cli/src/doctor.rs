//! `relay365 doctor`: checks a deployment end to end, the way Microsoft and
//! the flows will use it, and prints one line per check with ✔ or ✘ and, under
//! each ✘, the fix. The exit status is non-zero when anything is wrong.
//!
//! What it checks: the stack and its outputs; the API with the operator's
//! signature; the app secret (it obtains an app-only token and reads the
//! application permissions the token carries against what the app-only
//! connections need); the redirect URIs; the notification URLs answering
//! Graph's validation handshake from outside; the signing keys; every
//! connection and subscription; for the flows that deliver to Amazon Connect,
//! the stack's permission, the instance, the contact flow and the email
//! address ([`amazon_connect`]); the dead-letter queues. No secret value is
//! printed.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine;
use relay365::aws::secret_value::SecretValue;
use relay365::microsoft::tokens::{AppCredentials, TokenClient, TokenError};
use relay365::model::auth::AuthMode;
use relay365::model::scopes::FeatureScope;
use relay365::model::sensitive::Sensitive;
use relay365::web::signing::{EventSigner, Signer};
use serde_json::{Value, json};

use crate::amazon_connect;
use crate::api::Api;
use crate::check::{fail, pass};
use crate::dlq;
use crate::error::{CliError, chain};
use crate::stack::Stack;
use crate::subscriptions::subscription_health;
use crate::ui::{self, Mode, s};

pub use crate::check::Check;

/// The outputs the CLI and the set-up steps rely on.
const OUTPUTS: [&str; 8] = [
    "ApiUrl",
    "RedirectUri",
    "AdminConsentRedirectUri",
    "NotificationUrl",
    "LifecycleNotificationUrl",
    "AppSecretArn",
    "EventSigningSecretArn",
    "DeadLetterQueueUrl",
];

/// Runs every check and prints them.
///
/// # Errors
/// Never for a failed check (that is a ✘ line); only when output fails.
pub async fn run(stack: &Stack, mode: Mode) -> Result<ExitCode, CliError> {
    let checks = checks(stack).await;
    let ok = checks.iter().all(|c| c.ok);
    match mode {
        Mode::Json => ui::json(&json!({
            "ok": ok,
            "checks": checks.iter().map(|c| json!({"ok": c.ok, "check": c.text, "fix": c.fix})).collect::<Vec<_>>(),
        })),
        Mode::Human => {
            for c in &checks {
                println!("{}", ui::check_line(c.ok, &c.text, c.fix.as_deref()));
            }
            let failed = checks.iter().filter(|c| !c.ok).count();
            println!(
                "\n{}",
                if failed == 0 {
                    format!("All {} checks passed.", checks.len())
                } else {
                    format!(
                        "{failed} of {} checks failed: each ✘ says what to do.",
                        checks.len()
                    )
                }
            );
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Every check, in order.
pub async fn checks(stack: &Stack) -> Vec<Check> {
    let mut out = Vec::new();
    let missing: Vec<&str> = OUTPUTS
        .iter()
        .copied()
        .filter(|o| !stack.outputs.contains_key(*o))
        .collect();
    out.push(if missing.is_empty() {
        pass(format!(
            "stack {} in {} ({}), with every output",
            stack.name,
            stack.region,
            stack.cloud().display_name()
        ))
    } else {
        fail(
            format!("stack {} lacks the outputs {}", stack.name, missing.join(", ")),
            format!("run `sam deploy --stack-name {}` from this checkout", stack.name),
        )
    });
    let http = match stack.http() {
        Ok(h) => h,
        Err(e) => {
            out.push(fail(e.to_string(), "this machine's TLS set-up is broken"));
            return out;
        }
    };
    let connections = match Api::new(stack) {
        Ok(api) => match api.get("/connections").await {
            Ok(all) => {
                out.push(pass(format!("API {} answers signed requests", api.base())));
                Some(all)
            }
            Err(e) => {
                out.push(fail(format!("API {}: {e}", api.base()), fix_for(&e)));
                None
            }
        },
        Err(e) => {
            out.push(fail(e.to_string(), fix_for(&e)));
            None
        }
    };
    out.extend(app_secret(stack, &http, connections.as_ref()).await);
    out.push(redirect_uris(stack));
    for (output, what) in [
        ("NotificationUrl", "notification URL"),
        ("LifecycleNotificationUrl", "lifecycle notification URL"),
    ] {
        if let Ok(url) = stack.output(output) {
            out.push(handshake(&http, url, what).await);
        }
    }
    out.extend(signing_keys(stack).await);
    if let Some(all) = &connections {
        out.extend(connection_checks(all));
        out.extend(amazon_connect::checks(stack, &connect_targets(stack, all)).await);
    }
    out.extend(dead_letters(stack).await);
    out
}

fn fix_for(e: &CliError) -> String {
    match e {
        CliError::Forbidden { .. } => "grant execute-api:Invoke as the message says".into(),
        CliError::Network(_) => "check the ApiUrl output and that this machine reaches it".into(),
        CliError::MissingOutput { .. } => "run `sam deploy` from this checkout".into(),
        _ => "look at the connections function's log group in CloudWatch".into(),
    }
}

/// The `roles` claim of a JWT access token (application permissions), or
/// `None` when the token is not a JWT a person could read.
pub fn roles(access_token: &str) -> Option<Vec<String>> {
    let payload = access_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    Some(
        claims["roles"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
    )
}

async fn app_secret(stack: &Stack, http: &reqwest::Client, connections: Option<&Value>) -> Vec<Check> {
    let fix = "store the app's credentials with `infra/register-app.sh --client-secret` (or `infra/set-app-secret.sh`)";
    let (id, raw) = match stack.secret("AppSecret", Some("AppSecretArn")).await {
        Ok(v) => v,
        Err(e) => return vec![fail(format!("app secret: {e}"), fix)],
    };
    let app = match AppCredentials::from_secret_json(raw.expose()) {
        Ok(a) => a,
        Err(e) => return vec![fail(format!("app secret {id}: {e}"), fix)],
    };
    let home = app.tenant_id.clone();
    let client_id = app.client_id.clone();
    let tokens = TokenClient::new(http.clone(), &stack.login_url, Arc::new(SecretValue::fixed(app)));
    // What the app-only connections need, by tenant.
    let mut needed: BTreeMap<String, (BTreeSet<&'static str>, Vec<String>)> = BTreeMap::new();
    for c in connections
        .and_then(|a| a["connections"].as_array())
        .into_iter()
        .flatten()
    {
        if matches!(s(c, "auth"), "app_secret" | "app_certificate") {
            let entry = needed.entry(s(c, "tenant_id").to_string()).or_default();
            for scope in c["scopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Ok(f) = scope.parse::<FeatureScope>() {
                    entry.0.insert(f.graph_permission());
                }
            }
            entry.1.push(s(c, "id").to_string());
        }
    }
    let mut out = Vec::new();
    let mut tenants: Vec<String> = vec![home.clone()];
    tenants.extend(needed.keys().filter(|t| **t != home).cloned());
    for tenant in tenants {
        let token = match tokens
            .client_credentials(&tenant, stack.cloud(), AuthMode::AppSecret)
            .await
        {
            Err(TokenError::Misconfigured(_)) => {
                tokens
                    .client_credentials(&tenant, stack.cloud(), AuthMode::AppCertificate)
                    .await
            }
            other => other,
        };
        let token = match token {
            Ok(t) => t,
            Err(e) => {
                let fix = match &e {
                    TokenError::AppCredentials { .. } | TokenError::Misconfigured(_) => fix.to_string(),
                    TokenError::Unavailable(_) => {
                        "retry later; check this machine reaches the sign-in service".into()
                    }
                    _ if tenant != home => format!(
                        "an administrator of {tenant} consents again: `relay365 show {}` has the admin-consent link",
                        needed.get(&tenant).map(|n| n.1.join(", ")).unwrap_or_default()
                    ),
                    _ => fix.to_string(),
                };
                out.push(fail(
                    format!(
                        "app secret (client {client_id}): no app-only token in {tenant}: {}",
                        chain(&e)
                    ),
                    fix,
                ));
                continue;
            }
        };
        let carried = roles(token.access_token.expose());
        let need = needed.get(&tenant).map(|n| n.0.clone()).unwrap_or_default();
        let have: BTreeSet<&str> = carried.iter().flatten().map(String::as_str).collect();
        let lacking: Vec<&str> = need.iter().copied().filter(|p| !have.contains(p)).collect();
        let listed = match &carried {
            Some(r) if r.is_empty() => "no application permissions".to_string(),
            Some(r) => format!("roles {}", r.join(" ")),
            None => "a token whose permissions cannot be read".to_string(),
        };
        let needs = if need.is_empty() {
            "(no app-only connection needs any)".to_string()
        } else {
            format!(
                "(app-only connections need {})",
                need.iter().copied().collect::<Vec<_>>().join(" ")
            )
        };
        if lacking.is_empty() || carried.is_none() {
            out.push(pass(format!(
                "app secret (client {client_id}): app-only token in {tenant} with {listed} {needs}"
            )));
        } else {
            out.push(fail(
                format!("app secret (client {client_id}): the token in {tenant} lacks {} {needs}", lacking.join(" ")),
                format!(
                    "add the application permissions to the app (infra/register-app.sh --features …), then an administrator of {tenant} consents again (`relay365 show {}` has the link)",
                    needed.get(&tenant).map(|n| n.1.join(", ")).unwrap_or_default()
                ),
            ));
        }
    }
    out
}

fn redirect_uris(stack: &Stack) -> Check {
    let (Ok(api), Ok(cb), Ok(ac)) = (
        stack.output("ApiUrl"),
        stack.output("RedirectUri"),
        stack.output("AdminConsentRedirectUri"),
    ) else {
        return fail(
            "redirect URIs: the stack has no RedirectUri outputs",
            "run `sam deploy` from this checkout",
        );
    };
    let api = api.trim_end_matches('/');
    if cb == format!("{api}/oauth/callback") && ac == format!("{api}/oauth/admin-consent") {
        pass(format!(
            "redirect URIs: register exactly {cb} and {ac} as Web redirect URIs of the Entra app"
        ))
    } else {
        fail(
            format!("redirect URIs {cb} and {ac} are not the API's ({api})"),
            "run `sam deploy` from this checkout, then register the new outputs in Entra",
        )
    }
}

/// Graph's validation handshake, as Graph does it: a POST with
/// `validationToken` in the query, to be echoed as `text/plain` with 200
/// within 10 seconds.
async fn handshake(http: &reqwest::Client, url: &str, what: &str) -> Check {
    let token = format!("relay365-doctor-{}", uuid::Uuid::new_v4().simple());
    let fix = format!(
        "Graph must reach {url} from the internet and get the token back within 10 s: check the API is public (no WAF or IP rule in front), that DNS resolves, and that the stack's public URL is this one"
    );
    let resp = http
        .post(url)
        .query(&[("validationToken", &token)])
        .header("content-type", "text/plain")
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    match resp {
        Err(e) => fail(format!("{what} {url} is unreachable: {}", chain(&e)), fix),
        Ok(r) => {
            let status = r.status().as_u16();
            let ctype = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = r.text().await.unwrap_or_default();
            if status == 200 && ctype.starts_with("text/plain") && body == token {
                pass(format!("{what} {url} answers Graph's validation handshake"))
            } else {
                fail(
                    format!(
                        "{what} {url} answered the validation handshake with {status} {ctype}, not the token"
                    ),
                    fix,
                )
            }
        }
    }
}

async fn signing_keys(stack: &Stack) -> Vec<Check> {
    let signing = stack.secret("SigningKey", None).await;
    let event = stack
        .secret("EventSigningSecret", Some("EventSigningSecretArn"))
        .await;
    vec![
        key_check("signing key", signing, "", |raw| {
            Signer::new(raw).map(|s| format!(" (key id {})", s.key_id()))
        }),
        key_check("event signing secret", event, " --event-key", |raw| {
            EventSigner::from_secret(raw).map(|_| String::new())
        }),
    ]
}

/// A signing secret's check: present and readable by `parse` (which says
/// what to add to the line), or what to run to fix it (`rotate_flag`: the
/// rotation script's option for this secret).
fn key_check<E: std::fmt::Display>(
    what: &str,
    read: Result<(String, Sensitive), CliError>,
    rotate_flag: &str,
    parse: impl FnOnce(&Sensitive) -> Result<String, E>,
) -> Check {
    match read {
        Ok((id, raw)) => match parse(&raw) {
            Ok(more) => pass(format!("{what} {id} present{more}")),
            Err(e) => fail(
                format!("{what} {id}: {e}"),
                format!("rotate it: `infra/rotate-signing-key.sh{rotate_flag}`"),
            ),
        },
        Err(e) => fail(
            format!("{what}: {e}"),
            "run `sam deploy`: the template creates it",
        ),
    }
}

fn connection_checks(all: &Value) -> Vec<Check> {
    let mut out = Vec::new();
    let conns = all["connections"].as_array().cloned().unwrap_or_default();
    if conns.is_empty() {
        out.push(pass("no connections yet (`relay365 connect MAILBOX` makes one)"));
    }
    for c in &conns {
        let id = s(c, "id");
        let mailbox = s(c, "mailbox");
        let error = s(c, "last_error");
        let because = if error.is_empty() {
            String::new()
        } else {
            format!(": {error}")
        };
        out.push(match s(c, "status") {
            "active" => pass(format!("connection {id} ({mailbox}) is active")),
            "reauth_required" => fail(
                format!("connection {id} ({mailbox}) needs a new sign-in{because}"),
                format!("the mailbox's owner opens the link `relay365 show {id}` prints and signs in again; notifications wait meanwhile"),
            ),
            status => fail(
                format!("connection {id} ({mailbox}) is {status}{because}"),
                format!("open the link `relay365 show {id}` prints and finish the sign-in (or disconnect it)"),
            ),
        });
        for sub in c["subscriptions"].as_array().into_iter().flatten() {
            let what = format!("  {id} {} subscription {}", s(sub, "resource"), s(sub, "key"));
            out.push(match subscription_health(sub) {
                Ok(ok) => pass(format!("{what}: {ok}")),
                Err(e) if s(c, "status") != "active" => fail(
                    format!("{what}: {e}"),
                    "it is created once the connection is active again",
                ),
                Err(e) => fail(
                    format!("{what}: {e}"),
                    format!("fix the cause, then `relay365 resubscribe {id}`"),
                ),
            });
        }
    }
    for u in all["unreadable"].as_array().into_iter().flatten() {
        out.push(fail(
            format!("connection record {} cannot be read", s(u, "id")),
            format!(
                "`relay365 disconnect {} --yes`, then connect the mailbox again",
                s(u, "id")
            ),
        ));
    }
    out
}

/// The flows whose target is Amazon Connect, by target: each subscription's
/// own, else the stack's `DefaultTarget`.
fn connect_targets(stack: &Stack, all: &Value) -> BTreeMap<String, Vec<String>> {
    let default = stack
        .parameters
        .get("DefaultTarget")
        .map(String::as_str)
        .unwrap_or("");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in all["connections"].as_array().into_iter().flatten() {
        for sub in c["subscriptions"].as_array().into_iter().flatten() {
            let target = match s(sub, "target") {
                "" => default,
                t => t,
            };
            if amazon_connect::ConnectTarget::parse(target).is_some() {
                out.entry(target.to_string()).or_default().push(format!(
                    "{} {} {}",
                    s(c, "id"),
                    s(sub, "resource"),
                    s(sub, "key")
                ));
            }
        }
    }
    out
}

async fn dead_letters(stack: &Stack) -> Vec<Check> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let mut out = Vec::new();
    for (logical, name, redrive) in [
        (
            "NotificationDeadLetterQueue",
            "notifications",
            "relay365 dlq redrive",
        ),
        (
            "DeferredSendDeadLetterQueue",
            "deferred sends",
            "relay365 dlq redrive --deferred",
        ),
    ] {
        let Ok(url) = stack.resource(logical) else {
            out.push(fail(
                format!("the {name} dead-letter queue is not in the stack"),
                "run `sam deploy` from this checkout",
            ));
            continue;
        };
        out.push(match dlq::waiting(&sqs, url).await {
            Ok(0) => pass(format!("no {name} in the dead-letter queue")),
            Ok(n) => fail(
                format!("{n} {name} wait in the dead-letter queue"),
                format!("`relay365 dlq` shows the last delivery errors; fix the cause, then `{redrive}`"),
            ),
            Err(e) => fail(
                format!("the {name} dead-letter queue: {e}"),
                "you need sqs:GetQueueAttributes on it",
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read_from_a_jwt_payload_only() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwt = format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"RS256"}"#),
            b64.encode(r#"{"roles":["Mail.Read","Mail.Send"],"tid":"t"}"#)
        );
        assert_eq!(
            roles(&jwt),
            Some(vec!["Mail.Read".to_string(), "Mail.Send".to_string()])
        );
        let none = format!("{}.{}.sig", b64.encode("{}"), b64.encode(r#"{"tid":"t"}"#));
        assert_eq!(roles(&none), Some(vec![]));
        assert_eq!(roles("opaque-token"), None);
        assert_eq!(roles("a.%%%.c"), None);
    }
}
