//! The simulator's memory: registered apps, users, issued codes and tokens,
//! what the next request should do, and counters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// An app registration.
#[derive(Debug, Clone, Default)]
pub struct App {
    /// Application (client) id.
    pub client_id: String,
    /// The tenant it is registered in (consented there from the start).
    pub home_tenant: String,
    /// Its client secret, if it has one.
    pub client_secret: Option<String>,
    /// The DER of its uploaded certificate, if it has one.
    pub certificate_der: Option<Vec<u8>>,
    /// Registered Web redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
}

/// A user who can sign in.
#[derive(Debug, Clone, Default)]
pub struct User {
    /// Object id.
    pub id: String,
    /// User principal name (also the mail address).
    pub upn: String,
    /// Display name.
    pub display_name: String,
    /// Tenant id.
    pub tenant: String,
}

/// What the next sign-in (or admin consent) does.
#[derive(Debug, Clone, Default)]
pub enum AuthorizeOutcome {
    /// The first registered user signs in and consents.
    #[default]
    Consent,
    /// This user (by UPN) signs in and consents.
    ConsentAs(String),
    /// Microsoft redirects back with an error (or, when `redirect` is false,
    /// shows its own error page and never redirects, as for AADSTS50011).
    Error {
        /// The OAuth error (`access_denied`, `invalid_request`, …).
        error: String,
        /// The AADSTS number (0 for none).
        aadsts: u32,
        /// The message after the code.
        message: String,
        /// Admin consent only: also send `admin_consent=True`, as Microsoft sometimes does on errors.
        admin_consent_flag: bool,
    },
}

/// A message in a simulated mailbox.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Graph id (set by the simulator when empty).
    pub id: String,
    /// RFC 5322 Message-ID.
    pub internet_message_id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// Subject.
    pub subject: String,
    /// Sender (name, address).
    pub from: (String, String),
    /// To recipients.
    pub to: Vec<(String, String)>,
    /// Cc recipients.
    pub cc: Vec<(String, String)>,
    /// HTML body.
    pub body_html: String,
    /// Attachments (name, content type, size).
    pub attachments: Vec<(String, String, u64)>,
    /// The bytes of the attachments, by position; an attachment without
    /// them is served as `size` bytes made from its name.
    pub attachment_bytes: Vec<Vec<u8>>,
    /// Internet headers besides those the simulator writes itself
    /// (`Message-ID`, `From`, `To`, `Subject`, `Date`), e.g. `In-Reply-To`
    /// and `References` of a reply: (name, value).
    pub headers: Vec<(String, String)>,
    /// A draft (`isDraft`): a message created in a folder without
    /// `PidTagMessageFlags` stays one, as Graph creates it.
    pub is_draft: bool,
    /// Received time (RFC 3339; set by the simulator when empty).
    pub received: String,
    /// Folder (`inbox` by default).
    pub folder: String,
    /// Order of arrival (set by the simulator).
    pub seq: u64,
    /// The last change to it (arrival, an edit, a move), in the same order.
    pub changed_seq: u64,
    /// Its single-value extended properties: (property id, value).
    pub extended_properties: Vec<(String, String)>,
}

/// A calendar event in a simulated mailbox.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// Graph id (set by the simulator when empty).
    pub id: String,
    /// Subject.
    pub subject: String,
    /// Organizer (name, address).
    pub organizer: (String, String),
    /// Attendees (name, address).
    pub attendees: Vec<(String, String)>,
    /// Start (local date-time, e.g. `2026-11-23T09:00:00.0000000`).
    pub start: String,
    /// End.
    pub end: String,
    /// Time zone of start and end.
    pub time_zone: String,
    /// Location display name.
    pub location: String,
    /// Teams or other online meeting URL.
    pub online_meeting_url: Option<String>,
    /// Cancelled.
    pub is_cancelled: bool,
    /// Graph's `changeKey`: a new one with every change (the simulator sets it).
    pub change_key: String,
    /// The last change to it, in the mailbox's order (the simulator sets it).
    pub changed_seq: u64,
}

