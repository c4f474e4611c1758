//! `relay365 connect`: creates a connection, prints the link a person opens
//! (the mailbox's owner, or an administrator for app-only), and waits until
//! the connection is active, saying what failed and how to fix it if it
//! does not get there.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::CliError;
use crate::stack::Stack;
use crate::subscriptions::{Resource, resource_arg, subscription_health};
use crate::ui::{self, Mode, s};

/// `relay365 connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The mailbox (its address / UPN).
    pub mailbox: String,
    /// The connection id (default: the mailbox's local part).
    #[arg(long)]
    pub id: Option<String>,
    /// App-only: no user signs in; an administrator consents.
    #[arg(long)]
    pub app_only: bool,
    /// With --app-only: use the app's certificate, not its secret.
    #[arg(long, requires = "app_only")]
    pub certificate: bool,
    /// The mailbox's tenant, id or domain (needed for --app-only).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Feature scopes (default: Mail.ReadOnly,Mail.Send[,Calendar.ReadOnly]).
    #[arg(long, value_delimiter = ',', value_name = "SCOPES")]
    pub scopes: Vec<String>,
    /// Subscriptions to create once connected.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "mail,calendar",
        value_parser = resource_arg(),
        hide_possible_values = true
    )]
    pub subscribe: Vec<Resource>,
    /// Where their events go: https://…, eventbridge:BUS, connect-task:… or connect-email:…
    /// (default: the stack's DefaultTarget).
    #[arg(long, value_name = "TARGET", value_parser = crate::amazon_connect::target_arg)]
    pub target: Option<String>,
    /// Print the link and return at once.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the sign-in, in seconds.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub timeout: u64,
}

/// A connection id from a mailbox: its local part, lower-cased, every run of
/// other characters made one `-`.
pub fn id_for(mailbox: &str) -> String {
    let local = mailbox.split('@').next().unwrap_or(mailbox).to_ascii_lowercase();
    let mut id = String::new();
    for c in local.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            id.push(c);
        } else if !id.ends_with('-') && !id.is_empty() {
            id.push('-');
        }
    }
    let id: String = id.trim_end_matches('-').chars().take(64).collect();
    if id.is_empty() { "mailbox".into() } else { id }
}

/// The `POST /connections` body for these arguments.
pub fn request(args: &ConnectArgs) -> Value {
    let scopes: Vec<String> = if args.scopes.is_empty() {
        let mut s = vec!["Mail.ReadOnly".to_string(), "Mail.Send".to_string()];
        if args.subscribe.contains(&Resource::Calendar) {
            s.push("Calendar.ReadOnly".into());
        }
        s
    } else {
        args.scopes.clone()
    };
    let auth = match (args.app_only, args.certificate) {
        (false, _) => "delegated",
        (true, false) => "app_secret",
        (true, true) => "app_certificate",
    };
    let subscriptions: Vec<Value> = args
        .subscribe
        .iter()
        .map(|r| {
            let mut sub = json!({ "resource": r.name() });
            if let Some(t) = &args.target {
                sub["target"] = t.clone().into();
            }
            sub
        })
        .collect();
    let mut body = json!({
        "id": args.id.clone().unwrap_or_else(|| id_for(&args.mailbox)),
        "auth": auth,
        "mailbox": args.mailbox,
        "scopes": scopes,
        "subscriptions": subscriptions,
    });
    if let Some(t) = &args.tenant {
        body["tenant_id"] = t.clone().into();
    }
    body
}

