//! What the sign-in end-to-end tests share: connections made through the
//! real admin API, the browser's steps through the sign-in handlers, and the
//! check of a page a person reads.
#![allow(dead_code, unreachable_pub)]

use lambda_http::{Body, Response};
use relay365::model::connection::Status;
use relay365_harness::*;

/// `POST /connections` with `body`, which must be created: the answer.
pub async fn create(s: &Stack, body: serde_json::Value) -> serde_json::Value {
    let resp = connections::handle(
        request("POST", "/connections", Some(&body.to_string()), &[]),
        &s.services,
    )
    .await;
    assert_eq!(resp.status(), 201, "{}", body_text(&resp));
    body_json(&resp)
}

/// `GET /connections/{id}` through the admin API: (status, answer).
pub async fn connection(s: &Stack, id: &str) -> (u16, serde_json::Value) {
    let r = connections::handle(
        request("GET", &format!("/connections/{id}"), None, &[]),
        &s.services,
    )
    .await;
    (r.status().as_u16(), body_json(&r))
}

/// Checks the status and generation connection `id`'s record holds: the record.
pub async fn assert_stored(s: &Stack, id: &str, status: Status, generation: u64) -> relay365::Connection {
    let stored = s.stored(id).await.unwrap();
    assert_eq!(
        (stored.status, stored.generation),
        (status, generation),
        "{id}'s record: (status, generation)"
    );
    stored
}

/// A browser's `GET` of a sign-in route, with these cookies.
pub async fn get(s: &Stack, path: &str, cookies: &[&str]) -> Response<Body> {
    oauth_callback::handle(request("GET", path, None, cookies), &s.services).await
}

/// Opens a link's start step (its path and query) in a browser: Microsoft's
/// URL and the cookie that binds the browser, which must be set so that only
/// the relay's sign-in routes on HTTPS ever see it.
pub async fn start(s: &Stack, path: &str) -> (String, String) {
    let resp = get(s, path, &[]).await;
    assert_eq!(resp.status(), 302, "{}", body_text(&resp));
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/oauth"] {
        assert!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    (location(&resp), cookies(&resp).remove(0))
}

/// A start step, Microsoft and the way back in one browser: the final
/// response and the browser's cookie.
pub async fn through_microsoft(s: &Stack, path: &str) -> (Response<Body>, String) {
    let (microsoft, cookie) = start(s, path).await;
    let back = s.follow(&microsoft).await;
    (get(s, &path_and_query(&back), &[&cookie]).await, cookie)
}

/// Checks that a page came with `status` and says `words`.
pub fn assert_says((got, page): (u16, &str), status: u16, words: &str) {
    assert_eq!(got, status, "{page}");
    assert!(page.contains(words), "the page should say {words:?}: {page}");
}

/// [`assert_says`] of a response: its page.
pub fn assert_page(resp: &Response<Body>, status: u16, words: &str) -> String {
    let page = body_text(resp);
    assert_says((resp.status().as_u16(), &page), status, words);
    page
}