/// A message the simulator sent, as Graph would have put it on the wire.
#[derive(Debug, Clone, Default)]
pub struct SentMail {
    /// The mailbox whose sendMail (or send) was called.
    pub mailbox: String,
    /// `from`, when set (send as / on behalf).
    pub from: Option<String>,
    /// Recipients.
    pub to: Vec<String>,
    /// Cc.
    pub cc: Vec<String>,
    /// Bcc.
    pub bcc: Vec<String>,
    /// Reply-To.
    pub reply_to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// `text` or `html`.
    pub content_type: String,
    /// Body.
    pub body: String,
    /// Attachments: name, content type, bytes (reassembled from upload sessions).
    pub attachments: Vec<(String, String, Vec<u8>)>,
    /// Whether a copy was saved to Sent Items.
    pub save_to_sent_items: bool,
    /// For replies: the message replied to.
    pub in_reply_to: Option<String>,
    /// The message's single-value extended properties: (property id, value).
    pub extended_properties: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Draft {
    pub(crate) mailbox: String,
    pub(crate) message: serde_json::Value,
    pub(crate) attachments: Vec<(String, String, Vec<u8>)>,
    pub(crate) in_reply_to: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub(crate) draft: String,
    pub(crate) name: String,
    pub(crate) content_type: String,
    pub(crate) size: u64,
    pub(crate) bytes: Vec<u8>,
    pub(crate) token: String,
}

/// A lifecycle event Graph can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// `reauthorizationRequired`.
    ReauthorizationRequired,
    /// `subscriptionRemoved` (the simulator also deletes the subscription).
    SubscriptionRemoved,
    /// `missed`.
    Missed,
}

#[derive(Debug, Clone)]
pub(crate) struct SimSubscription {
    pub(crate) id: String,
    pub(crate) app_id: String,
    /// The tenant of the token that created it.
    pub(crate) tenant: String,
    pub(crate) mailbox: String,
    pub(crate) events: bool,
    pub(crate) folder: String,
    pub(crate) change_types: Vec<String>,
    pub(crate) notification_url: String,
    pub(crate) lifecycle_url: Option<String>,
    pub(crate) client_state: Option<String>,
    pub(crate) resource: String,
    pub(crate) expires: time::OffsetDateTime,
}

/// A delta query's state, kept behind the opaque token of a nextLink or deltaLink.
#[derive(Debug, Clone)]
pub(crate) struct DeltaLink {
    /// The mailbox (lowercase).
    pub(crate) upn: String,
    pub(crate) scope: DeltaScope,
    /// Changes after this sequence number.
    pub(crate) since: u64,
    /// Within a round (a nextLink): the round's last sequence number and
    /// where the next page starts.
    pub(crate) page: Option<(u64, u64)>,
}

/// What a delta query tracks, with the first request's parameters.
#[derive(Debug, Clone)]
pub(crate) enum DeltaScope {
    Messages {
        folder: String,
        /// `receivedDateTime ge|gt` as (strict, unix seconds).
        received: Option<(bool, i64)>,
        /// `changeType=created`: new messages only.
        created_only: bool,
    },
    Calendar {
        from: String,
        to: String,
    },
}

#[derive(Default)]
pub(crate) struct Mailbox {
    pub(crate) messages: Vec<Message>,
    pub(crate) events: Vec<Event>,
    /// Deleted events (id, the change's sequence number), for calendar delta.
    pub(crate) removed_events: Vec<(String, u64)>,
    /// Message bodies serialised once, by message id.
    pub(crate) bodies: HashMap<String, Served>,
}

/// A body serialised once: the JSON string of its HTML and its preview.
#[derive(Clone)]
pub(crate) struct Served {
    /// `"<html>…"`: the content as a JSON string, quotes included.
    pub(crate) content: Bytes,
    /// Graph's `bodyPreview`: the first 255 characters of text.
    pub(crate) preview: String,
}

impl Served {
    /// `html` serialised, with its preview.
    pub(crate) fn of(html: &str) -> Self {
        Self {
            content: Bytes::from(serde_json::to_vec(html).unwrap_or_default()),
            preview: preview(html),
        }
    }
}

/// The first 255 characters of text outside tags (stops there, so a long
/// body costs nothing more).
fn preview(html: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut n = 0;
    for c in html.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => {
                out.push(c);
                n += 1;
                if n == 255 {
                    break;
                }
            }
            _ => {}
        }
    }
    out
}

/// What the next sends (`sendMail`, `reply`, a draft's `send`) do instead of
/// answering at once; each is used once.
#[derive(Debug, Default)]
pub(crate) struct SendFaults {
    /// The next send is refused with (status, code, message), and nothing is sent.
    pub(crate) refuse_next: Option<(u16, String, String)>,
    /// The next send that is accepted is carried out, then its answer waits this long.
    pub(crate) stall_next_answer: Option<Duration>,
}

