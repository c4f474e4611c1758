//! `relay365`: the operator CLI. It works on a deployed stack with the
//! operator's normal AWS credentials (the stack found by name through
//! CloudFormation; the IAM routes of its API signed with SigV4), or on the
//! stack `make demo` runs, so that every command can be tried without AWS.
//!
//! Each command is a module; [`run`] dispatches. What a command prints for a
//! person is laid out by [`ui`]; `--json` prints the API's own JSON instead.

pub mod amazon_connect;
pub mod api;
pub mod check;
pub mod connect;
pub mod dlq;
pub mod doctor;
pub mod error;
pub mod events;
pub mod manage;
pub mod send;
pub mod sigv4;
pub mod stack;
pub mod status;
pub mod subscriptions;
pub mod ui;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use error::CliError;
use stack::{Locate, Stack};
use ui::Mode;

/// Operate a relay365 deployment: connect mailboxes, send mail, watch events, check health.
#[derive(Debug, Parser)]
#[command(
    name = "relay365",
    version,
    max_term_width = 100,
    after_help = "Examples:\n  relay365 connect support@contoso.com --subscribe mail\n  relay365 list\n  relay365 --local doctor          # against `make demo`\n\nThe stack is found by name (--stack, default relay365) with your AWS credentials\n(environment, profile, SSO: `aws sso login --profile NAME`)."
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The CloudFormation stack (default: relay365).
    #[arg(
        long,
        global = true,
        env = "RELAY365_STACK",
        value_name = "NAME",
        help_heading = "Stack"
    )]
    pub stack: Option<String>,
    /// The AWS profile to use (SSO profiles included).
    #[arg(long, global = true, help_heading = "Stack")]
    pub profile: Option<String>,
    /// The AWS region of the stack.
    #[arg(long, global = true, help_heading = "Stack")]
    pub region: Option<String>,
    /// Work on the stack `make demo` runs on this machine.
    #[arg(long, global = true, help_heading = "Stack")]
    pub local: bool,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true, help_heading = "Stack")]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect a mailbox: prints the sign-in (or admin-consent) link and waits until it is active.
    #[command(
        after_help = "Example:\n  relay365 connect support@contoso.com --subscribe mail --target https://flows.example.com/relay365"
    )]
    Connect(connect::ConnectArgs),
    /// List connections and the health of their subscriptions.
    #[command(after_help = "Example:\n  relay365 list")]
    List,
    /// Everything about one connection, laid out for a person.
    #[command(after_help = "Example:\n  relay365 show support")]
    Show {
        /// The connection id.
        id: String,
    },
    /// Send a mail from a connection (large attachments go through the attachments bucket).
    #[command(
        override_usage = "relay365 send ID --to ADDR --subject TEXT (--text|--html|--body-file) VALUE [OPTIONS]",
        after_help = "Example:\n  relay365 send support --to ann@example.com --subject 'Case 4411' --text 'On it.' --attach case.pdf"
    )]
    Send(send::SendArgs),
    /// Add a mail or calendar subscription to a connection.
    #[command(
        after_help = "Example:\n  relay365 subscribe support calendar --target https://flows.example.com/calendar"
    )]
    Subscribe(manage::SubscribeArgs),
    /// Create every subscription of a connection again at Microsoft Graph.
    #[command(after_help = "Example:\n  relay365 resubscribe support")]
    Resubscribe {
        /// The connection id.
        id: String,
    },
    /// Stop sending a subscription's events; nothing that arrives meanwhile is lost.
    #[command(after_help = "Example:\n  relay365 pause support 3f2a9c41b7de")]
    Pause(manage::FlowArgs),
    /// Send a paused subscription's events again, first what arrived while it was paused.
    #[command(after_help = "Example:\n  relay365 resume support 3f2a9c41b7de")]
    Resume(manage::FlowArgs),
    /// Delete a connection: its subscriptions at Graph, its state, its tokens.
    #[command(after_help = "Example:\n  relay365 disconnect support --yes")]
    Disconnect {
        /// The connection id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Receive events locally, or check an event's signature.
    #[command(
        subcommand,
        after_help = "Examples:\n  relay365 events tail --port 9400\n  relay365 events verify --signature \"$SIG\" --body event.json"
    )]
    Events(events::EventsCommand),
    /// What waits in the dead-letter queue, and moving it back once fixed.
    #[command(after_help = "Examples:\n  relay365 dlq\n  relay365 dlq redrive")]
    Dlq(dlq::DlqArgs),
    /// One screen: every connection's health, the last hour's events, latency and queues.
    #[command(after_help = "Example:\n  relay365 status --watch")]
    Status(status::StatusArgs),
    /// Check a deployment end to end; one line per check, with the fix.
    #[command(after_help = "Example:\n  relay365 doctor --stack relay365 --profile prod")]
    Doctor,
}

impl Global {
    fn locate(&self) -> Locate {
        Locate {
            stack: self.stack.clone(),
            profile: self.profile.clone(),
            region: self.region.clone(),
            local: self.local,
        }
    }

    fn mode(&self) -> Mode {
        if self.json { Mode::Json } else { Mode::Human }
    }
}

/// Runs a parsed command line; prints errors as sentences and returns the exit status.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("relay365: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    let mode = cli.global.mode();
    // `events verify` with a secret given needs no stack at all.
    if let Command::Events(events::EventsCommand::Verify(args)) = &cli.command
        && args.secret_file.is_some()
    {
        return events::verify(None, args, mode).await;
    }
    let stack = Stack::locate(&cli.global.locate()).await?;
    match cli.command {
        Command::Connect(args) => connect::run(&stack, &args, mode).await,
        Command::List => manage::list(&stack, mode).await,
        Command::Show { id } => manage::show(&stack, &id, mode).await,
        Command::Send(args) => send::run(&stack, &args, mode).await,
        Command::Subscribe(args) => manage::subscribe(&stack, &args, mode).await,
        Command::Resubscribe { id } => manage::resubscribe(&stack, &id, mode).await,
        Command::Pause(args) => manage::pause_or_resume(&stack, &args, false, mode).await,
        Command::Resume(args) => manage::pause_or_resume(&stack, &args, true, mode).await,
        Command::Disconnect { id, yes } => manage::disconnect(&stack, &id, yes, mode).await,
        Command::Events(events::EventsCommand::Tail(args)) => events::tail(&stack, &args, mode).await,
        Command::Events(events::EventsCommand::Verify(args)) => {
            events::verify(Some(&stack), &args, mode).await
        }
        Command::Dlq(args) => dlq::run(&stack, &args, mode).await,
        Command::Doctor => doctor::run(&stack, mode).await,
        Command::Status(args) => status::run(&stack, &args, mode).await,
    }
}
