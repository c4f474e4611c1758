//! What the binary end-to-end tests share: where the release binaries are,
//! a browser-like client, and the sign-in a person does.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::PathBuf;

/// The release binaries (`make test` builds them first): `RELAY365_BIN_DIR`,
/// else `$CARGO_TARGET_DIR/release`, else the workspace's `target/release`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("RELAY365_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release")
}

/// A SigV4 `Authorization` header for execute-api (the demo checks that
/// callers sign, as IAM routes require, not the signature itself).
pub const SIGNED: &str = "AWS4-HMAC-SHA256 Credential=AKIDDEMOTEST/20261122/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000";

pub fn http() -> reqwest::Client {
    relay365::http::client().unwrap()
}

/// `name=value` of each Set-Cookie.
pub fn cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .collect()
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// What a browser does with a connect link: open it (keeping the cookie),
/// follow Microsoft's answer (accepting the consent page when there is one),
/// and come back to the callback. Returns the callback's status and page.
pub async fn sign_in(connect_url: &str) -> (u16, String) {
    let http = http();
    let start = http.get(connect_url).send().await.unwrap();
    assert_eq!(start.status(), 302, "{}", start.text().await.unwrap());
    let jar = cookies(&start).join("; ");
    let mut at = location(&start);
    for _ in 0..3 {
        let resp = http.get(&at).send().await.unwrap();
        if resp.status() == 302 {
            at = location(&resp);
            break;
        }
        // The simulator's consent page: submit its form with "Accept".
        let page = resp.text().await.unwrap();
        assert!(page.contains("Permissions requested"), "{page}");
        let mut url = url::Url::parse(&at).unwrap();
        url.set_query(None);
        {
            let mut q = url.query_pairs_mut();
            for input in page.split("<input type=hidden ").skip(1) {
                let name = attr(input, "name");
                let value = attr(input, "value");
                q.append_pair(&unescape(&name), &unescape(&value));
            }
            q.append_pair("sim_user", relay365_demo::DEMO_USER);
            q.append_pair("sim_consent", "accept");
        }
        at = url.to_string();
    }
    let done = http.get(&at).header("cookie", jar).send().await.unwrap();
    let status = done.status().as_u16();
    (status, done.text().await.unwrap())
}

fn attr(tag: &str, name: &str) -> String {
    let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    let end = tag[start..].find('"').unwrap();
    tag[start..start + end].to_string()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub use relay365_testkit::eventually;