/// What the simulator logs while recording ([`crate::Sim::set_recording`]).
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Every subscription write (create, renew, delete), as Graph counts
    /// them against its per-tenant and per-app limits.
    pub subscription_writes: Vec<SubscriptionWrite>,
    /// Every change-notification POST and how its receiver answered.
    pub notification_posts: Vec<NotificationPost>,
}

/// One `POST`, `PATCH` or `DELETE` of `/subscriptions`.
#[derive(Debug, Clone)]
pub struct SubscriptionWrite {
    /// When it reached the simulator.
    pub at: std::time::SystemTime,
    /// `create`, `renew` or `delete`.
    pub kind: &'static str,
    /// The mailbox's tenant (empty when the subscription was unknown).
    pub tenant: String,
    /// The calling app's client id.
    pub app_id: String,
}

/// One change-notification POST to a notification URL.
#[derive(Debug, Clone)]
pub struct NotificationPost {
    /// The changed item's Graph id (`resourceData.id`).
    pub item_id: String,
    /// When the POST started.
    pub sent_at: std::time::SystemTime,
    /// How long until its answer (or until it gave up after 3 s).
    pub answered_after: std::time::Duration,
    /// The status it got (0: no answer).
    pub status: u16,
}

/// Counts of requests that reached the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests to the token endpoint, of any kind.
    pub token_requests: u32,
    /// Token requests by `grant_type`.
    pub by_grant: BTreeMap<String, u32>,
    /// Requests to the authorize endpoint.
    pub authorize_requests: u32,
    /// Requests to the admin-consent endpoint.
    pub admin_consent_requests: u32,
    /// Requests to Graph (`/v1.0/…`).
    pub graph_requests: u32,
    /// Graph requests answered 429.
    pub throttled: u32,
    /// Validation handshakes sent, and how many were answered correctly.
    pub handshakes: (u32, u32),
    /// Notification POSTs sent and the status each got (0: no answer).
    pub notification_statuses: Vec<u16>,
    /// Subscriptions created, renewed (PATCH), deleted, reauthorized, and
    /// list pages read (`list`).
    pub subscription_calls: BTreeMap<String, u32>,
    /// Refresh-token requests that presented a revoked refresh token.
    pub revoked_refresh_uses: u32,
    /// Changes Graph "forgot" to notify (a drop fraction was set), by item id.
    pub forgotten: Vec<String>,
    /// Delta requests answered `410 Gone`: their link had expired or was never issued.
    pub delta_links_gone: u32,
    /// Message delta requests refused because the cloud has none
    /// ([`crate::Sim::set_message_delta_available`]).
    pub message_delta_refused: u32,
    /// Subscription creates answered `409 Conflict` because the same app
    /// already had a live subscription with the same `changeType` and `resource`.
    pub subscription_conflicts: u32,
    /// Subscription creates and renewals answered `429` because the app
    /// passed Graph's write limit (per tenant, or across tenants).
    pub subscription_writes_refused: u32,
    /// Every subscription create or renewal Graph accepted: when (since the
    /// simulator started) and in which tenant, to check a caller's pacing.
    pub subscription_writes: Vec<(Duration, String)>,
    /// The most mailboxes that had a Graph request in flight at the same
    /// moment: above one, a caller worked on mailboxes side by side.
    pub peak_mailboxes_busy: u32,
}

pub(crate) struct Code {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) upn: String,
    pub(crate) tenant: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) challenge: Option<(String, String)>,
    pub(crate) issued: Instant,
    pub(crate) used: bool,
}

pub(crate) struct Refresh {
    pub(crate) client_id: String,
    pub(crate) upn: String,
    pub(crate) tenant: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) revoked: Option<u32>,
}

/// What an admin consent grants by default: the application permissions
/// `infra/app-manifest.json` requests.
pub const DEFAULT_ROLES: [&str; 4] = ["Mail.Read", "Mail.ReadWrite", "Mail.Send", "Calendars.Read"];

#[derive(Clone)]
pub(crate) enum Subject {
    User(String),
    App(String),
}

#[derive(Clone)]
pub(crate) struct Access {
    pub(crate) subject: Subject,
    pub(crate) tenant: String,
    pub(crate) expires: Instant,
}

/// The simulator's memory as its routes and the [`crate::Sim`] handle share it.
pub(crate) type Shared = Arc<Mutex<State>>;

