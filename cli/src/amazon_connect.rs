//! Amazon Connect targets, as an operator meets them: `--target
//! connect-task:{instance-id}/{contact-flow-id}` and `--target
//! connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}` are
//! checked before anything is sent (a typo is a usage error that shows the
//! shape, not a 400 from the API), and `relay365 doctor` checks, for every
//! flow whose target is one, what mail-dispatch will need when a mail
//! arrives: the stack's permission for that instance (its `Connect…`
//! parameters), the instance, the contact flow and, for email, the
//! instance's email address. Those are read with the operator's own
//! credentials (`connect:DescribeInstance`, `connect:DescribeContactFlow`,
//! `connect:SearchEmailAddresses`); nothing is started.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_connect::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_connect::types::{EmailAddressSearchCriteria, StringComparisonType, StringCondition};
use relay365::model::target::{CONNECT_EMAIL_PREFIX, CONNECT_TASK_PREFIX, Target};

use crate::check::{Check, fail, pass};
use crate::error::chain;
use crate::stack::Stack;

/// How long one Connect read may take before doctor reports it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const TASK_SHAPE: &str = "connect-task:{instance-id}/{contact-flow-id}";
const EMAIL_SHAPE: &str = "connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}";

/// An Amazon Connect target of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectTarget {
    /// A task per new mail (`StartTaskContact`).
    Task {
        /// The instance id (the last part of the instance's ARN).
        instance_id: String,
        /// The contact flow id (the last part of the flow's ARN).
        flow_id: String,
    },
    /// An email contact per new mail (`StartEmailContact`).
    Email {
        /// The instance id.
        instance_id: String,
        /// The contact flow id.
        flow_id: String,
        /// The instance's email address the mail is delivered to.
        address: String,
    },
}

impl ConnectTarget {
    /// Parses a Connect target; `None` when `raw` is not one (an `https://`
    /// URL or an EventBridge bus, which the API checks).
    ///
    /// # Errors
    /// A sentence naming the part that is wrong and the shape to write.
    pub fn parse(raw: &str) -> Option<Result<Self, String>> {
        // The model parses targets for the admin API; the CLI takes its
        // checks and words, so both refuse the same targets the same way.
        if raw.starts_with(CONNECT_TASK_PREFIX) || raw.starts_with(CONNECT_EMAIL_PREFIX) {
            return Some(Target::parse(raw, false).and_then(|t| match t {
                Target::ConnectTask { instance_id, flow_id } => {
                    Ok(ConnectTarget::Task { instance_id, flow_id })
                }
                Target::ConnectEmail {
                    instance_id,
                    flow_id,
                    address,
                } => Ok(ConnectTarget::Email {
                    instance_id,
                    flow_id,
                    address,
                }),
                _ => Err(format!("target {raw:?}: write {TASK_SHAPE} or {EMAIL_SHAPE}")),
            }));
        }
        // `connect:…`, `connect-tasks:…`: meant to be one, misspelled.
        let scheme = raw.split_once(':').map(|(s, _)| s.to_ascii_lowercase())?;
        if scheme == "connect" || scheme.starts_with("connect-") {
            return Some(Err(format!(
                "target {raw:?}: an Amazon Connect target is {TASK_SHAPE} (a task per mail) or {EMAIL_SHAPE} (an email contact per mail)"
            )));
        }
        None
    }

    /// The instance id.
    pub fn instance_id(&self) -> &str {
        match self {
            ConnectTarget::Task { instance_id, .. } | ConnectTarget::Email { instance_id, .. } => instance_id,
        }
    }

    /// The contact flow id.
    pub fn flow_id(&self) -> &str {
        match self {
            ConnectTarget::Task { flow_id, .. } | ConnectTarget::Email { flow_id, .. } => flow_id,
        }
    }

    /// What mail becomes: "tasks" or "email contacts".
    fn contacts(&self) -> &'static str {
        match self {
            ConnectTarget::Task { .. } => "tasks",
            ConnectTarget::Email { .. } => "email contacts",
        }
    }
}

