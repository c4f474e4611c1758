//! Why a send failed, as a status, a code and words a caller can act on;
//! and how token and Graph errors become those.

use relay365::microsoft::graph::GraphError;
use relay365::microsoft::tokens::TokenError;
use relay365::model::connection::{AuthMode, Connection};
use relay365::services::Services;
use relay365::web::response::{self as api, HttpResponse};

use crate::request;

/// Why a send failed; each maps to an HTTP status and a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// HTTP status.
    pub status: u16,
    /// Snake-case code.
    pub code: &'static str,
    /// For a person: what happened and what to do.
    pub message: String,
    /// For 429: seconds to wait.
    pub retry_after: Option<u64>,
}

impl SendError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The JSON error response.
    pub fn response(&self) -> HttpResponse {
        let mut r = api::error(self.status, self.code, &self.message);
        if let Some(s) = self.retry_after
            && let Ok(v) = lambda_http::http::HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(lambda_http::http::header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<request::Invalid> for SendError {
    fn from(i: request::Invalid) -> Self {
        Self::new(i.status, i.code, i.message)
    }
}

pub(crate) fn token_error(e: TokenError, s: &Services, conn: Option<&Connection>) -> SendError {
    match e {
        TokenError::UnknownConnection(id) => {
            SendError::new(404, "not_found", format!("connection {id} does not exist"))
        }
        TokenError::NotConnected(id) => SendError::new(
            409,
            "connection_pending",
            format!(
                "connection {id} is waiting for sign-in or admin consent: complete its connect link (GET /connections/{id})"
            ),
        ),
        TokenError::ReauthRequired { reason, .. } => {
            let link = conn.and_then(|c| s.connect_url(c));
            SendError::new(
                409,
                "reauth_required",
                match link {
                    Some(l) => format!("{reason} Reconnect: {l}"),
                    None => reason,
                },
            )
        }
        e if e.is_retryable() => SendError::new(503, "unavailable", format!("{e}")),
        e => SendError::new(502, "graph_auth_failed", format!("{e}")),
    }
}

pub(crate) fn graph_error(e: GraphError, conn: &Connection, from: Option<&str>) -> SendError {
    let delegated = conn.auth == AuthMode::Delegated;
    match &e {
        GraphError::Api {
            status: 403, code, ..
        } if code == "ErrorSendAsDenied" => SendError::new(
            403,
            "send_as_denied",
            format!(
                "Microsoft refused to send as {}: {} needs Send As or Send on Behalf rights on that mailbox (an Exchange admin grants them){}",
                from.unwrap_or("that address"),
                conn.mailbox.as_deref().unwrap_or("the signed-in user"),
                if delegated {
                    ", and the connection needs the Mail.Send.Shared scope"
                } else {
                    ""
                }
            ),
        ),
        GraphError::Api {
            status: 401 | 403,
            code,
            message,
            ..
        } => SendError::new(
            403,
            "permission_denied",
            format!(
                "Microsoft refused ({code}: {message}). The connection needs {}.",
                if delegated {
                    "the delegated permission Mail.Send (scope Mail.Send), consented at sign-in"
                } else {
                    "the application permission Mail.Send with admin consent on the app registration"
                }
            ),
        ),
        GraphError::Api { status: 413, .. } => SendError::new(
            413,
            "too_large",
            "Microsoft refused the message as too large: send big files as s3 attachments",
        ),
        GraphError::Api { status: 404, .. } => SendError::new(
            404,
            "message_not_found",
            "reply_to_message_id was not found in the connection's mailbox (or the mailbox does not exist)",
        ),
        GraphError::Api {
            status: 400,
            code,
            message,
            ..
        } => SendError::new(
            400,
            "invalid_request",
            format!("Microsoft refused the message ({code}): {message}"),
        ),
        GraphError::Throttled { retry_after, .. } => SendError {
            status: 429,
            code: "throttled",
            message: "Microsoft is throttling this mailbox: retry after the time in Retry-After".into(),
            retry_after: Some(retry_after.map_or(30, |d| d.as_secs_f64().ceil() as u64)),
        },
        other => SendError::new(502, "graph_failed", format!("{other}")),
    }
}

#[cfg(test)]
mod tests {
    use relay365::Cloud;

    use super::*;

    fn api(status: u16, code: &str) -> GraphError {
        GraphError::Api {
            status,
            code: code.into(),
            message: "refused".into(),
            request_id: None,
        }
    }

    #[test]
    fn graph_refusals_become_errors_a_caller_can_act_on() {
        let conn = Connection::new(
            "c".into(),
            AuthMode::AppSecret,
            Cloud::Global,
            "t".into(),
            Some("support@contoso.com".into()),
            vec![],
        );
        let e = graph_error(api(403, "ErrorSendAsDenied"), &conn, Some("ceo@contoso.com"));
        assert_eq!((e.status, e.code), (403, "send_as_denied"));
        assert!(
            e.message.contains("ceo@contoso.com") && e.message.contains("Send As"),
            "{}",
            e.message
        );
        let e = graph_error(api(403, "ErrorAccessDenied"), &conn, None);
        assert!(
            e.message.contains("application permission Mail.Send"),
            "{}",
            e.message
        );
        assert_eq!(
            graph_error(api(404, "ErrorItemNotFound"), &conn, None).code,
            "message_not_found"
        );
        assert_eq!(
            graph_error(api(413, "ErrorMessageSizeExceeded"), &conn, None).status,
            413
        );
        let t = graph_error(
            GraphError::Throttled {
                status: 429,
                retry_after: Some(std::time::Duration::from_millis(2500)),
                request_id: None,
            },
            &conn,
            None,
        );
        assert_eq!((t.status, t.retry_after), (429, Some(3)));
        let r = t.response();
        assert_eq!(r.headers()["retry-after"], "3");
    }
}
