//! At most once to Graph, even when Graph's answer is lost.
//!
//! `sendMail`, `reply` and a draft's `send` create a mail; when their answer
//! does not arrive (a timeout, a cut connection, a 503 or 504 from a gateway
//! that may have passed the request on) the mail may have gone out. The
//! Graph client no longer repeats such a POST; this module decides.
//!
//! Every mail carries a single-value extended property ([`PROPERTY_ID`], a
//! String named property in relay365's own GUID namespace) whose value is
//! [`property_value`]: a digest of the connection, the idempotency key (the
//! caller's, or one made for the call) and the message's content. After a
//! lost answer send-mail looks for that value among the mailbox's Sent Items
//! (`$filter=singleValueExtendedProperties/Any(…)`), a few times over some
//! seconds because Sent Items lags; found, the mail went out; not found, it
//! sends again, once. A mail that is not kept in Sent Items
//! (`save_to_sent_items: false`) cannot be looked for: its lost answer is
//! reported, never sent again blindly.
//!
//! The digest, not the key itself, is the value: it needs no quoting in a
//! filter, and a key reused a day later for another message (once the state
//! table has forgotten it) never matches the older mail.

use std::time::{Duration, Instant};

use relay365::Sensitive;
use relay365::microsoft::graph::{GraphClient, GraphError};
use serde_json::{Value, json};

/// The extended property every sent mail carries (GUID chosen for relay365).
pub const PROPERTY_ID: &str = "String {afeddda2-98d4-4cef-b232-e0ea3602decc} Name relay365-idempotency-key";

/// How long to wait before each look into Sent Items after a lost answer
/// (Sent Items shows a sent mail after a short delay).
pub const LOOKUP_WAITS: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(1000),
    Duration::from_millis(2000),
    Duration::from_millis(3000),
];

/// How long one send (its first POST, the looks and the one repeat) may
/// take in all: under API Gateway's 29 s.
pub const SEND_BUDGET: Duration = Duration::from_secs(26);

/// The property's value for a message: hex SHA-256 of the connection, the
/// idempotency key and the request's fingerprint.
pub fn property_value(connection_id: &str, key: &str, fingerprint: &str) -> String {
    relay365::digest::sha256_hex(format!("relay365-send\n{connection_id}\n{key}\n{fingerprint}").as_bytes())
}

/// `singleValueExtendedProperties` carrying `value`.
pub fn property(value: &str) -> Value {
    json!([{"id": PROPERTY_ID, "value": value}])
}

/// Whether an error may hide a POST that Graph carried out: its answer was
/// lost (a timeout or a cut connection) or came from a gateway (503, 504).
pub fn answer_lost(e: &GraphError) -> bool {
    match e {
        GraphError::Transport(_) => true,
        GraphError::Api { status, .. } | GraphError::Throttled { status, .. } => matches!(status, 503 | 504),
        GraphError::Decode(_) => false,
    }
}

/// The path that lists `folder`'s messages holding the property `value`.
pub fn lookup_path(owner: &str, folder: &str, value: &str) -> String {
    let filter =
        format!("singleValueExtendedProperties/Any(ep: ep/id eq '{PROPERTY_ID}' and ep/value eq '{value}')");
    // Spaces as %20: `+` is not a space to every OData parser.
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("{owner}/mailFolders('{folder}')/messages?$filter={encoded}&$select=id&$top=5")
}

/// What a POST that creates a mail came to.
#[derive(Debug)]
pub enum Outcome {
    /// Graph accepted it.
    Sent,
    /// Its answer was lost, and the mail was found in Sent Items.
    Found,
}

/// Why a POST that creates a mail did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum NotSent {
    /// Graph refused or failed for sure: nothing went out.
    #[error("{0}")]
    Graph(GraphError),
    /// The answer was lost and the mail could not be found: it may have gone out.
    #[error("{0}")]
    Unknown(String),
}

