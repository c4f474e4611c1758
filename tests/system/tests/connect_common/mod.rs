//! What the Amazon Connect suites (`connect-task:` and `connect-email:`
//! targets) share: the pipeline whose dispatch reaches the strict Connect
//! fake through the real SDK client, the sign-in of the `support`
//! connection, and the scenes both kinds of target must pass alike (a
//! duplicate notification with a crash, throttling, a target Connect does
//! not know yet, targets the admin API refuses), each told which kind of
//! contact it counts.
use std::sync::{Arc, Mutex};

use connect_fake::{Contact, Fake};
use graph_sim::Message;
use mail_dispatch::Dispatcher;
use relay365_harness::*;
use serde_json::{Value, json};

use crate::common;

/// The Connect instance the fake has.
pub(crate) const INSTANCE: &str = "11111111-2222-3333-4444-555555555555";
/// The published inbound flow of [`INSTANCE`].
pub(crate) const FLOW: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

/// What differs between the suites' pipelines.
pub(crate) struct Setup {
    /// The name [`FLOW`] has in the fake.
    pub(crate) flow_name: &'static str,
    /// The bucket dispatch stages attachments in: made in moto and named to
    /// the containers (`RELAY365_ATTACHMENTS_BUCKET`).
    pub(crate) bucket: Option<&'static str>,
    /// Whether the mailbox's own address is an email address of the
    /// instance (`email-support`, to [`FLOW`]).
    pub(crate) mailbox_address: bool,
}

/// The pipeline: the simulator's notifications through the webhook and the
/// queue to dispatch (its own container), which starts contacts in the fake.
pub(crate) struct Pipe {
    /// The stack.
    pub(crate) stack: Arc<Stack>,
    /// The notification queue and its event source.
    pub(crate) fifo: Fifo,
    _gateway: Gateway,
    /// Dispatch, with the fake's Connect client.
    pub(crate) dispatcher: Dispatcher,
    /// The Connect fake: what it started and what it refused.
    pub(crate) fake: Fake,
}

impl Pipe {
    /// Starts the pipeline as `setup` says.
    pub(crate) async fn start(setup: Setup) -> Self {
        let env = setup
            .bucket
            .map(|b| ("RELAY365_ATTACHMENTS_BUCKET", b.to_string()))
            .into_iter()
            .collect();
        let front = common::Front::start(env, false).await;
        let fake = Fake::start().await;
        fake.add_instance(INSTANCE);
        fake.add_flow(INSTANCE, FLOW, setup.flow_name);
        if setup.mailbox_address {
            fake.add_email_address(INSTANCE, "email-support", UPN, Some(FLOW));
        }
        let connect = aws_sdk_connect::Client::new(&relay365_testkit::sdk_config(&fake.url()).await);
        let mut dispatcher = front.dispatcher(false).await.with_connect(connect);
        if let Some(bucket) = setup.bucket {
            dispatcher = dispatcher.with_s3(front.stack.s3_with_bucket(bucket).await);
        }
        Self {
            stack: front.stack,
            fifo: front.fifo,
            _gateway: front.gateway,
            dispatcher,
            fake,
        }
    }

    /// Creates the delegated connection `support` with these flows and
    /// scopes and signs in.
    pub(crate) async fn connect(&self, subs: Value, scopes: Value) {
        let body = json!({"id": "support", "auth": "delegated", "scopes": scopes, "subscriptions": subs});
        let link = common::create_connection(&self.stack, &body, "connect_url").await;
        let (status, page) = common::sign_in_page(&self.stack, &link).await;
        assert_eq!(status, 200, "{page}");
    }

    /// Runs the event source until `n` contacts were started (or a while
    /// passed), then a little longer, so anything extra would show.
    pub(crate) async fn pump_until_contacts(&self, n: usize) -> Vec<Contact> {
        common::pump_until(&self.fifo, &self.dispatcher, n, || self.fake.contacts()).await
    }

    /// The flow `support` has (its first subscription), read fresh.
    pub(crate) async fn flow(&self) -> relay365::model::connection::Subscription {
        self.stack.stored("support").await.unwrap().subscriptions[0].clone()
    }

