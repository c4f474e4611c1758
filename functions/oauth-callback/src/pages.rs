//! The pages a person sees at the end of a sign-in: each failure says what
//! happened and what to change, keyed on Microsoft's AADSTS code where there
//! is one, with every value from the request escaped.

use relay365::microsoft::aadsts;
use relay365::microsoft::tokens::TokenError;
use relay365::model::connection::Connection;
use relay365::services::Services;
use relay365::web::links;
use relay365::web::response::{self as api, HttpResponse};
use relay365::web::signing::SignError;

pub(crate) fn clear_cookie() -> String {
    api::set_cookie(links::OAUTH_COOKIE, "", "/oauth", 0)
}

pub(crate) fn page(status: u16, title: &str, lines: Vec<String>) -> HttpResponse {
    api::html_page(status, title, &lines, &[clear_cookie()])
}

/// The deployment's public URL, or the page that says it is not set (a
/// response is what every caller returns, so it is not boxed).
#[allow(clippy::result_large_err)]
pub(crate) fn public_url(s: &Services) -> Result<url::Url, HttpResponse> {
    s.config.public_url.clone().ok_or_else(|| {
        page(
            500,
            "Not configured",
            vec!["RELAY365_PUBLIC_URL is not set on this deployment.".into()],
        )
    })
}

pub(crate) fn sign_error_words(e: SignError, what: &str) -> String {
    match e {
        SignError::Expired => format!("This {what} has expired."),
        SignError::BadSignature | SignError::Malformed => {
            format!("This {what} is not valid: it was changed, or it was not made by this deployment.")
        }
    }
}

pub(crate) fn start_again() -> String {
    "Ask the person who manages the connection for a new connect link, and open it in this browser.".into()
}

pub(crate) fn explained(
    s: &Services,
    conn: &Connection,
    redirect: &str,
    error: &str,
    description: &str,
) -> (aadsts::Explanation, HttpResponse) {
    let client_id = s.client_id();
    let ctx = aadsts::Context {
        redirect_uri: Some(redirect),
        cloud: Some(conn.cloud),
        client_id: Some(&client_id),
    };
    let e = aadsts::explain(error, description, &ctx);
    let resp = page(
        400,
        &e.title,
        vec![e.fix.clone(), format!("Microsoft's code: {}.", e.code)],
    );
    (e, resp)
}

pub(crate) fn token_error_page(e: &TokenError) -> HttpResponse {
    match e {
        TokenError::ReauthRequired { code, reason } => page(400, "Sign-in not completed", vec![
            reason.clone(),
            format!("Microsoft's code: {}.", code.as_deref().unwrap_or("invalid_grant")),
        ]),
        TokenError::AppCredentials { code, title, fix } | TokenError::Refused { code, title, fix, .. } => {
            page(400, title, vec![fix.clone(), format!("Microsoft's code: {code}.")])
        }
        TokenError::Unavailable(_) | TokenError::Store(_) => page(503, "Please try again", vec![
            "Microsoft's sign-in service or our storage did not answer. Start again from the connect link in a moment.".into(),
        ]),
        other => page(500, "Not configured", vec![other.to_string()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show_and_clear_the_cookie() {
        let resp = page(400, "Sign-in <refused>", vec!["<script>alert(1)</script>".into()]);
        assert_eq!(resp.status(), 400);
        let lambda_http::Body::Text(html) = resp.body() else {
            panic!("an HTML page")
        };
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
        assert!(
            cookies.iter().any(|c| c.to_str().unwrap().contains("Max-Age=0")),
            "{cookies:?}"
        );
        assert!(sign_error_words(SignError::Expired, "connect link").contains("expired"));
    }
}
