//! What a person's browser does with a connect link, for the tests that play
//! that person: open the link (keeping the cookie), follow Microsoft's answer
//! (accepting the simulator's consent page when there is one), and come back
//! to the callback.

/// `name=value` of each Set-Cookie.
pub fn cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .collect()
}

/// The `Location` header, or `""`.
pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Signs in through `connect_url` as [`crate::DEMO_USER`], accepting consent.
/// Returns the callback's status and page.
///
/// # Errors
/// A sentence saying which step did not go as a browser expects.
pub async fn sign_in(connect_url: &str) -> Result<(u16, String), String> {
    let http = relay365::https::client_for(true).map_err(|e| e.to_string())?;
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}")) }
    };
    let start = get(connect_url.to_string()).await?;
    if start.status() != 302 {
        return Err(format!(
            "the connect link answered {}: {}",
            start.status(),
            start.text().await.unwrap_or_default()
        ));
    }
    let jar = cookies(&start).join("; ");
    let mut at = location(&start);
    for _ in 0..3 {
        let resp = get(at.clone()).await?;
        if resp.status() == 302 {
            at = location(&resp);
            break;
        }
        // The simulator's consent page: submit its form with "Accept".
        let page = resp.text().await.unwrap_or_default();
        if !page.contains("Permissions requested") {
            return Err(format!("expected the consent page, got: {page}"));
        }
        let mut url = url::Url::parse(&at).map_err(|e| format!("{at}: {e}"))?;
        url.set_query(None);
        {
            let mut q = url.query_pairs_mut();
            for input in page.split("<input type=hidden ").skip(1) {
                let name = attr(input, "name");
                let value = attr(input, "value");
                q.append_pair(&unescape(&name), &unescape(&value));
            }
            q.append_pair("sim_user", crate::DEMO_USER);
            q.append_pair("sim_consent", "accept");
        }
        at = url.to_string();
    }
    let done = http
        .get(&at)
        .header("cookie", jar)
        .send()
        .await
        .map_err(|e| format!("GET {at}: {e}"))?;
    let status = done.status().as_u16();
    Ok((status, done.text().await.unwrap_or_default()))
}

fn attr(tag: &str, name: &str) -> String {
    let needle = format!("{name}=\"");
    let Some(start) = tag.find(&needle).map(|i| i + needle.len()) else {
        return String::new();
    };
    let end = tag[start..].find('"').unwrap_or(tag.len() - start);
    tag[start..start + end].to_string()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
