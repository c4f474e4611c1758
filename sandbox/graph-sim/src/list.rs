//! Listing messages: `GET /users/{u}/messages` and
//! `GET /users/{u}/mailFolders/{f}/messages`, the way a client catches up
//! where message delta does not exist (the 21Vianet cloud):
//! `$filter=receivedDateTime ge|gt …`, `$orderby=receivedDateTime asc|desc`,
//! `$select`, `$top` and `$skip`, with `@odata.nextLink` paging by `$skip`
//! as Graph pages this list.
//!
//! Refused as Graph refuses them (400): filter syntax errors, unknown
//! properties, a date-time quoted as a string or without its offset, and an
//! `$orderby` whose properties do not lead the `$filter` (`InefficientFilter`,
//! learn.microsoft.com/graph/api/user-list-messages). Filters Graph accepts
//! but the simulator does not evaluate (on other properties, `or`) answer
//! `501 NotImplemented` instead of being ignored.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::body::{Pieces, served};
use crate::reply::{graph_error, ok_json};
use crate::state::{Message, State};

/// `$top` must lie in 1..=1000 (user-list-messages: "Use $top to customize
/// page size, within the range of 1 and 1000").
const MAX_TOP: usize = 1000;

/// The properties of Graph's `message` type, for "Could not find a property".
const PROPERTIES: [&str; 32] = [
    "bccRecipients",
    "body",
    "bodyPreview",
    "categories",
    "ccRecipients",
    "changeKey",
    "conversationId",
    "conversationIndex",
    "createdDateTime",
    "flag",
    "from",
    "hasAttachments",
    "id",
    "importance",
    "inferenceClassification",
    "internetMessageHeaders",
    "internetMessageId",
    "isDeliveryReceiptRequested",
    "isDraft",
    "isRead",
    "isReadReceiptRequested",
    "lastModifiedDateTime",
    "parentFolderId",
    "receivedDateTime",
    "replyTo",
    "sender",
    "sentDateTime",
    "subject",
    "toRecipients",
    "uniqueBody",
    "webLink",
    "attachments",
];

const RECEIVED: &str = "receivedDateTime";

/// A comparison operator of OData, with the name ODataLib gives it in errors.
#[derive(Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            "lt" => Self::Lt,
            "le" => Self::Le,
            _ => return None,
        })
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Eq => "Equal",
            Self::Ne => "NotEqual",
            Self::Gt => "GreaterThan",
            Self::Ge => "GreaterThanOrEqual",
            Self::Lt => "LessThan",
            Self::Le => "LessThanOrEqual",
        }
    }

    fn holds(self, left: i128, right: i128) -> bool {
        match self {
            Self::Eq => left == right,
            Self::Ne => left != right,
            Self::Gt => left > right,
            Self::Ge => left >= right,
            Self::Lt => left < right,
            Self::Le => left <= right,
        }
    }
}

/// One `property op value` of a filter.
struct Clause<'a> {
    property: &'a str,
    op: Op,
    value: &'a str,
    /// The value of a `receivedDateTime` clause, in nanoseconds since 1970.
    at: Option<i128>,
}

fn bad_filter(message: &str) -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!("Invalid filter clause: {message}"),
    )
}

fn not_implemented(what: &str) -> Response {
    graph_error(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        &format!("The Graph simulator does not evaluate {what}; it supports receivedDateTime only."),
    )
}

fn unknown_property(name: &str) -> Option<Response> {
    let head = name.split('/').next().unwrap_or(name);
    (!PROPERTIES.iter().any(|p| p.eq_ignore_ascii_case(head))).then(|| {
        bad_filter(&format!(
            "Could not find a property named '{head}' on type 'microsoft.graph.message'."
        ))
    })
}

/// Parses `a op v and b op w …`: the clauses, and whether `or` joins any.
fn parse_filter(filter: &str) -> Result<(Vec<Clause<'_>>, bool), Response> {
    let words: Vec<&str> = filter.split_whitespace().collect();
    let syntax = |at: usize| {
        // The position ODataLib reports: where the offending word starts.
        let pos = words.get(at).and_then(|w| filter.find(w)).unwrap_or(filter.len());
        bad_filter(&format!("Syntax error at position {pos} in '{filter}'."))
    };
    let mut clauses = Vec::new();
    let mut uses_or = false;
    let mut i = 0;
    loop {
        let (Some(property), Some(op)) = (words.get(i), words.get(i + 1)) else {
            return Err(syntax(i + 1));
        };
        let Some(op) = Op::parse(op) else {
            return Err(syntax(i + 1));
        };
        let Some(value) = words.get(i + 2) else {
            return Err(syntax(i + 2));
        };
        let mut clause = Clause {
            property,
            op,
            value,
            at: None,
        };
        // A literal is read as it is met: a bad date-time fails before
        // whatever follows it.
        if property.eq_ignore_ascii_case(RECEIVED) {
            clause.at = Some(date_value(&clause)?);
        }
        clauses.push(clause);
        match words.get(i + 3) {
            None => return Ok((clauses, uses_or)),
            Some(&"and") => {}
            Some(&"or") => uses_or = true,
            Some(_) => return Err(syntax(i + 3)),
        }
        i += 4;
    }
}

/// A `receivedDateTime` value: an unquoted DateTimeOffset literal.
fn date_value(clause: &Clause<'_>) -> Result<i128, Response> {
    if clause.value.starts_with('\'') {
        return Err(bad_filter(&format!(
            "A binary operator with incompatible types was detected. Found operand types 'Edm.DateTimeOffset' and 'Edm.String' for operator kind '{}'.",
            clause.op.kind()
        )));
    }
    if !clause.value.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(unknown_property(clause.value).unwrap_or_else(|| {
            bad_filter(&format!(
                "A binary operator with incompatible types was detected. Found operand types 'Edm.DateTimeOffset' and '{}' for operator kind '{}'.",
                clause.value,
                clause.op.kind()
            ))
        }));
    }
    OffsetDateTime::parse(clause.value, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp_nanos)
        .map_err(|_| {
            bad_filter(&format!(
                "The DateTimeOffset text '{}' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range.",
                clause.value
            ))
        })
}

