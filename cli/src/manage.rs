//! `list`, `show`, `subscribe`, `resubscribe`, `pause`, `resume`,
//! `disconnect`: the admin API's connection routes, laid out for a person.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::CliError;
use crate::stack::Stack;
use crate::subscriptions::{Resource, resource_arg, subscription_health};
use crate::ui::{self, Mode, s};

/// `relay365 list`.
///
/// # Errors
/// When the API fails.
pub async fn list(stack: &Stack, mode: Mode) -> Result<ExitCode, CliError> {
    let all = Api::new(stack)?.get("/connections").await?;
    if mode == Mode::Json {
        ui::json(&all);
        return Ok(ExitCode::SUCCESS);
    }
    let conns = all["connections"].as_array().cloned().unwrap_or_default();
    if conns.is_empty() {
        println!("No connections yet: `relay365 connect MAILBOX --subscribe mail` makes one.");
    } else {
        let rows: Vec<Vec<String>> = conns
            .iter()
            .map(|c| {
                let subs = c["subscriptions"].as_array().cloned().unwrap_or_default();
                let health = if subs.is_empty() {
                    "-".to_string()
                } else {
                    subs.iter()
                        .map(|sub| match subscription_health(sub) {
                            Ok(_) => format!("{} ✔", s(sub, "resource")),
                            Err(e) => format!("{} ✘ {e}", s(sub, "resource")),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                vec![
                    s(c, "id").to_string(),
                    s(c, "mailbox").to_string(),
                    s(c, "auth").to_string(),
                    s(c, "status").to_string(),
                    health,
                ]
            })
            .collect();
        print!(
            "{}",
            ui::table(&["ID", "MAILBOX", "AUTH", "STATUS", "SUBSCRIPTIONS"], &rows)
        );
    }
    for u in all["unreadable"].as_array().into_iter().flatten() {
        println!(
            "{}",
            ui::check_line(
                false,
                &format!(
                    "{}: cannot be read ({})",
                    s(u, "id"),
                    u["error"]["message"].as_str().unwrap_or("")
                ),
                Some(&format!(
                    "`relay365 disconnect {} --yes` removes it; connect the mailbox again",
                    s(u, "id")
                ))
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The lines `show` prints for one connection.
pub fn describe(conn: &Value) -> String {
    let id = s(conn, "id");
    let mut out = format!("{id}\n");
    let field = |out: &mut String, name: &str, value: &str| {
        if !value.is_empty() {
            out.push_str(&format!("  {name:<12} {value}\n"));
        }
    };
    let status = s(conn, "status");
    field(&mut out, "status", status);
    field(&mut out, "mailbox", s(conn, "mailbox"));
    field(&mut out, "auth", s(conn, "auth"));
    field(&mut out, "tenant", s(conn, "tenant_id"));
    field(&mut out, "cloud", s(conn, "cloud"));
    let list = |key: &str| {
        conn[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    field(&mut out, "scopes", &list("scopes"));
    field(&mut out, "granted", &list("granted_scopes"));
    field(&mut out, "created", s(conn, "created_at"));
    field(&mut out, "updated", s(conn, "updated_at"));
    field(&mut out, "last error", s(conn, "last_error"));
    match status {
        "pending_consent" | "reauth_required" => {
            let link = if conn["connect_url"].is_string() {
                "connect_url"
            } else {
                "admin_consent_url"
            };
            out.push_str(&format!(
                "  {:<12} {}\n               (open it to {})\n",
                "link",
                s(conn, link),
                if status == "reauth_required" {
                    "sign in again"
                } else {
                    "finish connecting"
                }
            ));
        }
        _ => {}
    }
    let subs = conn["subscriptions"].as_array().cloned().unwrap_or_default();
    if subs.is_empty() {
        out.push_str(&format!(
            "  no subscriptions (`relay365 subscribe {id} mail` adds one)\n"
        ));
    }
    for sub in &subs {
        let health = match subscription_health(sub) {
            Ok(ok) => format!("✔ {ok}"),
            Err(e) => format!("✘ {e}"),
        };
        out.push_str(&format!(
            "  {} subscription {}: {health}\n",
            s(sub, "resource"),
            s(sub, "key")
        ));
        let sub_field = |out: &mut String, name: &str, value: String| {
            if !value.is_empty() && value != "null" {
                out.push_str(&format!("      {name:<22} {value}\n"));
            }
        };
        sub_field(&mut out, "graph id", s(sub, "id").to_string());
        sub_field(&mut out, "folder", s(sub, "folder").to_string());
        sub_field(&mut out, "target", s(sub, "target").to_string());
        sub_field(&mut out, "signing key", s(sub, "signing_key").to_string());
        sub_field(
            &mut out,
            "last notification",
            s(sub, "last_notification_at").to_string(),
        );
        sub_field(&mut out, "last delivery", s(sub, "last_delivery_at").to_string());
        if !s(sub, "last_delivery_error").is_empty() {
            sub_field(
                &mut out,
                "last delivery error",
                format!(
                    "{} ({})",
                    s(sub, "last_delivery_error"),
                    s(sub, "last_delivery_error_at")
                ),
            );
        }
        sub_field(&mut out, "waiting for retry", sub["waiting"].to_string());
        sub_field(&mut out, "last swept", s(sub, "last_swept_at").to_string());
        sub_field(&mut out, "recovered by sweep", sub["recovered"].to_string());
    }
    out
}

/// `relay365 show ID`.
///
/// # Errors
/// When the API fails (404 when there is no such connection).
pub async fn show(stack: &Stack, id: &str, mode: Mode) -> Result<ExitCode, CliError> {
    let conn = Api::new(stack)?
        .get(&format!("/connections/{}", path_segment(id)))
        .await?;
    match mode {
        Mode::Json => ui::json(&conn),
        Mode::Human => print!("{}", describe(&conn)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `relay365 subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The connection id.
    pub id: String,
    /// What to watch: mail or calendar.
    #[arg(value_parser = resource_arg(), hide_possible_values = true)]
    pub resource: Resource,
    /// Where its events go: https://…, eventbridge:BUS, connect-task:{instance-id}/{contact-flow-id}
    /// or connect-email:{instance-id}/{contact-flow-id}/{address} (default: the stack's DefaultTarget).
    #[arg(long, value_name = "TARGET", value_parser = crate::amazon_connect::target_arg)]
    pub target: Option<String>,
    /// The mail folder (default: inbox).
    #[arg(long)]
    pub folder: Option<String>,
}

/// Runs `relay365 subscribe`.
///
/// # Errors
/// When the API or Graph refuses the subscription.
pub async fn subscribe(stack: &Stack, args: &SubscribeArgs, mode: Mode) -> Result<ExitCode, CliError> {
    let mut body = json!({ "resource": args.resource.name() });
    if let Some(t) = &args.target {
        body["target"] = t.clone().into();
    }
    if let Some(f) = &args.folder {
        body["folder"] = f.clone().into();
    }
    let path = format!("/connections/{}/subscriptions", path_segment(&args.id));
    let sub = Api::new(stack)?.call("POST", &path, Some(&body), &[]).await?;
    match mode {
        Mode::Json => ui::json(&sub),
        Mode::Human => {
            let added = format!("{} subscription {} added", s(&sub, "resource"), s(&sub, "key"));
            let text = match subscription_health(&sub) {
                Ok(ok) => format!("{added}: {ok}"),
                Err(e) => format!("{added} ({e}: it is created once the connection is active)"),
            };
            let line = ui::check_line(true, &text, None);
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `relay365 resubscribe ID`.
///
/// # Errors
/// When the API fails.
pub async fn resubscribe(stack: &Stack, id: &str, mode: Mode) -> Result<ExitCode, CliError> {
    let path = format!("/connections/{}/resubscribe", path_segment(id));
    let conn = Api::new(stack)?
        .call("POST", &path, Some(&json!({})), &[])
        .await?;
    if mode == Mode::Json {
        ui::json(&conn);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(r) = conn.get("resubscribe") {
        println!(
            "{} subscription(s) recreated, {} left: the scheduled run finishes them, or run `relay365 resubscribe {id}` again",
            r["recreated"], r["remaining"]
        );
    } else {
        println!(
            "{}",
            ui::check_line(
                true,
                &format!("every subscription of {id} created again at Graph"),
                None
            )
        );
    }
    print!("{}", describe(&conn));
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `relay365 pause` and `relay365 resume`.
#[derive(Debug, Args)]
pub struct FlowArgs {
    /// The connection id.
    pub id: String,
    /// The subscription's key (`relay365 show ID` lists them); may be left
    /// out when the connection has one subscription.
    pub key: Option<String>,
}

/// `relay365 pause ID [KEY]` and `relay365 resume ID [KEY]`.
///
/// # Errors
/// When the API fails, or the key is needed and missing.
pub async fn pause_or_resume(
    stack: &Stack,
    args: &FlowArgs,
    resume: bool,
    mode: Mode,
) -> Result<ExitCode, CliError> {
    let api = Api::new(stack)?;
    let id = path_segment(&args.id);
    let key = match &args.key {
        Some(k) => k.clone(),
        None => {
            let conn = api.get(&format!("/connections/{id}")).await?;
            let subs = conn["subscriptions"].as_array().cloned().unwrap_or_default();
            match subs.as_slice() {
                [only] => s(only, "key").to_string(),
                _ => {
                    let keys: Vec<String> = subs
                        .iter()
                        .map(|x| format!("{} ({} → {})", s(x, "key"), s(x, "resource"), s(x, "target")))
                        .collect();
                    return Err(CliError::Usage(format!(
                        "{} has {} subscriptions: name one of {}",
                        args.id,
                        subs.len(),
                        keys.join(", ")
                    )));
                }
            }
        }
    };
    let verb = if resume { "resume" } else { "pause" };
    let path = format!("/connections/{id}/subscriptions/{}/{verb}", path_segment(&key));
    let sub = api.call("POST", &path, Some(&json!({})), &[]).await?;
    if mode == Mode::Json {
        ui::json(&sub);
        return Ok(ExitCode::SUCCESS);
    }
    let words = if resume {
        format!(
            "{} {key} resumed: what arrived while it was paused is delivered first, once and in order, then new mail",
            args.id
        )
    } else {
        format!(
            "{} {key} paused: nothing is sent to {} until `relay365 resume {} {key}`, and nothing is lost",
            args.id,
            s(&sub, "target"),
            args.id
        )
    };
    println!("{}", ui::check_line(true, &words, None));
    Ok(ExitCode::SUCCESS)
}

/// `relay365 disconnect ID`.
///
/// # Errors
/// When the person declines, or the API fails.
pub async fn disconnect(stack: &Stack, id: &str, yes: bool, mode: Mode) -> Result<ExitCode, CliError> {
    let api = Api::new(stack)?;
    let path = format!("/connections/{}", path_segment(id));
    // Fails with the API's 404 before asking about a connection that does not exist.
    let conn = api.get(&path).await?;
    ui::confirm(
        &format!(
            "Delete connection {id} ({}): its subscriptions at Graph, its state and its tokens?",
            s(&conn, "mailbox")
        ),
        yes,
    )?;
    api.call("DELETE", &path, None, &[]).await?;
    match mode {
        Mode::Json => ui::json(&json!({"deleted": id})),
        Mode::Human => println!("{}", ui::check_line(true, &format!("{id} disconnected"), None)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Characters kept as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A connection id as one path segment (ids are slugs; anything else is encoded, never a path).
pub fn path_segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_become_paths() {
        assert_eq!(path_segment("support"), "support");
        assert_eq!(path_segment("../x"), "..%2Fx");
    }
}
