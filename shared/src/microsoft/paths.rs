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
    fn a_mailbox_never_adds_a_path_segment() {
        assert_eq!(
            user("../../ceo@contoso.com/messages"),
            "/users/..%2F..%2Fceo@contoso.com%2Fmessages"
        );
        assert_eq!(user("a b?c#d%e"), "/users/a%20b%3Fc%23d%25e");
    }
}
