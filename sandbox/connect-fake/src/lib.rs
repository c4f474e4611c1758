//! A strict local fake of the Amazon Connect API, for relay365's tests and demo.
//!
//! relay365 turns new mail into Amazon Connect contacts (`StartTaskContact`,
//! `StartEmailContact`), checks a deployment's Connect settings
//! (`DescribeInstance`, `DescribeContactFlow`, `DescribeEmailAddress`,
//! `SearchEmailAddresses`), and files an agent's email reply in the
//! mailbox's Sent Items, reading it with `GetContactAttributes`,
//! `ListContactReferences` and `GetAttachedFile`. No emulator implements those, and a lenient
//! stand-in would let a request through that Connect refuses. So, in the
//! spirit of the Microsoft simulator, [`Fake`] follows the documented
//! contract exactly and nothing more:
//!
//! * it speaks Connect's REST-JSON protocol as `aws-sdk-connect` sends it
//!   (method and path per operation, JSON bodies, errors named in
//!   `x-amzn-ErrorType` with a `{"Message"}` body);
//! * every request must carry a valid Signature Version 4 for the configured
//!   credentials, service `connect` and region, checked by the same code the
//!   demo's API Gateway uses ([`sigv4`]);
//! * every field is checked against the API reference's constraints
//!   ([`model`]) and Connect's email attachment quotas ([`AttachmentLimits`]);
//! * `ClientToken` makes a start idempotent: the same token and request give
//!   the same contact, the same token with another request is refused;
//! * attachments are downloaded from their presigned URLs, as Connect does,
//!   and their bytes kept, so a test can check what reached Connect;
//! * a test can make the next calls throttled (429) or failed (5xx);
//! * an agent can reply to an email contact ([`Fake::agent_reply`]): the
//!   reply is checked as Connect would send it (from an email address of
//!   the instance, to the customer, in the thread of the inbound email:
//!   `In-Reply-To` and `References` from its `MESSAGE_ID` and
//!   `REFERENCES`), recorded as the outbound email ([`Fake::outbound`]),
//!   kept as an `EMAIL_MESSAGE` file of the reply contact behind a
//!   presigned-style URL, and announced by the contact event Connect puts
//!   on EventBridge (returned to the test, which hands it on).
//!
//! Every contact started and every call refused is recorded
//! ([`Fake::contacts`], [`Fake::refused`]). The server binds 127.0.0.1 only.

pub mod error;
pub mod model;
#[path = "../../../demo/src/sigv4.rs"]
pub mod sigv4;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub use error::ApiError;
use model::limits;

/// The account every ARN of the fake names.
pub const ACCOUNT_ID: &str = "123456789012";

/// Connect's supported attachment file types for email (and cases and chats),
/// from the feature specifications of the administrator guide.
pub const EMAIL_ATTACHMENT_EXTENSIONS: [&str; 18] = [
    "csv", "doc", "docx", "heic", "jfif", "jpeg", "jpg", "mov", "mp4", "pdf", "png", "ppt", "pptx", "rtf",
    "txt", "wav", "xls", "xlsx",
];

/// The largest request body the fake reads (an email body may be 5 MiB of text).
const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// Whom the fake accepts requests from and where it pretends to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The region requests must be signed for.
    pub region: String,
    /// The one access key the fake knows.
    pub access_key_id: String,
    /// Its secret key.
    pub secret_access_key: String,
}

impl Default for Config {
    /// `us-east-1` and the test credentials `test`/`test` (those of
    /// `relay365_testkit::sdk_config`).
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
        }
    }
}

/// Connect's limits on an email contact's attachments: by default the hard
/// limits of the feature specifications (10 files, 20 MB each, the listed
/// file types). An instance's attached-files configuration can change the
/// size and types, so tests may set their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentLimits {
    /// Files per email.
    pub max_count: usize,
    /// Bytes per file.
    pub max_bytes: u64,
    /// Allowed extensions, lower case, without the dot.
    pub extensions: Vec<String>,
}

impl Default for AttachmentLimits {
    fn default() -> Self {
        Self {
            max_count: 10,
            max_bytes: 20 * 1024 * 1024,
            extensions: EMAIL_ATTACHMENT_EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect(),
        }
    }
}

/// The operations the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `PUT /contact/task`.
    StartTaskContact,
    /// `PUT /contact/email`.
    StartEmailContact,
    /// `GET /instance/{InstanceId}`.
    DescribeInstance,
    /// `GET /contact-flows/{InstanceId}/{ContactFlowId}`.
    DescribeContactFlow,
    /// `GET /email-addresses/{InstanceId}/{EmailAddressId}`.
    DescribeEmailAddress,
    /// `POST /search-email-addresses`.
    SearchEmailAddresses,
    /// `GET /contact/attributes/{InstanceId}/{InitialContactId}`.
    GetContactAttributes,
    /// `GET /contact/references/{InstanceId}/{ContactId}`.
    ListContactReferences,
    /// `GET /attached-files/{InstanceId}/{FileId}`.
    GetAttachedFile,
}

/// An email an agent's reply sent to the customer (through SES, in Connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEmail {
    /// The reply's contact id (initiation method `AGENT_REPLY`).
    pub contact_id: String,
    /// The inbound email contact it answers.
    pub related_contact_id: String,
    /// The From address: an email address of the instance.
    pub from: String,
    /// The customer.
    pub to: String,
    /// `RE: ` and the inbound subject.
    pub subject: String,
    /// `In-Reply-To`: the inbound email's `MESSAGE_ID`.
    pub in_reply_to: Option<String>,
    /// `References`: the inbound email's `REFERENCES` and `MESSAGE_ID`.
    pub references: Option<String>,
    /// The HTML body.
    pub body: String,
}

