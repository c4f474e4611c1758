//! The inbound pipeline end to end, over real HTTP: the simulator performs
//! the validation handshake and posts change notifications to the webhook
//! (behind a loopback API gateway), the webhook queues them in moto's SQS
//! FIFO queue, an event-source pump hands batches to dispatch, and a local
//! flow receiver records what arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use graph_sim::{Event, Lifecycle, Message};
use mail_dispatch::Dispatcher;
use mail_webhook::Webhook;
use relay365::aws::queue::SqsQueue;
use relay365::aws::secrets::SecretStore;
use relay365_demo::scheduled_event;
use relay365_harness::*;
use serde_json::json;

struct Pipe {
    stack: Arc<Stack>,
    queue: Arc<SqsQueue>,
    webhook: Arc<Webhook>,
    _gateway: Gateway,
    fifo: Fifo,
    receiver: Receiver,
    dispatcher: Dispatcher,
}

impl Pipe {
    async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// A pipeline whose containers start with extra settings.
    async fn start_with(env: Vec<(&'static str, String)>) -> Self {
        Self::start_full(env, false).await
    }

    /// A pipeline whose queue is made as the template makes it (a 540 s
    /// visibility timeout) and whose dispatch waits its real retry times.
    async fn as_template() -> Self {
        Self::start_full(Vec::new(), true).await
    }

    async fn start_full(env: Vec<(&'static str, String)>, as_template: bool) -> Self {
        let front = common::Front::start(env, as_template).await;
        // Retries here wait a second, doubling; the queue's own visibility
        // timeout is 1 s. `retries_come_in_seconds_...` runs the real times.
        let dispatcher = front.dispatcher(as_template).await;
        Self {
            receiver: Receiver::start().await,
            dispatcher,
            queue: front.queue(),
            stack: front.stack,
            webhook: front.webhook,
            _gateway: front.gateway,
            fifo: front.fifo,
        }
    }

    /// Creates a delegated connection with subscriptions and connects it.
    async fn connect(&self, subs: serde_json::Value, scopes: serde_json::Value) -> String {
        let body = json!({"id": "support", "auth": "delegated", "scopes": scopes, "subscriptions": subs});
        let link = common::create_connection(&self.stack, &body, "connect_url").await;
        self.sign_in(&link).await;
        let stored = self.stack.stored("support").await.unwrap();
        assert!(
            stored.subscriptions.iter().all(|s| !s.id.is_empty()),
            "{:?}",
            stored.subscriptions
        );
        stored.subscriptions[0].id.clone()
    }

    /// [`Pipe::connect`] with a flow of each of `resources` (`mail`,
    /// `calendar`) to the receiver, reading them; returns the first one's
    /// subscription id.
    async fn connect_receiver(&self, resources: &[&str]) -> String {
        let subs: Vec<_> = resources
            .iter()
            .map(|r| json!({"resource": r, "target": self.receiver.url}))
            .collect();
        let scopes: Vec<_> = resources
            .iter()
            .map(|r| match *r {
                "mail" => "Mail.ReadOnly",
                _ => "Calendar.ReadOnly",
            })
            .collect();
        self.connect(json!(subs), json!(scopes)).await
    }

    /// [`Pipe::connect_receiver`] with one mail flow.
    async fn connect_mail(&self) -> String {
        self.connect_receiver(&["mail"]).await
    }

    /// Creates the delegated connection `id` reading mail, with one flow to
    /// the receiver; returns its connect link.
    async fn create_mail_connection(&self, id: &str) -> String {
        let body = json!({"id": id, "auth": "delegated", "scopes": ["Mail.ReadOnly"],
            "subscriptions": [{"resource": "mail", "target": self.receiver.url}]});
        common::create_connection(&self.stack, &body, "connect_url").await
    }

    /// Mails with these subjects arrive in the inbox, one after another.
    fn deliver<S: AsRef<str>>(&self, subjects: impl IntoIterator<Item = S>) {
        for s in subjects {
            self.stack.sim.deliver_message(UPN, mail(s.as_ref()));
        }
    }

    /// Like [`Pipe::deliver`], with Graph announcing none of them.
    fn deliver_unannounced<S: AsRef<str>>(&self, subjects: impl IntoIterator<Item = S>) {
        self.stack.sim.set_drop_notifications(true);
        self.deliver(subjects);
        self.stack.sim.set_drop_notifications(false);
    }

    /// A person opens the connect link and signs in (oauth-callback in the stack's container).
    async fn sign_in(&self, link: &str) {
        let (status, page) = common::sign_in_page(&self.stack, link).await;
        assert_eq!(status, 200, "{page}");
        assert!(!page.contains("could not be created"), "{page}");
    }

    /// `k` app-only connections `desk0`… for mailboxes `desk0@contoso.com`…,
    /// each consented by an admin and subscribed to its inbox.
    async fn desks(&self, k: usize) -> Vec<String> {
        let mailboxes: Vec<String> = (0..k).map(|i| format!("desk{i}@contoso.com")).collect();
        for (i, upn) in mailboxes.iter().enumerate() {
            self.stack.sim.add_user(graph_sim::User {
                id: format!("u-desk{i}"),
                upn: upn.clone(),
                display_name: format!("Desk {i}"),
                tenant: TENANT.into(),
            });
            let body = json!({"id": format!("desk{i}"), "auth": "app_secret", "scopes": ["Mail.ReadOnly"], "mailbox": upn,
                "tenant_id": TENANT, "subscriptions": [{"resource": "mail", "target": self.receiver.url}]});
            // The administrator opens the link.
            let link = common::create_connection(&self.stack, &body, "admin_consent_url").await;
            let (status, page) = common::sign_in_page(&self.stack, &link).await;
            assert_eq!(status, 200, "{page}");
        }
        mailboxes
    }

    /// One receive of the event source with Lambda's deadline: an
    /// invocation that outlives `limit` is ended, and its whole batch comes back.
    async fn pump_killing_at(&self, limit: std::time::Duration) -> usize {
        self.pump_killed(limit, limit).await
    }

    /// Like [`Pipe::pump_killing_at`], but the invocation is told it has
    /// `told` and ended after `kill`: a sandbox that dies mid-batch.
    async fn pump_killed(&self, told: std::time::Duration, kill: std::time::Duration) -> usize {
        self.fifo
            .pump(|e| async {
                let deadline = std::time::Instant::now() + told;
                let ids: Vec<String> = e.records.iter().filter_map(|r| r.message_id.clone()).collect();
                match tokio::time::timeout(
                    kill,
                    mail_dispatch::handle_until(e, &self.dispatcher, Some(deadline)),
                )
                .await
                {
                    Ok(resp) => resp,
                    Err(_) => {
                        let mut resp = aws_lambda_events::sqs::SqsBatchResponse::default();
                        for id in ids {
                            let mut f = aws_lambda_events::sqs::BatchItemFailure::default();
                            f.item_identifier = id;
                            resp.batch_item_failures.push(f);
                        }
                        resp
                    }
                }
            })
            .await
    }

    /// Two receives of the event source, each followed by a wait past the
    /// queue's visibility timeout (a record that failed is back for the next).
    async fn pump_twice_a_retry_apart(&self) {
        for _ in 0..2 {
            self.fifo
                .pump(|e| mail_dispatch::handle(e, &self.dispatcher))
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
    }

    /// How many refresh-token grants Microsoft's token endpoint has answered.
    fn refreshes(&self) -> u32 {
        self.stack
            .sim
            .stats()
            .by_grant
            .get("refresh_token")
            .copied()
            .unwrap_or(0)
    }

    /// Runs the event source for a while (past one visibility timeout) and returns what arrived.
    async fn settle(&self) -> Vec<Received> {
        for _ in 0..15 {
            self.fifo
                .pump(|e| mail_dispatch::handle(e, &self.dispatcher))
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.receiver.events()
    }

    /// Writes what the rotation script writes: a new signing key, the old
    /// one kept for `grace_secs`.
    async fn rotate_signing_key(&self, grace_secs: i64) {
        let new_key = "rotated-signing-key-fedcba9876543210fedcba9876543210";
        let until = time::OffsetDateTime::now_utc().unix_timestamp() + grace_secs;
        let rotating =
            json!({"current": new_key, "previous": SIGNING_KEY, "previous_until": until}).to_string();
        self.stack
            .direct
            .put(
                "relay365/signing-key",
                &rotating,
                &relay365::aws::secrets::new_request_token(),
            )
            .await
            .unwrap();
    }

    /// Adds a mail flow to `target` on connection `id` (its inbox).
    async fn add_flow(&self, id: &str, target: &str) {
        let resp = connections::handle(
            request(
                "POST",
                &format!("/connections/{id}/subscriptions"),
                Some(&json!({"resource": "mail", "target": target}).to_string()),
                &[],
            ),
            &self.stack.services,
        )
        .await;
        assert_eq!(resp.status(), 201, "{}", body_text(&resp));
    }

    /// An admin API call with the pipeline's queue (for the catch-ups it starts).
    async fn admin(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
        let resp = connections::handle_with(
            request(method, path, Some("{}"), &[]),
            &self.stack.container().await,
            Some(self.queue.as_ref()),
        )
        .await;
        (resp.status().as_u16(), body_json(&resp))
    }

    /// A scheduled run of `connections` with the pipeline's queue.
    async fn schedule(&self, all: bool) -> serde_json::Value {
        let mut event = scheduled_event();
        if all {
            event["detail"] = json!({"sweep": "all"});
        }
        connections::handle_event_with(event, &self.stack.container().await, Some(self.queue.as_ref())).await
    }

    /// A mail with this subject arrives and is delivered, the first event
    /// the receiver gets. Returns the mail's id.
    async fn first_mail_arrives(&self, subject: &str) -> String {
        let id = self.stack.sim.deliver_message(UPN, mail(subject));
        assert_eq!(self.pump_until(1).await.len(), 1);
        id
    }

    /// A mail with this subject arrives and is delivered as the receiver's
    /// `n`th event, the last one there.
    async fn mail_arrives_as(&self, n: usize, subject: &str) {
        self.stack.sim.deliver_message(UPN, mail(subject));
        let events = self.pump_until(n).await;
        assert_eq!(events.len(), n, "{events:?}");
        assert_eq!(events[n - 1].json()["mail"]["subject"], subject);
    }

    /// A last mail with this subject arrives: the receiver gets it (within
    /// `rounds` receives) and, once the queue settled, holds the mails `all`,
    /// each once, in that order.
    async fn last_mail_completes(&self, subject: &str, rounds: usize, all: &[&str], why: &str) {
        self.stack.sim.deliver_message(UPN, mail(subject));
        assert!(self.pump_until_received(rounds, all.len()).await, "{why}");
        assert_eq!(subjects(&self.settle().await), all, "{why}");
    }

    /// Microsoft revokes `support`'s grant as unused for too long
    /// (AADSTS700082), and dispatch's cached access token is gone.
    async fn grant_unused_too_long(&self) {
        self.stack.sim.revoke_refresh_tokens(UPN, 700082);
        self.dispatcher.services.tokens.invalidate("support").await;
    }

    /// Runs the event source until the receiver has `n` events (at most
    /// `rounds` receives); whether it has.
    async fn pump_until_received(&self, rounds: usize, n: usize) -> bool {
        self.pump_while(rounds, || self.receiver.events().len() >= n)
            .await
    }

    /// Runs the event source until `done()` holds (at most `rounds` receives).
    async fn pump_while(&self, rounds: usize, done: impl Fn() -> bool) -> bool {
        for _ in 0..rounds {
            if done() {
                return true;
            }
            if self
                .fifo
                .pump(|e| mail_dispatch::handle(e, &self.dispatcher))
                .await
                == 0
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        done()
    }

    /// Runs the event source until `n` events arrived (or a few seconds passed), then a little longer.
    async fn pump_until(&self, n: usize) -> Vec<Received> {
        common::pump_until(&self.fifo, &self.dispatcher, n, || self.receiver.events()).await
    }
}

/// What `GET {path}` answers (the admin API) in a container.
async fn view(services: &relay365::services::Services, path: &str) -> serde_json::Value {
    body_json(&connections::handle(request("GET", path, None, &[]), services).await)
}

fn mail(subject: &str) -> Message {
    Message {
        subject: subject.into(),
        from: ("Bo Customer".into(), "bo@example.com".into()),
        to: vec![("Support".into(), UPN.into())],
        cc: vec![("Cy".into(), "cy@example.com".into())],
        body_html: format!("<p>{subject}: my order is late</p>"),
        ..Default::default()
    }
}

fn check_signature(r: &Received) {
    let sig = r.header("relay365-signature").unwrap();
    let (t, v1) = sig.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, EVENT_SIGNING_KEY.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("{t}.{}", r.body).as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, hex, "the signature verifies with the event signing key");
    assert_eq!(
        r.header("relay365-event-id").unwrap(),
        r.json()["id"].as_str().unwrap()
    );
    assert_eq!(r.header("content-type").unwrap(), "application/json");
}

#[tokio::test]
async fn new_mail_becomes_one_signed_event() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    assert_eq!(
        p.stack.sim.stats().handshakes,
        (2, 2),
        "notification and lifecycle URLs validated"
    );
    let mut m = mail("Case 4411");
    m.attachments = vec![("invoice.pdf".into(), "application/pdf".into(), 48_213)];
    let id = p.stack.sim.deliver_message(UPN, m);
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    check_signature(&events[0]);
    let e = events[0].json();
    assert_eq!(e["type"], "mail.received");
    assert_eq!(e["connection_id"], "support");
    assert_eq!(e["mailbox"], UPN);
    assert!(e["id"].as_str().unwrap().starts_with("evt_"));
    let mail = &e["mail"];
    assert_eq!(mail["id"], id);
    assert_eq!(mail["subject"], "Case 4411");
    assert_eq!(
        mail["from"],
        json!({"name": "Bo Customer", "address": "bo@example.com"})
    );
    assert_eq!(mail["to"], json!([{"name": "Support", "address": UPN}]));
    assert_eq!(mail["cc"], json!([{"name": "Cy", "address": "cy@example.com"}]));
    assert_eq!(mail["body"]["content_type"], "html");
    assert_eq!(mail["body"]["content"], "<p>Case 4411: my order is late</p>");
    assert_eq!(mail["body_preview"], "Case 4411: my order is late");
    assert_eq!(mail["has_attachments"], true);
    assert_eq!(
        mail["attachments"],
        json!([{"name": "invoice.pdf", "content_type": "application/pdf", "size": 48213}])
    );
    assert!(mail["internet_message_id"].as_str().unwrap().starts_with('<'));
    assert!(
        mail["web_link"]
            .as_str()
            .unwrap()
            .starts_with("https://outlook.office365.com/")
    );
}

#[tokio::test]
async fn calendar_changes_become_events() {
    let p = Pipe::start().await;
    p.connect_receiver(&["calendar"]).await;
    let id = p.stack.sim.create_event(
        UPN,
        Event {
            attendees: vec![("Bo".into(), "bo@example.com".into())],
            location: "Phone".into(),
            online_meeting_url: Some("https://teams.microsoft.com/l/meetup-join/x".into()),
            ..callback("Callback with Bo")
        },
    );
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1);
    check_signature(&events[0]);
    let e = events[0].json();
    assert_eq!(e["type"], "calendar.event.created");
    assert_eq!(e["event"]["id"], id);
    assert_eq!(e["event"]["subject"], "Callback with Bo");
    assert_eq!(e["event"]["organizer"], json!({"name": "Ann", "address": UPN}));
    assert_eq!(
        e["event"]["attendees"],
        json!([{"name": "Bo", "address": "bo@example.com"}])
    );
    assert_eq!(e["event"]["start"], "2026-11-23T09:00:00.0000000");
    assert_eq!(e["event"]["time_zone"], "UTC");
    assert_eq!(e["event"]["location"], "Phone");
    assert_eq!(
        e["event"]["online_meeting_url"],
        "https://teams.microsoft.com/l/meetup-join/x"
    );
    assert_eq!(e["event"]["is_cancelled"], false);
    p.stack
        .sim
        .update_event(UPN, &id, |e| e.subject = "Callback moved".into());
    let events = p.pump_until(2).await;
    assert_eq!(events[1].json()["type"], "calendar.event.updated");
    assert_eq!(events[1].json()["event"]["subject"], "Callback moved");
    p.stack.sim.delete_event(UPN, &id);
    let events = p.pump_until(3).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].json()["type"], "calendar.event.deleted");
    assert_eq!(events[2].json()["event"]["id"], id);
}

