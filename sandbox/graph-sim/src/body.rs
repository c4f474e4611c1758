//! Messages as Graph serves them, bodies of tens of megabytes included.
//!
//! A message's body is serialised to JSON once (the first time it is asked
//! for, or when [`crate::Sim::deliver_large_message`] makes it) and kept as
//! shared bytes; every answer that carries it streams those bytes between
//! the small JSON around them, so a request costs no copy of the body.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::reply::{message_json, select};
use crate::state::{Mailbox, Message, Served};

/// The serialised body of a message of this mailbox, made on first use.
pub(crate) fn served(mailbox: &mut Mailbox, message: usize) -> Option<Served> {
    let m = mailbox.messages.get(message)?;
    Some(
        mailbox
            .bodies
            .entry(m.id.clone())
            .or_insert_with(|| Served::of(&m.body_html))
            .clone(),
    )
}

/// Keeps the serialised body of a message just delivered.
pub(crate) fn keep(mailbox: &mut Mailbox, id: &str, html: &str) {
    mailbox.bodies.insert(id.to_string(), Served::of(html));
}

/// Whether `$select` asks for the body (no `$select` asks for everything).
pub(crate) fn wants_body(query: &[(String, String)]) -> bool {
    query
        .iter()
        .find(|(k, _)| k == "$select")
        .is_none_or(|(_, sel)| sel.split(',').any(|p| p.trim().eq_ignore_ascii_case("body")))
}

/// A JSON answer made of pieces, the shared body bytes among them.
#[derive(Default)]
pub(crate) struct Pieces {
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Pieces {
    pub(crate) fn push(&mut self, bytes: impl Into<Bytes>) {
        let bytes = bytes.into();
        self.len += bytes.len();
        self.parts.push_back(bytes);
    }

    /// A message: its properties (`$select` applied) and, when asked for,
    /// its body, in the shape Graph gives it.
    pub(crate) fn message(&mut self, m: &Message, upn: &str, served: &Served, query: &[(String, String)]) {
        let meta = select(message_json(m, upn, &served.preview), query);
        let mut head = serde_json::to_vec(&meta).unwrap_or_else(|_| b"{}".to_vec());
        if !wants_body(query) {
            self.push(head);
            return;
        }
        head.pop(); // the closing brace
        if head.len() > 1 {
            head.push(b',');
        }
        head.extend_from_slice(br#""body":{"contentType":"html","content":"#);
        self.push(head);
        self.push(served.content.clone());
        self.push(&b"}}"[..]);
    }

    /// Answers `200 OK` with the pieces as one JSON body.
    pub(crate) fn respond(self) -> Response {
        let len = self.len;
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::CONTENT_LENGTH, len.to_string()),
            ],
            Body::new(self),
        )
            .into_response()
    }
}

impl HttpBody for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .parts
                .pop_front()
                .map(|b| Ok(hyper::body::Frame::data(b))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }
}

/// An HTML body of `bytes` bytes (at least a few hundred): a paragraph of
/// text, then an inline image as base64 text in lines of 76 characters, as
/// mail clients embed pictures. Cheap to make, whatever the size.
pub(crate) fn large_html(bytes: usize) -> String {
    const HEAD: &str = concat!(
        "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\"></head><body>",
        "<p>Please find the scanned contract below. The signed copy is on page two; the annexes follow ",
        "in the order we agreed on the phone. Tell me if anything is missing or hard to read, and I will ",
        "send the originals by post. Kind regards, and thank you again for your patience with this file.</p>",
        "<p><img alt=\"scan\" src=\"data:image/png;base64,"
    );
    const TAIL: &str = "\"></p></body></html>";
    const LINE: &str = "iVBORw0KGgoAAAANSUhEUgAAAoAAAAHgCAYAAAA10dzkAAAgAElEQVR4nOzdd3gU1f7H8ffZTYEQ\r\n";
    let fill = bytes.saturating_sub(HEAD.len() + TAIL.len());
    let mut html = String::with_capacity(HEAD.len() + fill + TAIL.len());
    html.push_str(HEAD);
    for _ in 0..fill / LINE.len() {
        html.push_str(LINE);
    }
    html.push_str(&LINE[..fill % LINE.len()]);
    html.push_str(TAIL);
    html
}