/// clap's check of `--target`: a Connect target must be well formed; any
/// other target goes to the API as it is.
///
/// # Errors
/// The sentence clap prints under "invalid value" (exit status 2).
pub fn target_arg(raw: &str) -> Result<String, String> {
    match ConnectTarget::parse(raw) {
        Some(Err(e)) => Err(e),
        _ => Ok(raw.to_string()),
    }
}

/// The Connect client for the stack's account and region (the demo's local
/// Connect in a local run), with the operator's credentials.
pub fn client(stack: &Stack) -> aws_sdk_connect::Client {
    let timeouts = aws_sdk_connect::config::timeout::TimeoutConfig::builder()
        .operation_timeout(CALL_TIMEOUT)
        .build();
    let mut config = aws_sdk_connect::config::Builder::from(&stack.sdk).timeout_config(timeouts);
    if let Some(url) = stack.endpoints.get("connect") {
        config = config.endpoint_url(url);
    }
    aws_sdk_connect::Client::from_conf(config.build())
}

/// Connect's error name (`ResourceNotFoundException`, …) and the whole
/// message, for a person.
fn refusal<E, R>(e: &SdkError<E, R>) -> (String, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or_default().to_string();
    let message = match e.message() {
        Some(m) => format!("{code}: {m}"),
        None => chain(e),
    };
    (code, message)
}

/// The fix for a refusal no check expects: a permission of the operator, or
/// the network.
fn other_fix(code: &str, action: &str) -> String {
    match code {
        "AccessDeniedException" | "UnrecognizedClientException" | "InvalidSignatureException" => {
            format!("the identity you run doctor as needs {action} on the instance (doctor only reads)")
        }
        "ThrottlingException" | "InternalServiceException" => "run doctor again in a minute".into(),
        _ => format!(
            "check that this machine reaches Amazon Connect in the stack's region, and that you may call {action}"
        ),
    }
}

/// Every Connect check for the flows that deliver to Connect: `targets` maps
/// each distinct target to the flows that use it (`support mail 3f2a…`).
pub async fn checks(stack: &Stack, targets: &BTreeMap<String, Vec<String>>) -> Vec<Check> {
    let mut out = Vec::new();
    let mut parsed = Vec::new();
    for (raw, flows) in targets {
        let used_by = flows.join(", ");
        match ConnectTarget::parse(raw) {
            Some(Ok(t)) => parsed.push((raw.clone(), t, used_by)),
            Some(Err(e)) => out.push(fail(
                format!("Amazon Connect target of {used_by}: {e}"),
                format!("subscribe again with a target of the shape {TASK_SHAPE} or {EMAIL_SHAPE}"),
            )),
            None => {}
        }
    }
    if parsed.is_empty() {
        return out;
    }
    let connect = client(stack);
    // Each instance is described once, however many targets name it.
    let mut instances: BTreeMap<String, bool> = BTreeMap::new();
    for (raw, target, used_by) in parsed {
        out.push(permission(stack, &raw, &target, &used_by));
        let found = match instances.get(target.instance_id()) {
            Some(found) => *found,
            None => {
                let check = instance(&connect, stack, &target).await;
                let found = check.ok;
                instances.insert(target.instance_id().to_string(), found);
                out.push(check);
                found
            }
        };
        if !found {
            continue;
        }
        out.push(flow(&connect, &target).await);
        if let ConnectTarget::Email { address, .. } = &target {
            out.push(email_address(&connect, &target, address).await);
        }
    }
    out
}