#[tokio::test]
async fn duplicate_notifications_deliver_one_event_and_forged_ones_none() {
    let p = Pipe::start().await;
    let sub = p.connect_mail().await;
    p.stack.sim.set_duplicate_notifications(true);
    p.stack.sim.deliver_message(UPN, mail("twice"));
    assert!(common::accepted_twice(&p.stack).await);
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1, "Graph sent it twice; the flow gets it once");

    // A forged notification through the real HTTP front: accepted (202), never delivered.
    let forged = json!({"value": [{"subscriptionId": sub, "clientState": "support.Zm9yZ2VkLXN0YXRl", "changeType": "created",
        "resource": "Users/u/Messages/x", "resourceData": {"id": "x"}}]});
    let resp = p
        .stack
        .services
        .http
        .post(format!("{}/notifications", p._gateway.url))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(p.settle().await.len(), 1);
}

#[tokio::test]
async fn queue_outage_answers_5xx_and_the_retried_notification_is_delivered() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    p.stack.aws.set_down(true);
    p.stack.sim.deliver_message(UPN, mail("during the outage"));
    assert!(
        eventually(5, || p.stack.sim.stats().notification_statuses.contains(&503)).await,
        "the webhook said 503"
    );
    p.stack.aws.set_down(false);
    assert!(
        eventually(10, || p.stack.sim.stats().notification_statuses.contains(&202)).await,
        "Graph's retry was accepted"
    );
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].json()["mail"]["subject"], "during the outage");
}

#[tokio::test]
async fn a_failing_flow_gets_the_event_once_it_recovers() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    p.receiver.fail_next(2);
    p.stack.sim.deliver_message(UPN, mail("retry me"));
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1, "delivered exactly once after two failures");
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn missed_notifications_are_resynced_without_duplicates() {
    let p = Pipe::start().await;
    let sub = p.connect_mail().await;
    p.first_mail_arrives("A: notified").await;
    p.deliver_unannounced(["B: missed", "C: missed", "D: missed", "E: missed"]);
    assert!(p.stack.sim.send_lifecycle(&sub, Lifecycle::Missed));
    let events = p.pump_until(5).await;
    assert_eq!(
        subjects(&events),
        ["A: notified", "B: missed", "C: missed", "D: missed", "E: missed"],
        "each once, in order"
    );
    // A second `missed` finds nothing new.
    assert!(p.stack.sim.send_lifecycle(&sub, Lifecycle::Missed));
    assert_eq!(p.settle().await.len(), 5);
}

#[tokio::test]
async fn removed_subscription_is_recreated_and_reauthorization_renews() {
    let p = Pipe::start().await;
    let sub = p.connect_mail().await;
    assert!(
        p.stack
            .sim
            .send_lifecycle(&sub, Lifecycle::ReauthorizationRequired)
    );
    assert!(eventually(5, || p.stack.sim.stats().notification_statuses.contains(&202)).await);
    p.settle().await;
    assert_eq!(p.stack.sim.stats().subscription_calls.get("renew"), Some(&1));

    assert!(p.stack.sim.send_lifecycle(&sub, Lifecycle::SubscriptionRemoved));
    p.stack.sim.deliver_message(UPN, mail("while removed"));
    let events = p.pump_until(1).await;
    let stored = p.stack.stored("support").await.unwrap();
    assert_ne!(
        stored.subscriptions[0].id, sub,
        "a new subscription replaced the removed one"
    );
    assert_eq!(p.stack.sim.subscriptions().len(), 1);
    assert_eq!(
        events.len(),
        1,
        "the mail that arrived meanwhile came through the resync"
    );
    assert_eq!(events[0].json()["mail"]["subject"], "while removed");
    p.stack.sim.deliver_message(UPN, mail("after"));
    assert_eq!(p.pump_until(2).await.len(), 2, "the new subscription delivers");
}

