//! Delta queries: a mail folder's `messages/delta` and the primary
//! calendar's `calendarView/delta`, with Graph's state tokens.
//!
//! Tokens are opaque and kept by the simulator, as Graph keeps its sync
//! state: a `@odata.nextLink` (`$skiptoken`) continues a round, a
//! `@odata.deltaLink` (`$deltatoken`) starts the next one, and both stay
//! valid until the delta state expires ([`crate::Sim::expire_delta_links`]).
//! A token the simulator does not hold answers `410 Gone` with
//! `syncStateNotFound`: expired tokens are forgotten, and new ones are
//! random, so an expired link can never come back to life.
//!
//! A round pages through the changes made up to the moment it started;
//! changes made while a client pages are reported in the next round, so a
//! client that resumes a nextLink later still sees each change once.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::reply::{event_json, graph_error, ok_json};
use crate::state::{DeltaLink, DeltaScope, Message, State};

/// Graph's page size for message delta when the client states no
/// `Prefer: odata.maxpagesize`: 10 messages. Not on the message-delta page
/// itself; Graph answers 10 (microsoftgraph/msgraph-sdk-java#536 and
/// microsoftgraph/microsoft-graph-docs#6006: "it only returned me 10
/// values - the default"), as list messages documents for its default page
/// (learn.microsoft.com/graph/api/user-list-messages). calendarView delta
/// uses the same default here; Graph does not document one for it.
pub(crate) const DEFAULT_PAGE: usize = 10;

/// The largest `odata.maxpagesize` honoured; larger values are lowered to it.
/// Graph documents no cap for message delta; 1,000 is list messages' `$top`
/// limit.
pub(crate) const MAX_PAGE: usize = 1000;

/// The page size a request asks for with `Prefer: odata.maxpagesize=N`.
pub(crate) fn max_page_size(headers: &HeaderMap) -> usize {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            p.trim()
                .strip_prefix("odata.maxpagesize=")
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
        .filter(|n| *n > 0)
        .map_or(DEFAULT_PAGE, |n| n.min(MAX_PAGE))
}

/// `410 Gone`, in Graph's words (the Outlook message as clients log it:
/// microsoftgraph/microsoft-graph-docs#2350). The code is spelled as Graph's
/// error reference spells it; Outlook has been seen sending
/// `SyncStateNotFound`, so clients compare it without case, or go by the
/// status.
fn gone(st: &mut State, token: &str) -> Response {
    st.stats.delta_links_gone += 1;
    let generation = token
        .split('.')
        .next()
        .and_then(|g| g.parse::<u64>().ok())
        .unwrap_or(0);
    let highest = st.delta_generation;
    graph_error(
        StatusCode::GONE,
        "syncStateNotFound",
        &format!(
            "The sync state generation is not found; generation={generation};[highest={highest}][{highest}]."
        ),
    )
}

/// Keeps a new state token and returns it.
fn issue(st: &mut State, link: DeltaLink) -> String {
    st.delta_generation += 1;
    let token = format!("{}.{}", st.delta_generation, uuid::Uuid::new_v4().simple());
    st.delta_links.insert(token.clone(), link);
    token
}

/// The state a request continues: its `$skiptoken` or `$deltatoken`, or a
/// new round from the first request's parameters (`first`). A token must
/// belong to this mailbox and scope.
fn resume(
    st: &mut State,
    upn: &str,
    query: &[(String, String)],
    same_scope: impl Fn(&DeltaScope) -> bool,
    first: impl FnOnce() -> Result<DeltaScope, Response>,
) -> Result<DeltaLink, Response> {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(token) = param("$skiptoken").or_else(|| param("$deltatoken")) else {
        return Ok(DeltaLink {
            upn: upn.to_ascii_lowercase(),
            scope: first()?,
            since: 0,
            page: None,
        });
    };
    match st.delta_links.get(token) {
        Some(link) if link.upn == upn.to_ascii_lowercase() && same_scope(&link.scope) => Ok(link.clone()),
        _ => Err(gone(st, token)),
    }
}

/// Answers one page: `items` are (position, JSON) in the round's order,
/// starting after the cursor; a nextLink when more follow, else a deltaLink.
fn answer(
    st: &mut State,
    link: DeltaLink,
    until: u64,
    base: &str,
    items: Vec<(u64, Value)>,
    page_len: usize,
) -> Response {
    let more = items.len() > page_len;
    let last = items.iter().take(page_len).next_back().map(|(pos, _)| *pos);
    let value: Vec<Value> = items.into_iter().take(page_len).map(|(_, v)| v).collect();
    let mut body = json!({"value": value});
    if more {
        let next = DeltaLink {
            page: Some((until, last.unwrap_or_default())),
            ..link
        };
        let token = issue(st, next);
        body["@odata.nextLink"] = format!("{base}?$skiptoken={token}").into();
    } else {
        let next = DeltaLink {
            since: until,
            page: None,
            ..link
        };
        let token = issue(st, next);
        body["@odata.deltaLink"] = format!("{base}?$deltatoken={token}").into();
    }
    ok_json(StatusCode::OK, body)
}

fn prefix(user: Option<&str>) -> String {
    match user {
        Some(u) => format!("users/{u}"),
        None => "me".into(),
    }
}

/// `receivedDateTime ge 2026-12-01T10:00:00Z` (the only filter message delta
/// supports) as (strict, unix seconds).
fn received_filter(filter: &str) -> Option<(bool, i64)> {
    let mut words = filter.split_whitespace();
    if words.next()? != "receivedDateTime" {
        return None;
    }
    let strict = match words.next()? {
        "ge" => false,
        "gt" => true,
        _ => return None,
    };
    let at =
        time::OffsetDateTime::parse(words.next()?, &time::format_description::well_known::Rfc3339).ok()?;
    words.next().is_none().then_some((strict, at.unix_timestamp()))
}