/// An agent's reply: its contact id and the contact event Connect puts on
/// EventBridge once it has left.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReply {
    /// The reply's contact id.
    pub contact_id: String,
    /// The `Amazon Connect Contact Event` (`DISCONNECTED`, `EMAIL`, `AGENT_REPLY`).
    pub event: Value,
}

/// A file Connect keeps for a contact (the reply's `EMAIL_MESSAGE`).
#[derive(Debug, Clone)]
struct StoredFile {
    instance_id: String,
    contact_arn: String,
    name: String,
    bytes: Vec<u8>,
    /// The secret part of its download URL.
    download: String,
}

/// An attachment as Connect downloaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// The `FileName` given.
    pub file_name: String,
    /// The bytes behind the presigned URL.
    pub bytes: Vec<u8>,
}

/// A contact the fake started.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    /// `StartTaskContact` or `StartEmailContact`.
    pub operation: Operation,
    /// The id answered.
    pub contact_id: String,
    /// The instance it was started in.
    pub instance_id: String,
    /// The flow that runs it (given, or the destination address's).
    pub contact_flow_id: String,
    /// The request body, whole.
    pub request: Value,
    /// `RelatedContactId`, when given.
    pub related_contact_id: Option<String>,
    /// Its attachments, downloaded.
    pub attachments: Vec<FetchedFile>,
}

/// A call the fake refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The operation, when the path named one.
    pub operation: Option<Operation>,
    /// The error's name, as in `x-amzn-ErrorType`.
    pub error: String,
    /// The HTTP status.
    pub status: u16,
    /// Why.
    pub reason: String,
}

/// A flow of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Its id (the last part of its ARN).
    pub id: String,
    /// Its name.
    pub name: String,
    /// `CONTACT_FLOW` (inbound) and the other types of the model.
    pub flow_type: String,
}

/// An email address of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress {
    /// Its id.
    pub id: String,
    /// The address.
    pub address: String,
    /// Its display name.
    pub display_name: Option<String>,
    /// The inbound flow of mail to it, if any.
    pub flow_id: Option<String>,
}

#[derive(Debug)]
struct Instance {
    id: String,
    arn: String,
    created: i64,
    flows: BTreeMap<String, Flow>,
    emails: BTreeMap<String, EmailAddress>,
    limits: AttachmentLimits,
}

#[derive(Debug, Default)]
struct Store {
    instances: BTreeMap<String, Instance>,
    contacts: Vec<Contact>,
    refused: Vec<Refusal>,
    /// (operation, client token) → (request, contact id).
    tokens: HashMap<(Operation, String), (Value, String)>,
    throttle_next: u32,
    fail_next: u32,
    fail_status: u16,
    /// Replies sent, in order.
    outbound: Vec<OutboundEmail>,
    /// Reply contacts: contact id → (instance id, the inbound contact id, file id).
    replies: BTreeMap<String, (String, String, String)>,
    /// Files by id.
    files: BTreeMap<String, StoredFile>,
}