/// The memory, locked. A request that panicked while holding the lock
/// leaves it poisoned; the simulator goes on with the memory as it was, as
/// one failed request must not fail every later one.
pub(crate) fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct State {
    pub(crate) base_url: String,
    /// The base URL discovery documents advertise, when callers reach the
    /// simulator through a proxy (TLS on another port); `base_url` otherwise.
    pub(crate) advertised_url: Option<String>,
    pub(crate) graph_root: String,
    pub(crate) apps: Vec<App>,
    pub(crate) users: Vec<User>,
    pub(crate) consents: HashSet<(String, String)>,
    /// The application permissions an admin consent grants (the `roles` of app-only tokens).
    pub(crate) granted_roles: Vec<String>,
    pub(crate) codes: HashMap<String, Code>,
    pub(crate) refresh_tokens: HashMap<String, Refresh>,
    pub(crate) access_tokens: HashMap<String, Access>,
    pub(crate) seen_jti: HashSet<String>,
    pub(crate) authorize_outcome: AuthorizeOutcome,
    pub(crate) admin_consent_outcome: AuthorizeOutcome,
    pub(crate) fail_next_token: Option<(String, u32, String)>,
    /// Client secrets that have passed their end date (AADSTS7000222).
    pub(crate) expired_secrets: Vec<String>,
    pub(crate) throttle: Option<(u32, Option<String>)>,
    /// Graph's subscription write limits: per tenant and per app, per window.
    pub(crate) write_limits: (usize, usize, Duration),
    /// When the simulator started (the origin of `Stats::subscription_writes`).
    pub(crate) started: Instant,
    pub(crate) stats: Stats,
    pub(crate) mailboxes: HashMap<String, Mailbox>,
    pub(crate) subscriptions: HashMap<String, SimSubscription>,
    /// Order of arrival (set by the simulator).
    pub seq: u64,
    pub(crate) duplicate_notifications: bool,
    pub(crate) drop_notifications: bool,
    /// When set, change notifications are kept here (URL, payload) instead of sent.
    pub(crate) held_notifications: Option<Vec<(String, serde_json::Value)>>,
    /// When set, subscription writes and notification POSTs are logged here
    /// with their times (the fleet benchmark reads them).
    pub(crate) recording: Option<Recording>,
    /// Forget to notify this fraction of changes (as per mille), evenly spread.
    pub(crate) drop_per_mille: u32,
    /// Changes seen while a fraction is dropped (drives the even spread).
    pub(crate) drop_counter: u64,
    pub(crate) in_flight: HashMap<String, u32>,
    pub(crate) sent: Vec<SentMail>,
    pub(crate) drafts: HashMap<String, Draft>,
    pub(crate) uploads: HashMap<String, Upload>,
    pub(crate) send_as: HashSet<(String, String)>,
    pub(crate) max_upload_chunk: usize,
    pub(crate) latency: std::time::Duration,
    pub(crate) interactive_consent: bool,
    /// Delta state tokens still honoured (the ones issued since the last expiry).
    pub(crate) delta_links: HashMap<String, DeltaLink>,
    /// How many delta state tokens were ever issued.
    pub(crate) delta_generation: u64,
    /// False in a cloud without message delta (21Vianet).
    pub(crate) message_delta_available: bool,
    /// Directory attributes of users beyond [`User`]'s, by lowercase UPN.
    pub(crate) profiles: HashMap<String, Profile>,
    /// Verified domains given explicitly (domain, tenant), besides the
    /// domains of the users' UPNs.
    pub(crate) domains: Vec<(String, String)>,
    /// What the next sends do instead of answering at once ([`SendFaults`]).
    pub(crate) send_faults: SendFaults,
    /// The simulator was dropped: its pending notification resends stop.
    pub(crate) stopped: bool,
}

/// A user's `mail` and `proxyAddresses`, when a test sets them (by default
/// `mail` is the UPN and `proxyAddresses` is `["SMTP:{upn}"]`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Profile {
    pub(crate) mail: Option<Option<String>>,
    pub(crate) proxy_addresses: Option<Vec<String>>,
}