    /// Graph sends the notification of `m` twice: one `what` (task, contact)
    /// is started. Then a crash after Connect started it and before the
    /// ledger held it: the ledger entry is gone, and the record dispatch got
    /// comes back; the retry finds the contact by its ClientToken and starts
    /// none. Returns the ledger key of the mail's delivery.
    pub(crate) async fn duplicate_and_crash_start_one(&self, m: Message, what: &str) -> String {
        let key = self.flow().await.key;
        self.stack.sim.set_duplicate_notifications(true);
        let id = self.stack.sim.deliver_message(UPN, m);
        assert!(common::accepted_twice(&self.stack).await);
        self.stack.sim.set_duplicate_notifications(false);
        // The record is kept as dispatch got it, to be processed again below.
        let kept = Mutex::new(None);
        for _ in 0..50 {
            self.fifo
                .pump(|e| {
                    kept.lock().unwrap().get_or_insert_with(|| e.clone());
                    mail_dispatch::handle(e, &self.dispatcher)
                })
                .await;
            if !self.fake.contacts().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let contacts = self.pump_until_contacts(2).await;
        assert_eq!(contacts.len(), 1, "Graph sent it twice; one {what}: {contacts:?}");
        let first = contacts[0].contact_id.clone();

        let ledger_key = format!("f#{key}#{id}");
        assert!(
            self.forget_ledger_entry(&format!("dlv#{ledger_key}")).await,
            "the ledger held the delivery"
        );
        let record = kept.lock().unwrap().take().expect("a record was dispatched");
        let again = mail_dispatch::handle(record, &self.dispatcher).await;
        assert!(again.batch_item_failures.is_empty(), "{again:?}");
        let contacts = self.fake.contacts();
        assert_eq!(contacts.len(), 1, "the retry found its {what} by its ClientToken");
        assert_eq!(contacts[0].contact_id, first);
        assert!(self.fake.refused().is_empty(), "{:?}", self.fake.refused());
        assert!(self.flow().await.last_delivery_error.is_none());
        ledger_key
    }

    /// `first` starts a contact; then the `later` mails arrive, each starting
    /// its own. Those `related` (named as `name` reads a contact) are
    /// related to `first`'s contact, those `unrelated` to none. Returns the
    /// contacts.
    pub(crate) async fn later_mails_relate(
        &self,
        first: Message,
        later: Vec<Message>,
        name: impl Fn(&Contact) -> &str,
        related: &[&str],
        unrelated: &[&str],
    ) -> Vec<Contact> {
        let first_name = first.subject.clone();
        self.stack.sim.deliver_message(UPN, first);
        assert_eq!(self.pump_until_contacts(1).await.len(), 1);
        let n = 1 + later.len();
        for m in later {
            self.stack.sim.deliver_message(UPN, m);
        }
        let contacts = self.pump_until_contacts(n).await;
        assert_eq!(contacts.len(), n, "{contacts:?}");
        let by_name = |n: &str| contacts.iter().find(|c| name(c) == n).unwrap();
        let first = by_name(&first_name).contact_id.clone();
        for r in related {
            assert_eq!(
                by_name(r).related_contact_id.as_deref(),
                Some(first.as_str()),
                "{r}: every later mail is related to the conversation's first contact"
            );
        }
        for u in unrelated {
            assert_eq!(by_name(u).related_contact_id, None, "{u}");
        }
        assert!(self.fake.refused().is_empty(), "{:?}", self.fake.refused());
        contacts
    }

    /// Deletes the ledger item `sk` of `support` straight in DynamoDB, as a
    /// crash before it was written would leave it; whether it was there.
    pub(crate) async fn forget_ledger_entry(&self, sk: &str) -> bool {
        use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
        let dynamo = aws_sdk_dynamodb::Client::new(&self.stack.aws.sdk_config().await);
        dynamo
            .delete_item()
            .table_name(STATE_TABLE)
            .key("pk", AttributeValue::S("conn#support".into()))
            .key("sk", AttributeValue::S(sk.into()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .unwrap()
            .attributes()
            .is_some()
    }

    /// Connect throttles the next three calls, more than the SDK's own
    /// attempts: the record itself comes back, `m` ends in exactly one
    /// contact and the flow's error is cleared.
    pub(crate) async fn throttled_thrice_starts_one(&self, m: Message) {
        self.fake.throttle_next(3);
        self.stack.sim.deliver_message(UPN, m);
        let contacts = self.pump_until_contacts(1).await;
        assert_eq!(contacts.len(), 1, "{contacts:?}");
        let refused = self.fake.refused();
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused.iter().all(|r| r.error == "ThrottlingException"));
        let flow = self.flow().await;
        assert_eq!(flow.last_delivery_error, None, "cleared by the delivery");
    }

    /// `support` flows to `target`, which Connect does not have: the
    /// subscription says why nothing arrives (naming each of `says`) and the
    /// mail `m` is kept; once `create` made it, the kept record starts its
    /// contact, once. Returns the contacts then.
    pub(crate) async fn unknown_target_keeps_the_mail(
        &self,
        target: &str,
        scopes: Value,
        m: Message,
        says: &[&str],
        create: impl FnOnce(&Fake),
    ) -> Vec<Contact> {
        self.connect(json!([{"resource": "mail", "target": target}]), scopes)
            .await;
        self.stack.sim.deliver_message(UPN, m);
        let mut error = None;
        for _ in 0..50 {
            self.fifo
                .pump(|e| mail_dispatch::handle(e, &self.dispatcher))
                .await;
            error = self.flow().await.last_delivery_error;
            if error.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let error = error.expect("the subscription says why nothing arrives");
        for words in says {
            assert!(error.contains(words), "{error}");
        }
        assert!(self.fake.contacts().is_empty());
        assert!(
            self.fake
                .refused()
                .iter()
                .all(|r| r.error == "ResourceNotFoundException")
        );
        create(&self.fake);
        let contacts = self.pump_until_contacts(1).await;
        assert_eq!(contacts.len(), 1, "{contacts:?}");
        assert_eq!(self.flow().await.last_delivery_error, None);
        assert_eq!(self.fifo.dead_letters().await, 0);
        contacts
    }

    /// The admin API refuses a mail flow to each of the `malformed` targets
    /// (saying its words) and a calendar flow to `target`; nothing reaches
    /// Connect.
    pub(crate) async fn admin_refuses(&self, malformed: &[(String, &str)], target: &str) {
        let add = |body: Value| async move {
            let resp = connections::handle(
                request(
                    "POST",
                    "/connections/support/subscriptions",
                    Some(&body.to_string()),
                    &[],
                ),
                &self.stack.services,
            )
            .await;
            (resp.status().as_u16(), body_text(&resp))
        };
        for (bad, words) in malformed {
            let (status, text) = add(json!({"resource": "mail", "target": bad})).await;
            assert_eq!(status, 400, "{bad}: {text}");
            assert!(text.contains(words), "{bad}: {text}");
        }
        let (status, text) = add(json!({"resource": "calendar", "target": target})).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("calendar changes cannot go there"), "{text}");
        assert!(self.fake.contacts().is_empty());
        assert!(self.fake.refused().is_empty());
    }
}