struct Inner {
    config: Config,
    store: Mutex<Store>,
    http: reqwest::Client,
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake. Dropping it stops the server.
pub struct Fake {
    addr: SocketAddr,
    inner: Arc<Inner>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fake {
    /// Starts the fake with [`Config::default`] on a free 127.0.0.1 port.
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    /// Starts the fake with these credentials and region on a free 127.0.0.1 port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start_with(config: Config) -> Self {
        // reqwest is built without a default TLS provider; presigned URLs may be https.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            config,
            store: Mutex::new(Store::default()),
            http,
        });
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let (addr, stop) = relay365_testkit::serve(app).await;
        Self {
            addr,
            inner,
            _stop: stop,
        }
    }

    /// The endpoint to give the SDK (`endpoint_url`, `AWS_ENDPOINT_URL_CONNECT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The credentials and region it accepts.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Adds an active instance; returns its ARN.
    pub fn add_instance(&self, instance_id: &str) -> String {
        let arn = format!(
            "arn:aws:connect:{}:{ACCOUNT_ID}:instance/{instance_id}",
            self.inner.config.region
        );
        let created = time::OffsetDateTime::now_utc().unix_timestamp();
        self.inner.store().instances.insert(
            instance_id.to_string(),
            Instance {
                id: instance_id.to_string(),
                arn: arn.clone(),
                created,
                flows: BTreeMap::new(),
                emails: BTreeMap::new(),
                limits: AttachmentLimits::default(),
            },
        );
        arn
    }

    /// Adds a published inbound flow (`CONTACT_FLOW`) to an instance.
    ///
    /// # Panics
    /// When the instance was not added.
    pub fn add_flow(&self, instance_id: &str, flow_id: &str, name: &str) {
        self.add_flow_of_type(instance_id, flow_id, name, "CONTACT_FLOW");
    }

    /// Adds a published flow of any type of the model to an instance.
    ///
    /// # Panics
    /// When the instance was not added.
    pub fn add_flow_of_type(&self, instance_id: &str, flow_id: &str, name: &str, flow_type: &str) {
        let mut store = self.inner.store();
        let instance = store.instances.get_mut(instance_id).expect("add_instance first");
        instance.flows.insert(
            flow_id.to_string(),
            Flow {
                id: flow_id.into(),
                name: name.into(),
                flow_type: flow_type.into(),
            },
        );
    }

    /// Adds an email address to an instance, with the inbound flow of mail to it.
    ///
    /// # Panics
    /// When the instance was not added.
    pub fn add_email_address(&self, instance_id: &str, id: &str, address: &str, flow_id: Option<&str>) {
        let mut store = self.inner.store();
        let instance = store.instances.get_mut(instance_id).expect("add_instance first");
        instance.emails.insert(
            id.to_string(),
            EmailAddress {
                id: id.into(),
                address: address.into(),
                display_name: None,
                flow_id: flow_id.map(str::to_string),
            },
        );
    }

    /// Sets an instance's attachment limits (its attached-files configuration).
    ///
    /// # Panics
    /// When the instance was not added.
    pub fn set_attachment_limits(&self, instance_id: &str, limits: AttachmentLimits) {
        let mut store = self.inner.store();
        store
            .instances
            .get_mut(instance_id)
            .expect("add_instance first")
            .limits = limits;
    }

    /// The next `n` signed calls answer 429 `ThrottlingException`.
    pub fn throttle_next(&self, n: u32) {
        self.inner.store().throttle_next = n;
    }

    /// The next `n` signed calls answer `status` (a 5xx) `InternalServiceException`.
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut store = self.inner.store();
        store.fail_next = n;
        store.fail_status = status;
    }

    /// Every contact started, in order.
    pub fn contacts(&self) -> Vec<Contact> {
        self.inner.store().contacts.clone()
    }

    /// Every call refused, in order.
    pub fn refused(&self) -> Vec<Refusal> {
        self.inner.store().refused.clone()
    }

    /// Every agent reply sent, in order.
    pub fn outbound(&self) -> Vec<OutboundEmail> {
        self.inner.store().outbound.clone()
    }

    /// An agent replies to the email contact `inbound_contact_id` from
    /// `from` (the queue's outbound address) with `body_html`, as the agent
    /// workspace sends it: the reply goes to the customer in the inbound
    /// email's thread, and its text is kept as the reply contact's
    /// `EMAIL_MESSAGE` file.
    ///
    /// # Errors
    /// `ResourceNotFoundException` for an unknown instance or contact;
    /// `InvalidRequestException` when the contact is not an email or `from`
    /// is not an email address of the instance (Connect sends only from those).
    pub fn agent_reply(
        &self,
        instance_id: &str,
        inbound_contact_id: &str,
        from: &str,
        body_html: &str,
    ) -> Result<AgentReply, ApiError> {
        let mut store = self.inner.store();
        let inst = instance(&store, instance_id)?;
        let arn = inst.arn.clone();
        if !inst.emails.values().any(|e| e.address.eq_ignore_ascii_case(from)) {
            return Err(ApiError::invalid_request(format!(
                "{from} is not an email address of instance {instance_id}: replies are sent from the instance's addresses"
            )));
        }
        let Some(inbound) = store
            .contacts
            .iter()
            .find(|c| c.contact_id == inbound_contact_id && c.instance_id == instance_id)
        else {
            return Err(ApiError::not_found(format!(
                "Contact {inbound_contact_id} not found in instance {instance_id}"
            )));
        };
        if inbound.operation != Operation::StartEmailContact {
            return Err(ApiError::invalid_request(format!(
                "Contact {inbound_contact_id} is not an email contact"
            )));
        }
        let raw = &inbound.request["EmailMessage"]["RawMessage"];
        let header = |k: &str| raw["Headers"][k].as_str().map(str::to_string);
        let message_id = header("MESSAGE_ID");
        let references = match (header("REFERENCES"), &message_id) {
            (Some(r), Some(m)) => Some(format!("{r} {m}")),
            (None, Some(m)) => Some(m.clone()),
            (r, None) => r,
        };
        let subject = raw["Subject"].as_str().unwrap_or_default();
        let outbound = OutboundEmail {
            contact_id: uuid::Uuid::new_v4().to_string(),
            related_contact_id: inbound_contact_id.to_string(),
            from: from.to_string(),
            to: inbound.request["FromEmailAddress"]["EmailAddress"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            subject: format!("RE: {subject}"),
            in_reply_to: message_id,
            references,
            body: body_html.to_string(),
        };
        let contact_arn = format!("{arn}/contact/{}", outbound.contact_id);
        let file_id = uuid::Uuid::new_v4().to_string();
        store.files.insert(
            file_id.clone(),
            StoredFile {
                instance_id: instance_id.to_string(),
                contact_arn: contact_arn.clone(),
                name: "email-message.html".into(),
                bytes: body_html.as_bytes().to_vec(),
                download: uuid::Uuid::new_v4().simple().to_string(),
            },
        );
        store.replies.insert(
            outbound.contact_id.clone(),
            (instance_id.to_string(), inbound_contact_id.to_string(), file_id),
        );
        let event = json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": "Amazon Connect Contact Event",
            "source": "aws.connect",
            "account": ACCOUNT_ID,
            "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "region": self.inner.config.region,
            "resources": [contact_arn],
            "detail": {
                "eventType": "DISCONNECTED",
                "contactId": outbound.contact_id,
                "initialContactId": outbound.contact_id,
                "relatedContactId": inbound_contact_id,
                "channel": "EMAIL",
                "instanceArn": arn,
                "initiationMethod": "AGENT_REPLY",
            },
        });
        let reply = AgentReply {
            contact_id: outbound.contact_id.clone(),
            event,
        };
        store.outbound.push(outbound);
        Ok(reply)
    }
}