impl State {
    pub(crate) fn new(base_url: String, graph_root: String) -> Self {
        Self {
            base_url,
            advertised_url: None,
            graph_root,
            apps: Vec::new(),
            users: Vec::new(),
            consents: HashSet::new(),
            granted_roles: DEFAULT_ROLES.iter().map(|r| r.to_string()).collect(),
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            seen_jti: HashSet::new(),
            authorize_outcome: AuthorizeOutcome::default(),
            admin_consent_outcome: AuthorizeOutcome::default(),
            fail_next_token: None,
            expired_secrets: Vec::new(),
            throttle: None,
            write_limits: (500, 2_000, Duration::from_secs(20)),
            started: Instant::now(),
            stats: Stats::default(),
            mailboxes: HashMap::new(),
            subscriptions: HashMap::new(),
            seq: 0,
            duplicate_notifications: false,
            drop_notifications: false,
            held_notifications: None,
            recording: None,
            drop_per_mille: 0,
            drop_counter: 0,
            in_flight: HashMap::new(),
            sent: Vec::new(),
            drafts: HashMap::new(),
            uploads: HashMap::new(),
            send_as: HashSet::new(),
            max_upload_chunk: 0,
            latency: std::time::Duration::ZERO,
            interactive_consent: false,
            delta_links: HashMap::new(),
            delta_generation: 0,
            message_delta_available: true,
            profiles: HashMap::new(),
            domains: Vec::new(),
            send_faults: SendFaults::default(),
            stopped: false,
        }
    }

    pub(crate) fn register_app(&mut self, app: App) {
        self.consents
            .insert((app.client_id.clone(), app.home_tenant.clone()));
        self.apps.retain(|a| a.client_id != app.client_id);
        self.apps.push(app);
    }

    pub(crate) fn app(&self, client_id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.client_id == client_id)
    }

    pub(crate) fn consented(&self, client_id: &str, tenant: &str) -> bool {
        self.consents
            .contains(&(client_id.to_string(), tenant.to_string()))
    }

    /// The next number of the simulator's change order (messages and
    /// events share it, as delta reads changes after a number).
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// `upn`'s mailbox, when it has one.
    pub(crate) fn mailbox_mut(&mut self, upn: &str) -> Option<&mut Mailbox> {
        self.mailboxes.get_mut(&upn.to_ascii_lowercase())
    }

    /// Message `id` of `upn`'s mailbox.
    pub(crate) fn message_mut(&mut self, upn: &str, id: &str) -> Option<&mut Message> {
        self.mailbox_mut(upn)?.messages.iter_mut().find(|m| m.id == id)
    }

    /// Event `id` of `upn`'s calendar.
    pub(crate) fn event_mut(&mut self, upn: &str, id: &str) -> Option<&mut Event> {
        self.mailbox_mut(upn)?.events.iter_mut().find(|e| e.id == id)
    }

    pub(crate) fn user(&self, upn: &str) -> Option<&User> {
        self.users.iter().find(|u| u.upn.eq_ignore_ascii_case(upn))
    }

    pub(crate) fn revoke_user(&mut self, upn: &str, aadsts: u32) {
        for r in self.refresh_tokens.values_mut() {
            if r.upn.eq_ignore_ascii_case(upn) {
                r.revoked = Some(aadsts);
            }
        }
    }

    /// Graph's delta state expires: every delta token issued so far is forgotten.
    pub(crate) fn expire_delta_links(&mut self) {
        self.delta_links.clear();
    }

    pub(crate) fn expire_access_tokens(&mut self) {
        let now = Instant::now();
        for a in self.access_tokens.values_mut() {
            a.expires = now;
        }
    }

    /// Issues an access token shaped as Microsoft's are: a JWT whose
    /// payload names the tenant, the app and, for app-only tokens, the
    /// application permissions granted (`roles`). Clients must treat it as
    /// opaque; diagnostics may read its payload, as jwt.ms does. The
    /// signature part is random: only the simulator checks the token, by
    /// looking it up.
    pub(crate) fn issue_access(&mut self, subject: Subject, tenant: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = serde_json::json!({
            "aud": self.graph_root,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "tid": tenant,
            "iat": now,
            "nbf": now,
            "exp": now + 3599,
        });
        match &subject {
            Subject::App(client_id) => {
                claims["appid"] = client_id.clone().into();
                claims["idtyp"] = "app".into();
                if self.consented(client_id, tenant) {
                    claims["roles"] = self.granted_roles.clone().into();
                }
            }
            Subject::User(upn) => {
                claims["upn"] = upn.clone().into();
                claims["idtyp"] = "user".into();
            }
        }
        let token = format!(
            "{}.{}.{}",
            b64.encode(br#"{"typ":"JWT","alg":"RS256","kid":"sim"}"#),
            b64.encode(claims.to_string()),
            b64.encode(uuid::Uuid::new_v4().as_bytes())
        );
        self.access_tokens.insert(
            token.clone(),
            Access {
                subject,
                tenant: tenant.to_string(),
                expires: Instant::now() + Duration::from_secs(3599),
            },
        );
        token
    }

    pub(crate) fn issued_secrets(&self) -> Vec<String> {
        self.access_tokens
            .keys()
            .chain(self.refresh_tokens.keys())
            .chain(self.codes.keys())
            .cloned()
            .collect()
    }

    /// Spells the Graph resource for scope checks: `Mail.Read` and
    /// `https://graph.microsoft.com/Mail.Read` are the same permission.
    pub(crate) fn normalize_scope(&self, scope: &str) -> String {
        let prefix = format!("{}/", self.graph_root);
        scope.strip_prefix(&prefix).unwrap_or(scope).to_string()
    }
}

