//! Fetching a notified message from Graph within a fixed amount of memory,
//! however large its body.
//!
//! The sender of a mail decides its size: an HTML body with inline images
//! can be 25 MB or 50 MB, and read whole (then decoded, normalised and
//! serialised) it would be held several times over and exhaust a 128 MB
//! function on every retry, stalling its mailbox. No event carries more than
//! [`BODY_LIMIT`] of body, so no more is ever kept: the message's fields are
//! fetched without the body (a small answer, parsed as usual), then the body
//! alone is streamed through [`BodyScanner`], which keeps its first
//! [`BODY_LIMIT`] bytes and counts the rest. Memory is O(limit), not O(mail).
//!
//! The message comes back in Graph's own shape (camelCase members), which
//! [`crate::normalise::mail_event`] reads. When the body was cut, its
//! `body` member says so with two members Graph does not have:
//! `truncated: true` and `originalLength`, the whole content's length in
//! bytes of UTF-8 (the unit [`crate::fit`] uses), which become the event's
//! `truncated` and `original_length`. `webLink` is one of the fields and
//! always kept, so a flow can open the whole mail.

use relay365::Sensitive;
use relay365::microsoft::body_prefix::{Body, BodyScanner};
use relay365::microsoft::graph::{GraphClient, GraphError};
use serde_json::{Value, json};

use crate::fit::WEBHOOK_LIMIT;

/// The most of a body's content that is kept, in bytes: what the largest
/// target (an HTTPS one) takes; `fit` cuts further for the others.
pub(crate) const BODY_LIMIT: usize = WEBHOOK_LIMIT;

/// The most the answer for the other fields may be. Exchange bounds them
/// (at most 1,000 recipients, a 255-character preview, a subject in the
/// message's headers), so a real answer is a few hundred KB at most.
pub(crate) const FIELDS_LIMIT: usize = 2 * 1024 * 1024;

/// The message at `base` (`/users/{id}/messages/{id}`) with the fields in
/// `select` (Graph's `$select` list), its body's content cut to
/// [`BODY_LIMIT`] bytes when `select` names `body`. The two reads together
/// take no longer than one call of `graph` may (its policy's deadline).
///
/// # Errors
/// [`GraphError`] as Graph answered either request; a transport error when
/// an answer ended before what must be kept of it had arrived (retryable),
/// a decode error when the fields are not JSON or exceed [`FIELDS_LIMIT`].
pub(crate) async fn fetch_message(
    graph: &GraphClient,
    base: &str,
    token: &Sensitive,
    select: &str,
) -> Result<Value, GraphError> {
    let started = std::time::Instant::now();
    let (fields, wants_body) = without_body(select);
    let answer = graph
        .get_capped(&format!("{base}?$select={fields}"), token, FIELDS_LIMIT)
        .await?;
    if !answer.complete {
        return Err(GraphError::Transport("the message's fields were cut off".into()));
    }
    if !answer.is_whole() {
        return Err(GraphError::Decode(format!(
            "the message's fields exceed {FIELDS_LIMIT} bytes ({} bytes)",
            answer.len
        )));
    }
    let mut message: Value =
        serde_json::from_slice(&answer.head).map_err(|e| GraphError::Decode(e.to_string()))?;
    if !wants_body {
        return Ok(message);
    }
    // Both reads share the client's one deadline (dispatch's time budget
    // counts one message read): the body gets what the fields left of it.
    let left = graph.policy().deadline.saturating_sub(started.elapsed());
    let mut scanner = BodyScanner::new(BODY_LIMIT);
    let streamed = graph
        .with_deadline(left)
        .get_streamed(&format!("{base}?$select=body"), token, |chunk| {
            scanner.feed(chunk)
        })
        .await?;
    if !streamed.complete {
        // Everything an event can carry arrived, only the count of the rest
        // did not: the event goes out with the length seen so far (a lower
        // bound) rather than holding up the mailbox. Otherwise retry.
        if !scanner.is_full() {
            return Err(GraphError::Transport("the message's body was cut off".into()));
        }
        tracing::warn!(
            bytes = streamed.len,
            "the rest of a large body did not arrive in time; its original length is a lower bound"
        );
    }
    let body = scanner.finish();
    if body.found {
        message["body"] = body_json(body);
    }
    Ok(message)
}

/// `select` without `body`, and whether it had it.
fn without_body(select: &str) -> (String, bool) {
    let mut wants_body = false;
    let fields: Vec<&str> = select
        .split(',')
        .map(str::trim)
        .filter(|f| {
            let body = *f == "body";
            wants_body |= body;
            !body && !f.is_empty()
        })
        .collect();
    (fields.join(","), wants_body)
}

/// The body as Graph writes it, plus the cut's markers.
fn body_json(body: Body) -> Value {
    let truncated = body.is_truncated();
    let mut out = json!({"contentType": body.content_type.as_str(), "content": body.content});
    if truncated {
        out["truncated"] = true.into();
        out["originalLength"] = body.original_length.into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_are_asked_for_without_the_body() {
        assert_eq!(
            without_body("id,subject,body,webLink"),
            ("id,subject,webLink".to_string(), true)
        );
        assert_eq!(
            without_body(crate::MESSAGE_SELECT).0,
            "id,internetMessageId,conversationId,subject,from,toRecipients,ccRecipients,receivedDateTime,bodyPreview,hasAttachments,webLink"
        );
        assert_eq!(
            without_body("id,bodyPreview"),
            ("id,bodyPreview".to_string(), false)
        );
    }

    #[test]
    fn a_cut_body_carries_its_markers_and_a_whole_one_none() {
        let answer = br#"{"id":"x","body":{"content":"0123456789","contentType":"text"}}"#;
        let mut s = BodyScanner::new(4);
        s.feed(answer);
        assert_eq!(
            body_json(s.finish()),
            json!({"contentType": "text", "content": "0123", "truncated": true, "originalLength": 10})
        );
        let mut s = BodyScanner::new(BODY_LIMIT);
        s.feed(answer);
        assert_eq!(
            body_json(s.finish()),
            json!({"contentType": "text", "content": "0123456789"})
        );
    }
}