/// Which operation a method and path name, with the path's labels.
fn route(method: &str, path: &str) -> Option<(Operation, Vec<String>)> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let op = match (method, s.as_slice()) {
        ("PUT", ["contact", "task"]) => Operation::StartTaskContact,
        ("PUT", ["contact", "email"]) => Operation::StartEmailContact,
        ("GET", ["instance", _]) => Operation::DescribeInstance,
        ("GET", ["contact-flows", _, _]) => Operation::DescribeContactFlow,
        ("GET", ["email-addresses", _, _]) => Operation::DescribeEmailAddress,
        ("POST", ["search-email-addresses"]) => Operation::SearchEmailAddresses,
        ("GET", ["contact", "attributes", _, _]) => Operation::GetContactAttributes,
        ("GET", ["contact", "references", _, _]) => Operation::ListContactReferences,
        ("GET", ["attached-files", _, _]) => Operation::GetAttachedFile,
        _ => return None,
    };
    Some((op, segments.into_iter().skip(1).collect()))
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return refuse(
            &inner,
            None,
            ApiError::serialization("the request body is too large"),
        );
    };
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    // A file's download URL is presigned (it carries its own secret), as
    // S3's are: no SigV4 header.
    if let Some(secret) = path.strip_prefix("/_files/") {
        return download_file(&inner, &method, secret);
    }
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let Some((op, labels)) = route(&method, &path) else {
        return refuse(
            &inner,
            None,
            ApiError {
                kind: "UnknownOperationException",
                status: 404,
                message: format!("{method} {path} is not an operation of this fake"),
            },
        );
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let signed = sigv4::Signed {
        method: &method,
        path: &path,
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let config = &inner.config;
    if let Err(why) = sigv4::verify(&signed, &config.region, "connect", now, |key| {
        (key == config.access_key_id).then(|| config.secret_access_key.clone())
    }) {
        let err = match why {
            sigv4::Refused::Unsigned => ApiError::missing_token(),
            sigv4::Refused::UnknownKey => ApiError::unrecognized_client(),
            other => ApiError::invalid_signature(other.to_string()),
        };
        return refuse(&inner, Some(op), err);
    }
    let injected = {
        let mut store = inner.store();
        if store.throttle_next > 0 {
            store.throttle_next -= 1;
            Some(ApiError::throttling())
        } else if store.fail_next > 0 {
            store.fail_next -= 1;
            Some(ApiError::internal(store.fail_status))
        } else {
            None
        }
    };
    if let Some(err) = injected {
        return refuse(&inner, Some(op), err);
    }
    let answer = match op {
        Operation::StartTaskContact => start_task(&inner, &body).await,
        Operation::StartEmailContact => start_email(&inner, &body).await,
        Operation::DescribeInstance => describe_instance(&inner, &labels),
        Operation::DescribeContactFlow => describe_flow(&inner, &labels),
        Operation::DescribeEmailAddress => describe_email_address(&inner, &labels),
        Operation::SearchEmailAddresses => search_email_addresses(&inner, &body),
        Operation::GetContactAttributes => contact_attributes(&inner, &labels),
        Operation::ListContactReferences => contact_references(&inner, &labels, &query),
        Operation::GetAttachedFile => attached_file(&inner, &labels, &query, addr_of(&parts.headers)),
    };
    match answer {
        Ok(value) => ([("content-type", "application/json")], value.to_string()).into_response(),
        Err(err) => refuse(&inner, Some(op), err),
    }
}

fn refuse(inner: &Inner, operation: Option<Operation>, err: ApiError) -> Response {
    inner.store().refused.push(Refusal {
        operation,
        error: err.kind.to_string(),
        status: err.status,
        reason: err.message.clone(),
    });
    err.into_response()
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(T, Value), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::serialization(format!("the body is not JSON: {e}")))?;
    let typed = serde_json::from_value(value.clone())
        .map_err(|e| ApiError::serialization(format!("the body does not fit the operation: {e}")))?;
    Ok((typed, value))
}

fn required<'a>(
    field: &str,
    value: &'a Option<String>,
    err: fn(String) -> ApiError,
) -> Result<&'a str, ApiError> {
    value
        .as_deref()
        .ok_or_else(|| err(format!("1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null")))
}

/// What a start needs once its body is valid: where it runs and what to download.
struct Start {
    operation: Operation,
    instance_id: String,
    flow_id: String,
    related: Option<String>,
    client_token: Option<String>,
    attachments: Vec<model::Attachment>,
    max_bytes: Option<u64>,
    request: Value,
}

/// The same token and request give the same contact; the same token and
/// another request is refused (`IdempotencyException` where the operation
/// lists it, else `InvalidRequestException`: the reference does not say).
fn replay(store: &Store, start: &Start) -> Result<Option<String>, ApiError> {
    let Some(token) = &start.client_token else {
        return Ok(None);
    };
    match store.tokens.get(&(start.operation, token.clone())) {
        Some((request, contact_id)) if *request == start.request => Ok(Some(contact_id.clone())),
        Some(_) => {
            let message = format!("ClientToken {token} was already used with a different request");
            Err(if start.operation == Operation::StartEmailContact {
                ApiError::idempotency(message)
            } else {
                ApiError::invalid_request(message)
            })
        }
        None => Ok(None),
    }
}

async fn run_start(inner: &Inner, start: Start) -> Result<Value, ApiError> {
    let replayed = replay(&inner.store(), &start)?;
    if let Some(id) = replayed {
        return Ok(json!({ "ContactId": id }));
    }
    let mut files = Vec::new();
    for a in &start.attachments {
        files.push(FetchedFile {
            file_name: a.file_name.clone(),
            bytes: download(inner, a, start.max_bytes).await?,
        });
    }
    let mut store = inner.store();
    if let Some(id) = replay(&store, &start)? {
        return Ok(json!({ "ContactId": id }));
    }
    let contact_id = uuid::Uuid::new_v4().to_string();
    if let Some(token) = &start.client_token {
        store.tokens.insert(
            (start.operation, token.clone()),
            (start.request.clone(), contact_id.clone()),
        );
    }
    store.contacts.push(Contact {
        operation: start.operation,
        contact_id: contact_id.clone(),
        instance_id: start.instance_id,
        contact_flow_id: start.flow_id,
        request: start.request,
        related_contact_id: start.related,
        attachments: files,
    });
    Ok(json!({ "ContactId": contact_id }))
}

/// Downloads an attachment from its presigned URL, no more than `max_bytes`.
async fn download(inner: &Inner, a: &model::Attachment, max_bytes: Option<u64>) -> Result<Vec<u8>, ApiError> {
    let failed = |why: String| {
        ApiError::invalid_request(format!(
            "Attachment '{}' could not be downloaded from its S3Url: {why}",
            a.file_name
        ))
    };
    let mut response = inner
        .http
        .get(&a.s3_url)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
        bytes.extend_from_slice(&chunk);
        if let Some(max) = max_bytes
            && bytes.len() as u64 > max
        {
            return Err(ApiError::invalid_request(format!(
                "Attachment '{}' is larger than the maximum file size of {max} bytes",
                a.file_name
            )));
        }
    }
    Ok(bytes)
}