/// Runs `relay365 connect`.
///
/// # Errors
/// When the API refuses the connection, or it is not active in time.
pub async fn run(stack: &Stack, args: &ConnectArgs, mode: Mode) -> Result<ExitCode, CliError> {
    if args.app_only && args.tenant.is_none() {
        return Err(CliError::Usage(
            "--app-only needs --tenant: the id or domain of the mailbox's organisation (an administrator there consents)".into(),
        ));
    }
    let api = Api::new(stack)?;
    let body = request(args);
    let created = api.call("POST", "/connections", Some(&body), &[]).await?;
    let id = s(&created, "id").to_string();
    let (link, who) = if args.app_only {
        (
            s(&created, "admin_consent_url"),
            format!(
                "an administrator of {}",
                args.tenant.as_deref().unwrap_or("the tenant")
            ),
        )
    } else {
        (
            s(&created, "connect_url"),
            format!("{} (or someone who may sign in as it)", args.mailbox),
        )
    };
    if args.no_wait {
        match mode {
            Mode::Json => ui::json(&created),
            Mode::Human => println!(
                "Connection {id} created ({}). {who} opens this link:\n\n  {link}\n\n`relay365 show {id}` tells when it is active.",
                s(&created, "auth")
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let intro = format!(
        "Connection {id} created ({}, {}).\nOpen this link in a browser; {who} signs in and accepts:\n\n  {link}\n",
        s(&created, "auth"),
        created["scopes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    // The link goes to stdout for a person, to stderr under --json (stdout is the result).
    match mode {
        Mode::Human => println!("{intro}"),
        Mode::Json => eprintln!("{intro}"),
    }
    let conn = wait_active(&api, &id, Duration::from_secs(args.timeout)).await?;
    let subs = conn["subscriptions"].as_array().cloned().unwrap_or_default();
    let broken: Vec<String> = subs
        .iter()
        .filter_map(|sub| subscription_health(sub).err())
        .collect();
    match mode {
        Mode::Json => ui::json(&conn),
        Mode::Human => {
            let user = s(&conn, "mailbox");
            println!(
                "{}",
                ui::check_line(true, &format!("{id} is active ({user})"), None)
            );
            for sub in &subs {
                let what = format!("{} subscription", s(sub, "resource"));
                match subscription_health(sub) {
                    Ok(ok) => println!("{}", ui::check_line(true, &format!("{what}: {ok}"), None)),
                    Err(bad) => println!(
                        "{}",
                        ui::check_line(
                            false,
                            &format!("{what}: {bad}"),
                            Some(&format!("fix the cause, then `relay365 resubscribe {id}`"))
                        )
                    ),
                }
            }
        }
    }
    Ok(if broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Polls the connection until it is active and its subscriptions are
/// settled (created at Graph, or failed with a reason).
async fn wait_active(api: &Api, id: &str, timeout: Duration) -> Result<Value, CliError> {
    let started = Instant::now();
    let bar = ui::spinner("waiting for the sign-in (Ctrl-C stops waiting; the link stays valid)");
    let mut last_error = String::new();
    loop {
        let conn = api.get(&format!("/connections/{id}")).await?;
        let status = s(&conn, "status");
        let error = s(&conn, "last_error");
        if !error.is_empty() && error != last_error {
            bar.suspend(|| {
                eprintln!(
                    "{}",
                    ui::check_line(
                        false,
                        &format!("the sign-in failed: {error}"),
                        Some("fix what it says (docs/connect.md lists every sign-in error), then open the same link again; still waiting")
                    )
                )
            });
            last_error = error.to_string();
        }
        let settled = conn["subscriptions"].as_array().is_none_or(|subs| {
            subs.iter()
                .all(|s| !ui::s(s, "id").is_empty() || !ui::s(s, "last_error").is_empty())
        });
        if status == "active" && settled {
            bar.finish_and_clear();
            return Ok(conn);
        }
        if started.elapsed() >= timeout {
            bar.finish_and_clear();
            return Err(CliError::Stopped(format!(
                "{id} is still {status} after {} s: open the link, then `relay365 show {id}`",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_local_part() {
        assert_eq!(id_for("support@contoso.com"), "support");
        assert_eq!(id_for("Ann.Lee+x@contoso.com"), "ann-lee-x");
        assert_eq!(id_for("__@x"), "mailbox");
        for m in ["Ann.Lee@x", "a@b", "ÄÖ@x", &"x".repeat(90)] {
            assert!(
                relay365::model::connection::validate_id(&id_for(m)).is_ok(),
                "{m}"
            );
        }
    }
}
