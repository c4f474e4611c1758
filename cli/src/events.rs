//! `relay365 events`: a local flow receiver for development (`tail`), and a
//! check of one event's `Relay365-Signature` (`verify`). Both verify with the
//! event signing secret, read from the stack (or a file), exactly as
//! docs/notifications.md tells receivers to; neither ever prints it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clap::{Args, Subcommand};
use relay365::model::sensitive::Sensitive;
use relay365::web::signing::EventSigner;
use serde_json::{Value, json};

use crate::error::CliError;
use crate::stack::Stack;
use crate::ui::{self, Mode};

/// `relay365 events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Receive events on this machine and print each one, its signature checked.
    #[command(
        after_help = "Example:\n  relay365 events tail --port 9400\n  relay365 subscribe support mail --target http://127.0.0.1:9400/   # make demo; a deployed stack needs a public HTTPS URL (a tunnel)"
    )]
    Tail(TailArgs),
    /// Say whether an event body and its Relay365-Signature header are genuine.
    #[command(
        after_help = "Example:\n  relay365 events verify --signature 't=1764600000,v1=5d…' --body event.json"
    )]
    Verify(VerifyArgs),
}

/// `relay365 events tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The port to listen on (loopback only).
    #[arg(long, default_value_t = 9400)]
    pub port: u16,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
}

/// `relay365 events verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The Relay365-Signature header's value (`t=…,v1=…`).
    #[arg(long)]
    pub signature: String,
    /// The body as received, byte for byte (a file, or - for standard input).
    #[arg(long, default_value = "-")]
    pub body: PathBuf,
    /// Read the event signing secret from this file instead of the stack.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Refuse a signature older than this many seconds (receivers should: 300).
    #[arg(long)]
    pub max_age: Option<i64>,
}

/// The event signing secret of the stack, as a verifier.
///
/// # Errors
/// When the secret cannot be read or is not a usable key.
pub async fn stack_signer(stack: &Stack) -> Result<EventSigner, CliError> {
    let (id, secret) = stack
        .secret("EventSigningSecret", Some("EventSigningSecretArn"))
        .await?;
    EventSigner::from_secret(&secret).map_err(|e| {
        CliError::Aws(format!(
            "the event signing secret {id} is not usable ({e}): fill it with infra/rotate-signing-key.sh --event-key"
        ))
    })
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Runs `relay365 events verify`.
///
/// # Errors
/// When the body, the secret file or the stack's secret cannot be read.
pub async fn verify(stack: Option<&Stack>, args: &VerifyArgs, mode: Mode) -> Result<ExitCode, CliError> {
    let signer = match (&args.secret_file, stack) {
        (Some(f), _) => {
            let raw = std::fs::read_to_string(f).map_err(|error| CliError::File {
                path: f.display().to_string(),
                error,
            })?;
            EventSigner::from_secret(&Sensitive::new(raw)).map_err(|e| {
                CliError::Usage(format!("{} is not an event signing secret: {e}", f.display()))
            })?
        }
        (None, Some(stack)) => stack_signer(stack).await?,
        (None, None) => {
            return Err(CliError::Usage(
                "no event signing secret: give --secret-file or a stack".into(),
            ));
        }
    };
    let body = if args.body.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|error| CliError::File {
                path: "standard input".into(),
                error,
            })?;
        b
    } else {
        std::fs::read(&args.body).map_err(|error| CliError::File {
            path: args.body.display().to_string(),
            error,
        })?
    };
    let verdict = signer.verify(&args.signature, &body);
    let age = verdict.map(|t| now() - t);
    let fresh = match (age, args.max_age) {
        (Some(a), Some(max)) => a <= max,
        _ => true,
    };
    let genuine = verdict.is_some() && fresh;
    match mode {
        Mode::Json => ui::json(&json!({"genuine": genuine, "signed_at": verdict, "age_seconds": age})),
        Mode::Human => match (verdict, fresh) {
            (Some(t), true) => println!(
                "{}",
                ui::check_line(
                    true,
                    &format!(
                        "genuine: signed by this stack's event signing key at t={t} ({} s ago)",
                        age.unwrap_or(0)
                    ),
                    None
                )
            ),
            (Some(t), false) => println!(
                "{}",
                ui::check_line(
                    false,
                    &format!(
                        "signed at t={t}, {} s ago: older than --max-age, refuse it (a replay)",
                        age.unwrap_or(0)
                    ),
                    None
                )
            ),
            (None, _) => println!(
                "{}",
                ui::check_line(
                    false,
                    "not genuine: no v1= of this header matches the body with the event signing key",
                    Some(
                        "check that the body is byte for byte what arrived (no re-encoding of the JSON) and that the header is the whole Relay365-Signature value"
                    )
                )
            ),
        },
    }
    Ok(if genuine {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct Tail {
    signer: EventSigner,
    mode: Mode,
    seen: tokio::sync::mpsc::UnboundedSender<()>,
}

/// Runs `relay365 events tail` until Ctrl-C (or `--count` events).
///
/// # Errors
/// When the port cannot be bound or the secret cannot be read.
pub async fn tail(stack: &Stack, args: &TailArgs, mode: Mode) -> Result<ExitCode, CliError> {
    let signer = stack_signer(stack).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot listen on 127.0.0.1:{}: {e}; pick another --port",
                args.port
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Usage(format!("cannot listen: {e}")))?;
    let (seen, mut counted) = tokio::sync::mpsc::unbounded_channel();
    let state = Arc::new(Tail { signer, mode, seen });
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(state);
    eprintln!(
        "Listening on http://{addr}/ (events are verified with stack {}'s event signing secret).\n\
         Point a subscription here: relay365 subscribe ID mail --target http://{addr}/\n\
         {}Ctrl-C stops.",
        stack.name,
        if stack.local {
            ""
        } else {
            "A deployed stack delivers only to public HTTPS URLs: expose this port through a tunnel and use its URL.\n"
        }
    );
    let limit = args.count;
    // Graceful: the answer to the last counted event is sent before exiting,
    // so the sender records it as delivered.
    let stop = async move {
        let counted_enough = async {
            let mut n = 0;
            while counted.recv().await.is_some() {
                n += 1;
                if limit.is_some_and(|l| n >= l) {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = counted_enough => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| CliError::Network(format!("the receiver stopped: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

async fn receive(
    axum::extract::State(tail): axum::extract::State<Arc<Tail>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let verdict = tail.signer.verify(get("relay365-signature"), &body);
    let event: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    match tail.mode {
        Mode::Json => println!(
            "{}",
            json!({"signature_ok": verdict.is_some(), "event_id": get("relay365-event-id"), "event": event})
        ),
        Mode::Human => {
            let kind = event["type"].as_str().unwrap_or("event");
            let check = match verdict {
                Some(t) => format!("✔ signature verified, signed {} s ago", now() - t),
                None => "✘ SIGNATURE INVALID: not from this stack, or changed on the way".to_string(),
            };
            println!(
                "── {kind} {} {check}\n{}",
                get("relay365-event-id"),
                serde_json::to_string_pretty(&event).unwrap_or_default()
            );
        }
    }
    let _ = tail.seen.send(());
    if verdict.is_some() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}