/// The instance, or `ResourceNotFoundException`.
fn instance<'a>(store: &'a Store, id: &str) -> Result<&'a Instance, ApiError> {
    store
        .instances
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("Instance {id} not found")))
}

fn flow_of<'a>(instance: &'a Instance, id: &str) -> Result<&'a Flow, ApiError> {
    instance.flows.get(id).ok_or_else(|| {
        ApiError::not_found(format!("Contact flow {id} not found in instance {}", instance.id))
    })
}

fn related_exists(store: &Store, instance_id: &str, id: &str) -> Result<(), ApiError> {
    if store
        .contacts
        .iter()
        .any(|c| c.contact_id == id && c.instance_id == instance_id)
    {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "Contact {id} not found in instance {instance_id}"
        )))
    }
}

async fn start_task(inner: &Inner, body: &[u8]) -> Result<Value, ApiError> {
    let start = check_task(inner, body)?;
    run_start(inner, start).await
}

fn check_task(inner: &Inner, body: &[u8]) -> Result<Start, ApiError> {
    let bad = ApiError::invalid_parameter;
    let (req, request) = parse::<model::StartTaskContact>(body)?;
    let instance_id = required("instanceId", &req.instance_id, bad)?;
    model::length("instanceId", instance_id, 1, limits::INSTANCE_ID_MAX, bad)?;
    let name = required("name", &req.name, bad)?;
    model::length("name", name, 0, limits::NAME_MAX, bad)?;
    if let Some(d) = &req.description {
        model::length("description", d, 0, limits::DESCRIPTION_MAX, bad)?;
    }
    if let Some(t) = &req.client_token {
        model::length("clientToken", t, 0, limits::CLIENT_TOKEN_MAX, bad)?;
    }
    if let Some(refs) = &req.references {
        model::references(refs, &["URL", "NUMBER", "STRING", "DATE", "EMAIL"], bad)?;
    }
    if let Some(attrs) = &req.attributes {
        model::attributes(attrs, bad)?;
    }
    for (field, id) in [
        ("relatedContactId", &req.related_contact_id),
        ("previousContactId", &req.previous_contact_id),
    ] {
        if let Some(id) = id {
            model::length(field, id, 1, limits::CONTACT_ID_MAX, bad)?;
        }
    }
    let attachments = req.attachments.clone().unwrap_or_default();
    if req.attachments.as_ref().is_some_and(Vec::is_empty) || attachments.len() > limits::TASK_ATTACHMENTS_MAX
    {
        return Err(bad(format!(
            "A task has 1 to {} attachments; {} were given",
            limits::TASK_ATTACHMENTS_MAX,
            attachments.len()
        )));
    }
    for a in &attachments {
        model::attachment_shape(a, bad)?;
    }
    let targets = [&req.contact_flow_id, &req.task_template_id, &req.quick_connect_id]
        .iter()
        .filter(|t| t.is_some())
        .count();
    if targets != 1 {
        return Err(ApiError::invalid_request(
            "Include exactly one of ContactFlowId, QuickConnectId or TaskTemplateId",
        ));
    }
    let store = inner.store();
    let inst = instance(&store, instance_id)?;
    let Some(flow_id) = &req.contact_flow_id else {
        // The fake knows no task templates or quick connects.
        let what = if req.task_template_id.is_some() {
            "Task template"
        } else {
            "Quick connect"
        };
        let id = req
            .task_template_id
            .as_deref()
            .or(req.quick_connect_id.as_deref())
            .unwrap_or_default();
        return Err(ApiError::not_found(format!(
            "{what} {id} not found in instance {instance_id}"
        )));
    };
    model::length("contactFlowId", flow_id, 0, limits::CONTACT_FLOW_ID_MAX, bad)?;
    flow_of(inst, flow_id)?;
    for id in [&req.related_contact_id, &req.previous_contact_id]
        .into_iter()
        .flatten()
    {
        related_exists(&store, instance_id, id)?;
    }
    let start = Start {
        operation: Operation::StartTaskContact,
        instance_id: instance_id.to_string(),
        flow_id: flow_id.clone(),
        related: req.related_contact_id.clone(),
        client_token: req.client_token.clone(),
        attachments,
        max_bytes: None,
        request,
    };
    Ok(start)
}

fn address(field: &str, info: &model::EmailAddressInfo) -> Result<(), ApiError> {
    let bad = ApiError::invalid_request;
    let address = required(&format!("{field}.emailAddress"), &info.email_address, bad)?;
    model::length(field, address, 1, limits::EMAIL_ADDRESS_MAX, bad)?;
    if !model::is_email_address(address) {
        return Err(bad(format!("{field} '{address}' is not an email address")));
    }
    if let Some(name) = &info.display_name {
        model::length(
            &format!("{field}.displayName"),
            name,
            0,
            limits::DISPLAY_NAME_MAX,
            bad,
        )?;
    }
    Ok(())
}

fn extension(file_name: &str) -> Option<String> {
    file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| !ext.is_empty())
}

async fn start_email(inner: &Inner, body: &[u8]) -> Result<Value, ApiError> {
    let start = check_email(inner, body)?;
    run_start(inner, start).await
}