/// `GET …/mailFolders/{folder}/messages/delta`.
pub(crate) fn messages(
    st: &mut State,
    upn: &str,
    folder: &str,
    user: Option<&str>,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    if !st.message_delta_available {
        // The 21Vianet cloud has no message delta (graph.md §13; Microsoft's
        // wording for messages/delta there was not found). Its Graph reads
        // `delta` as an item id, and answers as it does for
        // `mailFolders/microsoft.graph.delta` in that cloud
        // (microsoftgraph/msgraph-sdk-java#552): 400 ErrorInvalidIdMalformed.
        st.stats.message_delta_refused += 1;
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidIdMalformed",
            "Id is malformed.",
        );
    }
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let first = || {
        if let Some(ct) = param("changeType")
            && !matches!(ct, "created" | "updated" | "deleted")
        {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Invalid changeType.",
            ));
        }
        let received = match param("$filter") {
            None => None,
            Some(f) => Some(received_filter(f).ok_or_else(|| {
                graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidUrlQueryFilter",
                    "The delta query supports only a filter on receivedDateTime with ge or gt.",
                )
            })?),
        };
        Ok(DeltaScope::Messages {
            folder: folder.to_string(),
            received,
            created_only: param("changeType") == Some("created"),
        })
    };
    let same = |s: &DeltaScope| matches!(s, DeltaScope::Messages { folder: f, .. } if f == folder);
    let link = match resume(st, upn, query, same, first) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let DeltaScope::Messages {
        received,
        created_only,
        ..
    } = link.scope.clone()
    else {
        return gone(st, "");
    };
    // The round covers changes up to its start; the cursor is a position
    // in the mailbox (messages are only ever appended).
    let (until, cursor) = link.page.map_or((st.seq, 0), |(u, c)| (u, c));
    let since = link.since;
    let in_round = |seq: u64| seq > since && seq <= until;
    let received_ok = |m: &Message| match received {
        None => true,
        Some((strict, t)) => {
            let at = time::OffsetDateTime::parse(&m.received, &time::format_description::well_known::Rfc3339)
                .map(|d| d.unix_timestamp())
                .unwrap_or(0);
            if strict { at > t } else { at >= t }
        }
    };
    let page_len = max_page_size(headers);
    let items: Vec<(u64, Value)> = st
        .mailboxes
        .get(&upn.to_ascii_lowercase())
        .map(|m| {
            m.messages
                .iter()
                .enumerate()
                .skip(cursor as usize)
                // Arrived (or moved in) in the round, or, unless only new
                // ones are asked for, changed in it.
                .filter(|(_, x)| {
                    x.folder == folder
                        && (in_round(x.seq) || (!created_only && in_round(x.changed_seq)))
                        && received_ok(x)
                })
                .take(page_len + 1)
                .map(|(i, m)| {
                    (
                        i as u64 + 1,
                        json!({"id": m.id, "receivedDateTime": m.received, "subject": m.subject}),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let base = format!(
        "{}/v1.0/{}/mailFolders('{folder}')/messages/delta",
        st.base_url,
        prefix(user)
    );
    answer(st, link, until, &base, items, page_len)
}

/// `calendarView/delta`: the changes of the primary calendar's events that
/// start in the window the first request named (kept with the token), with
/// `@removed` for deleted ones. As documented, the window is required and
/// `$select` is not supported.
pub(crate) fn calendar(
    st: &mut State,
    upn: &str,
    user: Option<&str>,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if param("$select").is_some() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "$select is not supported on calendarView delta.",
        );
    }
    let first = || match (param("startDateTime"), param("endDateTime")) {
        (Some(from), Some(to)) => Ok(DeltaScope::Calendar {
            from: from.to_string(),
            to: to.to_string(),
        }),
        _ => Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        )),
    };
    let same = |s: &DeltaScope| matches!(s, DeltaScope::Calendar { .. });
    let link = match resume(st, upn, query, same, first) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let DeltaScope::Calendar { from, to } = link.scope.clone() else {
        return gone(st, "");
    };
    // The cursor is the sequence number of the last change returned.
    let (until, cursor) = link.page.map_or((st.seq, 0), |(u, c)| (u, c));
    let since = link.since.max(cursor);
    let in_round = |seq: u64| seq > since && seq <= until;
    // Compare the date-time part only (the window is UTC, the simulator's
    // events carry local times in one zone).
    let in_window = |start: &str| {
        let s = start.get(..19).unwrap_or(start);
        s >= from.get(..19).unwrap_or(&from) && s < to.get(..19).unwrap_or(&to)
    };
    let mut changes: Vec<(u64, Value)> = st
        .mailboxes
        .get(&upn.to_ascii_lowercase())
        .map(|m| {
            m.events
                .iter()
                .filter(|e| in_round(e.changed_seq) && in_window(&e.start))
                .map(|e| (e.changed_seq, event_json(e)))
                .chain(
                    m.removed_events
                        .iter()
                        .filter(|(_, seq)| in_round(*seq))
                        .map(|(id, seq)| (*seq, json!({"id": id, "@removed": {"reason": "deleted"}}))),
                )
                .collect()
        })
        .unwrap_or_default();
    changes.sort_by_key(|(seq, _)| *seq);
    let page_len = max_page_size(headers);
    changes.truncate(page_len + 1);
    let base = format!("{}/v1.0/{}/calendarView/delta", st.base_url, prefix(user));
    answer(st, link, until, &base, changes, page_len)
}
