//! The vocabulary of delivering one event, shared by every kind of target:
//! where it goes ([`Destination`]), why it was not delivered ([`Delivery`]),
//! how long a target may take ([`TARGET_TIMEOUT`]) and where its mail can be
//! read again ([`MailSource`]).
//!
//! The routing to a target (`deliver`) and each target's own delivery (the
//! webhook and EventBridge there, Amazon Connect in `connect`) all speak it,
//! so it sits below them and uses nothing else of the crate.

use std::time::Duration;

use relay365::model::target::Target;

/// How long a target may take to answer one event.
pub const TARGET_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an event was not delivered.
#[derive(Debug)]
pub enum Delivery {
    /// Try again later: 5xx, 429, a timeout, the network, or a 4xx that a
    /// person must fix at the receiver (the words say which).
    Retry(String),
    /// The receiver answered 410 Gone: it wants no more events.
    Gone(String),
}

/// Where one event goes, and which attempt this is (the queue record's
/// receive count, sent as `Relay365-Delivery-Attempt`).
#[derive(Debug, Clone)]
pub struct Destination {
    /// The target.
    pub target: Target,
    /// The key of the flow (subscription) the event goes to.
    pub flow: String,
    /// 1 for the first delivery, more for retries.
    pub attempt: u32,
    /// The invocation's X-Ray trace header, passed on to an HTTPS target as
    /// `X-Amzn-Trace-Id` so one mail can be followed from webhook to target.
    pub trace: Option<String>,
}

impl Destination {
    /// The kind of target, as the metrics' `target` dimension names it.
    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Webhook(_) => "https",
            Target::EventBridge(_) => "eventbridge",
            Target::ConnectTask { .. } => "connect-task",
            Target::ConnectEmail { .. } => "connect-email",
        }
    }
}

/// Where a new mail can be read again, for targets that carry more of it
/// than the event does (an Amazon Connect email contact takes the mail's
/// threading headers and its attachments' bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MailSource<'a> {
    /// The mailbox's connection.
    pub(crate) conn: &'a relay365::model::connection::Connection,
    /// A Graph token for it.
    pub(crate) token: &'a relay365::Sensitive,
    /// The message's Graph path (`/me/messages/{id}`).
    pub(crate) base: &'a str,
}
