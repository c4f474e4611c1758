//! Graph's contract as the simulator answers it over HTTP: one subscription
//! per app, resource and change type; delta links that expire; page sizes;
//! listing messages by received time; a cloud without message delta;
//! message bodies of tens of megabytes; and notifications resent while
//! unanswered, until the simulator is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{UPN, app_token, client, graph, graph_get, sim, webhook};
use reqwest::Method;
use serde_json::{Value, json};

const INBOX: &str = "/users/ann@contoso.com/mailFolders('inbox')/messages";

fn in_an_hour() -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn subscription(resource: &str, change: &str, url: &str) -> Value {
    json!({
        "changeType": change,
        "notificationUrl": url,
        "resource": resource,
        "expirationDateTime": in_an_hour(),
        "clientState": "secret",
    })
}

#[tokio::test]
async fn a_second_subscription_of_the_same_combination_is_a_conflict_naming_the_first() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let hook = webhook().await;
    let post = |body: Value| graph(&sim, &token, Method::POST, "/subscriptions", &[], Some(body));
    let inbox = |change: &str| post(subscription(INBOX, change, &hook));

    let (status, first) = inbox("created").await;
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_str().unwrap().to_string();

    // Graph compares resources without case and with or without the leading '/'.
    for resource in [
        INBOX,
        "users/ann@contoso.com/mailFolders('inbox')/messages",
        "Users/ANN@contoso.com/MailFolders('Inbox')/Messages",
    ] {
        let (status, err) = post(subscription(resource, "created", &hook)).await;
        assert_eq!(status, 409, "{resource}: {err}");
        assert_eq!(err["error"]["code"], "ObjectIdentifierInUse");
        assert_eq!(
            err["error"]["message"],
            format!("Subscription Id {id} already exists for the requested combination")
        );
        assert!(err["error"]["innerError"]["request-id"].is_string(), "{err}");
        assert!(err["error"]["innerError"]["date"].is_string(), "{err}");
    }
    assert_eq!(sim.stats().subscription_conflicts, 3);
    assert_eq!(sim.subscriptions().len(), 1);

    // Another change type or another resource is another combination.
    let (status, _) = inbox("created,updated").await;
    assert_eq!(status, 201);
    let (status, _) = post(subscription("/users/ann@contoso.com/events", "created", &hook)).await;
    assert_eq!(status, 201);
    assert_eq!(sim.stats().subscription_conflicts, 3);

    // Deleting the subscription frees the combination.
    let (status, _) = graph(
        &sim,
        &token,
        Method::DELETE,
        &format!("/subscriptions/{id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, again) = inbox("created").await;
    assert_eq!(status, 201, "{again}");

    // A subscription Graph removed silently no longer exists there: it blocks nothing.
    sim.remove_subscription_silently(again["id"].as_str().unwrap());
    let (status, _) = inbox("created").await;
    assert_eq!(status, 201);
    assert_eq!(sim.stats().subscription_conflicts, 3);
}

fn an_hour_ago() -> String {
    (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn mail(subject: &str) -> graph_sim::Message {
    graph_sim::Message {
        subject: subject.into(),
        from: ("Bo".into(), "bo@example.org".into()),
        body_html: "<p>hi</p>".into(),
        ..Default::default()
    }
}

/// The first request of the sweep relay365 runs: new mail of the inbox
/// received since a moment.
fn first_delta(since: &str) -> String {
    format!(
        "/users/{UPN}/mailFolders/inbox/messages/delta?changeType=created&$select=id&$filter=receivedDateTime%20ge%20{since}"
    )
}

/// The ids of a page's items.
fn ids(page: &Value) -> Vec<String> {
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// A simulator whose inbox holds `n` new mails, an app token, and a moment
/// before they arrived.
async fn inbox_of(n: usize) -> (graph_sim::Sim, String, String) {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let since = an_hour_ago();
    for i in 0..n {
        sim.deliver_message(UPN, mail(&format!("m{i}")));
    }
    (sim, token, since)
}

/// Walks a delta round to its end: the ids of each page and the deltaLink.
async fn walk(
    sim: &graph_sim::Sim,
    token: &str,
    start: &str,
    prefer: &[(&str, &str)],
) -> (Vec<Vec<String>>, String) {
    let mut pages = Vec::new();
    let mut next = start.to_string();
    loop {
        let (status, page) = graph(sim, token, Method::GET, &next, prefer, None).await;
        assert_eq!(status, 200, "{next}: {page}");
        pages.push(ids(&page));
        match (
            page["@odata.nextLink"].as_str(),
            page["@odata.deltaLink"].as_str(),
        ) {
            (Some(n), None) => {
                assert!(n.contains("$skiptoken=") && !n.contains("$deltatoken="), "{n}");
                next = n.to_string();
            }
            (None, Some(d)) => {
                assert!(d.contains("$deltatoken="), "{d}");
                return (pages, d.to_string());
            }
            _ => panic!("a page needs exactly one of nextLink and deltaLink: {page}"),
        }
    }
}

fn sizes<T>(pages: &[Vec<T>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

#[tokio::test]
async fn message_delta_pages_ten_by_default_and_as_maxpagesize_asks() {
    let (sim, token, since) = inbox_of(25).await;
    // (the Prefer header sent, the page sizes of the round)
    let cases = [
        (None, &[10, 10, 5][..]),
        (Some("odata.maxpagesize=4"), &[4, 4, 4, 4, 4, 4, 1]),
        (Some("odata.maxpagesize=100"), &[25]),
    ];
    for (prefer, expected) in cases {
        let header: Vec<(&str, &str)> = prefer.map(|p| ("prefer", p)).into_iter().collect();
        let (pages, _) = walk(&sim, &token, &first_delta(&since), &header).await;
        assert_eq!(sizes(&pages), expected, "prefer {prefer:?}");
    }
}

#[tokio::test]
async fn a_nextlink_resumed_later_finishes_the_round_and_the_deltalink_brings_what_came_since() {
    let (sim, token, since) = inbox_of(12).await;
    let prefer = [("prefer", "odata.maxpagesize=5")];
    let (_, first) = graph(&sim, &token, Method::GET, &first_delta(&since), &prefer, None).await;
    let mut seen = ids(&first);
    let next = first["@odata.nextLink"].as_str().unwrap().to_string();

    // Mail arrives while the client is away; it comes with the next round.
    let late: Vec<String> = (0..3)
        .map(|i| sim.deliver_message(UPN, mail(&format!("late{i}"))))
        .collect();
    let (rest, delta_link) = walk(&sim, &token, &next, &prefer).await;
    seen.extend(rest.into_iter().flatten());
    assert_eq!(seen.len(), 12);
    assert!(late.iter().all(|id| !seen.contains(id)));

    // A nextLink stays valid until the delta state expires.
    let (status, _) = graph(&sim, &token, Method::GET, &next, &prefer, None).await;
    assert_eq!(status, 200);

    let (pages, _) = walk(&sim, &token, &delta_link, &prefer).await;
    assert_eq!(pages.concat(), late);
}

async fn assert_gone(sim: &graph_sim::Sim, token: &str, link: &str) {
    let (status, err) = graph_get(sim, token, link).await;
    assert_eq!(status, 410, "{link}: {err}");
    assert_eq!(err["error"]["code"], "syncStateNotFound");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("The sync state generation is not found"),
        "{err}"
    );
    assert!(err["error"]["innerError"]["request-id"].is_string(), "{err}");
}

#[tokio::test]
async fn expired_delta_links_answer_410_for_ever_and_a_new_query_starts_over() {
    let (sim, token, since) = inbox_of(3).await;
    let prefer = [("prefer", "odata.maxpagesize=2")];
    let (_, page) = graph(&sim, &token, Method::GET, &first_delta(&since), &prefer, None).await;
    let next = page["@odata.nextLink"].as_str().unwrap().to_string();
    let (_, old_delta) = walk(&sim, &token, &next, &prefer).await;
    let calendar = format!(
        "/users/{UPN}/calendarView/delta?startDateTime=2026-01-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z"
    );
    let (_, old_calendar) = walk(&sim, &token, &calendar, &[]).await;

    sim.expire_delta_links();
    for link in [&next, &old_delta, &old_calendar] {
        assert_gone(&sim, &token, link).await;
    }
    // A token never issued is gone too.
    assert_gone(
        &sim,
        &token,
        &format!("/users/{UPN}/mailFolders('inbox')/messages/delta?$deltatoken=1.abc"),
    )
    .await;

    // A new query works and its links are honoured; the old ones stay dead.
    let (pages, new_delta) = walk(&sim, &token, &first_delta(&since), &[]).await;
    assert_eq!(pages.concat().len(), 3);
    let (pages, _) = walk(&sim, &token, &new_delta, &[]).await;
    assert_eq!(pages.concat().len(), 0);
    let (_, new_calendar) = walk(&sim, &token, &calendar, &[]).await;
    assert_gone(&sim, &token, &old_delta).await;
    assert_gone(&sim, &token, &old_calendar).await;
    assert_eq!(sim.stats().delta_links_gone, 6);

    // The same control over HTTP, for scripts.
    let resp = common::client()
        .post(format!("{}/_sim/delta/expire", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_gone(&sim, &token, &new_delta).await;
    assert_gone(&sim, &token, &new_calendar).await;
}

#[tokio::test]
async fn calendar_delta_pages_like_message_delta() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    for i in 0..12 {
        sim.create_event(
            UPN,
            graph_sim::Event {
                subject: format!("e{i}"),
                start: format!("2026-11-{:02}T09:00:00.0000000", i + 1),
                end: format!("2026-11-{:02}T10:00:00.0000000", i + 1),
                time_zone: "UTC".into(),
                ..Default::default()
            },
        );
    }
    let calendar = format!(
        "/users/{UPN}/calendarView/delta?startDateTime=2026-01-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z"
    );
    let (pages, delta_link) = walk(&sim, &token, &calendar, &[]).await;
    assert_eq!(sizes(&pages), [10, 2]);
    let (pages, _) = walk(&sim, &token, &calendar, &[("prefer", "odata.maxpagesize=5")]).await;
    assert_eq!(sizes(&pages), [5, 5, 2]);
    let first = pages[0][0].clone();
    sim.update_event(UPN, &first, |e| e.subject = "moved".into());
    let (pages, _) = walk(&sim, &token, &delta_link, &[]).await;
    assert_eq!(pages.concat(), [first]);
}

/// Seven inbox messages received a minute apart from 10:00, and one in another folder.
fn fill_by_minute(sim: &graph_sim::Sim) -> Vec<String> {
    let ids = (0..7)
        .map(|i| {
            sim.deliver_message(
                UPN,
                graph_sim::Message {
                    received: format!("2026-12-01T10:0{i}:00Z"),
                    ..mail(&format!("m{i}"))
                },
            )
        })
        .collect();
    sim.deliver_message(
        UPN,
        graph_sim::Message {
            received: "2026-12-01T10:03:30Z".into(),
            folder: "archive".into(),
            ..mail("elsewhere")
        },
    );
    ids
}

/// Follows a message list to its end: (id, receivedDateTime) of every page.
async fn list_all(sim: &graph_sim::Sim, token: &str, start: &str) -> Vec<Vec<(String, String)>> {
    let mut pages = Vec::new();
    let mut next = Some(start.to_string());
    while let Some(url) = next {
        let (status, page) = graph_get(sim, token, &url).await;
        assert_eq!(status, 200, "{url}: {page}");
        pages.push(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    assert!(m.get("body").is_none() && m.get("subject").is_none(), "{m}");
                    (
                        m["id"].as_str().unwrap().to_string(),
                        m["receivedDateTime"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        );
        next = page["@odata.nextLink"].as_str().map(str::to_string);
        if let Some(n) = &next {
            assert!(n.contains("skip=") && n.contains("receivedDateTime"), "{n}");
        }
    }
    pages
}

#[tokio::test]
async fn messages_list_by_received_time_in_pages() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let ids = fill_by_minute(&sim);
    let inbox = format!("/users/{UPN}/mailFolders/inbox/messages");

    let pages = list_all(
        &sim,
        &token,
        &format!(
            "{inbox}?$filter=receivedDateTime%20ge%202026-12-01T10:02:00Z&$orderby=receivedDateTime%20asc&$select=id,receivedDateTime&$top=2"
        ),
    )
    .await;
    assert_eq!(sizes(&pages), [2, 2, 1]);
    let listed: Vec<String> = pages.concat().into_iter().map(|(id, _)| id).collect();
    assert_eq!(listed, ids[2..]);

    // gt leaves the bound out; desc turns the order.
    let pages = list_all(
        &sim,
        &token,
        &format!(
            "{inbox}?$filter=receivedDateTime%20gt%202026-12-01T10:02:00Z&$orderby=receivedDateTime%20desc&$select=id,receivedDateTime&$top=3"
        ),
    )
    .await;
    let listed: Vec<String> = pages.concat().into_iter().map(|(id, _)| id).collect();
    let mut expected = ids[3..].to_vec();
    expected.reverse();
    assert_eq!(listed, expected);

    // Both bounds, the default page of 10, and every folder of the mailbox.
    let both_bounds = format!(
        "/users/{UPN}/messages?$filter=receivedDateTime%20ge%202026-12-01T10:03:00Z%20and%20receivedDateTime%20lt%202026-12-01T10:05:00Z&$select=id"
    );
    let (_, all) = graph_get(&sim, &token, &both_bounds).await;
    assert_eq!(all["value"].as_array().unwrap().len(), 3, "{all}");
    assert!(all.get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn filters_graph_refuses_are_refused_in_its_words() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    fill_by_minute(&sim);
    let inbox = format!("/users/{UPN}/mailFolders/inbox/messages");
    let cases = [
        (
            "$filter=receivedDateTime%20ge%20'2026-12-01T10:02:00Z'",
            400,
            "BadRequest",
            "Invalid filter clause: A binary operator with incompatible types was detected. Found operand types 'Edm.DateTimeOffset' and 'Edm.String' for operator kind 'GreaterThanOrEqual'.",
        ),
        (
            // A '+' left unencoded arrives as a space: the offset is lost.
            "$filter=receivedDateTime%20ge%202026-12-01T10:02:00.5+00:00",
            400,
            "BadRequest",
            "Invalid filter clause: The DateTimeOffset text '2026-12-01T10:02:00.5' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range.",
        ),
        (
            "$filter=arrived%20ge%202026-12-01T10:02:00Z",
            400,
            "BadRequest",
            "Invalid filter clause: Could not find a property named 'arrived' on type 'microsoft.graph.message'.",
        ),
        (
            "$filter=receivedDateTime%20>=%202026-12-01T10:02:00Z",
            400,
            "BadRequest",
            "Invalid filter clause: Syntax error at position 17 in 'receivedDateTime >= 2026-12-01T10:02:00Z'.",
        ),
        (
            "$filter=isRead%20eq%20false&$orderby=receivedDateTime%20asc",
            400,
            "InefficientFilter",
            "The restriction or sort order is too complex for this operation.",
        ),
        (
            "$filter=receivedDateTime%20ge%202026-12-01T10:02:00Z&$orderby=subject",
            400,
            "InefficientFilter",
            "The restriction or sort order is too complex for this operation.",
        ),
        (
            "$top=1001",
            400,
            "BadRequest",
            "Invalid value for $top: it must be between 1 and 1000.",
        ),
    ];
    for (q, status, code, message) in cases {
        let (got, err) = graph_get(&sim, &token, &format!("{inbox}?{q}")).await;
        assert_eq!(got, status, "{q}: {err}");
        assert_eq!(err["error"]["code"], code, "{q}: {err}");
        assert_eq!(err["error"]["message"], message, "{q}: {err}");
    }
    // Accepted by Graph, not evaluated by the simulator: said, never ignored.
    let (got, err) = graph_get(&sim, &token, &format!("{inbox}?$filter=isRead%20eq%20false")).await;
    assert_eq!(got, 501, "{err}");
}

#[tokio::test]
async fn without_message_delta_the_folder_is_listed_and_calendar_delta_still_works() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let ids = fill_by_minute(&sim);
    sim.set_message_delta_available(false);
    for url in [
        first_delta("2026-12-01T10:00:00Z"),
        format!("/users/{UPN}/mailFolders('inbox')/messages/delta"),
    ] {
        let (status, err) = graph_get(&sim, &token, &url).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], "ErrorInvalidIdMalformed");
        assert_eq!(err["error"]["message"], "Id is malformed.");
    }
    assert_eq!(sim.stats().message_delta_refused, 2);

    let oldest_first = format!(
        "/users/{UPN}/mailFolders/inbox/messages?$filter=receivedDateTime%20ge%202026-12-01T10:00:00Z&$orderby=receivedDateTime%20asc&$select=id&$top=100"
    );
    let (status, list) = graph_get(&sim, &token, &oldest_first).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);

    let calendar = format!(
        "/users/{UPN}/calendarView/delta?startDateTime=2026-01-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z"
    );
    walk(&sim, &token, &calendar, &[]).await;

    sim.set_message_delta_available(true);
    let (pages, _) = walk(&sim, &token, &first_delta("2026-12-01T10:00:00Z"), &[]).await;
    assert_eq!(pages.concat(), ids);
}

#[tokio::test]
async fn a_body_of_tens_of_megabytes_is_served_whole_with_or_without_other_properties() {
    const SIZE: usize = 26 * 1024 * 1024;
    let sim = sim().await;
    let token = app_token(&sim).await;
    let started = std::time::Instant::now();
    let id = sim.deliver_large_message(UPN, SIZE);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let get = |select: &'static str| {
        let url = format!("{}/v1.0/users/{UPN}/messages/{id}{select}", sim.url());
        let token = token.clone();
        async move {
            let resp = common::client().get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let length: usize = resp.headers()["content-length"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let bytes = resp.bytes().await.unwrap();
            assert_eq!(bytes.len(), length);
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    let check_body = |m: &Value| {
        assert_eq!(m["body"]["contentType"], "html");
        let html = m["body"]["content"].as_str().unwrap();
        assert_eq!(html.len(), SIZE);
        assert!(html.starts_with("<html>") && html.ends_with("</html>"));
        assert!(html.contains("<img alt=\"scan\" src=\"data:image/png;base64,iVBORw0KGgo"));
    };

    let m = get("?$select=id,subject,receivedDateTime,body,from").await;
    check_body(&m);
    assert_eq!(m["id"], id.as_str());
    assert!(m["subject"].as_str().unwrap().starts_with("Scanned contract"));
    assert!(m["receivedDateTime"].is_string() && m["from"].is_object());
    assert!(m.get("bodyPreview").is_none());

    let m = get("?$select=body").await;
    check_body(&m);
    let mut keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["@odata.etag", "body", "id"]);

    let m = get("").await;
    check_body(&m);
    assert!(
        m["bodyPreview"]
            .as_str()
            .unwrap()
            .starts_with("Please find the scanned contract")
    );
    assert_eq!(m["bodyPreview"].as_str().unwrap().chars().count(), 255);

    let m = get("?$select=id,subject").await;
    assert!(m.get("body").is_none(), "{m}");

    // Listed, the body comes the same way.
    let (status, list) = graph_get(
        &sim,
        &token,
        &format!("/users/{UPN}/mailFolders/inbox/messages?$select=id,body&$top=1"),
    )
    .await;
    assert_eq!(status, 200);
    check_body(&list["value"][0]);
}

#[tokio::test]
async fn a_message_created_in_a_folder_is_a_draft_unless_its_message_flags_say_otherwise() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let path = "/users/ann@contoso.com/mailFolders/sentitems/messages";
    let message = |flags: Option<&str>| {
        let mut m = json!({
            "subject": "RE: Order 4411",
            "body": {"contentType": "HTML", "content": "<p>Shipped</p>"},
            "toRecipients": [{"emailAddress": {"address": "bo@example.com"}}],
            "isRead": true,
        });
        if let Some(f) = flags {
            m["singleValueExtendedProperties"] = json!([{"id": "Integer 0x0E07", "value": f}]);
        }
        m
    };
    // As Graph documents it: created in a folder, a message is a draft.
    let (status, draft) = graph(&sim, &token, Method::POST, path, &[], Some(message(None))).await;
    assert_eq!(status, 201, "{draft}");
    assert_eq!(draft["isDraft"], true);
    // PidTagMessageFlags without MSGFLAG_UNSENT (0x8) at creation: an ordinary item.
    let (status, sent) = graph(&sim, &token, Method::POST, path, &[], Some(message(Some("1")))).await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["isDraft"], false);
    assert_eq!(sent["parentFolderId"], "sentitems");
    let (status, unsent) = graph(&sim, &token, Method::POST, path, &[], Some(message(Some("9")))).await;
    assert_eq!(status, 201);
    assert_eq!(unsent["isDraft"], true);
    let (status, err) = graph(&sim, &token, Method::POST, path, &[], Some(message(Some("one")))).await;
    assert_eq!(status, 400, "{err}");
    let folder = sim.folder_messages(UPN, "sentitems");
    assert_eq!(folder.len(), 3);
    assert_eq!(
        folder.iter().map(|m| m.is_draft).collect::<Vec<_>>(),
        vec![true, false, true]
    );
    // Nothing was sent: creating a message in a folder mails no one.
    assert!(sim.sent().is_empty());
}

#[tokio::test]
async fn internet_headers_come_only_with_select_and_attachments_with_their_bytes() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let id = sim.deliver_message(
        UPN,
        graph_sim::Message {
            subject: "Invoice".into(),
            internet_message_id: "<m2@example.com>".into(),
            from: ("Bo".into(), "bo@example.com".into()),
            to: vec![("Ann".into(), UPN.into())],
            headers: vec![("In-Reply-To".into(), "<m1@example.com>".into())],
            attachments: vec![
                ("a.pdf".into(), "application/pdf".into(), 4),
                ("b.txt".into(), "text/plain".into(), 5),
            ],
            attachment_bytes: vec![b"%PDF".to_vec()],
            ..Default::default()
        },
    );
    let message = format!("/users/{UPN}/messages/{id}");
    let (_, plain) = graph_get(&sim, &token, &message).await;
    assert!(plain.get("internetMessageHeaders").is_none(), "{plain}");
    let (_, selected) = graph_get(&sim, &token, &format!("{message}?$select=internetMessageHeaders")).await;
    let headers = selected["internetMessageHeaders"].as_array().unwrap();
    let value = |n: &str| {
        headers
            .iter()
            .find(|h| h["name"] == n)
            .map(|h| h["value"].as_str().unwrap().to_string())
    };
    assert_eq!(value("Message-ID").as_deref(), Some("<m2@example.com>"));
    assert_eq!(value("In-Reply-To").as_deref(), Some("<m1@example.com>"));
    let (_, list) = graph_get(&sim, &token, &format!("{message}/attachments")).await;
    let ids: Vec<String> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let raw = |aid: String| {
        let url = format!("{}/v1.0{message}/attachments/{aid}/$value", sim.url());
        let token = token.clone();
        async move {
            let r = client().get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    assert_eq!(raw(ids[0].clone()).await, (200, b"%PDF".to_vec()));
    let (status, bytes) = raw(ids[1].clone()).await;
    assert_eq!((status, bytes.len()), (200, 5), "size bytes made from the name");
    assert_eq!(raw("att9".into()).await.0, 404);
}

#[tokio::test]
async fn unanswered_notifications_are_resent_until_the_simulator_is_dropped() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A receiver that validates, then answers every notification 500.
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = posts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| {
                let counted = counted.clone();
                async move {
                    match q.get("validationToken") {
                        Some(t) => (axum::http::StatusCode::OK, t.clone()),
                        None => {
                            counted.fetch_add(1, Ordering::SeqCst);
                            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new())
                        }
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let sim = sim().await;
    let token = app_token(&sim).await;
    let (status, sub) = graph(
        &sim,
        &token,
        Method::POST,
        "/subscriptions",
        &[],
        Some(subscription(INBOX, "created", &hook)),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    sim.deliver_message(UPN, mail("unanswered"));
    // Resent: the first post and two more (150 ms, then 300 ms later).
    assert!(
        eventually(10, || posts.load(Ordering::SeqCst) >= 3).await,
        "resent while unanswered"
    );
    drop(sim);
    let at_drop = posts.load(Ordering::SeqCst);
    // Left running, the next resends come 600 ms, 1.2 s and 2.4 s apart.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let after = posts.load(Ordering::SeqCst);
    assert!(
        after <= at_drop + 1,
        "{} resends after the simulator was dropped",
        after - at_drop
    );
}

/// Polls `check` every 50 ms for up to `secs` seconds.
async fn eventually(secs: u64, check: impl Fn() -> bool) -> bool {
    for _ in 0..secs * 20 {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    check()
}