fn check_email(inner: &Inner, body: &[u8]) -> Result<Start, ApiError> {
    let bad = ApiError::invalid_request;
    let (req, request) = parse::<model::StartEmailContact>(body)?;
    let instance_id = required("instanceId", &req.instance_id, bad)?;
    model::length("instanceId", instance_id, 1, limits::INSTANCE_ID_MAX, bad)?;
    let from = req
        .from_email_address
        .as_ref()
        .ok_or_else(|| bad("1 validation error detected: Value null at 'fromEmailAddress' failed to satisfy constraint: Member must not be null".into()))?;
    address("fromEmailAddress", from)?;
    let destination = required("destinationEmailAddress", &req.destination_email_address, bad)?;
    address(
        "destinationEmailAddress",
        &model::EmailAddressInfo {
            email_address: Some(destination.to_string()),
            display_name: None,
        },
    )?;
    check_email_message(req.email_message.as_ref())?;
    check_recipients(req.additional_recipients.as_ref())?;
    check_email_fields(&req)?;
    let attachments = req.attachments.clone().unwrap_or_default();
    let store = inner.store();
    let inst = instance(&store, instance_id)?;
    let quota = inst.limits.clone();
    check_attachment_quota(&quota, &attachments)?;
    let flow_id = email_flow(inst, &req, instance_id, destination)?;
    flow_of(inst, &flow_id)?;
    if let Some(id) = &req.related_contact_id {
        related_exists(&store, instance_id, id)?;
    }
    let start = Start {
        operation: Operation::StartEmailContact,
        instance_id: instance_id.to_string(),
        flow_id,
        related: req.related_contact_id.clone(),
        client_token: req.client_token.clone(),
        attachments,
        max_bytes: Some(quota.max_bytes),
        request,
    };
    Ok(start)
}

/// `EmailMessage`: a raw message with a subject, a body of a text type and
/// only the headers Connect knows.
fn check_email_message(message: Option<&model::EmailMessage>) -> Result<(), ApiError> {
    let bad = ApiError::invalid_request;
    let message = message.ok_or_else(|| bad("1 validation error detected: Value null at 'emailMessage' failed to satisfy constraint: Member must not be null".into()))?;
    if message.message_source_type.as_deref() != Some("RAW") {
        return Err(bad("EmailMessage.MessageSourceType must be RAW".into()));
    }
    let raw = message
        .raw_message
        .as_ref()
        .ok_or_else(|| bad("EmailMessage.RawMessage is required when MessageSourceType is RAW".into()))?;
    let subject = required("emailMessage.rawMessage.subject", &raw.subject, bad)?;
    model::length(
        "emailMessage.rawMessage.subject",
        subject,
        0,
        limits::SUBJECT_MAX,
        bad,
    )?;
    let text = required("emailMessage.rawMessage.body", &raw.body, bad)?;
    model::length("emailMessage.rawMessage.body", text, 1, limits::BODY_MAX, bad)?;
    let content_type = required("emailMessage.rawMessage.contentType", &raw.content_type, bad)?;
    if content_type != "text/plain" && content_type != "text/html" {
        return Err(bad(format!(
            "ContentType {content_type} is not text/plain or text/html"
        )));
    }
    for (key, value) in raw.headers.iter().flatten() {
        if ![
            "REFERENCES",
            "MESSAGE_ID",
            "IN_REPLY_TO",
            "X_SES_SPAM_VERDICT",
            "X_SES_VIRUS_VERDICT",
        ]
        .contains(&key.as_str())
        {
            return Err(bad(format!("Header {key} is not an email header type")));
        }
        model::length(
            "emailMessage.rawMessage.headers.value",
            value,
            1,
            limits::HEADER_VALUE_MAX,
            bad,
        )?;
    }
    Ok(())
}

/// `AdditionalRecipients`: valid addresses, at most
/// [`limits::RECIPIENTS_MAX`] with the destination.
fn check_recipients(more: Option<&model::AdditionalRecipients>) -> Result<(), ApiError> {
    let bad = ApiError::invalid_request;
    let mut recipients = 1;
    if let Some(more) = more {
        for (field, list) in [
            ("toAddresses", &more.to_addresses),
            ("ccAddresses", &more.cc_addresses),
        ] {
            let Some(list) = list else { continue };
            if list.is_empty() {
                return Err(bad(format!(
                    "AdditionalRecipients.{field} must hold at least one address"
                )));
            }
            for info in list {
                address(&format!("additionalRecipients.{field}"), info)?;
            }
            recipients += list.len();
        }
    }
    if recipients > limits::RECIPIENTS_MAX {
        return Err(bad(format!(
            "An email has at most {} recipients (the destination and 49 To or Cc addresses); {recipients} were given",
            limits::RECIPIENTS_MAX
        )));
    }
    Ok(())
}

/// The optional fields of an email contact, each within its constraints.
fn check_email_fields(req: &model::StartEmailContact) -> Result<(), ApiError> {
    let bad = ApiError::invalid_request;
    if let Some(n) = &req.name {
        model::length("name", n, 0, limits::NAME_MAX, bad)?;
    }
    if let Some(d) = &req.description {
        model::length("description", d, 0, limits::DESCRIPTION_MAX, bad)?;
    }
    if let Some(t) = &req.client_token {
        model::length("clientToken", t, 0, limits::CLIENT_TOKEN_MAX, bad)?;
    }
    if let Some(refs) = &req.references {
        model::references(refs, &["URL", "NUMBER", "STRING", "DATE"], bad)?;
    }
    if let Some(attrs) = &req.attributes {
        model::attributes(attrs, bad)?;
    }
    if let Some(id) = &req.related_contact_id {
        model::length("relatedContactId", id, 1, limits::CONTACT_ID_MAX, bad)?;
    }
    if req.attachments.as_ref().is_some_and(Vec::is_empty) {
        return Err(bad("Attachments must hold at least one file when given".into()));
    }
    for a in req.attachments.iter().flatten() {
        model::attachment_shape(a, bad)?;
    }
    Ok(())
}

