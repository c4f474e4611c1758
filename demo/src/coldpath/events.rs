//! The measured paths' events and the answers they must get.
//!
//! Each invocation gets an event made fresh, with real state behind it: a
//! new mail and the notification Graph sends for it, the message the
//! runtime's own webhook queued, a send for the bench connection, or a new
//! sign-in. An answer a user would not accept fails the sample.

use serde_json::{Value, json};

use super::api::{CONNECTION, http_event};
use super::bench::Bench;
use super::fail::err;
use super::options::{PathKind, Runtime};
use crate::DEMO_USER;

impl Bench {
    /// An event for `path`, made fresh: each invocation gets its own mail,
    /// queued message or sign-in.
    pub(super) async fn event(&self, path: PathKind, runtime: Runtime) -> Result<Value, String> {
        Ok(match path {
            PathKind::Handshake => http_event(
                "POST",
                "/notifications",
                "validationToken=Validation%3A+Testing+client+application+reachability",
                &[],
                b"",
                None,
            ),
            PathKind::Notification => http_event(
                "POST",
                "/notifications",
                "",
                &[("content-type", "application/json")],
                self.new_mail_notification()?.as_bytes(),
                None,
            ),
            PathKind::Dispatch => self.queued(runtime).await?,
            PathKind::SendMail => json!({"connection_id": CONNECTION, "to": ["customer@example.com"],
                                         "subject": "Your case", "body": {"text": "We are on it."}}),
            PathKind::Callback => self.callback_event(runtime).await?,
        })
    }

    /// A new mail in the bench mailbox, and the notification Graph would
    /// POST for it to the bench connection's subscription.
    fn new_mail_notification(&self) -> Result<String, String> {
        let sim = self.demo.sim.as_ref().ok_or("no simulator")?;
        let n = self.next_id();
        sim.deliver_message(
            DEMO_USER,
            graph_sim::Message {
                subject: format!("Order {n} is late"),
                from: ("Customer".into(), "customer@example.com".into()),
                to: vec![("Support".into(), DEMO_USER.into())],
                body_html: "<p>Where is my order?</p>".into(),
                ..graph_sim::Message::default()
            },
        );
        let prefix = format!("{CONNECTION}.");
        sim.take_held_notifications()
            .into_iter()
            .map(|(_, body)| body)
            .find(|b| {
                b["value"][0]["clientState"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&prefix))
            })
            .map(|b| b.to_string())
            .ok_or_else(|| "the simulator held no notification for the bench subscription".to_string())
    }

    /// One message the runtime's webhook queued, as the event source mapping hands it over.
    async fn queued(&self, runtime: Runtime) -> Result<Value, String> {
        let (url, arn) = &self.queues[&runtime];
        let got = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(1)
            .wait_time_seconds(5)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(err("receiving from the benchmark queue"))?;
        let m = got
            .messages()
            .first()
            .ok_or("the webhook queued nothing for dispatch to take")?;
        let record = crate::sqs_record(m, arn);
        if let Some(handle) = m.receipt_handle() {
            let _ = self
                .sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(handle)
                .send()
                .await;
        }
        Ok(json!({"Records": [record]}))
    }

    /// The callback a browser brings back after signing in for a new connection.
    async fn callback_event(&self, runtime: Runtime) -> Result<Value, String> {
        let n = self.next_id();
        let (callback, cookie) = match runtime {
            Runtime::Rust => {
                // No subscription: the bench mailbox's inbox has one
                // already (the bench connection's), and Graph allows one.
                let link = self.create_connection(&format!("cb-{n}"), None, false).await?;
                crate::browser::authorize(&link).await?
            }
            Runtime::Python => (self.python_sign_in(n).await?, String::new()),
        };
        let u = url::Url::parse(&callback).map_err(err("the callback URL"))?;
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            Vec::new()
        } else {
            vec![("cookie", cookie.as_str())]
        };
        Ok(http_event(
            "GET",
            u.path(),
            u.query().unwrap_or(""),
            &headers,
            b"",
            None,
        ))
    }
}

/// Whether an answer is the one a user expects from the path.
pub(super) fn check(path: PathKind, answer: &Value) -> Result<(), String> {
    let status = answer["statusCode"].as_u64();
    let ok = match path {
        PathKind::Handshake => {
            status == Some(200)
                && answer["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("Validation"))
        }
        PathKind::Notification => status == Some(202),
        PathKind::Dispatch => answer["batchItemFailures"].as_array().is_some_and(Vec::is_empty),
        PathKind::SendMail => {
            answer.get("error").is_none() && answer["statusCode"].as_u64().is_none_or(|s| s < 300)
        }
        PathKind::Callback => {
            status == Some(200)
                && answer["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("is connected"))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "unexpected answer: {}",
            truncate(&answer.to_string(), 400)
        ))
    }
}

/// The first `n` characters of `s`.
fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
