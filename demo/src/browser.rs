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
    let (callback, jar) = authorize(connect_url).await?;
    let http = relay365::https::client_for(true).map_err(|e| e.to_string())?;
    come_back(&http, &callback, &jar).await
}

/// The last step of a sign-in: the browser opens the `callback` Microsoft
/// sent it to, with the cookie `jar` it kept. Returns the callback's status
/// and page.
///
/// # Errors
/// As [`sign_in`].
pub async fn come_back(http: &reqwest::Client, callback: &str, jar: &str) -> Result<(u16, String), String> {
    let done = http
        .get(callback)
        .header("cookie", jar)
        .send()
        .await
        .map_err(|e| format!("GET {callback}: {e}"))?;
    let status = done.status().as_u16();
    Ok((status, done.text().await.unwrap_or_default()))
}

/// The first half of [`sign_in`]: opens `connect_url` and signs in at
/// Microsoft, and returns where Microsoft sends the browser back (the
/// callback URL with its `code` and `state`) and the cookie the browser
/// holds for it, without opening that URL.
///
/// # Errors
/// As [`sign_in`].
pub async fn authorize(connect_url: &str) -> Result<(String, String), String> {
    let http = relay365::https::client_for(true).map_err(|e| e.to_string())?;
    let (jar, to_microsoft) = open_link(&http, connect_url).await?;
    let callback = consent(&http, to_microsoft).await?;
    Ok((callback, jar))
}

/// The first step of a sign-in or consent: the browser opens a connect or
/// admin-consent `link`, which must send it on to Microsoft. Returns the
/// cookie it now holds (for a Cookie header) and where it is sent.
///
/// # Errors
/// As [`sign_in`].
pub async fn open_link(http: &reqwest::Client, link: &str) -> Result<(String, String), String> {
    let start = http
        .get(link)
        .send()
        .await
        .map_err(|e| format!("GET {link}: {e}"))?;
    if start.status() != 302 {
        return Err(format!(
            "the link answered {}: {}",
            start.status(),
            start.text().await.unwrap_or_default()
        ));
    }
    Ok((cookies(&start).join("; "), location(&start)))
}

/// Follows Microsoft's authorize page at `at` as [`crate::DEMO_USER`]
/// (submitting the simulator's consent form with "Accept" when it shows
/// one) and returns the redirect back to the app.
///
/// # Errors
/// As [`sign_in`].
pub async fn consent(http: &reqwest::Client, mut at: String) -> Result<String, String> {
    for _ in 0..3 {
        let resp = http.get(&at).send().await.map_err(|e| format!("GET {at}: {e}"))?;
        if resp.status() == 302 {
            return Ok(location(&resp));
        }
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
    Err(format!("Microsoft never sent the browser back (last page {at})"))
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
