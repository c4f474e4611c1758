//! Delta queries: where a flow's delta query starts (a mail folder's
//! `delta`, a calendar's `calendarView/delta` over a bounded window, or a
//! plain listing where a cloud has no message delta), and walking one to its
//! end. Subscriptions take their baseline link from here; the catch-up walks
//! the same queries page by page.

use serde::Deserialize;
use time::OffsetDateTime;

use crate::microsoft::graph::GraphError;
use crate::microsoft::paths::graph_resource;
use crate::model::connection::{Connection, Subscription};
use crate::model::rfc3339;
use crate::model::scopes::Resource;
use crate::model::sensitive::Sensitive;
use crate::services::Services;

/// One page of a delta query.
#[derive(Deserialize)]
pub(crate) struct DeltaPage {
    #[serde(default)]
    pub(crate) value: Vec<serde_json::Value>,
    #[serde(rename = "@odata.nextLink")]
    pub(crate) next: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    pub(crate) delta: Option<String>,
}

/// Walks a delta query from `start` (a first request or a stored link) to
/// its end, at most 1,000 pages, and returns only the link the next round
/// starts from: a new flow's baseline, whose items are neither kept nor sent
/// (one page at a time is held).
///
/// # Errors
/// [`GraphError`], or a decode error when a page has neither link or the
/// query does not end.
pub async fn end_link(s: &Services, token: &Sensitive, start: &str) -> Result<String, GraphError> {
    let mut next = start.to_string();
    for _ in 0..1000 {
        let page: DeltaPage = s.graph.get_json(&next, token).await?;
        match (page.next, page.delta) {
            (Some(n), _) => next = n,
            (None, Some(d)) => return Ok(d),
            (None, None) => {
                return Err(GraphError::Decode(
                    "a delta page had neither nextLink nor deltaLink".into(),
                ));
            }
        }
    }
    Err(GraphError::Decode("the delta query did not end".into()))
}

/// One change a calendar's delta query reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarChange {
    /// The event's id.
    pub id: String,
    /// Its `changeKey` (the version), absent for a removal.
    pub change_key: Option<String>,
    /// Deleted (or moved out of the window).
    pub removed: bool,
}

impl CalendarChange {
    /// The change type an event for it carries.
    pub fn change_type(&self) -> crate::model::notification::ChangeType {
        use crate::model::notification::ChangeType;
        if self.removed {
            ChangeType::Deleted
        } else {
            ChangeType::Updated
        }
    }

    /// Its delivery ledger key (as dispatch writes it): one per version.
    pub fn ledger_key(&self) -> String {
        format!("{}#{}", self.id, self.change_key.as_deref().unwrap_or("deleted"))
    }
}

/// How far ahead a calendar subscription's delta window reaches.
pub const CALENDAR_WINDOW_DAYS: i64 = 365;

/// The first request of a calendar's delta query: the primary calendar's
/// events starting between `from` and `from` + [`CALENDAR_WINDOW_DAYS`]
/// (Graph's calendar delta needs a window and keeps it in its links).
pub fn calendar_delta_start(conn: &Connection, from: OffsetDateTime) -> String {
    format!(
        "{}/calendarView/delta?startDateTime={}&endDateTime={}",
        crate::microsoft::paths::owner(conn),
        rfc3339(from),
        rfc3339(from + time::Duration::days(CALENDAR_WINDOW_DAYS))
    )
}

/// The first request of a folder's delta query: new mail received at or
/// after `since` (Graph keeps the filter and the change type in the links it
/// returns), ids and received times only (the time lets a catch-up tell a
/// new mail from an old one the ledger forgot).
pub fn delta_start(conn: &Connection, sub: &Subscription, since: OffsetDateTime) -> String {
    let since = rfc3339(since);
    format!(
        "{}/delta?changeType=created&$select=id,receivedDateTime&$filter=receivedDateTime%20ge%20{since}",
        graph_resource(conn, sub)
    )
}

/// Whether a flow catches up by listing its folder instead of a delta query:
/// message delta does not exist in the 21Vianet (China) cloud, so there the
/// folder is listed by `receivedDateTime`, oldest first.
pub fn lists_instead_of_delta(conn: &Connection, sub: &Subscription) -> bool {
    conn.cloud == crate::model::cloud::Cloud::China && sub.resource == Resource::Mail
}

/// Where a folder's listing starts: mail received at or after `since`,
/// oldest first, ids and received times, in pages of 50. It stands in for
/// a delta link where message delta does not exist; the ledger drops what
/// the boundary repeats.
pub fn list_start(conn: &Connection, sub: &Subscription, since: OffsetDateTime) -> String {
    let since = rfc3339(since);
    format!(
        "{}?$filter=receivedDateTime%20ge%20{since}&$orderby=receivedDateTime%20asc&$select=id,receivedDateTime&$top=50",
        graph_resource(conn, sub)
    )
}
