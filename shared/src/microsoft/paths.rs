//! Graph paths built from stored values: the one place that turns a
//! mailbox into a path segment, so every caller encodes it the same way.

use crate::model::auth::AuthMode;
use crate::model::connection::{Connection, Subscription};
use crate::model::scopes::Resource;

/// What must be escaped in one segment of a Graph path (an address keeps its
/// `@` and `.`, which Graph reads as they are).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The Graph path of a mailbox by address or id: `/users/{mailbox}`, encoded.
pub fn user(mailbox: &str) -> String {
    format!(
        "/users/{}",
        percent_encoding::utf8_percent_encode(mailbox, PATH_SEGMENT)
    )
}

/// The Graph path of the connection's mailbox: `/me` for delegated
/// connections, `/users/{mailbox}` for app-only ones.
pub fn owner(conn: &Connection) -> String {
    match (conn.auth, &conn.mailbox) {
        (AuthMode::Delegated, _) | (_, None) => "/me".to_string(),
        (_, Some(m)) => user(m),
    }
}

/// An id from outside (a notification's `resourceData.id`) that may not
/// enter a Graph path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} characters of an item id are not a Graph id (letters, digits, '-', '_' and '=', at most 1,024): the notification is not Graph's"
)]
pub struct ForeignId(pub usize);

/// Checks an item id against Graph's alphabet (base64url with `=` padding;
/// message and event ids, immutable or not, never contain `/`, `.` or `%`).
///
/// # Errors
/// [`ForeignId`] for anything else, so `..`, `/` and `%2F` never reach a path.
pub fn item_id(id: &str) -> Result<&str, ForeignId> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='));
    if ok { Ok(id) } else { Err(ForeignId(id.len())) }
}

/// The path of a message of the connection's mailbox.
///
/// # Errors
/// [`ForeignId`] when the id is not Graph's.
pub fn message(conn: &Connection, id: &str) -> Result<String, ForeignId> {
    Ok(format!("{}/messages/{}", owner(conn), item_id(id)?))
}

/// The path of a calendar event of the connection's mailbox.
///
/// # Errors
/// [`ForeignId`] when the id is not Graph's.
pub fn event(conn: &Connection, id: &str) -> Result<String, ForeignId> {
    Ok(format!("{}/events/{}", owner(conn), item_id(id)?))
}

/// The Graph resource path a subscription watches.
pub fn graph_resource(conn: &Connection, sub: &Subscription) -> String {
    let owner = owner(conn);
    match sub.resource {
        Resource::Mail => format!(
            "{owner}/mailFolders('{}')/messages",
            sub.folder.as_deref().unwrap_or("inbox")
        ),
        Resource::Calendar => format!("{owner}/events"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cloud::Cloud;

    fn conn(auth: AuthMode, mailbox: &str) -> Connection {
        Connection::new(
            "c".into(),
            auth,
            Cloud::Global,
            "t".into(),
            Some(mailbox.into()),
            vec![],
        )
    }

    #[test]
    fn owners_and_resources() {
        assert_eq!(owner(&conn(AuthMode::Delegated, "ann@contoso.com")), "/me");
        assert_eq!(
            owner(&conn(AuthMode::AppSecret, "ann@contoso.com")),
            "/users/ann@contoso.com"
        );
        let mail = Subscription::new(Resource::Mail, Some("inbox".into()), None);
        assert_eq!(
            graph_resource(&conn(AuthMode::AppCertificate, "ann@contoso.com"), &mail),
            "/users/ann@contoso.com/mailFolders('inbox')/messages"
        );
        let cal = Subscription::new(Resource::Calendar, None, None);
        assert_eq!(
            graph_resource(&conn(AuthMode::Delegated, "x@y.z"), &cal),
            "/me/events"
        );
    }

    #[test]
    fn item_ids_from_outside_never_change_the_path() {
        let c = conn(AuthMode::AppSecret, "support@contoso.com");
        assert_eq!(
            message(&c, "AAMkAGUwNjQ4ZjIxAAA=").unwrap(),
            "/users/support@contoso.com/messages/AAMkAGUwNjQ4ZjIxAAA="
        );
        assert_eq!(
            event(&c, "AAMkEv1").unwrap(),
            "/users/support@contoso.com/events/AAMkEv1"
        );
        for forged in [
            "../../ceo@contoso.com/messages/AAMk",
            "a/b",
            "a%2Fb",
            "..",
            "a.b",
            "",
            "a b",
            "a?b",
            &"A".repeat(1025),
        ] {
            assert!(message(&c, forged).is_err(), "{forged}");
        }
    }

    #[test]
    fn a_mailbox_never_adds_a_path_segment() {
        assert_eq!(
            user("../../ceo@contoso.com/messages"),
            "/users/..%2F..%2Fceo@contoso.com%2Fmessages"
        );
        assert_eq!(user("a b?c#d%e"), "/users/a%20b%3Fc%23d%25e");
    }
}