/// The instance's attachment quotas: how many files, of which types.
fn check_attachment_quota(
    quota: &AttachmentLimits,
    attachments: &[model::Attachment],
) -> Result<(), ApiError> {
    let bad = ApiError::invalid_request;
    if attachments.len() > quota.max_count {
        return Err(bad(format!(
            "An email has at most {} attachments; {} were given",
            quota.max_count,
            attachments.len()
        )));
    }
    for a in attachments {
        match extension(&a.file_name) {
            Some(ext) if quota.extensions.contains(&ext) => {}
            _ => {
                return Err(bad(format!(
                    "Attachment '{}' is not of a supported file type ({})",
                    a.file_name,
                    quota.extensions.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// The flow an email contact runs: the one given, else the destination
/// address's inbound flow. The destination must be an address of the instance.
fn email_flow(
    inst: &Instance,
    req: &model::StartEmailContact,
    instance_id: &str,
    destination: &str,
) -> Result<String, ApiError> {
    let bad = ApiError::invalid_request;
    let Some(dest) = inst
        .emails
        .values()
        .find(|e| e.address.eq_ignore_ascii_case(destination))
    else {
        return Err(ApiError::not_found(format!(
            "Email address {destination} not found in instance {instance_id}"
        )));
    };
    match (&req.contact_flow_id, &dest.flow_id) {
        (Some(f), _) => {
            model::length("contactFlowId", f, 0, limits::CONTACT_FLOW_ID_MAX, bad)?;
            Ok(f.clone())
        }
        (None, Some(f)) => Ok(f.clone()),
        (None, None) => Err(bad(format!(
            "No ContactFlowId given and email address {destination} has no inbound flow"
        ))),
    }
}

/// The host a request reached the fake at (its own URL, for download links).
fn addr_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string()
}

fn download_file(inner: &Inner, method: &str, secret: &str) -> Response {
    let store = inner.store();
    match store.files.values().find(|f| f.download == secret) {
        Some(f) if method == "GET" => {
            ([("content-type", "text/html; charset=utf-8")], f.bytes.clone()).into_response()
        }
        _ => (
            axum::http::StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code></Error>",
        )
            .into_response(),
    }
}

/// A contact of the instance: one started through the API, or a reply.
fn contact_attributes(inner: &Inner, labels: &[String]) -> Result<Value, ApiError> {
    let (instance_id, contact_id) = (&labels[1], &labels[2]);
    model::length(
        "initialContactId",
        contact_id,
        1,
        limits::CONTACT_ID_MAX,
        ApiError::invalid_request,
    )?;
    let store = inner.store();
    instance(&store, instance_id)?;
    let started = |id: &str| {
        store
            .contacts
            .iter()
            .find(|c| c.contact_id == id && c.instance_id == *instance_id)
    };
    // A reply's attributes are those of the contact it is related to.
    let id = match store.replies.get(contact_id.as_str()) {
        Some((inst, inbound, _)) if inst == instance_id => inbound.clone(),
        _ => contact_id.clone(),
    };
    let Some(c) = started(&id) else {
        return Err(ApiError::not_found(format!(
            "Contact {contact_id} not found in instance {instance_id}"
        )));
    };
    Ok(json!({ "Attributes": c.request.get("Attributes").cloned().unwrap_or_else(|| json!({})) }))
}

/// The reference types `ListContactReferences` takes.
const REFERENCE_TYPES: [&str; 9] = [
    "URL",
    "ATTACHMENT",
    "CONTACT_ANALYSIS",
    "NUMBER",
    "STRING",
    "DATE",
    "EMAIL",
    "EMAIL_MESSAGE",
    "EMAIL_MESSAGE_PLAIN_TEXT",
];

fn contact_references(
    inner: &Inner,
    labels: &[String],
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    let bad: fn(String) -> ApiError = ApiError::invalid_parameter;
    let (instance_id, contact_id) = (&labels[1], &labels[2]);
    let types: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "referenceTypes")
        .map(|(_, v)| v.as_str())
        .collect();
    if types.is_empty() {
        return Err(bad("1 validation error detected: Value null at 'referenceTypes' failed to satisfy constraint: Member must not be null".into()));
    }
    if types.len() > 6 {
        return Err(bad("ReferenceTypes holds at most 6 items".into()));
    }
    if let Some(t) = types.iter().find(|t| !REFERENCE_TYPES.contains(t)) {
        return Err(bad(format!("{t} is not a reference type")));
    }
    let store = inner.store();
    let inst = instance(&store, instance_id)?;
    let mut out = Vec::new();
    if let Some((inst_id, _, file_id)) = store.replies.get(contact_id.as_str())
        && inst_id == instance_id
    {
        if types.contains(&"EMAIL_MESSAGE") {
            let f = &store.files[file_id];
            out.push(
                json!({"EmailMessage": {"Name": f.name, "Arn": format!("{}/file/{file_id}", inst.arn)}}),
            );
        }
        return Ok(json!({ "ReferenceSummaryList": out }));
    }
    let Some(c) = store
        .contacts
        .iter()
        .find(|c| c.contact_id == *contact_id && c.instance_id == *instance_id)
    else {
        return Err(ApiError::not_found(format!(
            "Contact {contact_id} not found in instance {instance_id}"
        )));
    };
    for (name, r) in c.request["References"].as_object().into_iter().flatten() {
        let (kind, key) = match r["Type"].as_str().unwrap_or_default() {
            "URL" => ("URL", "Url"),
            "STRING" => ("STRING", "String"),
            "NUMBER" => ("NUMBER", "Number"),
            "DATE" => ("DATE", "Date"),
            "EMAIL" => ("EMAIL", "Email"),
            _ => continue,
        };
        if types.contains(&kind) {
            out.push(json!({ key: {"Name": name, "Value": r["Value"]} }));
        }
    }
    Ok(json!({ "ReferenceSummaryList": out }))
}

fn attached_file(
    inner: &Inner,
    labels: &[String],
    query: &[(String, String)],
    host: String,
) -> Result<Value, ApiError> {
    let bad: fn(String) -> ApiError = ApiError::invalid_request;
    let (instance_id, file_id) = (&labels[0], &labels[1]);
    let param = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.clone());
    let Some(associated) = param("associatedResourceArn") else {
        return Err(bad("1 validation error detected: Value null at 'associatedResourceArn' failed to satisfy constraint: Member must not be null".into()));
    };
    let expiry: i64 = match param("urlExpiryInSeconds") {
        Some(v) => v
            .parse()
            .map_err(|_| bad(format!("urlExpiryInSeconds {v} is not a number")))?,
        None => 300,
    };
    if !(5..=300).contains(&expiry) {
        return Err(bad(format!("urlExpiryInSeconds must be 5 to 300, not {expiry}")));
    }
    let store = inner.store();
    let inst = instance(&store, instance_id)?;
    let Some(f) = store
        .files
        .get(file_id.as_str())
        .filter(|f| f.instance_id == *instance_id)
    else {
        return Err(ApiError::not_found(format!(
            "File {file_id} not found in instance {instance_id}"
        )));
    };
    if f.contact_arn != associated {
        return Err(ApiError::not_found(format!(
            "File {file_id} is not associated with {associated}"
        )));
    }
    let now = time::OffsetDateTime::now_utc();
    let iso = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    Ok(json!({
        "FileArn": format!("{}/file/{file_id}", inst.arn),
        "FileId": file_id,
        "CreationTime": iso(now),
        "FileStatus": "APPROVED",
        "FileName": f.name,
        "FileSizeInBytes": f.bytes.len(),
        "AssociatedResourceArn": f.contact_arn,
        "FileUseCaseType": "EMAIL_MESSAGE",
        "DownloadUrlMetadata": {
            "Url": format!("http://{host}/_files/{}", f.download),
            "UrlExpiry": iso(now + time::Duration::seconds(expiry)),
        },
    }))
}

fn describe_instance(inner: &Inner, labels: &[String]) -> Result<Value, ApiError> {
    let store = inner.store();
    let inst = instance(&store, &labels[0])?;
    Ok(json!({ "Instance": {
        "Id": inst.id,
        "Arn": inst.arn,
        "IdentityManagementType": "CONNECT_MANAGED",
        "InstanceAlias": inst.id.chars().filter(char::is_ascii_alphanumeric).take(45).collect::<String>(),
        "CreatedTime": inst.created,
        "ServiceRole": format!("arn:aws:iam::{ACCOUNT_ID}:role/aws-service-role/connect.amazonaws.com/AWSServiceRoleForAmazonConnect"),
        "InstanceStatus": "ACTIVE",
        "InboundCallsEnabled": true,
        "OutboundCallsEnabled": true,
    }}))
}

fn describe_flow(inner: &Inner, labels: &[String]) -> Result<Value, ApiError> {
    let store = inner.store();
    let inst = instance(&store, &labels[0])?;
    let flow = flow_of(inst, &labels[1])?;
    Ok(json!({ "ContactFlow": {
        "Arn": format!("{}/contact-flow/{}", inst.arn, flow.id),
        "Id": flow.id,
        "Name": flow.name,
        "Type": flow.flow_type,
        "State": "ACTIVE",
        "Status": "PUBLISHED",
        "Content": "{\"Version\":\"2019-10-30\",\"StartAction\":\"end\",\"Actions\":[{\"Identifier\":\"end\",\"Type\":\"DisconnectParticipant\",\"Parameters\":{},\"Transitions\":{}}]}",
    }}))
}

fn email_json(inst: &Instance, e: &EmailAddress) -> Value {
    json!({
        "EmailAddressId": e.id,
        "EmailAddressArn": format!("{}/email-address/{}", inst.arn, e.id),
        "EmailAddress": e.address,
        "DisplayName": e.display_name,
    })
}

fn describe_email_address(inner: &Inner, labels: &[String]) -> Result<Value, ApiError> {
    let store = inner.store();
    let inst = instance(&store, &labels[0])?;
    let e = inst
        .emails
        .get(&labels[1])
        .ok_or_else(|| ApiError::not_found(format!("Email address {} not found", labels[1])))?;
    Ok(email_json(inst, e))
}

fn search_email_addresses(inner: &Inner, body: &[u8]) -> Result<Value, ApiError> {
    let bad = ApiError::invalid_parameter;
    let (req, _) = parse::<model::SearchEmailAddresses>(body)?;
    let instance_id = required("instanceId", &req.instance_id, bad)?;
    if let Some(n) = req.max_results
        && !(1..=100).contains(&n)
    {
        return Err(bad(format!("MaxResults must be 1 to 100, not {n}")));
    }
    let exact = req
        .search_criteria
        .as_ref()
        .and_then(|c| c.get("StringCondition"))
        .and_then(|c| c.get("Value"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let store = inner.store();
    let inst = instance(&store, instance_id)?;
    let found: Vec<Value> = inst
        .emails
        .values()
        .filter(|e| {
            exact
                .as_ref()
                .is_none_or(|x| e.address.to_ascii_lowercase() == *x)
        })
        .map(|e| email_json(inst, e))
        .collect();
    Ok(json!({ "EmailAddresses": found, "ApproximateTotalCount": found.len() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_the_sdk_s() {
        assert_eq!(
            route("PUT", "/contact/task").map(|r| r.0),
            Some(Operation::StartTaskContact)
        );
        assert_eq!(
            route("PUT", "/contact/email").map(|r| r.0),
            Some(Operation::StartEmailContact)
        );
        let (op, labels) = route("GET", "/contact-flows/i-1/f%3A1").expect("a route");
        assert_eq!(op, Operation::DescribeContactFlow);
        assert_eq!(labels, ["i-1", "f:1"]);
        assert_eq!(route("POST", "/contact/task"), None);
        assert_eq!(route("GET", "/instance"), None);
    }

    #[test]
    fn extensions_are_case_blind() {
        assert_eq!(extension("Report.PDF").as_deref(), Some("pdf"));
        assert_eq!(extension("noext"), None);
        assert_eq!(extension("trailing."), None);
    }
}
