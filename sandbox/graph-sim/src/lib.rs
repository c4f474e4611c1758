//! A strict local simulator of the Microsoft identity platform v2 and of the
//! parts of Microsoft Graph relay365 uses, served over real HTTP on 127.0.0.1.
//!
//! It exists so tests and `make demo` exercise the same requests real
//! Microsoft receives, and it is deliberately as strict as Microsoft: token
//! requests must be form-encoded, redirect URIs must match exactly, codes are
//! single use and bound to their PKCE challenge, client assertions are
//! verified (RSA-PSS or RSA PKCS#1 signature against the registered
//! certificate, audience, issuer, lifetime), and every failure answers
//! Microsoft's error JSON with its AADSTS code. A lenient fake would hide the
//! bugs real Microsoft finds.
//!
//! Tests drive it through [`Sim`]: register apps and users, choose what the
//! next sign-in does, revoke grants, throttle Graph, and read request counts.
//! People (and the demo's walk-through) drive it over HTTP under `/_sim/`:
//! deliver a mail into a mailbox, read what was sent.

#![allow(clippy::result_large_err)]

mod body;
mod control;
mod delta;
mod graph;
mod identity;
mod list;
mod mail;
mod reply;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub use state::{
    App, AuthorizeOutcome, DEFAULT_ROLES, Event, Lifecycle, Message, NotificationPost, Recording, SentMail,
    Stats, SubscriptionWrite, User,
};
use state::{Shared, State, lock};

/// A running simulator. Dropping it stops the server.
pub struct Sim {
    state: Shared,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("addr", &self.addr).finish()
    }
}

/// The simulator could not start.
#[derive(Debug)]
pub struct StartError(pub std::io::Error);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the Graph simulator could not bind 127.0.0.1: {}", self.0)
    }
}

impl std::error::Error for StartError {}