/// Organisations: which tenant a domain belongs to, and the directory
/// attributes (`mail`, `proxyAddresses`) an organisation's administrator sets.
impl State {
    /// The tenant that verified `domain`: one given explicitly, else the
    /// tenant of the first user whose UPN is in that domain (a UPN's suffix
    /// is always a verified domain of the user's tenant).
    pub(crate) fn tenant_of_domain(&self, domain: &str) -> Option<String> {
        let domain = domain.to_ascii_lowercase();
        self.domains
            .iter()
            .find(|(d, _)| *d == domain)
            .map(|(_, t)| t.clone())
            .or_else(|| {
                self.users
                    .iter()
                    .find(|u| {
                        u.upn
                            .rsplit_once('@')
                            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&domain))
                    })
                    .map(|u| u.tenant.clone())
            })
    }

    /// The tenant id a tenant name in a URL stands for: a known tenant id
    /// itself, or the tenant of a verified domain; `None` when Entra would
    /// answer AADSTS90002 (and for the multi-tenant names).
    pub(crate) fn resolve_tenant(&self, name: &str) -> Option<String> {
        let known = |t: &str| {
            self.users.iter().any(|u| u.tenant.eq_ignore_ascii_case(t))
                || self.apps.iter().any(|a| a.home_tenant.eq_ignore_ascii_case(t))
                || self
                    .domains
                    .iter()
                    .any(|(_, tenant)| tenant.eq_ignore_ascii_case(t))
        };
        if known(name) {
            return Some(name.to_string());
        }
        if name.contains('.') {
            return self.tenant_of_domain(name);
        }
        None
    }

    /// The user's `mail` attribute (the UPN unless a test set another, or none).
    pub(crate) fn mail_of(&self, user: &User) -> Option<String> {
        match self
            .profiles
            .get(&user.upn.to_ascii_lowercase())
            .and_then(|p| p.mail.clone())
        {
            Some(set) => set,
            None => Some(user.upn.clone()),
        }
    }

    /// The user's `proxyAddresses` (`SMTP:{upn}` unless a test set others).
    pub(crate) fn proxy_addresses_of(&self, user: &User) -> Vec<String> {
        self.profiles
            .get(&user.upn.to_ascii_lowercase())
            .and_then(|p| p.proxy_addresses.clone())
            .unwrap_or_else(|| vec![format!("SMTP:{}", user.upn)])
    }

    /// The tenant id (a GUID) Entra would show for a tenant: the tenant
    /// itself when it is one; for a tenant the simulator was given by name
    /// (`demo.onmicrosoft.com`), a GUID derived from the name, so ID tokens and
    /// discovery documents always carry a tenant id as Entra's do.
    pub(crate) fn tenant_guid(tenant: &str) -> String {
        if let Ok(id) = uuid::Uuid::parse_str(tenant)
            && tenant.len() == 36
        {
            return id.to_string();
        }
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, tenant.to_ascii_lowercase().as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_ref()[..16]);
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }

    /// The cloud's identity platform host, which issuers name (whatever URL
    /// a caller reached the simulator at).
    pub(crate) fn login_host(&self) -> &'static str {
        match self.graph_root.as_str() {
            "https://graph.microsoft.us" | "https://dod-graph.microsoft.us" => {
                "https://login.microsoftonline.us"
            }
            "https://microsoftgraph.chinacloudapi.cn" => "https://login.partner.microsoftonline.cn",
            _ => "https://login.microsoftonline.com",
        }
    }
}