/// Whether the stack lets mail-dispatch start these contacts: its
/// `ConnectInstanceId` (and `ConnectContactFlowId`, and for email
/// `ConnectEmailAddress`) parameters, which the template's grants follow.
fn permission(stack: &Stack, raw: &str, target: &ConnectTarget, used_by: &str) -> Check {
    let param = |k: &str| stack.parameters.get(k).map(String::as_str);
    let instance = target.instance_id();
    let flow = target.flow_id();
    let deploy = |overrides: &str| {
        format!(
            "run `sam deploy --stack-name {} --parameter-overrides {overrides}` (keep your other parameters), or subscribe with a target in the instance the stack names",
            stack.name
        )
    };
    let what = format!("{raw} ({used_by})");
    let Some(granted) = param("ConnectInstanceId") else {
        return fail(
            format!(
                "{what}: the stack has no ConnectInstanceId parameter, so mail-dispatch may not call Amazon Connect"
            ),
            format!(
                "run `sam deploy --stack-name {} --parameter-overrides ConnectInstanceId={instance}` from this checkout",
                stack.name
            ),
        );
    };
    if granted != instance {
        let now = if granted.is_empty() {
            "empty".to_string()
        } else {
            format!("{granted:?}")
        };
        return fail(
            format!(
                "{what}: mail-dispatch may not start {} in instance {instance} (the stack's ConnectInstanceId is {now})",
                target.contacts()
            ),
            deploy(&format!("ConnectInstanceId={instance}")),
        );
    }
    match param("ConnectContactFlowId") {
        Some(only) if !only.is_empty() && only != flow => {
            return fail(
                format!(
                    "{what}: mail-dispatch may start contacts with flow {only} only (the stack's ConnectContactFlowId; empty allows every flow of the instance), not {flow}"
                ),
                deploy(&format!("ConnectContactFlowId={flow}")),
            );
        }
        _ => {}
    }
    if let ConnectTarget::Email { address, .. } = target {
        match param("ConnectEmailAddress") {
            Some(set) if !set.is_empty() => {}
            _ => {
                return fail(
                    format!(
                        "{what}: mail-dispatch may not start email contacts (the stack's ConnectEmailAddress is empty)"
                    ),
                    deploy(&format!("ConnectEmailAddress={address}")),
                );
            }
        }
    }
    pass(format!(
        "{what}: the stack lets mail-dispatch start {} in instance {instance}",
        target.contacts()
    ))
}

async fn instance(connect: &aws_sdk_connect::Client, stack: &Stack, target: &ConnectTarget) -> Check {
    let id = target.instance_id();
    match connect.describe_instance().instance_id(id).send().await {
        Ok(out) => {
            let Some(found) = out.instance else {
                return fail(
                    format!("Connect instance {id}: Amazon Connect described nothing"),
                    "run doctor again; if it stays so, look at the instance in the Connect console",
                );
            };
            let status = found
                .instance_status
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            let alias = found.instance_alias.unwrap_or_default();
            if status == "ACTIVE" {
                pass(format!("Connect instance {id} ({alias}) is active"))
            } else {
                fail(
                    format!("Connect instance {id} ({alias}) is {status}, not ACTIVE"),
                    "wait until its creation finishes (Connect console), or fix what failed and create it again",
                )
            }
        }
        Err(e) => {
            let (code, message) = refusal(&e);
            let fix = if code == "ResourceNotFoundException" {
                format!(
                    "the instance id is the last part of the instance ARN (Connect console → the instance → Overview), in {}, the stack's region; subscribe again with the right id",
                    stack.region
                )
            } else {
                other_fix(&code, "connect:DescribeInstance")
            };
            fail(format!("Connect instance {id}: {message}"), fix)
        }
    }
}

async fn flow(connect: &aws_sdk_connect::Client, target: &ConnectTarget) -> Check {
    let (instance, id) = (target.instance_id(), target.flow_id());
    let fix_type = "use a published flow of type Contact flow (inbound): Routing → Flows → the flow → Show additional flow information shows its ARN, whose last part is the id";
    match connect
        .describe_contact_flow()
        .instance_id(instance)
        .contact_flow_id(id)
        .send()
        .await
    {
        Ok(out) => {
            let Some(found) = out.contact_flow else {
                return fail(
                    format!("contact flow {id}: Amazon Connect described nothing"),
                    fix_type,
                );
            };
            let name = found.name.unwrap_or_default();
            let kind = found
                .r#type
                .as_ref()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default();
            let status = found
                .status
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            let state = found
                .state
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            if kind != "CONTACT_FLOW" {
                fail(
                    format!("contact flow {id} ({name}) is of type {kind}, not an inbound contact flow"),
                    fix_type,
                )
            } else if status != "PUBLISHED" || state != "ACTIVE" {
                fail(
                    format!("contact flow {id} ({name}) is {status} and {state}"),
                    "publish the flow (and make it active) in the flow designer",
                )
            } else {
                pass(format!(
                    "contact flow {id} ({name}) is a published inbound flow of instance {instance}"
                ))
            }
        }
        Err(e) => {
            let (code, message) = refusal(&e);
            let fix = if code == "ResourceNotFoundException" {
                fix_type.to_string()
            } else {
                other_fix(&code, "connect:DescribeContactFlow")
            };
            fail(
                format!("contact flow {id} of instance {instance}: {message}"),
                fix,
            )
        }
    }
}