impl Sim {
    /// Starts on a free port of 127.0.0.1, simulating the global cloud.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start() -> Result<Self, StartError> {
        Self::start_on(0, "https://graph.microsoft.com").await
    }

    /// Starts on `port` (0 for any), simulating the cloud whose Graph root is
    /// `graph_root` (scopes and `/.default` must be spelled with it).
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_on(port: u16, graph_root: &str) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(StartError)?;
        let addr = listener.local_addr().map_err(StartError)?;
        let state = Arc::new(Mutex::new(State::new(
            format!("http://{addr}"),
            graph_root.to_string(),
        )));
        let app = graph::with_middleware(
            axum::Router::new()
                .merge(identity::routes())
                .merge(graph::routes())
                .merge(control::routes()),
            state.clone(),
        )
        .with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            state,
            addr,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`: the value for `RELAY365_LOGIN_URL` and `RELAY365_GRAPH_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = lock(&self.state);
        f(&mut guard)
    }

    /// Registers an app (its home tenant counts as consented).
    pub fn register_app(&self, app: App) {
        self.with(|s| s.register_app(app));
    }

    /// The app's client secret passes its end date: the token endpoint
    /// answers `invalid_client` with AADSTS7000222 for it from now on.
    pub fn expire_client_secret(&self, secret: &str) {
        self.with(|s| s.expired_secrets.push(secret.to_string()));
    }

    /// Gives an app a new client secret (what the portal's "New client secret" does).
    pub fn set_client_secret(&self, client_id: &str, secret: &str) {
        self.with(|s| {
            if let Some(app) = s.apps.iter_mut().find(|a| a.client_id == client_id) {
                app.client_secret = Some(secret.to_string());
            }
        });
    }

    /// Adds a user who can sign in.
    pub fn add_user(&self, user: User) {
        self.with(|s| s.users.push(user));
    }

    /// Decides what the next authorize request does (default: the first user signs in and consents).
    pub fn set_authorize_outcome(&self, outcome: AuthorizeOutcome) {
        self.with(|s| s.authorize_outcome = outcome);
    }

    /// Decides what the next admin-consent request does (default: granted).
    pub fn set_admin_consent_outcome(&self, outcome: AuthorizeOutcome) {
        self.with(|s| s.admin_consent_outcome = outcome);
    }

    /// Makes the next token request fail with this OAuth error and AADSTS description.
    pub fn fail_next_token(&self, error: &str, aadsts: u32, message: &str) {
        self.with(|s| s.fail_next_token = Some((error.to_string(), aadsts, message.to_string())));
    }

    /// Revokes every refresh token of a user, as a password reset does;
    /// later refreshes fail with `invalid_grant` and this AADSTS code.
    pub fn revoke_refresh_tokens(&self, upn: &str, aadsts: u32) {
        self.with(|s| s.revoke_user(upn, aadsts));
    }

    /// Expires every access token now (as if an hour had passed).
    pub fn expire_access_tokens(&self) {
        self.with(|s| s.expire_access_tokens());
    }

    /// The next `count` Graph requests answer 429, with `Retry-After: retry_after` when given.
    pub fn throttle_graph(&self, count: u32, retry_after: Option<&str>) {
        self.with(|s| s.throttle = Some((count, retry_after.map(str::to_string))));
    }

    /// Graph's delta state expires: every message-delta and calendarView-delta
    /// link (nextLink or deltaLink) issued before this call answers
    /// `410 Gone` with `syncStateNotFound` from now on, and none of them ever
    /// works again. A new delta query (a first request, without a token)
    /// works and issues new links.
    pub fn expire_delta_links(&self) {
        self.with(State::expire_delta_links);
    }

    /// Whether message delta exists (true at start). Off, the simulator is
    /// the 21Vianet (China) cloud, which has no message delta: every
    /// `…/messages/delta` request answers `400 ErrorInvalidIdMalformed`
    /// "Id is malformed.", and a client must list messages by
    /// `receivedDateTime` instead. calendarView delta keeps working.
    pub fn set_message_delta_available(&self, available: bool) {
        self.with(|s| s.message_delta_available = available);
    }

    /// Counts of what reached the simulator.
    pub fn stats(&self) -> Stats {
        self.with(|s| s.stats.clone())
    }

    /// Which application permissions admin consent grants from now on (the
    /// `roles` of app-only tokens; [`DEFAULT_ROLES`] at start).
    pub fn set_granted_roles(&self, roles: &[&str]) {
        self.with(|s| s.granted_roles = roles.iter().map(|r| r.to_string()).collect());
    }

    /// Whether an admin has consented `client_id` in `tenant`.
    pub fn is_consented(&self, client_id: &str, tenant: &str) -> bool {
        self.with(|s| s.consented(client_id, tenant))
    }

    /// Puts a new message in a mailbox and notifies its subscriptions, as
    /// Exchange does when mail arrives. Returns the message id.
    pub fn deliver_message(&self, upn: &str, message: Message) -> String {
        deliver(&self.state, upn, message)
    }

    /// Delivers a message whose HTML body is `body_bytes` long (at least a
    /// few hundred bytes): a paragraph, then an inline image as base64 text,
    /// as large mail looks. Cheap to make at 25 to 50 MB. Returns the id.
    pub fn deliver_large_message(&self, upn: &str, body_bytes: usize) -> String {
        let message = Message {
            subject: format!("Scanned contract ({body_bytes} bytes)"),
            from: ("Bo".into(), "bo@example.org".into()),
            to: vec![(upn.to_string(), upn.to_string())],
            body_html: body::large_html(body_bytes),
            ..Default::default()
        };
        deliver(&self.state, upn, message)
    }

    /// Puts `n` old messages (received 30 days ago) in a mailbox's inbox
    /// without notifying: a large folder as a real mailbox has one.
    pub fn fill_inbox(&self, upn: &str, n: usize) {
        self.fill_folder(upn, "inbox", n);
    }

    /// Puts `n` old messages (received 30 days ago) in a folder, silently.
    pub fn fill_folder(&self, upn: &str, folder: &str, n: usize) {
        let received = (time::OffsetDateTime::now_utc() - time::Duration::days(30))
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.with(|s| {
            for i in 0..n {
                s.seq += 1;
                let seq = s.seq;
                s.mailboxes
                    .entry(upn.to_ascii_lowercase())
                    .or_default()
                    .messages
                    .push(Message {
                        id: format!("AAMkADold{folder}{i:08}"),
                        subject: format!("old {i}"),
                        received: received.clone(),
                        folder: "inbox".into(),
                        seq,
                        ..Default::default()
                    });
            }
        });
    }

    /// Someone edits a message (marks it read, changes a category): a change
    /// delta reports as an update, never as a new message.
    pub fn update_message(&self, upn: &str, id: &str) {
        self.change_message(upn, id, |m, seq| m.changed_seq = seq);
    }

    /// Applies a change to a message under the next sequence number.
    fn change_message(&self, upn: &str, id: &str, change: impl FnOnce(&mut Message, u64)) {
        self.with(|s| {
            let seq = s.next_seq();
            if let Some(m) = s.message_mut(upn, id) {
                change(m, seq);
            }
        });
    }

    /// Someone moves a message into another folder: Graph notifies that
    /// folder's subscriptions of a created message, and its delta shows one,
    /// with the message's old `receivedDateTime`.
    pub fn move_message(&self, upn: &str, id: &str, folder: &str) {
        self.move_silently(upn, id, folder);
        graph::notify_change(&self.state, upn, false, folder, "created", id);
    }

    fn move_silently(&self, upn: &str, id: &str, folder: &str) {
        self.change_message(upn, id, |m, seq| {
            m.folder = folder.to_string();
            m.seq = seq;
            m.changed_seq = seq;
        });
    }

    /// Shows a consent page at authorize (for a person in a browser) instead
    /// of consenting at once (for tests).
    pub fn set_interactive_consent(&self, on: bool) {
        self.with(|s| s.interactive_consent = on);
    }

    /// Creates a calendar event and notifies. Returns its id.
    pub fn create_event(&self, upn: &str, mut event: Event) -> String {
        if event.id.is_empty() {
            event.id = format!("AAMkEv{}", uuid::Uuid::new_v4().simple());
        }
        event.change_key = new_change_key();
        self.with(|s| {
            s.seq += 1;
            event.changed_seq = s.seq;
            s.mailboxes
                .entry(upn.to_ascii_lowercase())
                .or_default()
                .events
                .push(event.clone())
        });
        graph::notify_change(&self.state, upn, true, "", "created", &event.id);
        event.id
    }

    /// Changes a calendar event and notifies `updated`.
    pub fn update_event(&self, upn: &str, id: &str, change: impl FnOnce(&mut Event)) {
        self.with(|s| {
            let seq = s.next_seq();
            if let Some(e) = s.event_mut(upn, id) {
                change(e);
                e.change_key = new_change_key();
                e.changed_seq = seq;
            }
        });
        graph::notify_change(&self.state, upn, true, "", "updated", id);
    }

    /// Deletes a calendar event and notifies `deleted`.
    pub fn delete_event(&self, upn: &str, id: &str) {
        self.with(|s| {
            let seq = s.next_seq();
            if let Some(m) = s.mailbox_mut(upn) {
                m.events.retain(|e| e.id != id);
                m.removed_events.push((id.to_string(), seq));
            }
        });
        graph::notify_change(&self.state, upn, true, "", "deleted", id);
    }

    /// Sends a lifecycle notification to a subscription's lifecycle URL
    /// (`SubscriptionRemoved` also deletes it). False when there is no such subscription.
    pub fn send_lifecycle(&self, subscription_id: &str, event: Lifecycle) -> bool {
        graph::lifecycle(&self.state, subscription_id, event)
    }

    /// Sends every notification twice from now on, as Graph sometimes does.
    pub fn set_duplicate_notifications(&self, on: bool) {
        self.with(|s| s.duplicate_notifications = on);
    }

    /// Stops sending notifications (mail still arrives): what `missed` is about.
    pub fn set_drop_notifications(&self, on: bool) {
        self.with(|s| s.drop_notifications = on);
    }

    /// The base URL the identity discovery document advertises
    /// (`/{tenant}/v2.0/.well-known/openid-configuration`), for callers that
    /// reach the simulator through a proxy on another URL.
    pub fn set_advertised_url(&self, url: &str) {
        self.with(|s| s.advertised_url = Some(url.trim_end_matches('/').to_string()));
    }

    /// Keeps change notifications instead of sending them (`on`), so a caller
    /// can hand each one over itself ([`Sim::take_held_notifications`]): the
    /// benchmarks post them to a function started just for that.
    pub fn hold_notifications(&self, on: bool) {
        self.with(|s| s.held_notifications = on.then(Vec::new));
    }

    /// The notifications held since the last call: (notification URL, the
    /// JSON body Graph would have POSTed there).
    pub fn take_held_notifications(&self) -> Vec<(String, serde_json::Value)> {
        self.with(|s| {
            s.held_notifications
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
    }

    /// Starts (`true`) or stops logging every subscription write and
    /// notification POST with its time ([`Recording`]); starting clears the log.
    pub fn set_recording(&self, on: bool) {
        self.with(|s| s.recording = on.then(Recording::default));
    }

    /// What was logged since recording started, leaving the log empty.
    pub fn take_recording(&self) -> Recording {
        self.with(|s| s.recording.as_mut().map(std::mem::take).unwrap_or_default())
    }

    /// Graph "forgets" to notify this fraction of changes (0.0 to 1.0) and
    /// sends nothing else for them, as users see in the field; the forgotten
    /// item ids are in [`Stats::forgotten`].
    pub fn set_drop_fraction(&self, fraction: f64) {
        self.with(|s| {
            s.drop_per_mille = (fraction.clamp(0.0, 1.0) * 1000.0).round() as u32;
            s.drop_counter = 0;
        });
    }

    /// The subscriptions that exist: (id, mailbox, resource, expiry).
    pub fn subscriptions(&self) -> Vec<(String, String, String, time::OffsetDateTime)> {
        self.with(|s| {
            s.subscriptions
                .values()
                .map(|x| (x.id.clone(), x.mailbox.clone(), x.resource.clone(), x.expires))
                .collect()
        })
    }

    /// Deletes a subscription without telling anyone (as Graph does when it gives up on one).
    pub fn remove_subscription_silently(&self, id: &str) {
        self.with(|s| s.subscriptions.remove(id));
    }

    /// Sets Graph's subscription write limits: creates and renewals per
    /// `window`, per tenant and across tenants (Graph: 500 and 2,000 per 20 s).
    pub fn set_subscription_write_limits(
        &self,
        per_tenant: usize,
        per_app: usize,
        window: std::time::Duration,
    ) {
        self.with(|s| s.write_limits = (per_tenant, per_app, window));
    }

    /// The most subscription writes Graph accepted in any `window`: per
    /// tenant (the busiest) and across tenants, counting from the `from`-th
    /// write on (`Stats::subscription_writes`).
    pub fn busiest_subscription_writes(&self, window: std::time::Duration, from: usize) -> (usize, usize) {
        let writes: Vec<(std::time::Duration, String)> =
            self.with(|s| s.stats.subscription_writes.iter().skip(from).cloned().collect());
        let mut tenant_max = 0;
        let mut app_max = 0;
        for (start, _) in &writes {
            let inside: Vec<&(std::time::Duration, String)> = writes
                .iter()
                .filter(|(t, _)| *t >= *start && *t < *start + window)
                .collect();
            app_max = app_max.max(inside.len());
            let mut per: HashMap<&str, usize> = HashMap::new();
            for (_, tenant) in &inside {
                *per.entry(tenant.as_str()).or_default() += 1;
            }
            tenant_max = tenant_max.max(per.values().copied().max().unwrap_or(0));
        }
        (tenant_max, app_max)
    }

    /// Makes every Graph request take at least this long (to make concurrency visible).
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.with(|s| s.latency = latency);
    }

    /// Every message sent so far.
    pub fn sent(&self) -> Vec<SentMail> {
        self.with(|s| s.sent.clone())
    }

    /// The next send (`sendMail`, `reply` or a draft's `send`) that Graph
    /// accepts is carried out (the mail reaches its recipients and the
    /// sender's Sent Items) and then its `202` waits `stall` before it is
    /// answered: a client whose deadline is shorter sees a timeout for a
    /// mail that went out, as when Graph's answer is lost.
    pub fn stall_next_send_answer(&self, stall: std::time::Duration) {
        self.with(|s| s.send_faults.stall_next_answer = Some(stall));
    }

    /// The next send (`sendMail`, `reply` or a draft's `send`) is refused
    /// with this status and Graph error, and nothing is sent (a `503` or
    /// `504` is a gateway that never passed it on; a draft stays a draft).
    pub fn fail_next_send(&self, status: u16, code: &str, message: &str) {
        self.with(|s| s.send_faults.refuse_next = Some((status, code.to_string(), message.to_string())));
    }

    /// The ids of a mailbox's drafts (not yet sent, not deleted).
    pub fn drafts(&self, upn: &str) -> Vec<String> {
        self.with(|s| {
            s.drafts
                .iter()
                .filter(|(_, d)| d.mailbox.eq_ignore_ascii_case(upn))
                .map(|(id, _)| id.clone())
                .collect()
        })
    }

    /// The messages of a mailbox's folder (`inbox`, `sentitems`, …), in order of arrival.
    pub fn folder_messages(&self, upn: &str, folder: &str) -> Vec<Message> {
        self.with(|s| {
            s.mailboxes
                .get(&upn.to_ascii_lowercase())
                .map(|m| {
                    m.messages
                        .iter()
                        .filter(|x| x.folder.eq_ignore_ascii_case(folder))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Gives `user` Send As rights on `address` (an Exchange admin's job).
    pub fn grant_send_as(&self, user: &str, address: &str) {
        self.with(|s| {
            s.send_as
                .insert((user.to_ascii_lowercase(), address.to_ascii_lowercase()))
        });
    }

    /// The largest upload range received so far, in bytes.
    pub fn max_upload_chunk(&self) -> usize {
        self.with(|s| s.max_upload_chunk)
    }

    /// Every access and refresh token the simulator issued so far, to search logs for.
    pub fn issued_secrets(&self) -> Vec<String> {
        self.with(|s| s.issued_secrets())
    }
}

/// Organisations and their users' directory attributes: what a tenant's
/// administrator controls (and so what proves nothing about who signed in).
impl Sim {
    /// Sets a user's `mail` attribute (`None`: no mail); by default it is the
    /// UPN. Any organisation's administrator can set it to any address.
    pub fn set_user_mail(&self, upn: &str, mail: Option<&str>) {
        self.with(|s| {
            s.profiles.entry(upn.to_ascii_lowercase()).or_default().mail = Some(mail.map(str::to_string));
        });
    }

    /// Sets a user's `proxyAddresses` (`SMTP:` primary, `smtp:` aliases); by
    /// default `["SMTP:{upn}"]`.
    pub fn set_proxy_addresses(&self, upn: &str, addresses: &[&str]) {
        self.with(|s| {
            s.profiles
                .entry(upn.to_ascii_lowercase())
                .or_default()
                .proxy_addresses = Some(addresses.iter().map(|a| a.to_string()).collect());
        });
    }

    /// Makes `domain` a verified domain of `tenant` (the domains of the users'
    /// UPNs are verified domains of their tenants already): its OpenID
    /// discovery document names that tenant.
    pub fn add_domain(&self, domain: &str, tenant: &str) {
        self.with(|s| {
            s.domains.retain(|(d, _)| !d.eq_ignore_ascii_case(domain));
            s.domains.push((domain.to_ascii_lowercase(), tenant.to_string()));
        });
    }
}

/// Puts `message` in `upn`'s mailbox and notifies its subscriptions (the
/// body of [`Sim::deliver_message`], shared with the `/_sim` control routes).
pub(crate) fn deliver(state: &Shared, upn: &str, mut message: Message) -> String {
    let (id, folder) = {
        let mut s = lock(state);
        s.seq += 1;
        message.seq = s.seq;
        message.changed_seq = s.seq;
        if message.id.is_empty() {
            message.id = format!("AAMkAD{}", uuid::Uuid::new_v4().simple());
        }
        if message.internet_message_id.is_empty() {
            message.internet_message_id = format!("<{}@sim.example>", uuid::Uuid::new_v4().simple());
        }
        if message.conversation_id.is_empty() {
            message.conversation_id = format!("AAQkAD{}", uuid::Uuid::new_v4().simple());
        }
        if message.received.is_empty() {
            message.received = reply::now_rfc3339();
        }
        if message.folder.is_empty() {
            message.folder = "inbox".into();
        }
        let delivered = (message.id.clone(), message.folder.clone());
        let mbox = s.mailboxes.entry(upn.to_ascii_lowercase()).or_default();
        // Serialised once, here: every GET of it streams these bytes.
        body::keep(mbox, &message.id, &message.body_html);
        mbox.messages.push(message);
        delivered
    };
    graph::notify_change(state, upn, false, &folder, "created", &id);
    id
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Pending resends end at their next attempt (within a minute),
        // not up to 4 hours later in a runtime that outlives the simulator.
        lock(&self.state).stopped = true;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A fresh `changeKey`, in the base64 shape Graph gives them.
fn new_change_key() -> String {
    format!("CQAAABYAAAD{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}
