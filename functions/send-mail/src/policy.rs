//! Who may send from a connection (its `allowed_callers`), who a
//! connection may send as, how many recipients a contact flow may name, and
//! what a request needs of its scopes, checked before anything reaches Graph.

use relay365::model::connection::{AuthMode, Connection};
use relay365::model::scopes::FeatureScope;

use crate::error::SendError;
use crate::message::{Plan, plan};
use crate::request::SendRequest;

/// The most addresses a contact flow's `to`, `cc` and `bcc` may split into
/// when the connection names no `connect_max_recipients`.
pub const DEFAULT_CONNECT_MAX_RECIPIENTS: u32 = 10;

/// Who asks for a send, as the invocation tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An IAM principal, as API Gateway's IAM authorisation reports it
    /// (`requestContext.authorizer.iam.userArn`, an STS session for a role).
    Iam(String),
    /// A contact flow of this Amazon Connect instance (`Details.ContactData.InstanceARN`).
    Connect(String),
    /// An invocation that names nobody: a direct JSON invocation, a route
    /// without IAM authorisation, a contact flow event without its instance.
    Unknown,
    /// The deferred-send queue: its caller was checked when the send was accepted.
    Queue,
}

impl Caller {
    /// The caller of an HTTP request: the IAM principal API Gateway checked.
    pub fn of_http(req: &lambda_http::Request) -> Self {
        use lambda_http::RequestExt;
        use lambda_http::request::RequestContext;
        let arn = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                .authorizer
                .as_ref()
                .and_then(|a| a.iam.as_ref())
                .and_then(|iam| iam.user_arn.clone()),
            _ => None,
        };
        arn.filter(|a| !a.is_empty()).map_or(Caller::Unknown, Caller::Iam)
    }

    /// The caller of a direct invocation: the Amazon Connect instance of a
    /// contact flow event, else nobody.
    pub fn of_event(payload: &serde_json::Value) -> Self {
        payload
            .pointer("/Details/ContactData/InstanceARN")
            .and_then(serde_json::Value::as_str)
            .filter(|a| !a.is_empty())
            .map_or(Caller::Unknown, |a| Caller::Connect(a.to_string()))
    }
}

/// Checks that `caller` may send from `conn`: anyone may when the
/// connection lists no `allowed_callers`.
///
/// # Errors
/// 403 `caller_not_allowed`, naming the caller's ARN.
pub fn check_caller(conn: &Connection, caller: &Caller) -> Result<(), SendError> {
    if conn.allowed_callers.is_empty() {
        return Ok(());
    }
    let arn = match caller {
        Caller::Queue => return Ok(()),
        Caller::Iam(a) | Caller::Connect(a) => a,
        Caller::Unknown => {
            return Err(SendError::new(
                403,
                "caller_not_allowed",
                format!(
                    "connection {} sends only for its allowed_callers, and this invocation names no caller (no IAM principal from API Gateway, no Amazon Connect instance): call POST /mail/send with IAM (SigV4) authorisation, or from an allowed contact flow",
                    conn.id
                ),
            ));
        }
    };
    if relay365::model::callers::allowed(&conn.allowed_callers, arn) {
        return Ok(());
    }
    Err(SendError::new(
        403,
        "caller_not_allowed",
        format!(
            "caller {arn} may not send from connection {}: its allowed_callers do not name this ARN (a role's ARN also names its sessions); call as an allowed principal, or have an operator create the connection with this ARN in allowed_callers",
            conn.id
        ),
    ))
}

/// Checks that a contact flow's send names at most the connection's
/// `connect_max_recipients` addresses (to, cc and bcc together), so a
/// customer typing a list into a flow cannot make it a mass mailer.
///
/// # Errors
/// 400 `too_many_recipients`.
pub fn check_contact_flow_recipients(req: &SendRequest, conn: &Connection) -> Result<(), SendError> {
    let limit = conn
        .connect_max_recipients
        .unwrap_or(DEFAULT_CONNECT_MAX_RECIPIENTS);
    let count = req.to.len() + req.cc.len() + req.bcc.len();
    if count as u64 <= u64::from(limit) {
        return Ok(());
    }
    Err(SendError::new(
        400,
        "too_many_recipients",
        format!(
            "the contact flow's to, cc and bcc split into {count} addresses; connection {} sends at most {limit} from a contact flow (its connect_max_recipients): pass fewer addresses",
            conn.id
        ),
    ))
}