/// `$orderby`: (property, descending) pairs.
fn parse_orderby(orderby: &str) -> Result<Vec<(&str, bool)>, Response> {
    orderby
        .split(',')
        .map(|part| {
            let mut words = part.split_whitespace();
            let property = words.next().unwrap_or("");
            let descending = match words.next() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => {
                    return Err(graph_error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!(
                            "Syntax error at position {} in '{orderby}'.",
                            orderby.find(other).unwrap_or(0)
                        ),
                    ));
                }
            };
            if let Some(r) = unknown_property(property) {
                return Err(r);
            }
            Ok((property, descending))
        })
        .collect()
}

fn number(query: &[(String, String)], name: &str) -> Result<Option<usize>, Response> {
    match query.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.parse::<usize>().map(Some).map_err(|_| {
            graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Invalid value '{v}' for query option {name}: it must be a non-negative integer."),
            )
        }),
    }
}

fn received_at(m: &Message) -> i128 {
    OffsetDateTime::parse(&m.received, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp_nanos)
        .unwrap_or(0)
}

/// `GET …/messages`: one page of the folder's (or mailbox's) messages.
pub(crate) fn messages(
    st: &mut State,
    upn: &str,
    folder: Option<&str>,
    user: Option<&str>,
    query: &[(String, String)],
) -> Response {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some((k, _)) = query.iter().find(|(k, _)| {
        k.starts_with('$') && !matches!(k.as_str(), "$filter" | "$orderby" | "$select" | "$top" | "$skip")
    }) {
        return not_implemented(k);
    }
    let (clauses, uses_or) = match param("$filter").map(parse_filter).transpose() {
        Ok(parsed) => parsed.unwrap_or_default(),
        Err(r) => return r,
    };
    if let Some(r) = clauses.iter().find_map(|c| unknown_property(c.property)) {
        return r;
    }
    let bounds: Vec<(Op, i128)> = clauses.iter().filter_map(|c| Some((c.op, c.at?))).collect();
    let order = match param("$orderby").map(parse_orderby).transpose() {
        Ok(o) => o.unwrap_or_default(),
        Err(r) => return r,
    };
    // Outlook's rule for $filter with $orderby: the ordered properties
    // appear in the filter, in the same order, before any other.
    if !clauses.is_empty()
        && order
            .iter()
            .enumerate()
            .any(|(i, (p, _))| clauses.get(i).is_none_or(|c| !c.property.eq_ignore_ascii_case(p)))
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InefficientFilter",
            "The restriction or sort order is too complex for this operation.",
        );
    }
    if let Some(c) = clauses
        .iter()
        .find(|c| !c.property.eq_ignore_ascii_case(RECEIVED))
    {
        return not_implemented(&format!("$filter on {}", c.property));
    }
    if uses_or {
        return not_implemented("or in $filter");
    }
    if order.len() > 1 || order.iter().any(|(p, _)| !p.eq_ignore_ascii_case(RECEIVED)) {
        return not_implemented("this $orderby");
    }
    let (top, skip) = match (number(query, "$top"), number(query, "$skip")) {
        (Ok(t), Ok(s)) => (t, s.unwrap_or(0)),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if top.is_some_and(|t| t == 0 || t > MAX_TOP) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Invalid value for $top: it must be between 1 and {MAX_TOP}."),
        );
    }
    let top = top.unwrap_or(crate::delta::DEFAULT_PAGE);
    // Without $orderby the newest come first, as Outlook lists them.
    let descending = order.first().is_none_or(|(_, desc)| *desc);
    let Some(mbox) = st.mailboxes.get_mut(&upn.to_ascii_lowercase()) else {
        return ok_json(StatusCode::OK, json!({"value": []}));
    };
    // (received, arrival, position) of the messages that pass the filter.
    let mut found: Vec<(i128, u64, usize)> = mbox
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| folder.is_none_or(|f| m.folder == f))
        .map(|(i, m)| (received_at(m), m.seq, i))
        .filter(|(at, _, _)| bounds.iter().all(|(op, bound)| op.holds(*at, *bound)))
        .collect();
    found.sort_unstable();
    if descending {
        found.reverse();
    }
    let mut pieces = Pieces::default();
    pieces.push(&b"{\"value\":["[..]);
    for (n, &(_, _, at)) in found.iter().skip(skip).take(top).enumerate() {
        if n > 0 {
            pieces.push(&b","[..]);
        }
        if let Some(served) = served(mbox, at) {
            pieces.message(&mbox.messages[at], upn, &served, query);
        }
    }
    pieces.push(&b"]"[..]);
    if skip + top < found.len() {
        let path = match (user, folder) {
            (Some(u), Some(f)) => format!("users/{u}/mailFolders('{f}')/messages"),
            (Some(u), None) => format!("users/{u}/messages"),
            (None, Some(f)) => format!("me/mailFolders('{f}')/messages"),
            (None, None) => "me/messages".into(),
        };
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query.iter().filter(|(k, _)| k != "$skip") {
            next.append_pair(k, v);
        }
        next.append_pair("$skip", &(skip + top).to_string());
        let link = format!("{}/v1.0/{path}?{}", st.base_url, next.finish());
        pieces.push(format!(",\"@odata.nextLink\":{}", Value::String(link)));
    }
    pieces.push(&b"}"[..]);
    pieces.respond()
}