/// Ids of `folder`'s messages that hold the property `value` (one look).
///
/// # Errors
/// [`GraphError`] of the listing.
pub async fn find(
    graph: &GraphClient,
    token: &Sensitive,
    owner: &str,
    folder: &str,
    value: &str,
) -> Result<Vec<String>, GraphError> {
    let v: Value = graph
        .send(
            reqwest::Method::GET,
            &lookup_path(owner, folder, value),
            token,
            None,
            &[],
        )
        .await?
        .json()?;
    Ok(v["value"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Looks for the mail in Sent Items, a few times (see [`LOOKUP_WAITS`]),
/// never past `until`.
async fn in_sent_items(
    graph: &GraphClient,
    token: &Sensitive,
    owner: &str,
    value: &str,
    until: Instant,
) -> Result<bool, NotSent> {
    for wait in LOOKUP_WAITS {
        if Instant::now() + wait >= until {
            break;
        }
        tokio::time::sleep(wait).await;
        let left = until.saturating_duration_since(Instant::now());
        match find(
            &graph.with_deadline(left.min(Duration::from_secs(5))),
            token,
            owner,
            "sentitems",
            value,
        )
        .await
        {
            Ok(found) if !found.is_empty() => return Ok(true),
            Ok(_) => {}
            Err(GraphError::Api {
                status: 401 | 403, ..
            }) => {
                return Err(NotSent::Unknown(
                    "Microsoft's answer was lost, and send-mail may not read this mailbox's Sent Items to see whether the mail went out (the connection needs the Mail.ReadOnly scope, or the application permission Mail.Read); it was not sent again".into(),
                ));
            }
            Err(e) => tracing::warn!(error = %e, "looking for a sent mail failed; looking again"),
        }
    }
    Ok(false)
}

/// POSTs a request that creates a mail (`sendMail`, `reply`, a draft's
/// `send`) at most once: after a lost answer, the mail is looked for in
/// Sent Items (when `kept` in Sent Items), and sent again only when it is
/// not there, once, within [`SEND_BUDGET`] of `started`.
///
/// # Errors
/// [`NotSent`].
#[allow(clippy::too_many_arguments)]
pub async fn post(
    graph: &GraphClient,
    token: &Sensitive,
    owner: &str,
    path: &str,
    body: Option<&Value>,
    value: &str,
    kept: bool,
    started: Instant,
) -> Result<Outcome, NotSent> {
    let until = started + SEND_BUDGET;
    let mut repeated = false;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let client = if repeated {
            graph.with_deadline(left)
        } else {
            graph.clone()
        };
        let e = match client.send(reqwest::Method::POST, path, token, body, &[]).await {
            Ok(_) => return Ok(Outcome::Sent),
            Err(e) if answer_lost(&e) => e,
            Err(e) => return Err(NotSent::Graph(e)),
        };
        if !kept {
            return Err(NotSent::Unknown(format!(
                "Microsoft's answer was lost ({e}), and this mail is not kept in Sent Items (save_to_sent_items false), so send-mail cannot tell whether it went out; it was not sent again: ask the recipient before sending it again"
            )));
        }
        tracing::warn!(error = %e, repeated, "the answer to a send was lost; looking in Sent Items");
        if in_sent_items(graph, token, owner, value, until).await? {
            tracing::info!("the mail whose answer was lost is in Sent Items: it went out once");
            return Ok(Outcome::Found);
        }
        if repeated || until.saturating_duration_since(Instant::now()) < Duration::from_secs(2) {
            return Err(NotSent::Unknown(format!(
                "Microsoft's answer was lost ({e}) and the mail is not in Sent Items yet: it may still go out; look in the mailbox's Sent Items before sending it again"
            )));
        }
        repeated = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_is_one_encoded_filter() {
        let p = lookup_path("/me", "sentitems", "abc123");
        assert!(p.starts_with("/me/mailFolders('sentitems')/messages?$filter=singleValueExtendedProperties%2FAny%28ep%3A%20ep%2Fid%20eq%20%27String%20%7Bafeddda2-"), "{p}");
        assert!(!p.contains(' ') && !p.contains('+'), "{p}");
        let decoded: Vec<(String, String)> =
            url::form_urlencoded::parse(p.split_once('?').unwrap().1.as_bytes())
                .into_owned()
                .collect();
        assert_eq!(
            decoded[0].1,
            format!(
                "singleValueExtendedProperties/Any(ep: ep/id eq '{PROPERTY_ID}' and ep/value eq 'abc123')"
            )
        );
    }

    #[test]
    fn values_differ_by_connection_key_and_content() {
        let v = property_value("support", "k", "f");
        assert_eq!(v.len(), 64);
        assert_ne!(v, property_value("billing", "k", "f"));
        assert_ne!(v, property_value("support", "k2", "f"));
        assert_ne!(v, property_value("support", "k", "f2"));
        assert_eq!(property(&v)[0]["id"], PROPERTY_ID);
    }

    #[test]
    fn lost_answers_are_timeouts_cuts_and_gateways() {
        assert!(answer_lost(&GraphError::Transport("timed out".into())));
        for (status, lost) in [(503, true), (504, true), (500, false), (400, false)] {
            let e = GraphError::Api {
                status,
                code: "x".into(),
                message: "m".into(),
                request_id: None,
            };
            assert_eq!(answer_lost(&e), lost, "{status}");
        }
        assert!(!answer_lost(&GraphError::Throttled {
            status: 429,
            retry_after: None,
            request_id: None
        }));
    }
}