/// Checks what only the connection can tell: may it send, and as whom.
///
/// # Errors
/// A 403 [`SendError`] naming the missing scope or right.
pub fn check_connection(
    req: &SendRequest,
    conn: &Connection,
    config: &relay365::Config,
) -> Result<(), SendError> {
    let can_send = conn
        .scopes
        .iter()
        .any(|s| matches!(s, FeatureScope::MailSend | FeatureScope::MailSendShared));
    if !can_send {
        return Err(SendError::new(
            403,
            "permission_denied",
            format!(
                "connection {} was not given the Mail.Send scope: add it and connect again",
                conn.id
            ),
        ));
    }
    let other = req
        .from
        .as_deref()
        .is_some_and(|f| !conn.mailbox.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(f)));
    // App-only credentials could send as anyone in the tenant: only the
    // connection's own mailbox and the addresses the operator allowed.
    if other && conn.auth.is_app_only() && !req.from.as_deref().is_some_and(|f| config.sender_allowed(f)) {
        return Err(SendError::new(
            403,
            "send_as_not_allowed",
            format!(
                "connection {} is app-only for {}; sending as {} needs that address (or *@its-domain) in RELAY365_ALLOWED_SENDERS (the AllowedSenders parameter of the stack)",
                conn.id,
                conn.mailbox.as_deref().unwrap_or("its mailbox"),
                req.from.as_deref().unwrap_or("")
            ),
        ));
    }
    if other && conn.auth == AuthMode::Delegated && !conn.scopes.contains(&FeatureScope::MailSendShared) {
        return Err(SendError::new(
            403,
            "permission_denied",
            format!(
                "sending as {} from a delegated connection needs the Mail.Send.Shared scope (and Send As rights in Exchange): add it to connection {} and connect again",
                req.from.as_deref().unwrap_or(""),
                conn.id
            ),
        ));
    }
    if !req.attachments.is_empty() && plan(req) == Plan::Draft {
        let rw = conn
            .scopes
            .iter()
            .any(|s| matches!(s, FeatureScope::MailReadWrite | FeatureScope::MailDraft));
        if !rw && conn.auth == AuthMode::Delegated {
            return Err(SendError::new(
                403,
                "permission_denied",
                "large attachments go through a draft, which needs the Mail.Draft (Graph Mail.ReadWrite) scope: add it and connect again",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use relay365::Cloud;
    use serde_json::json;

    use super::*;
    use crate::request::parse;

    fn conn(auth: AuthMode, scopes: Vec<FeatureScope>) -> Connection {
        Connection::new(
            "support".into(),
            auth,
            Cloud::Global,
            "t".into(),
            Some("support@contoso.com".into()),
            scopes,
        )
    }

    fn config(allowed: Option<&str>) -> relay365::Config {
        let mut env = vec![
            ("RELAY365_APP_SECRET_ID", "a"),
            ("RELAY365_SIGNING_KEY_SECRET_ID", "k"),
        ];
        env.extend(allowed.map(|a| ("RELAY365_ALLOWED_SENDERS", a)));
        relay365::Config::from_pairs(&env).unwrap()
    }

    fn from(f: &str) -> SendRequest {
        parse(
            &json!({"connection_id": "support", "from": f, "to": ["a@b.com"], "subject": "s", "body": {"text": "t"}}),
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn sending_needs_the_scope_and_send_as_needs_shared() {
        let (req, cfg) = (from("other@contoso.com"), config(None));
        let e = check_connection(
            &req,
            &conn(AuthMode::Delegated, vec![FeatureScope::MailReadOnly]),
            &cfg,
        )
        .unwrap_err();
        assert_eq!((e.status, e.code), (403, "permission_denied"));
        let e = check_connection(
            &req,
            &conn(AuthMode::Delegated, vec![FeatureScope::MailSend]),
            &cfg,
        )
        .unwrap_err();
        assert!(e.message.contains("Mail.Send.Shared"), "{}", e.message);
        assert!(
            check_connection(
                &req,
                &conn(AuthMode::Delegated, vec![FeatureScope::MailSendShared]),
                &cfg
            )
            .is_ok()
        );
    }

    #[test]
    fn app_only_sends_as_its_mailbox_or_an_allowed_address_only() {
        let app = conn(AuthMode::AppSecret, vec![FeatureScope::MailSend]);
        let e = check_connection(&from("ceo@contoso.com"), &app, &config(None)).unwrap_err();
        assert_eq!((e.status, e.code), (403, "send_as_not_allowed"));
        assert!(e.message.contains("RELAY365_ALLOWED_SENDERS"), "{}", e.message);
        assert!(
            check_connection(&from("Support@Contoso.com"), &app, &config(None)).is_ok(),
            "its own mailbox"
        );
        let listed = config(Some("helpdesk@contoso.com, *@fabrikam.com"));
        assert!(check_connection(&from("HELPDESK@contoso.com"), &app, &listed).is_ok());
        assert!(check_connection(&from("anyone@fabrikam.com"), &app, &listed).is_ok());
        assert!(check_connection(&from("ceo@contoso.com"), &app, &listed).is_err());
        assert!(check_connection(&from("x@evil-fabrikam.com"), &app, &listed).is_err());
    }
}