async fn email_address(connect: &aws_sdk_connect::Client, target: &ConnectTarget, address: &str) -> Check {
    let instance = target.instance_id();
    let criteria = EmailAddressSearchCriteria::builder()
        .string_condition(
            StringCondition::builder()
                .field_name("EmailAddress")
                .value(address)
                .comparison_type(StringComparisonType::Exact)
                .build(),
        )
        .build();
    match connect
        .search_email_addresses()
        .instance_id(instance)
        .search_criteria(criteria)
        .max_results(10)
        .send()
        .await
    {
        Ok(out) => {
            let found = out
                .email_addresses()
                .iter()
                .find(|e| e.email_address().is_some_and(|a| a.eq_ignore_ascii_case(address)));
            match found {
                Some(e) => pass(format!(
                    "email address {address} is an address of instance {instance} (id {})",
                    e.email_address_id().unwrap_or_default()
                )),
                None => fail(
                    format!("email address {address} is not an address of instance {instance}"),
                    format!(
                        "add {address} to the instance (Connect console → Channels → Email addresses; its domain verified in SES), or subscribe again with the address the instance shows"
                    ),
                ),
            }
        }
        Err(e) => {
            let (code, message) = refusal(&e);
            fail(
                format!("email address {address} in instance {instance}: {message}"),
                other_fix(&code, "connect:SearchEmailAddresses"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets_parse_or_name_the_shape() {
        assert_eq!(
            ConnectTarget::parse("connect-task:i-1/f_2"),
            Some(Ok(ConnectTarget::Task {
                instance_id: "i-1".into(),
                flow_id: "f_2".into()
            }))
        );
        assert_eq!(
            ConnectTarget::parse("connect-email:i-1/f-2/support@contoso.com"),
            Some(Ok(ConnectTarget::Email {
                instance_id: "i-1".into(),
                flow_id: "f-2".into(),
                address: "support@contoso.com".into()
            }))
        );
        assert_eq!(ConnectTarget::parse("https://flows.example.com/x"), None);
        assert_eq!(ConnectTarget::parse("eventbridge:default"), None);
        let err = |raw: &str| ConnectTarget::parse(raw).unwrap().unwrap_err();
        assert!(
            err("connect-task:only-one").contains(TASK_SHAPE),
            "{}",
            err("connect-task:only-one")
        );
        assert!(err("connect-task:arn:aws:connect:us-east-1:1:instance/i/f").contains("give the id only"));
        assert!(err("connect-task:i/").contains("the contact flow id is missing"));
        assert!(err(&format!("connect-task:{}/f", "i".repeat(101))).contains("longer than 100"));
        assert!(err("connect-email:i/f").contains(EMAIL_SHAPE));
        assert!(err("connect-email:i/f/not-an-address").contains("is not an address"));
        assert!(err("connect-email:i/f/a b@c.d").contains("is not an address"));
        assert!(
            err("connect-tasks:i/f").contains(TASK_SHAPE) && err("connect-tasks:i/f").contains(EMAIL_SHAPE)
        );
        assert!(err("connect:i/f").contains("an Amazon Connect target is"));
        assert_eq!(
            target_arg("https://x.example/a"),
            Ok("https://x.example/a".into())
        );
        assert!(target_arg("connect-task:x").is_err());
    }
}