#[tokio::test]
async fn scheduled_run_renews_expiring_and_recreates_lost_subscriptions() {
    let p = Pipe::start().await;
    let sub = p.connect_receiver(&["mail", "calendar"]).await;
    // Our record says the mail subscription expires in two hours; Graph lost the calendar one.
    let conn = p.stack.stored("support").await.unwrap();
    p.stack
        .services
        .state
        .update_subscription(
            "support",
            &conn.subscriptions[0].key,
            relay365::aws::store::SubscriptionChange::new()
                .expires_at(Some(time::OffsetDateTime::now_utc() + time::Duration::hours(2))),
        )
        .await
        .unwrap();
    let lost = conn.subscriptions[1].id.clone();
    p.stack.sim.remove_subscription_silently(&lost);
    let services = p.stack.container().await;
    let report = connections::handle_event(scheduled_event(), &services).await;
    assert_eq!(report["renewed"], 1, "{report}");
    assert_eq!(report["recreated"], 1, "{report}");
    assert_eq!(report["failed"], json!([]));
    let stored = p.stack.stored("support").await.unwrap();
    assert_eq!(stored.subscriptions[0].id, sub);
    let left = stored.subscriptions[0].expires_at.unwrap() - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::days(6),
        "renewed to the full lifetime: {left}"
    );
    assert_ne!(stored.subscriptions[1].id, lost);
    assert_eq!(p.stack.sim.subscriptions().len(), 2);
    // Nothing due: a second run changes nothing.
    let again = connections::handle_event(
        json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}),
        &services,
    )
    .await;
    assert_eq!(
        (again["renewed"].as_u64(), again["recreated"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn revoked_grant_sends_one_reauth_event() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    p.grant_unused_too_long().await;
    p.stack.sim.deliver_message(UPN, mail("after revocation 1"));
    p.stack.sim.deliver_message(UPN, mail("after revocation 2"));
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    check_signature(&events[0]);
    let e = events[0].json();
    assert_eq!(e["type"], "connection.reauth_required");
    assert!(
        e["reason"].as_str().unwrap().contains("long time without use"),
        "{e}"
    );
    assert!(e["connect_url"].as_str().unwrap().contains("/oauth/start?link="));
    let stored = p.stack.stored("support").await.unwrap();
    assert_eq!(stored.status, relay365::Status::ReauthRequired);
}

// ---------------------------------------------------------------------------
// Two containers, one truth: independent services (own caches) on one moto.

#[tokio::test]
async fn a_reconnect_in_one_container_wins_over_the_old_token_another_holds() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    // Container B (dispatch) refreshes and keeps the rotated token in memory.
    p.stack.sim.expire_access_tokens();
    p.first_mail_arrives("before the reset").await;
    let (_, first_generation) = p.stack.stored_refresh_token("support").await.unwrap();

    // A password reset revokes every grant; the person reconnects in container A.
    p.stack.sim.revoke_refresh_tokens(UPN, 50173);
    p.stack.sim.expire_access_tokens();
    let view = connections::handle(
        request("GET", "/connections/support", None, &[]),
        &p.stack.services,
    )
    .await;
    let link = body_json(&view)["connect_url"].as_str().unwrap().to_string();
    p.sign_in(&link).await;
    let (_, generation) = p.stack.stored_refresh_token("support").await.unwrap();
    assert_eq!(
        generation,
        first_generation + 1,
        "the sign-in bumped the generation"
    );

    // B fetches the next mail with the new grant, not the revoked token it holds.
    p.mail_arrives_as(2, "after the reconnect").await;
    assert_eq!(
        p.stack.sim.stats().revoked_refresh_uses,
        0,
        "a revoked refresh token reached Microsoft"
    );
    let stored = p.stack.stored("support").await.unwrap();
    assert_eq!(stored.status, relay365::Status::Active);
}

#[tokio::test]
async fn renewal_in_one_container_and_dispatch_in_another_keep_both_writes() {
    let p = Pipe::start().await;
    let old = p.connect_mail().await;
    // A mail is queued for the subscription, then Graph loses it.
    p.stack.sim.deliver_message(UPN, mail("in flight"));
    assert!(eventually(5, || p.stack.sim.stats().notification_statuses.contains(&202)).await);
    p.stack.sim.remove_subscription_silently(&old);
    // Dispatch (container B) reads the record and waits on a slow flow...
    p.receiver.set_delay(std::time::Duration::from_millis(1500));
    let pump = p.fifo.pump(|e| mail_dispatch::handle(e, &p.dispatcher));
    let renewal = async {
        assert!(
            eventually(10, || p.receiver.in_flight() > 0).await,
            "dispatch never reached the flow"
        );
        // ...while the renewal run (container A) recreates the subscription.
        let schedule = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        connections::handle_event(schedule, &p.stack.container().await).await
    };
    let (_, report) = tokio::join!(pump, renewal);
    assert_eq!(report["recreated"], 1, "{report}");
    p.receiver.set_delay(std::time::Duration::ZERO);

    let stored = p.stack.stored("support").await.unwrap();
    let sub = &stored.subscriptions[0];
    assert_ne!(sub.id, old, "the renewal's new subscription id was undone");
    assert!(
        sub.last_delivery_at.is_some(),
        "dispatch's delivery time was undone: {sub:?}"
    );
    assert!(
        sub.watermark.is_some(),
        "dispatch's watermark was undone: {sub:?}"
    );
    assert!(sub.delta_link.is_some(), "the delta link was lost: {sub:?}");
    let item = p.receiver.events()[0].json()["mail"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        p.stack
            .services
            .state
            .is_delivered("support", &sub.ledger_key(&item))
            .await
            .unwrap()
    );

    // A notification for the new subscription is delivered.
    p.mail_arrives_as(2, "to the new subscription").await;
}

#[tokio::test]
async fn a_sign_in_is_seen_at_once_by_every_other_container() {
    let p = Pipe::start().await;
    let link = p.create_mail_connection("support").await;
    // Container B serves the admin API and has read the pending record already.
    let b = p.stack.container().await;
    let before = connections::handle(request("GET", "/connections/support", None, &[]), &b).await;
    assert_eq!(body_json(&before)["status"], "pending_consent");
    // The sign-in completes in container A...
    p.sign_in(&link).await;
    // ...B shows it at once, and dispatch (container C) delivers the next mail.
    let after = connections::handle(request("GET", "/connections/support", None, &[]), &b).await;
    assert_eq!(body_json(&after)["status"], "active", "{}", body_text(&after));
    p.mail_arrives_as(1, "first").await;
}

#[tokio::test]
async fn a_thousand_mails_write_no_secret() {
    let p = Pipe::start().await;
    let sub = p.connect_mail().await;
    let writes_before = p.stack.aws.count("secretsmanager.PutSecretValue");
    let creates_before = p.stack.aws.count("secretsmanager.CreateSecret");
    // Dispatch takes the notifications as the queue would hand them over, in batches of 10.
    p.stack.sim.set_drop_notifications(true);
    let ids: Vec<String> = (0..1000)
        .map(|i| p.stack.sim.deliver_message(UPN, mail(&format!("mail {i}"))))
        .collect();
    for id in &ids {
        let n = json!({"connection_id": "support", "subscription_id": sub, "change_type": "created",
                       "resource_id": id, "received_at": "2026-11-22T18:00:00Z"});
        p.fifo
            .client
            .send_message()
            .queue_url(&p.fifo.url)
            .message_body(n.to_string())
            .message_group_id("support")
            .message_deduplication_id(id.replace(['=', '+', '/'], "-"))
            .send()
            .await
            .unwrap();
    }
    for _ in 0..300 {
        if p.fifo.pump(|e| mail_dispatch::handle(e, &p.dispatcher)).await == 0
            && p.receiver.events().len() >= 1000
        {
            break;
        }
    }
    assert_eq!(p.receiver.events().len(), 1000);
    assert_eq!(
        p.stack.aws.count("secretsmanager.PutSecretValue") - writes_before,
        0,
        "delivering mail wrote a secret"
    );
    assert_eq!(
        p.stack.aws.count("secretsmanager.CreateSecret") - creates_before,
        0,
        "delivering mail created a secret"
    );
    // Each mail is in the ledger once.
    assert_eq!(
        distinct(mail_ids(&p.receiver.events())).len(),
        1000,
        "a mail was delivered twice"
    );
}

#[tokio::test]
async fn resubscribe_recreates_every_subscription_and_keeps_delivering() {
    let p = Pipe::start().await;
    let old = p.connect_mail().await;
    let resp = connections::handle(
        request("POST", "/connections/support/resubscribe", Some("{}"), &[]),
        &p.stack.container().await,
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", body_text(&resp));
    let view = body_json(&resp);
    let new = view["subscriptions"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let at_graph: Vec<String> = p.stack.sim.subscriptions().into_iter().map(|s| s.0).collect();
    assert_eq!(at_graph, vec![new], "the old subscription is deleted at Graph");
    p.mail_arrives_as(1, "after resubscribe").await;
}

#[tokio::test]
async fn two_quick_edits_of_an_event_are_two_events() {
    let p = Pipe::start().await;
    p.connect_receiver(&["calendar"]).await;
    let id = p.stack.sim.create_event(UPN, callback("Callback"));
    assert_eq!(p.pump_until(1).await.len(), 1);
    // Two edits before dispatch runs: within SQS's 5-minute deduplication window.
    p.stack
        .sim
        .update_event(UPN, &id, |e| e.subject = "Callback at 10".into());
    p.stack
        .sim
        .update_event(UPN, &id, |e| e.subject = "Callback at 11".into());
    assert!(eventually(5, || p.stack.sim.stats().notification_statuses.len() >= 3).await);
    let events = p.pump_until(3).await;
    let updated: Vec<_> = events
        .iter()
        .map(|e| e.json())
        .filter(|e| e["type"] == "calendar.event.updated")
        .collect();
    assert_eq!(updated.len(), 2, "{events:?}");
    assert_ne!(
        updated[0]["id"], updated[1]["id"],
        "each edit has its own event id"
    );
    assert_eq!(
        updated[1]["event"]["subject"], "Callback at 11",
        "the second carries the final state"
    );
}

#[tokio::test]
async fn a_signing_key_rotation_loses_no_notification_and_ends_on_the_new_key() {
    // Containers re-read secrets on every use here, so the test need not wait
    // out the five minutes a deployment allows a warm container.
    let p = Pipe::start_with(vec![("RELAY365_SECRET_TTL_SECONDS", "0".into())]).await;
    let old_sub = p.connect_mail().await;
    let get = || async { view(&p.stack.services, "/connections/support").await };
    assert_eq!(get().await["subscriptions"][0]["signing_key"], "current");
    p.deliver((0..5).map(|i| format!("before {i}")));
    assert_eq!(p.pump_until(5).await.len(), 5);

    let until = time::OffsetDateTime::now_utc().unix_timestamp() + 6;
    p.rotate_signing_key(6).await;
    assert_eq!(
        get().await["subscriptions"][0]["signing_key"],
        "previous",
        "the API shows which subscriptions still use the old key"
    );
    // Mail keeps flowing on the old subscription (its clientState has the old key).
    p.deliver((0..5).map(|i| format!("during {i}")));
    assert_eq!(
        p.pump_until(10).await.len(),
        10,
        "a notification was lost during the rotation"
    );

    // The renewal run moves every subscription to the new key.
    let report = connections::handle_event(scheduled_event(), &p.stack.container().await).await;
    assert_eq!(report["rekeyed"], 1, "{report}");
    assert_eq!(report["on_previous_key"], 0, "{report}");
    let after = get().await;
    assert_eq!(after["subscriptions"][0]["signing_key"], "current", "{after}");
    let new_sub = after["subscriptions"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(new_sub, old_sub);
    let at_graph: Vec<String> = p.stack.sim.subscriptions().into_iter().map(|s| s.0).collect();
    assert_eq!(
        at_graph,
        vec![new_sub.clone()],
        "the old-key subscription is deleted at Graph"
    );
    p.deliver((0..5).map(|i| format!("after {i}")));
    let events = p.pump_until(15).await;
    let subjects = distinct(subjects(&events));
    assert_eq!(subjects.len(), 15, "every mail once: {subjects:?}");
    assert_eq!(events.len(), 15, "no mail twice");

    // After the grace, a clientState made with the old key is refused.
    let old_state = relay365::web::signing::Signer::new(&relay365::Sensitive::new(SIGNING_KEY))
        .unwrap()
        .client_state("support");
    p.stack.sim.set_drop_notifications(true);
    let id = p.stack.sim.deliver_message(UPN, mail("forged with the old key"));
    assert!(
        relay365_testkit::eventually(15, || time::OffsetDateTime::now_utc().unix_timestamp() > until).await
    );
    let body = json!({"value": [{"subscriptionId": new_sub, "clientState": old_state.expose(), "changeType": "created",
        "resource": format!("Users/u-ann/Messages/{id}"), "resourceData": {"id": id}}]});
    let resp = mail_webhook::handle(
        request("POST", "/notifications", Some(&body.to_string()), &[]),
        &p.webhook,
    )
    .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(
        p.settle().await.len(),
        15,
        "the old key's clientState was accepted after the grace"
    );
}

/// Whether any `v1=` of an event's signature verifies with `key` alone.
fn verifies_with(r: &Received, key: &str) -> bool {
    let sig = r.header("relay365-signature").unwrap();
    let t = sig.split(',').find_map(|p| p.strip_prefix("t=")).unwrap();
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&k, format!("{t}.{}", r.body).as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    sig.split(',')
        .filter_map(|p| p.strip_prefix("v1="))
        .any(|v| v == hex)
}

#[tokio::test]
async fn during_an_event_key_rotation_receivers_with_either_key_verify_every_event() {
    let p = Pipe::start_with(vec![("RELAY365_SECRET_TTL_SECONDS", "0".into())]).await;
    p.connect_mail().await;
    p.first_mail_arrives("before").await;
    // The overlap: the new key first, the old one kept; dispatch is warm.
    let new_key = "rotated-event-signing-key-0123456789abcdef0123456789";
    let overlap = json!({"keys": [new_key, EVENT_SIGNING_KEY]}).to_string();
    let token = relay365::aws::secrets::new_request_token();
    p.stack
        .direct
        .put("relay365/event-signing-key", &overlap, &token)
        .await
        .unwrap();
    p.deliver((0..3).map(|i| format!("overlap {i}")));
    let events = p.pump_until(4).await;
    assert_eq!(events.len(), 4);
    for e in &events[1..] {
        assert!(verifies_with(e, new_key), "a receiver with only the new key");
        assert!(
            verifies_with(e, EVENT_SIGNING_KEY),
            "a receiver with only the old key"
        );
    }
    // The rotation ends: the old key is gone and no longer signs.
    let token = relay365::aws::secrets::new_request_token();
    p.stack
        .direct
        .put(
            "relay365/event-signing-key",
            &json!({"keys": [new_key]}).to_string(),
            &token,
        )
        .await
        .unwrap();
    p.stack.sim.deliver_message(UPN, mail("after"));
    let events = p.pump_until(5).await;
    let last = events.last().unwrap();
    assert!(verifies_with(last, new_key));
    assert!(!verifies_with(last, EVENT_SIGNING_KEY), "the old key still signs");
}

#[tokio::test]
async fn a_receiver_that_refuses_with_401_gets_the_event_once_it_is_fixed() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    // A receiver with the wrong key answers 401, then its owner fixes it.
    p.receiver.fail_next_with(1_000, 401);
    p.stack.sim.deliver_message(UPN, mail("wrong key at first"));
    p.pump_twice_a_retry_apart().await;
    let get = || async { view(&p.stack.services, "/connections/support").await };
    let view = get().await;
    let why = view["subscriptions"][0]["last_delivery_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains("401") && why.contains("event signing secret"),
        "the operator sees why: {view}"
    );
    assert_eq!(
        view["subscriptions"][0]["waiting"], 1,
        "and that one waits: {view}"
    );
    p.receiver.fail_next(0);
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1, "retried, not dropped, and delivered once");
    let attempt: u32 = events[0]
        .header("relay365-delivery-attempt")
        .unwrap()
        .parse()
        .unwrap();
    assert!(attempt >= 2, "the header counts the attempts: {attempt}");
    assert!(
        get().await["subscriptions"][0]
            .get("last_delivery_error")
            .is_none(),
        "cleared once delivered"
    );
    assert_eq!(get().await["subscriptions"][0]["waiting"], 0);
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn an_expired_client_secret_keeps_notifications_until_the_new_secret_is_written() {
    let p = Pipe::start_with(vec![("RELAY365_SECRET_TTL_SECONDS", "0".into())]).await;
    p.connect_mail().await;
    // The secret passes its end date; the operator makes a new one in the portal.
    let new_secret = "harness~new~client~secret~43";
    p.stack.sim.expire_client_secret(CLIENT_SECRET);
    p.stack.sim.set_client_secret(CLIENT_ID, new_secret);
    p.stack
        .sim
        .deliver_message(UPN, mail("during the expired secret"));
    p.pump_twice_a_retry_apart().await;
    assert!(p.receiver.events().is_empty());
    assert!(p.refreshes() >= 2, "dispatch kept asking");
    // What infra/set-app-secret.sh does; no function is redeployed.
    let app = json!({"client_id": CLIENT_ID, "tenant_id": TENANT, "client_secret": new_secret}).to_string();
    let token = relay365::aws::secrets::new_request_token();
    p.stack.direct.put("relay365/app", &app, &token).await.unwrap();
    let events = p.pump_until(1).await;
    assert_eq!(
        events.len(),
        1,
        "the kept notification is delivered once the secret is fixed"
    );
    assert_eq!(events[0].json()["mail"]["subject"], "during the expired secret");
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn a_graph_401_drops_the_cached_token_and_the_retry_delivers() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    p.first_mail_arrives("with the cached token").await;
    let refreshes = p.refreshes();
    // The access tokens dispatch holds stop working before their expiry.
    p.stack.sim.expire_access_tokens();
    p.stack.sim.deliver_message(UPN, mail("after the 401"));
    let events = p.pump_until(2).await;
    assert_eq!(events.len(), 2, "retried with a fresh token, not dropped");
    assert_eq!(events[1].json()["mail"]["subject"], "after the 401");
    assert!(p.refreshes() > refreshes);
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn a_resubscribe_that_runs_out_of_time_is_finished_by_the_renewal_run() {
    let p = Pipe::start().await;
    p.connect_receiver(&["mail", "calendar"]).await;
    let services = p.stack.container().await;
    let conn = p.stack.stored("support").await.unwrap();
    let token = services.tokens.access_token(&conn).await.unwrap();
    // No time left at all: nothing is started, everything is marked.
    let done =
        relay365::subscriptions::resubscribe(&services, &conn, &token, std::time::Instant::now(), None)
            .await
            .unwrap();
    assert_eq!((done.recreated, done.remaining), (0, 2));
    let before = view(&services, "/connections/support").await;
    assert_eq!(before["subscriptions"][0]["signing_key"], "pending", "{before}");
    assert_eq!(before["subscriptions"][1]["signing_key"], "pending", "{before}");
    let report = connections::handle_event(scheduled_event(), &services).await;
    assert_eq!(report["rekeyed"], 2, "{report}");
    let after = view(&services, "/connections/support").await;
    assert_eq!(after["subscriptions"][0]["signing_key"], "current", "{after}");
    assert_eq!(after["subscriptions"][1]["signing_key"], "current", "{after}");
    assert_eq!(
        p.stack.sim.subscriptions().len(),
        2,
        "the old ones are deleted at Graph"
    );
    p.first_mail_arrives("after the resubscribe").await;
}

#[tokio::test]
async fn a_mailbox_of_50000_mails_connects_on_a_one_page_baseline_and_a_resync_sends_only_new_mail() {
    let p = Pipe::start().await;
    p.stack.sim.fill_inbox(UPN, 50_000);
    let before = p.stack.sim.stats().graph_requests;
    // The sign-in page (connect asserts it answered 200 and the ids are recorded).
    let sub = p.connect_mail().await;
    let used = p.stack.sim.stats().graph_requests - before;
    assert!(
        used <= 4,
        "the sign-in made {used} Graph requests for a 50,000-mail inbox"
    );
    let stored = p.stack.stored("support").await.unwrap();
    assert!(
        stored.subscriptions[0].delta_link.is_some(),
        "the baseline is stored"
    );
    // Graph drops two notifications; the `missed` resync finds exactly those.
    p.deliver_unannounced(["new 1", "new 2"]);
    assert!(p.stack.sim.send_lifecycle(&sub, Lifecycle::Missed));
    let events = p.pump_until(2).await;
    assert_eq!(
        subjects(&events),
        ["new 1", "new 2"],
        "none of the 50,000 old mails is sent as new"
    );
}

#[tokio::test]
async fn one_batch_works_on_its_mailboxes_side_by_side_and_keeps_each_mailboxs_order() {
    let p = Pipe::start().await;
    let mailboxes = p.desks(4).await;
    for round in 0..2 {
        for m in &mailboxes {
            p.stack.sim.deliver_message(m, mail(&format!("{m} mail {round}")));
        }
        // Graph's notifications carry no order of their own: the second
        // round is sent once the first is queued.
        for _ in 0..100 {
            if queued(&p, &p.fifo.url).await >= 4 * (round + 1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    // Graph far enough away that a mailbox's reads overlap the others' only
    // when they run at the same time.
    p.stack.sim.set_latency(std::time::Duration::from_millis(200));
    let events = p.pump_until(8).await;
    assert_eq!(events.len(), 8, "each mail once");
    assert!(
        p.stack.sim.stats().peak_mailboxes_busy >= 2,
        "the batch's mailboxes were read one after another"
    );
    for m in &mailboxes {
        let subjects: Vec<String> = events
            .iter()
            .map(|e| e.json())
            .filter(|e| e["mailbox"] == m.as_str())
            .map(|e| e["mail"]["subject"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            subjects,
            [format!("{m} mail 0"), format!("{m} mail 1")],
            "{m}'s mail in order"
        );
    }
}

#[tokio::test]
async fn graph_forgetting_30_percent_of_notifications_loses_no_mail() {
    let p = Pipe::start().await;
    let mailboxes = p.desks(5).await;
    p.stack.sim.set_drop_fraction(0.3);
    for n in 0..200 {
        p.stack
            .sim
            .deliver_message(&mailboxes[n % 5], mail(&format!("mail {n}")));
    }
    let forgotten = p.stack.sim.stats().forgotten.len();
    assert_eq!(forgotten, 60, "Graph forgot 30 % of the notifications");
    assert_eq!(p.pump_until(140).await.len(), 140, "what Graph announced arrives");

    // One scheduled run: the sweep finds exactly what Graph forgot.
    let report = p.schedule(false).await;
    assert_eq!(report["swept"], 5, "{report}");
    assert_eq!(report["recovered"], 60, "{report}");
    let events = p.pump_until(200).await;
    let ids = mail_ids(&events);
    assert_eq!(ids.len(), 200, "every mail once");
    assert_eq!(distinct(ids).len(), 200, "no mail twice");
    // The health of each subscription shows what had to be recovered.
    let mut recovered = 0;
    for i in 0..5 {
        let seen = view(&p.stack.services, &format!("/connections/desk{i}")).await;
        recovered += seen["subscriptions"][0]["recovered"].as_u64().unwrap();
        assert!(seen["subscriptions"][0]["last_swept_at"].is_string(), "{seen}");
    }
    assert_eq!(recovered, 60);
    // A second run right away has nothing due; one that sweeps all finds nothing new.
    let again = p.schedule(false).await;
    assert_eq!(
        (again["swept"].as_u64(), again["recovered"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );
    let again = p.schedule(true).await;
    assert_eq!(
        (again["swept"].as_u64(), again["recovered"].as_u64()),
        (Some(5), Some(0)),
        "{again}"
    );
    assert_eq!(p.settle().await.len(), 200);
}

#[tokio::test]
async fn a_target_taking_8_seconds_per_event_gets_a_batch_of_10_once_each_within_the_queue_s_limits() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    p.receiver.set_delay(std::time::Duration::from_secs(8));
    p.deliver((0..10).map(|i| format!("slow {i}")));
    // Each receive is one invocation with the template's 90-second timeout.
    let mut invocations = 0;
    for _ in 0..40 {
        let handed = p.pump_killing_at(std::time::Duration::from_secs(90)).await;
        if handed > 0 {
            invocations += 1;
        }
        if p.receiver.events().len() >= 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let events = p.receiver.events();
    let subjects = subjects(&events);
    assert_eq!(subjects.len(), 10, "{subjects:?}");
    // Order is SQS FIFO's guarantee; moto hands a redelivered record back
    // behind later ones of its group, so only "once each" is checked here.
    assert_eq!(distinct(subjects).len(), 10, "a mail was delivered twice");
    assert!(invocations <= 3, "{invocations} invocations");
    let attempts: Vec<u32> = events
        .iter()
        .map(|e| e.header("relay365-delivery-attempt").unwrap().parse().unwrap())
        .collect();
    assert!(
        attempts.iter().all(|a| *a <= 2),
        "records burnt their receives: {attempts:?}"
    );
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn a_300_kb_mail_reaches_an_https_target_whole_and_a_target_answering_413_gets_it_truncated() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    let html = format!(
        "<html><body>{}</body></html>",
        "<p>a long newsletter line</p>\n".repeat(11_000)
    );
    assert!(html.len() > 300 * 1024);
    let mut big = mail("newsletter");
    big.body_html = html.clone();
    p.stack.sim.deliver_message(UPN, big.clone());
    let events = p.pump_until(1).await;
    let body = &events[0].json()["mail"]["body"];
    assert_eq!(body["content"].as_str().unwrap().len(), html.len(), "whole");
    assert!(body.get("truncated").is_none());
    // A receiver that takes at most, say, 100 KB answers 413.
    p.receiver.fail_next_with(1, 413);
    big.subject = "newsletter 2".into();
    p.stack.sim.deliver_message(UPN, big);
    let events = p.pump_until(2).await;
    assert_eq!(events.len(), 2);
    let second = events[1].json();
    assert_eq!(second["mail"]["subject"], "newsletter 2");
    assert_eq!(second["mail"]["body"]["truncated"], true);
    assert!(events[1].body.len() <= 64 * 1024, "{}", events[1].body.len());
    assert!(
        second["mail"]["web_link"].is_string(),
        "the whole mail can be fetched"
    );
    assert_eq!(
        events[1].header("relay365-delivery-attempt"),
        Some("1"),
        "sent again at once"
    );
}

#[tokio::test]
async fn a_300_kb_mail_reaches_an_eventbridge_target_as_a_truncated_event() {
    let p = Pipe::start().await;
    let sdk = p.stack.aws.sdk_config().await;
    // A bus whose rule forwards relay365's events to a queue we can read.
    let eb = aws_sdk_eventbridge::Client::new(&sdk);
    eb.create_event_bus().name("flows").send().await.unwrap();
    let queue_url = p
        .fifo
        .client
        .create_queue()
        .queue_name("flow-events")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    eb.put_rule()
        .name("to-queue")
        .event_bus_name("flows")
        .event_pattern(r#"{"source": ["relay365"]}"#)
        .send()
        .await
        .unwrap();
    eb.put_targets()
        .rule("to-queue")
        .event_bus_name("flows")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn("arn:aws:sqs:us-east-1:123456789012:flow-events")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let dispatcher = Dispatcher::load(p.stack.container().await)
        .await
        .unwrap()
        .with_eventbridge(eb);
    p.connect(
        json!([{"resource": "mail", "target": "eventbridge:flows"}]),
        json!(["Mail.ReadOnly"]),
    )
    .await;
    let html = format!(
        "<html><body>{}</body></html>",
        "<p>a long newsletter line</p>\n".repeat(11_000)
    );
    let mut big = mail("newsletter");
    big.body_html = html.clone();
    p.stack.sim.deliver_message(UPN, big);
    let mut got = None;
    for _ in 0..50 {
        p.fifo.pump(|e| mail_dispatch::handle(e, &dispatcher)).await;
        let out = p
            .fifo
            .client
            .receive_message()
            .queue_url(&queue_url)
            .send()
            .await
            .unwrap();
        if let Some(m) = out.messages().first() {
            got = Some(m.body().unwrap().to_string());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let envelope: serde_json::Value = serde_json::from_str(&got.expect("the event reached the bus")).unwrap();
    assert_eq!(envelope["source"], "relay365");
    assert_eq!(envelope["detail-type"], "mail.received");
    let detail = &envelope["detail"];
    assert_eq!(
        detail["mail"]["body"]["truncated"], true,
        "{}",
        &detail["mail"]["body"]["original_length"]
    );
    assert_eq!(detail["mail"]["body"]["original_length"], html.len());
    assert!(detail["mail"]["web_link"].is_string());
    assert!(serde_json::to_vec(detail).unwrap().len() <= mail_dispatch::fit::EVENTBRIDGE_DETAIL_LIMIT);
}

#[tokio::test]
async fn mail_that_arrived_while_a_connection_needed_a_new_sign_in_is_delivered_after_the_reconnect() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    p.grant_unused_too_long().await;
    p.deliver((0..10).map(|i| format!("while away {i}")));
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].json()["type"], "connection.reauth_required");
    assert_eq!(p.settle().await.len(), 1, "nothing can be fetched meanwhile");
    // The person opens the reconnect link and signs in again.
    let link = events[0].json()["connect_url"].as_str().unwrap().to_string();
    p.sign_in(&link).await;
    // The next scheduled run's sweep fills the gap from the kept delta link.
    let report = p.schedule(false).await;
    assert_eq!(report["recovered"], 10, "{report}");
    let events = p.pump_until(11).await;
    let subjects = distinct(subjects(&events[1..]));
    assert_eq!(subjects.len(), 10, "each once: {subjects:?}");
    assert_eq!(events.len(), 11);
}

#[tokio::test]
async fn mail_that_arrived_while_graph_had_lost_the_subscription_is_delivered_by_the_next_run() {
    let p = Pipe::start().await;
    let sub = p.connect_mail().await;
    p.first_mail_arrives("before").await;
    // Graph loses the subscription without a word; mail keeps arriving.
    p.stack.sim.remove_subscription_silently(&sub);
    p.deliver((0..3).map(|i| format!("gap {i}")));
    assert_eq!(p.settle().await.len(), 1, "Graph announced nothing");
    let report = p.schedule(false).await;
    assert_eq!(report["recreated"], 1, "{report}");
    assert_eq!(report["recovered"], 3, "{report}");
    p.stack.sim.deliver_message(UPN, mail("after"));
    let events = p.pump_until(5).await;
    let mut subjects = subjects(&events);
    subjects.sort();
    assert_eq!(
        subjects,
        ["after", "before", "gap 0", "gap 1", "gap 2"],
        "each once, none older sent as new"
    );
}

/// Messages in a queue, visible or not (without receiving, which would
/// hide them), counted as `relay365 dlq` counts them.
async fn queued(p: &Pipe, url: &str) -> usize {
    let n = relay365_cli::dlq::waiting(&p.fifo.client, url).await.unwrap();
    usize::try_from(n).unwrap()
}

#[tokio::test]
async fn dead_letters_moved_back_once_the_target_is_fixed_are_delivered_once_each() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    p.first_mail_arrives("delivered before the outage").await;
    // The flow's endpoint is down for good: every record ends in the dead-letter queue.
    p.receiver.fail_next(1_000_000);
    p.deliver((0..3).map(|i| format!("during the outage {i}")));
    // Five receives each, apart by the retry times (1, 2, 4, 8 s here); a
    // bound, not a measure: on a loaded machine it takes longer.
    for _ in 0..400 {
        p.fifo.pump(|e| mail_dispatch::handle(e, &p.dispatcher)).await;
        if queued(&p, &p.fifo.dlq_url).await == 3 && queued(&p, &p.fifo.url).await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(
        queued(&p, &p.fifo.dlq_url).await,
        3,
        "the outage ends in the dead-letter queue"
    );
    assert_eq!(p.receiver.events().len(), 1);
    // Fixed; infra/replay-dead-letters.sh has SQS move them back (moto has no
    // move task, so the test moves them the same way: same body and group).
    p.receiver.fail_next(0);
    let out = receive_dead_letters(&p).await;
    assert_eq!(out.messages().len(), 3);
    move_back(&p, out.messages()).await;
    // The one delivered before is moved back too: the ledger keeps it single.
    p.stack.sim.send_lifecycle(
        &p.stack.stored("support").await.unwrap().subscriptions[0].id,
        Lifecycle::Missed,
    );
    let events = p.pump_until(4).await;
    let mut subjects = subjects(&events);
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "delivered before the outage",
            "during the outage 0",
            "during the outage 1",
            "during the outage 2"
        ],
        "each once after the replay"
    );
}

#[tokio::test]
async fn a_lost_grant_noticed_first_by_the_renewal_run_reaches_the_flow_exactly_once() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    p.stack.sim.revoke_refresh_tokens(UPN, 50173);
    // The scheduled run, in a fresh container, is the first to need a token.
    let report = p.schedule(false).await;
    assert_eq!(
        p.stack.stored("support").await.unwrap().status,
        relay365::Status::ReauthRequired
    );
    assert_eq!(report["reminded"], 1, "{report}");
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].json()["type"], "connection.reauth_required");
    assert!(events[0].json()["connect_url"].is_string());
    // Mail keeps arriving and runs keep coming: the flow is not told again.
    p.stack.sim.deliver_message(UPN, mail("while it needs a sign-in"));
    let again = p.schedule(false).await;
    assert_eq!(again["reminded"], 0, "{again}");
    assert_eq!(
        p.settle().await.len(),
        1,
        "exactly one connection.reauth_required"
    );
}

#[tokio::test]
async fn edited_and_moved_in_mails_are_never_sent_as_new() {
    let p = Pipe::start().await;
    p.stack.sim.fill_folder(UPN, "archive", 3);
    let sub = p.connect_mail().await;
    let fresh = p.first_mail_arrives("fresh").await;
    // Someone reads the new mail and drags an old one from the archive in;
    // Graph announces the moved one as created in the inbox.
    p.stack.sim.update_message(UPN, &fresh);
    p.stack.sim.move_message(UPN, "AAMkADoldarchive00000001", "inbox");
    assert_eq!(p.settle().await.len(), 1, "the moved-in mail is not new mail");
    // Neither a resync nor a sweep sees either as new.
    assert!(p.stack.sim.send_lifecycle(&sub, Lifecycle::Missed));
    let report = p.schedule(true).await;
    assert_eq!(report["recovered"], 0, "{report}");
    assert_eq!(p.settle().await.len(), 1);
}

/// A half-hour call Ann organizes, on 23 November 2026 at 09:00 UTC.
fn callback(subject: &str) -> Event {
    Event {
        subject: subject.into(),
        organizer: ("Ann".into(), UPN.into()),
        start: "2026-11-23T09:00:00.0000000".into(),
        end: "2026-11-23T09:30:00.0000000".into(),
        time_zone: "UTC".into(),
        ..Default::default()
    }
}

/// A calendar event starting `days` from now, local time in UTC.
fn meeting(subject: &str, days: i64) -> Event {
    let at = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    let fmt = |t: time::OffsetDateTime| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:00:00.0000000",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour()
        )
    };
    Event {
        subject: subject.into(),
        organizer: ("Ann".into(), UPN.into()),
        start: fmt(at),
        end: fmt(at + time::Duration::hours(1)),
        time_zone: "UTC".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_calendar_missed_resyncs_and_the_sweep_finds_calendar_changes_graph_forgot() {
    let p = Pipe::start().await;
    let sub = p.connect_receiver(&["calendar"]).await;
    assert!(
        p.stack.stored("support").await.unwrap().subscriptions[0]
            .delta_link
            .is_some(),
        "the calendar baseline is stored"
    );
    p.stack.sim.set_drop_notifications(true);
    let planning = p.stack.sim.create_event(UPN, meeting("Planning", 2));
    p.stack
        .sim
        .update_event(UPN, &planning, |e| e.subject = "Planning (moved)".into());
    let gone = p.stack.sim.create_event(UPN, meeting("Cancelled", 3));
    p.stack.sim.delete_event(UPN, &gone);
    p.stack.sim.set_drop_notifications(false);
    assert!(p.stack.sim.send_lifecycle(&sub, Lifecycle::Missed));
    let events = p.pump_until(2).await;
    let mut got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let v = e.json();
            (
                v["type"].as_str().unwrap().to_string(),
                v["event"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("calendar.event.deleted".to_string(), gone.clone()),
            ("calendar.event.updated".to_string(), planning.clone())
        ]
    );
    let updated = events
        .iter()
        .find(|e| e.json()["type"] == "calendar.event.updated")
        .unwrap();
    assert_eq!(
        updated.json()["event"]["subject"],
        "Planning (moved)",
        "the current state"
    );
    // A second `missed` finds nothing new.
    assert!(p.stack.sim.send_lifecycle(&sub, Lifecycle::Missed));
    assert_eq!(p.settle().await.len(), 2);
    // Graph forgets an edit: the sweep finds it; an announced one it leaves alone.
    p.stack.sim.set_drop_notifications(true);
    p.stack
        .sim
        .update_event(UPN, &planning, |e| e.location = "Room 4".into());
    p.stack.sim.set_drop_notifications(false);
    let announced = p.stack.sim.create_event(UPN, meeting("Review", 5));
    assert_eq!(p.pump_until(3).await.len(), 3);
    let report = p.schedule(true).await;
    assert_eq!(report["recovered"], 1, "{report}");
    let events = p.pump_until(4).await;
    assert_eq!(events.len(), 4, "the announced event is not sent twice");
    let last = events.last().unwrap().json();
    assert_eq!(last["event"]["id"], planning);
    assert_eq!(last["event"]["location"], "Room 4");
    assert!(events.iter().any(|e| e.json()["event"]["id"] == announced));
}

/// Up to ten dead letters, received from the dead-letter queue.
async fn receive_dead_letters(p: &Pipe) -> aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput {
    p.fifo
        .client
        .receive_message()
        .queue_url(&p.fifo.dlq_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
}

/// Moves `messages` received from the dead-letter queue back to the queue,
/// as `infra/replay-dead-letters.sh` has SQS do (same body and message
/// group; moto has no move task).
async fn move_back(p: &Pipe, messages: &[aws_sdk_sqs::types::Message]) {
    for m in messages {
        let group =
            m.attributes().unwrap()[&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId].clone();
        p.fifo
            .client
            .send_message()
            .queue_url(&p.fifo.url)
            .message_body(m.body().unwrap())
            .message_group_id(group)
            .message_deduplication_id(m.message_id().unwrap())
            .send()
            .await
            .unwrap();
        p.fifo
            .client
            .delete_message()
            .queue_url(&p.fifo.dlq_url)
            .receipt_handle(m.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
}

/// Moves every dead letter back to the queue. Returns how many.
async fn replay_dead_letters(p: &Pipe) -> usize {
    let mut moved = 0;
    loop {
        let out = receive_dead_letters(p).await;
        if out.messages().is_empty() {
            return moved;
        }
        move_back(p, out.messages()).await;
        moved += out.messages().len();
    }
}

/// The fault-injection suite: mail for several mailboxes flows through the
/// webhook, the queue and dispatch while, round by round, Graph duplicates
/// and forgets notifications, AWS (SQS, DynamoDB, Secrets Manager) goes
/// down, the token endpoint fails, Graph throttles, the target fails and is
/// slow, invocations are ended mid-batch at their deadline, and a `missed`
/// arrives; then a subscription create answered 409, a flow answering 410
/// once (paused, then resumed), expired delta links, a 30 MB mail and a slow
/// queue, while one inbox has two flows. Afterwards the schedule sweeps and
/// the dead letters are replayed. Counted at the receivers, by mail and flow.
/// `RELAY365_CHAOS_MAILS` sets the size (`make chaos` runs a long one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_no_mail_and_sends_none_under_two_event_ids() {
    let total: usize = std::env::var("RELAY365_CHAOS_MAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let p = Pipe::start().await;
    let mailboxes = p.desks(4).await;
    // desk2's inbox has a second flow, with its own receiver.
    let second = Receiver::start().await;
    p.add_flow("desk2", &second.url).await;
    let mut for_desk2: Vec<String> = Vec::new();
    let mut large = 0;
    let rounds = 13;
    let per_round = total.div_ceil(rounds);
    let sim = &p.stack.sim;
    let mut sent = 0;
    let mut faults: Vec<&str> = Vec::new();
    for round in 0..rounds {
        let mut down_for = None;
        let mut kill_after = std::time::Duration::from_secs(90);
        let told = std::time::Duration::from_secs(90);
        match round {
            0 => {
                sim.set_duplicate_notifications(true);
                faults.push("duplicates");
            }
            1 => {
                sim.set_duplicate_notifications(false);
                sim.set_drop_fraction(0.25);
                faults.push("25 % forgotten");
            }
            2 => {
                sim.set_drop_fraction(0.0);
                p.stack.aws.set_down(true);
                down_for = Some(std::time::Duration::from_millis(1500));
                faults.push("AWS down 1.5 s");
            }
            3 => {
                p.dispatcher.services.tokens.invalidate("desk0").await;
                sim.fail_next_token(
                    "temporarily_unavailable",
                    0,
                    "The service is temporarily unavailable.",
                );
                faults.push("token endpoint failing");
            }
            4 => {
                sim.throttle_graph(6, Some("1"));
                faults.push("Graph 429 storm");
            }
            5 => {
                p.receiver.fail_next(6);
                faults.push("target 5xx");
            }
            6 => {
                p.receiver.set_delay(std::time::Duration::from_millis(400));
                kill_after = std::time::Duration::from_millis(900);
                faults.push("slow target, sandboxes dying mid-batch");
            }
            8 => {
                // A create whose answer was lost: Graph has the subscription
                // and answers the next create 409.
                let conn = p.stack.stored("desk1").await.unwrap();
                let mut lost = conn.subscriptions[0].clone();
                lost.id.clear();
                let token = p.stack.services.tokens.access_token(&conn).await.unwrap();
                relay365::subscriptions::create(&p.stack.services, &conn, &lost, &token)
                    .await
                    .unwrap();
                faults.push("a create answered 409");
            }
            9 => {
                p.receiver.fail_next_with(1, 410);
                faults.push("a flow answering 410 once, then resumed");
            }
            10 => {
                sim.expire_delta_links();
                sim.set_drop_fraction(0.25);
                faults.push("expired delta links");
            }
            11 => {
                sim.set_drop_fraction(0.0);
                sim.deliver_large_message(&mailboxes[3], 30 * 1024 * 1024);
                large += 1;
                faults.push("a 30 MB mail");
            }
            12 => {
                p.stack.aws.set_latency(std::time::Duration::from_millis(2500));
                faults.push("a slow queue");
            }
            _ => {
                p.receiver.set_delay(std::time::Duration::ZERO);
                for i in 0..mailboxes.len() {
                    let sub = p.stack.stored(&format!("desk{i}")).await.unwrap().subscriptions[0]
                        .id
                        .clone();
                    sim.send_lifecycle(&sub, Lifecycle::Missed);
                }
                faults.push("missed");
            }
        }
        for _ in 0..per_round {
            if sent == total {
                break;
            }
            let id = sim.deliver_message(&mailboxes[sent % mailboxes.len()], mail(&format!("chaos {sent}")));
            if sent % mailboxes.len() == 2 {
                for_desk2.push(id);
            }
            sent += 1;
        }
        if let Some(d) = down_for {
            tokio::time::sleep(d).await;
            p.stack.aws.set_down(false);
        }
        p.stack.aws.set_latency(std::time::Duration::ZERO);
        for _ in 0..6 {
            p.pump_killed(told, kill_after).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        if round == 9 {
            // Whichever flow took the 410 is paused; its operator resumes it.
            for i in 0..mailboxes.len() {
                let id = format!("desk{i}");
                for flow in p.stack.stored(&id).await.unwrap().subscriptions {
                    if flow.is_paused() {
                        let (status, body) = p
                            .admin(
                                "POST",
                                &format!("/connections/{id}/subscriptions/{}/resume", flow.key),
                            )
                            .await;
                        assert_eq!(status, 200, "{body}");
                    }
                }
            }
        }
    }
    let total = total + large;
    p.receiver.set_delay(std::time::Duration::ZERO);
    // After the storm: the schedule sweeps, the dead letters are replayed,
    // and the queue is drained (bounded).
    let mut replayed = 0;
    let delivered = |events: &[Received]| {
        let mut ids: Vec<String> = events
            .iter()
            .filter_map(|e| e.json()["mail"]["id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    for round in 0..(40 + total / 4) {
        if round % 10 == 0 {
            p.schedule(true).await;
            replayed += replay_dead_letters(&p).await;
        }
        p.pump_killing_at(std::time::Duration::from_secs(90)).await;
        if delivered(&p.receiver.events()) == total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let events = p.settle().await;
    let mut by_mail: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for e in &events {
        let v = e.json();
        if let Some(mail) = v["mail"]["id"].as_str() {
            by_mail
                .entry(mail.to_string())
                .or_default()
                .push(v["id"].as_str().unwrap().to_string());
        }
    }
    let delivered = by_mail.len();
    let lost = total - delivered;
    let under_two_ids = by_mail
        .values()
        .filter(|ids| {
            let mut d = (*ids).clone();
            d.sort();
            d.dedup();
            d.len() > 1
        })
        .count();
    let redelivered: usize = by_mail.values().map(|ids| ids.len() - 1).sum();
    let recovered = sim.stats().forgotten.len();
    println!(
        "chaos: {total} mails, {} mailboxes: {delivered} delivered, {lost} lost, {under_two_ids} under two event ids, \
         {redelivered} redelivered after a 2xx, {recovered} forgotten by Graph and recovered, {replayed} replayed from the \
         dead-letter queue; faults: {}",
        mailboxes.len(),
        faults.join(", ")
    );
    let second_got: std::collections::HashSet<String> = second
        .events()
        .iter()
        .filter_map(|e| e.json()["mail"]["id"].as_str().map(str::to_string))
        .collect();
    let second_lost = for_desk2.iter().filter(|id| !second_got.contains(*id)).count();
    println!(
        "chaos: the second flow on desk2's inbox: {} of {} mails, {second_lost} lost; Graph answered {} creates 409",
        for_desk2.len() - second_lost,
        for_desk2.len(),
        sim.stats().subscription_conflicts
    );
    assert_eq!(lost, 0, "every mail is delivered");
    assert_eq!(under_two_ids, 0, "no mail under two event ids");
    assert_eq!(second_lost, 0, "the second flow gets every mail of its inbox");
}

#[tokio::test]
async fn a_lost_grant_noticed_first_by_send_mail_reaches_the_flow_exactly_once() {
    let p = Pipe::start().await;
    p.connect(
        json!([{"resource": "mail", "target": p.receiver.url}]),
        json!(["Mail.ReadOnly", "Mail.Send"]),
    )
    .await;
    p.stack.sim.revoke_refresh_tokens(UPN, 50173);
    // A caller sends mail first, in its own container; the refresh fails.
    let services = p.stack.container().await;
    let sender = send_mail::Sender::new(&services);
    let answer = send_mail::handle_event(
        json!({"connection_id": "support", "to": ["bo@example.com"], "subject": "Hi", "body": {"text": "x"}}),
        &sender,
    )
    .await;
    assert_eq!(answer["status"], "error", "{answer}");
    assert_eq!(
        p.stack.stored("support").await.unwrap().status,
        relay365::Status::ReauthRequired
    );
    // Mail keeps arriving: the flow is told once, by dispatch.
    p.stack
        .sim
        .deliver_message(UPN, mail("after send-mail noticed 1"));
    p.stack
        .sim
        .deliver_message(UPN, mail("after send-mail noticed 2"));
    let events = p.pump_until(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].json()["type"], "connection.reauth_required");
    // The next run has nothing to remind.
    let run = p.schedule(false).await;
    assert_eq!(run["reminded"], 0, "{run}");
    assert_eq!(
        p.settle().await.len(),
        1,
        "exactly one connection.reauth_required"
    );
}

/// The ids of the mails of `events`.
fn mail_ids(events: &[Received]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.json()["mail"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// `v` sorted, each value once.
fn distinct(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// The subjects of the mails of `events`; an event of no mail fails the test.
fn subjects(events: &[Received]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let event = e.json();
            let subject = event["mail"]["subject"].as_str();
            subject
                .unwrap_or_else(|| panic!("an event of no mail: {event}"))
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn two_flows_on_one_inbox_share_one_graph_subscription_and_each_gets_every_mail_once() {
    let p = Pipe::start().await;
    let second = Receiver::start().await;
    p.connect(
        json!([{"resource": "mail", "target": p.receiver.url}, {"resource": "mail", "target": second.url}]),
        json!(["Mail.ReadOnly"]),
    )
    .await;
    assert_eq!(
        p.stack.sim.subscriptions().len(),
        1,
        "one Graph subscription for the inbox"
    );
    let flows = p.stack.stored("support").await.unwrap().subscriptions;
    assert_eq!(flows[0].id, flows[1].id, "both flows on it");
    // A third flow added later shares it too.
    let third = Receiver::start().await;
    p.add_flow("support", &third.url).await;
    assert_eq!(p.stack.sim.subscriptions().len(), 1);
    p.stack.sim.set_duplicate_notifications(true);
    p.deliver((0..4).map(|i| format!("mail {i}")));
    let all_have =
        || p.receiver.events().len() >= 4 && second.events().len() >= 4 && third.events().len() >= 4;
    assert!(p.pump_while(200, all_have).await);
    p.settle().await;
    // Graph may announce mails in any order; each flow gets them in the
    // order they were queued, the same for all, each once.
    let order = subjects(&p.receiver.events());
    let mut sorted = order.clone();
    sorted.sort();
    let want: Vec<String> = (0..4).map(|i| format!("mail {i}")).collect();
    assert_eq!(sorted, want, "every mail once");
    for r in [&second, &third] {
        assert_eq!(subjects(&r.events()), order, "every flow in the same order");
    }
    assert_eq!(
        p.stack.sim.stats().subscription_conflicts,
        0,
        "nothing asked Graph for a second subscription"
    );
}

#[tokio::test]
async fn resubscribe_and_a_key_rotation_end_with_one_graph_subscription_per_resource_and_deliver_the_unannounced_mail_once()
 {
    let p = Pipe::start_with(vec![("RELAY365_SECRET_TTL_SECONDS", "0".into())]).await;
    p.connect_receiver(&["mail", "calendar"]).await;
    assert_eq!(p.stack.sim.subscriptions().len(), 2);
    // A mail whose notification Graph dropped just before the resubscribe.
    p.deliver_unannounced(["unannounced before resubscribe"]);
    let (status, body) = p.admin("POST", "/connections/support/resubscribe").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        p.stack.sim.subscriptions().len(),
        2,
        "one per resource: {:?}",
        p.stack.sim.subscriptions()
    );
    assert!(p.pump_while(100, || !p.receiver.events().is_empty()).await);
    assert_eq!(subjects(&p.settle().await), ["unannounced before resubscribe"]);

    // A signing-key rotation: the scheduled run recreates both, old first.
    p.rotate_signing_key(60).await;
    p.deliver_unannounced(["unannounced before rotation"]);
    let report = p.schedule(false).await;
    assert_eq!(report["rekeyed"], 2, "{report}");
    assert_eq!(
        p.stack.sim.subscriptions().len(),
        2,
        "{:?}",
        p.stack.sim.subscriptions()
    );
    assert!(p.pump_until_received(100, 2).await);
    p.last_mail_completes(
        "after rotation",
        100,
        &[
            "unannounced before resubscribe",
            "unannounced before rotation",
            "after rotation",
        ],
        "every mail once, in order",
    )
    .await;
    assert_eq!(p.stack.sim.stats().subscription_conflicts, 0);
}

/// The invocations of a pump, each timed against the deadline it was given.
#[tokio::test]
async fn a_missed_with_200_undelivered_mails_and_a_slow_target_delivers_each_once_in_bounded_invocations() {
    let p = Pipe::start().await;
    let sub = p.connect_mail().await;
    p.deliver_unannounced((0..200).map(|i| format!("missed {i:03}")));
    p.receiver.set_delay(std::time::Duration::from_secs(1));
    assert!(p.stack.sim.send_lifecycle(&sub, Lifecycle::Missed));
    // Each invocation is told it has 45 s (a short Lambda timeout) and is
    // ended if it takes longer, as Lambda would end it.
    let limit = std::time::Duration::from_secs(45);
    let mut overran = 0;
    for _ in 0..2000 {
        if p.receiver.events().len() >= 200 {
            break;
        }
        let started = std::time::Instant::now();
        if p.pump_killing_at(limit).await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if started.elapsed() > limit {
            overran += 1;
        }
    }
    let events = p.receiver.events();
    let ids: Vec<String> = events
        .iter()
        .map(|e| e.json()["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..200).map(|i| format!("missed {i:03}")).collect();
    assert_eq!(subjects(&events), want, "every mail once, in order");
    assert_eq!(distinct(ids).len(), 200, "no event id twice");
    assert_eq!(overran, 0, "an invocation outlived its deadline");
}

#[tokio::test]
async fn with_the_template_s_visibility_timeout_one_503_delays_the_mailbox_by_seconds() {
    let p = Pipe::as_template().await;
    p.connect_mail().await;
    p.receiver.fail_next_with(1, 503);
    for i in 0..3 {
        p.stack.sim.deliver_message(UPN, mail(&format!("mail {i}")));
        // Graph may announce mails in any order; one at a time, the queue's
        // order is the mails' order.
        assert!(eventually(10, || p.stack.sim.stats().notification_statuses.len() > i).await);
    }
    let started = std::time::Instant::now();
    // At most a minute of polling: far inside the 540 s the queue would
    // hold the failed record and the two behind it.
    let arrived = p.pump_until_received(600, 3).await;
    let waited = started.elapsed();
    assert!(
        arrived,
        "the mailbox waited for the visibility timeout: {:?}",
        subjects(&p.receiver.events())
    );
    assert_eq!(
        subjects(&p.settle().await),
        ["mail 0", "mail 1", "mail 2"],
        "once each, in order"
    );
    assert_eq!(
        p.receiver.events()[0].header("relay365-delivery-attempt"),
        Some("2")
    );
    eprintln!(
        "after one 503 the mailbox's three mails were all delivered {:.1} s after they arrived",
        waited.as_secs_f64()
    );
}

#[tokio::test]
async fn a_410_pauses_the_flow_and_a_resume_delivers_everything_once_in_order() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    p.first_mail_arrives("first").await;
    p.receiver.fail_next_with(1, 410);
    p.stack.sim.deliver_message(UPN, mail("refused with 410"));
    p.stack.sim.deliver_message(UPN, mail("while paused 1"));
    p.deliver_unannounced(["while paused, unannounced"]);
    p.stack.sim.deliver_message(UPN, mail("while paused 2"));
    p.settle().await;
    assert_eq!(
        subjects(&p.receiver.events()),
        ["first"],
        "nothing goes to a paused flow"
    );
    let seen = view(&p.stack.services, "/connections/support").await;
    let flow = &seen["subscriptions"][0];
    assert_eq!(flow["status"], "paused", "{seen}");
    assert!(flow["paused_at"].is_string(), "{seen}");
    let why = flow["paused_reason"].as_str().unwrap();
    assert!(why.contains("410") && why.contains("/resume"), "{why}");
    // A sweep meanwhile changes nothing for the paused flow.
    p.schedule(true).await;
    p.settle().await;
    assert_eq!(p.receiver.events().len(), 1);
    assert_eq!(
        p.fifo.dead_letters().await,
        0,
        "nothing was lost to the dead-letter queue"
    );

    let key = flow["key"].as_str().unwrap().to_string();
    let (status, body) = p
        .admin(
            "POST",
            &format!("/connections/support/subscriptions/{key}/resume"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active", "{body}");
    p.last_mail_completes(
        "after resume",
        200,
        &[
            "first",
            "refused with 410",
            "while paused 1",
            "while paused, unannounced",
            "while paused 2",
            "after resume",
        ],
        "everything once, in order",
    )
    .await;
    let seen = view(&p.stack.services, "/connections/support").await;
    assert!(seen["subscriptions"][0]["catching_up"].is_null(), "{seen}");
}

#[tokio::test]
async fn an_operator_pause_sends_nothing_and_the_resume_delivers_all_of_it() {
    let p = Pipe::start().await;
    p.connect_mail().await;
    let key = p.stack.stored("support").await.unwrap().subscriptions[0]
        .key
        .clone();
    let (status, body) = p
        .admin("POST", &format!("/connections/support/subscriptions/{key}/pause"))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("paused")), "{body}");
    let (status, body) = p
        .admin("POST", "/connections/support/subscriptions/nope/pause")
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GET /connections/support"),
        "{body}"
    );
    // A minute of mail, announced and not.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut sent = Vec::new();
    let mut i = 0;
    while std::time::Instant::now() < until {
        p.stack.sim.set_drop_notifications(i % 2 == 1);
        let subject = format!("paused {i:02}");
        p.stack.sim.deliver_message(UPN, mail(&subject));
        sent.push(subject);
        i += 1;
        p.settle().await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    p.stack.sim.set_drop_notifications(false);
    assert!(p.receiver.events().is_empty(), "nothing is sent while paused");
    let (status, _) = p
        .admin(
            "POST",
            &format!("/connections/support/subscriptions/{key}/resume"),
        )
        .await;
    assert_eq!(status, 200);
    let n = sent.len();
    assert!(p.pump_until_received(300, n).await);
    assert_eq!(subjects(&p.settle().await), sent);
}

#[tokio::test]
async fn an_expired_delta_link_is_replaced_and_the_sweep_and_missed_recover_once() {
    let p = Pipe::start().await;
    // Mail older than the subscription is never sent.
    p.stack.sim.fill_inbox(UPN, 30);
    let sub = p.connect_mail().await;
    p.first_mail_arrives("announced").await;
    p.stack.sim.set_drop_notifications(true);
    p.stack.sim.deliver_message(UPN, mail("unannounced 1"));
    p.stack.sim.expire_delta_links();
    let report = p.schedule(true).await;
    assert_eq!(report["recovered"], 1, "{report}");
    assert!(p.pump_until_received(100, 2).await);
    p.stack.sim.deliver_message(UPN, mail("unannounced 2"));
    p.stack.sim.expire_delta_links();
    p.stack.sim.set_drop_notifications(false);
    assert!(p.stack.sim.send_lifecycle(&sub, Lifecycle::Missed));
    assert!(p.pump_until_received(100, 3).await);
    p.schedule(true).await;
    assert_eq!(
        subjects(&p.settle().await),
        ["announced", "unannounced 1", "unannounced 2"],
        "each once; nothing older than the subscription"
    );
    assert!(p.stack.sim.stats().delta_links_gone >= 2);
}

/// Message delta does not exist in the 21Vianet cloud: the catch-up lists
/// the folder by received time instead, with the same ledger and watermark.
#[tokio::test]
async fn without_message_delta_the_sweep_lists_the_folder_and_recovers_once() {
    let p = Pipe::start_with(vec![("RELAY365_CLOUD", "china".into())]).await;
    p.stack.sim.set_message_delta_available(false);
    p.stack.sim.fill_inbox(UPN, 12);
    p.connect_mail().await;
    p.first_mail_arrives("announced").await;
    p.stack.sim.set_drop_notifications(true);
    p.deliver((0..3).map(|i| format!("unannounced {i}")));
    let report = p.schedule(true).await;
    assert_eq!(report["recovered"], 3, "{report}");
    assert!(p.pump_until_received(100, 4).await);
    p.schedule(true).await;
    assert_eq!(
        subjects(&p.settle().await),
        ["announced", "unannounced 0", "unannounced 1", "unannounced 2"],
        "each once, nothing older than the subscription"
    );
    assert_eq!(p.stack.sim.stats().message_delta_refused, 0, "no delta asked for");
}

/// Graph allows one subscription per mailbox and resource for an app: a
/// second connection on the same inbox is told which connection has it, and
/// the first keeps its subscription and its mail.
#[tokio::test]
async fn a_second_connection_on_the_same_inbox_never_takes_the_first_one_s_subscription() {
    let p = Pipe::start().await;
    let first = p.connect_mail().await;
    let link = p.create_mail_connection("second").await;
    let (_, page) = common::sign_in_page(&p.stack, &link).await;
    assert!(page.contains("connection support already watches"), "{page}");
    let second = view(&p.stack.services, "/connections/second").await;
    let why = second["subscriptions"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("POST /connections/support/subscriptions"),
        "{second}"
    );
    assert_eq!(
        p.stack
            .sim
            .subscriptions()
            .into_iter()
            .map(|s| s.0)
            .collect::<Vec<_>>(),
        vec![first],
        "the first connection's subscription is untouched"
    );
    p.stack.sim.deliver_message(UPN, mail("still the first's"));
    assert_eq!(subjects(&p.pump_until(1).await), ["still the first's"]);
}

/// The scheduled run of a fleet: Graph's subscription write limit (scaled
/// down to 6 per 2 s per tenant; the run's pacer keeps a margin below it, at
/// 5, as it keeps 450 of Graph's 500: requests sent apart may arrive closer
/// together) is never
/// passed, nothing is refused, what one run could not renew in its time is
/// what the next one renews first, and no subscription is renewed twice.
#[tokio::test]
async fn a_fleet_run_keeps_graphs_write_limit_and_leaves_the_rest_to_the_next_run_first() {
    use relay365::microsoft::pacing::WritePacer;
    let p = Pipe::start().await;
    let desks = p.desks(24).await;
    let window = std::time::Duration::from_secs(2);
    let mut run_container = p.stack.container().await;
    run_container.pacer = Arc::new(WritePacer::new(5, 100, window));
    let run = |detail: serde_json::Value| {
        let mut event = scheduled_event();
        event["detail"] = detail;
        let c = &run_container;
        let q = p.queue.as_ref();
        async move {
            connections::handle_event_until(
                event,
                c,
                Some(q),
                std::time::Instant::now() + std::time::Duration::from_secs(4),
            )
            .await
        }
    };
    // A first run looks at every connection (no key recorded yet) and finds
    // nothing due. Graph lists an app token every subscription of the app
    // in the tenant: the run reads that list once, not once per mailbox.
    let lists = || {
        p.stack
            .sim
            .stats()
            .subscription_calls
            .get("list")
            .copied()
            .unwrap_or(0)
    };
    let lists_before = lists();
    let first = run(json!({})).await;
    assert_eq!(
        (first["full"].as_bool(), first["renewed"].as_u64()),
        (Some(true), Some(0)),
        "{first}"
    );
    assert_eq!(
        lists() - lists_before,
        1,
        "one listing for the 24 app-only mailboxes of one tenant"
    );
    // Every subscription comes due at once (an outage), Graph's limit is
    // scaled down, and the sign-ups' writes have left its window.
    for desk in 0..desks.len() {
        let id = format!("desk{desk}");
        let key = p.stack.stored(&id).await.unwrap().subscriptions[0].key.clone();
        p.stack
            .services
            .state
            .update_subscription(
                &id,
                &key,
                relay365::aws::store::SubscriptionChange::new()
                    .expires_at(Some(time::OffsetDateTime::now_utc() + time::Duration::hours(2))),
            )
            .await
            .unwrap();
    }
    p.stack.sim.set_subscription_write_limits(6, 100, window);
    tokio::time::sleep(window).await;
    let before = p.stack.sim.stats();
    let renewals_before = before.subscription_calls.get("renew").copied().unwrap_or(0);
    let p = &p;
    let renewed_by = |ids: Vec<String>| async move {
        let mut renewed = Vec::new();
        for id in ids {
            let sub = &p.stack.stored(&id).await.unwrap().subscriptions[0];
            if sub.expires_at.unwrap() - time::OffsetDateTime::now_utc() > time::Duration::days(6) {
                renewed.push(id);
            }
        }
        renewed
    };
    let all: Vec<String> = (0..desks.len()).map(|i| format!("desk{i}")).collect();
    let mut runs = Vec::new();
    let mut renewed = Vec::new();
    for _ in 0..12 {
        let report = run(json!({})).await;
        assert_eq!(report["full"], false, "{report}");
        assert_eq!(report["failed"], json!([]), "{report}");
        let now_renewed = renewed_by(all.clone()).await;
        let this_run: Vec<String> = now_renewed
            .iter()
            .filter(|x| !renewed.contains(*x))
            .cloned()
            .collect();
        // Only what was left is due: the run lists exactly those flows.
        assert_eq!(
            report["due"].as_u64(),
            Some((all.len() - renewed.len()) as u64),
            "{report}"
        );
        assert_eq!(
            report["renewed"].as_u64(),
            Some(this_run.len() as u64),
            "{report}"
        );
        runs.push(report);
        renewed = now_renewed;
        if renewed.len() == all.len() {
            break;
        }
    }
    assert_eq!(renewed.len(), all.len(), "every subscription renewed: {runs:?}");
    assert!(
        runs.len() > 1,
        "24 writes at 5 per 2 s cannot fit one 3-second run: {runs:?}"
    );
    assert!(
        runs[0]["paced"].as_u64().unwrap() + runs[0]["left"].as_u64().unwrap() > 0,
        "{:?}",
        runs[0]
    );
    let stats = p.stack.sim.stats();
    assert_eq!(
        stats.subscription_writes_refused, 0,
        "the pacer kept below Graph's limit"
    );
    assert_eq!(
        stats.subscription_calls.get("renew").copied().unwrap_or(0) - renewals_before,
        24,
        "each subscription renewed once"
    );
    let (tenant_max, _) = p
        .stack
        .sim
        .busiest_subscription_writes(window, before.subscription_writes.len());
    assert!(tenant_max <= 6, "{tenant_max} writes in one window");
}
