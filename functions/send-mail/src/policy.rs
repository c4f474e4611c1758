//! Who a connection may send as, and what a request needs of its scopes,
//! checked before anything reaches Graph.

use relay365::model::connection::{AuthMode, Connection};
use relay365::model::scopes::FeatureScope;

use crate::error::SendError;
use crate::message::{Plan, plan};
use crate::request::SendRequest;

/// Checks what only the connection can tell: may it send, and as whom.
///
/// # Errors
/// A 403 [`SendError`] naming the missing scope or right.
pub fn check_connection(req: &SendRequest, conn: &Connection) -> Result<(), SendError> {
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

    #[test]
    fn sending_needs_the_scope_and_send_as_needs_shared() {
        let req = parse(&json!({"connection_id": "support", "from": "other@contoso.com", "to": ["a@b.com"], "subject": "s", "body": {"text": "t"}}), None, None).unwrap();
        let e =
            check_connection(&req, &conn(AuthMode::Delegated, vec![FeatureScope::MailReadOnly])).unwrap_err();
        assert_eq!((e.status, e.code), (403, "permission_denied"));
        let e = check_connection(&req, &conn(AuthMode::Delegated, vec![FeatureScope::MailSend])).unwrap_err();
        assert!(e.message.contains("Mail.Send.Shared"), "{}", e.message);
        assert!(
            check_connection(
                &req,
                &conn(AuthMode::Delegated, vec![FeatureScope::MailSendShared])
            )
            .is_ok()
        );
    }
}
