//! The pages a person sees at the end of a sign-in or an admin consent.
//!
//! Every step of the flows returns a [`PageError`] when it cannot go on, and
//! the one conversion here, `From<PageError> for HttpResponse`, makes its
//! page: the status, the title, the words (what happened and what to do,
//! keyed on Microsoft's AADSTS code where there is one) and the cookie that
//! ends the attempt. Every value shown is escaped by
//! [`api::html_page`]; no token, code, verifier or secret is ever part of an
//! error, so none can reach a page.

use relay365::microsoft::aadsts;
use relay365::microsoft::tokens::TokenError;
use relay365::model::connection::Connection;
use relay365::services::Services;
use relay365::web::links;
use relay365::web::response::{self as api, HttpResponse};
use relay365::web::signing::SignError;

use crate::binding::Refusal;

/// Which flow a page is about: a person's sign-in (the connect link) or an
/// administrator's consent (the admin-consent link). The two say the same
/// things with their own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// A delegated sign-in, started from the connect link.
    SignIn,
    /// An app-only grant, started from the admin-consent link.
    AdminConsent,
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flow::SignIn => "sign-in",
            Flow::AdminConsent => "admin consent",
        })
    }
}

/// Why a sign-in or consent stops, grouped by what the person can do about
/// it. The message is for logs; the page is [`HttpResponse::from`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    // Ask for a new link.
    /// The connect link lacks its `link` parameter.
    #[error("the connect link is incomplete")]
    ConnectLinkIncomplete,
    /// The link's signature or expiry does not hold.
    #[error("the {flow} link is not valid: {reason}")]
    LinkNotValid {
        /// The link's flow.
        flow: Flow,
        /// What is wrong with it.
        reason: SignError,
    },
    /// The connect link was spent by an earlier sign-in.
    #[error("the connect link for {mailbox} was already used")]
    ConnectLinkUsed {
        /// The mailbox it connected (or "the mailbox").
        mailbox: String,
    },
    /// The admin-consent link was spent by an earlier consent.
    #[error("the admin-consent link of connection {connection} was already used")]
    ConsentLinkUsed {
        /// The connection it granted.
        connection: String,
    },
    /// The connection no longer exists.
    #[error("connection {0} does not exist")]
    ConnectionGone(String),

    // Use the other link.
    /// A link of `flow` for a connection of the other kind.
    #[error("connection {connection} does not take a {flow} link")]
    WrongKindOfLink {
        /// The flow of the link that was opened.
        flow: Flow,
        /// The connection it names.
        connection: String,
    },

    // Start again from the link.
    /// Microsoft's answer to a sign-in lacks what it must carry.
    #[error("Microsoft's answer is incomplete: {missing}")]
    SignInIncomplete {
        /// What is missing, for the page.
        missing: &'static str,
    },
    /// The sign-in `state` does not hold.
    #[error("the sign-in state is not valid: {0}")]
    StateNotValid(SignError),
    /// Microsoft's answer to a consent has neither link nor state.
    #[error("the consent answer is incomplete")]
    ConsentIncomplete,
    /// Microsoft did not report an administrator's consent.
    #[error("Microsoft did not report a consent")]
    ConsentNotGranted,
    /// The cookie is missing or names another attempt.
    #[error("the {0} was finished in another browser than it started in")]
    OtherBrowser(Flow),
    /// The state's nonce was spent, or replaced by a newer start.
    #[error("the {0} was already completed or replaced")]
    AlreadyUsed(Flow),
    /// Microsoft refused the sign-in or consent (its `error` parameter).
    #[error("Microsoft refused ({}): {}", .0.code, .0.title)]
    Microsoft(aadsts::Explanation),
    /// The code exchange or the app-only token request failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Microsoft granted no refresh token.
    #[error("Microsoft did not grant offline access")]
    NoOfflineAccess,
    /// The account that signed in may not connect this mailbox.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The app-only token lacks application permissions the connection needs.
    #[error("the consent lacks the application permissions {missing}")]
    PermissionMissing {
        /// Why, naming the tenant, the connection and its scopes.
        why: String,
        /// The missing permissions, comma separated.
        missing: String,
        /// How many are missing.
        count: usize,
        /// The app registration's client id.
        client_id: String,
    },

    // Try again in a moment.
    /// The connection record could not be read.
    #[error("the connection could not be read")]
    ReadFailed,
    /// The connection record (or its token) could not be written.
    #[error("the connection could not be saved")]
    SaveFailed,
    /// Graph's `/me` did not answer.
    #[error("Graph did not say which mailbox signed in")]
    MailboxUnknown,
    /// The app-only token's `roles` could not be read.
    #[error("the app-only token's permissions could not be read")]
    RolesUnreadable,

    // Nothing to do: another attempt won.
    /// Another sign-in or consent of the connection completed at the same time.
    #[error("another {0} completed at the same time")]
    Beaten(Flow),

    // The operator must fix the deployment.
    /// A setting or the app secret is missing or wrong.
    #[error("not configured: {0}")]
    NotConfigured(String),
}

/// What a page shows.
struct Page {
    status: u16,
    title: String,
    lines: Vec<String>,
}

impl Page {
    fn new(status: u16, title: &str, lines: Vec<String>) -> Self {
        Self {
            status,
            title: title.to_string(),
            lines,
        }
    }
}

impl From<PageError> for HttpResponse {
    /// The page a person sees for `e`.
    fn from(e: PageError) -> Self {
        let p = e.page();
        page(p.status, &p.title, p.lines)
    }
}

impl PageError {
    fn page(self) -> Page {
        use PageError as E;
        match self {
            E::ConnectLinkIncomplete => Page::new(
                400,
                "Connect link incomplete",
                vec!["The address is missing its link parameter.".into(), start_again()],
            ),
            E::LinkNotValid { flow, reason } => link_not_valid_page(flow, reason),
            E::ConnectLinkUsed { mailbox } => Page::new(
                400,
                "Connect link already used",
                vec![
                    format!("This link was used to connect {mailbox} already, and a used link does not work twice."),
                    "To connect again, ask the person who manages the connection for a new link (GET /connections/{id} gives it), and open it in this browser.".into(),
                ],
            ),
            E::ConsentLinkUsed { connection } => Page::new(
                400,
                "Consent link already used",
                vec![
                    format!("This link was used to grant connection {connection} already, and a used link does not work twice."),
                    new_consent_link(),
                ],
            ),
            E::ConnectionGone(id) => Page::new(
                404,
                "Connection not found",
                vec![
                    format!("The connection {id} no longer exists."),
                    "Ask for a new connect link.".into(),
                ],
            ),
            E::WrongKindOfLink { flow, connection } => Page::new(
                400,
                "Wrong kind of link",
                vec![match flow {
                    Flow::SignIn => format!("Connection {connection} is app-only: an administrator grants it with the admin-consent link, not by signing in."),
                    Flow::AdminConsent => format!("Connection {connection} signs in as a user: use its connect link."),
                }],
            ),
            E::SignInIncomplete { missing } => {
                Page::new(400, "Sign-in incomplete", vec![missing.into(), start_again()])
            }
            E::StateNotValid(reason) => Page::new(
                400,
                "Sign-in not valid",
                vec![sign_error_words(reason, "sign-in"), start_again()],
            ),
            E::ConsentIncomplete => Page::new(
                400,
                "Consent incomplete",
                vec![
                    "The address has neither a consent link nor Microsoft's answer.".into(),
                    "Open the admin-consent link again.".into(),
                ],
            ),
            E::ConsentNotGranted => Page::new(
                400,
                "Consent not granted",
                vec![
                    "Microsoft did not report that an administrator consented.".into(),
                    "Open the admin-consent link again.".into(),
                ],
            ),
            E::OtherBrowser(flow) => other_browser_page(flow),
            E::AlreadyUsed(flow) => already_used_page(flow),
            E::Microsoft(e) => Page::new(
                400,
                &e.title,
                vec![e.fix.clone(), format!("Microsoft's code: {}.", e.code)],
            ),
            E::Token(e) => token_page(e),
            E::NoOfflineAccess => Page::new(
                400,
                "Sign-in not completed",
                vec![
                    "Microsoft did not grant offline access, so the connection could not stay signed in.".into(),
                    "Sign in again and accept all requested permissions.".into(),
                ],
            ),
            E::Refused(r) => refusal_page(r),
            E::PermissionMissing {
                why,
                missing,
                count,
                client_id,
            } => permission_missing_page(why, &missing, count, &client_id),
            E::ReadFailed => Page::new(
                503,
                "Please try again",
                vec!["The service could not read the connection just now. Reload this page in a moment.".into()],
            ),
            E::SaveFailed => Page::new(
                503,
                "Please try again",
                vec!["The service could not save the connection just now. Start again from the connect link in a moment.".into()],
            ),
            E::MailboxUnknown => Page::new(
                502,
                "Please try again",
                vec!["Microsoft signed you in but did not say which mailbox it is. Start again from the connect link.".into()],
            ),
            E::RolesUnreadable => Page::new(
                502,
                "Please try again",
                vec![
                    "Microsoft's token did not say which permissions were granted, so the consent could not be checked.".into(),
                    "Open the admin-consent link again in a moment.".into(),
                ],
            ),
            E::Beaten(flow) => beaten_page(flow),
            E::NotConfigured(what) => Page::new(500, "Not configured", vec![what]),
        }
    }
}

fn link_not_valid_page(flow: Flow, reason: SignError) -> Page {
    match flow {
        Flow::SignIn => Page::new(
            400,
            "Connect link not valid",
            vec![sign_error_words(reason, "connect link"), start_again()],
        ),
        Flow::AdminConsent => Page::new(
            400,
            "Consent link not valid",
            vec![sign_error_words(reason, "admin-consent link"), new_consent_link()],
        ),
    }
}

/// What the consent lacks, and where an administrator grants it.
fn permission_missing_page(why: String, missing: &str, count: usize, client_id: &str) -> Page {
    Page::new(
        403,
        "Permission missing",
        vec![
            why,
            format!(
                "To grant {}: in the Microsoft Entra admin center, open App registrations → {client_id} → API permissions → Add a permission → Microsoft Graph → Application permissions, add {missing}, then choose \"Grant admin consent\" for the organisation.",
                if count == 1 { "it" } else { "them" }
            ),
            "Then open the admin-consent link again. The connection stays waiting for consent until then."
                .into(),
        ],
    )
}

fn beaten_page(flow: Flow) -> Page {
    match flow {
        Flow::SignIn => Page::new(
            409,
            "Signed in elsewhere meanwhile",
            vec!["Another sign-in for this connection completed at the same time; that one is kept.".into()],
        ),
        Flow::AdminConsent => Page::new(
            409,
            "Consent completed elsewhere meanwhile",
            vec!["Another consent for this connection completed at the same time; that one is kept.".into()],
        ),
    }
}

fn other_browser_page(flow: Flow) -> Page {
    let (what, link) = match flow {
        Flow::SignIn => ("sign-in", "connect link"),
        Flow::AdminConsent => ("consent", "admin-consent link"),
    };
    Page::new(
        400,
        "Finish in the same browser",
        vec![
            format!("This {what} was started in another browser, or this browser blocked the {what} cookie."),
            format!("Open the {link} again in this browser and finish there."),
        ],
    )
}

fn already_used_page(flow: Flow) -> Page {
    match flow {
        Flow::SignIn => Page::new(
            400,
            "Sign-in already used",
            vec![
                "This sign-in was already completed, or a newer one was started since.".into(),
                "Start again from the connect link if the connection is not working.".into(),
            ],
        ),
        Flow::AdminConsent => Page::new(
            400,
            "Consent already used",
            vec![
                "This consent was already completed, or a newer one was started since.".into(),
                "Open the admin-consent link again if the connection is not active.".into(),
            ],
        ),
    }
}

/// A failed code exchange or app-only token request: Microsoft's refusal
/// explained, a pause, or the deployment's own fault.
fn token_page(e: TokenError) -> Page {
    match e {
        TokenError::ReauthRequired { code, reason } => Page::new(
            400,
            "Sign-in not completed",
            vec![
                reason,
                format!("Microsoft's code: {}.", code.as_deref().unwrap_or("invalid_grant")),
            ],
        ),
        TokenError::AppCredentials { code, title, fix } | TokenError::Refused { code, title, fix, .. } => {
            Page::new(400, &title, vec![fix, format!("Microsoft's code: {code}.")])
        }
        TokenError::Unavailable(_) | TokenError::Store(_) => Page::new(
            503,
            "Please try again",
            vec!["Microsoft's sign-in service or our storage did not answer. Start again from the connect link in a moment.".into()],
        ),
        other => Page::new(500, "Not configured", vec![other.to_string()]),
    }
}

/// A sign-in by an account that may not connect the mailbox: who was
/// expected, who signed in, and that nothing was stored.
fn refusal_page(r: Refusal) -> Page {
    let nothing = "Nothing was stored. The link can be used again for the right account.".to_string();
    match r {
        Refusal::NoIdentity(_) => Page::new(
            502,
            "Please try again",
            vec![
                "Microsoft signed you in but did not say who you are and in which organisation, so the mailbox was not connected.".into(),
                "Start again from the connect link.".into(),
            ],
        ),
        Refusal::Audience => Page::new(
            400,
            "Sign-in not valid",
            vec![
                "Microsoft's answer was made for another app than this deployment's.".into(),
                "Start again from the connect link; if this happens again, check the client_id in the app secret.".into(),
            ],
        ),
        Refusal::UnknownDomain { domain } => Page::new(
            400,
            "Organisation not found",
            vec![
                format!("Microsoft knows no organisation that owns the domain {domain}, so relay365 cannot tell which organisation may connect this mailbox."),
                "Check the mailbox address of the connection, or create it again with the organisation's tenant id (tenant_id).".into(),
                nothing,
            ],
        ),
        Refusal::Discovery(_) => Page::new(
            503,
            "Please try again",
            vec!["Microsoft did not say which organisation owns the mailbox's domain just now. Start again from the connect link in a moment.".into()],
        ),
        Refusal::OtherOrganisation { mailbox, expected_tid, signed_in, tid } => Page::new(
            403,
            "Signed in from another organisation",
            vec![
                format!("This link connects {mailbox}, a mailbox of organisation {expected_tid}, but you signed in as {signed_in} of organisation {tid}."),
                format!("Only the mailbox's own account, in its own organisation, can connect it: sign out of Microsoft (or use a private window) and sign in as {mailbox}."),
                nothing,
            ],
        ),
        Refusal::NotTheMailbox { mailbox, signed_in } => Page::new(
            403,
            "Signed in as someone else",
            vec![
                format!("This link connects {mailbox}, but you signed in as {signed_in}."),
                format!("Sign out of Microsoft (or use a private window) and sign in as {mailbox}; or, to connect {signed_in}, ask for a connection of its own."),
                nothing,
            ],
        ),
        Refusal::OtherUser { mailbox, signed_in, tid } => Page::new(
            403,
            "Signed in as another user",
            vec![
                format!("{mailbox} was connected by another account of organisation {tid}; you signed in as {signed_in}. A connection stays with the account that connected it."),
                "Sign in with the account that connected it; to connect this account, ask for a new connection.".into(),
                "Nothing was stored: the connection keeps working as before.".into(),
            ],
        ),
    }
}

/// The cookie header that ends a sign-in or consent attempt.
pub(crate) fn clear_cookie() -> String {
    api::set_cookie(links::OAUTH_COOKIE, "", "/oauth", 0)
}

/// A page (every value in it escaped) that also clears the attempt's cookie.
pub(crate) fn page(status: u16, title: &str, lines: Vec<String>) -> HttpResponse {
    api::html_page(status, title, &lines, &[clear_cookie()])
}

/// The deployment's public URL.
///
/// # Errors
/// [`PageError::NotConfigured`] when `RELAY365_PUBLIC_URL` is not set.
pub(crate) fn public_url(s: &Services) -> Result<url::Url, PageError> {
    s.config
        .public_url
        .clone()
        .ok_or_else(|| PageError::NotConfigured("RELAY365_PUBLIC_URL is not set on this deployment.".into()))
}

fn sign_error_words(e: SignError, what: &str) -> String {
    match e {
        SignError::Expired => format!("This {what} has expired."),
        SignError::BadSignature | SignError::Malformed => {
            format!("This {what} is not valid: it was changed, or it was not made by this deployment.")
        }
    }
}

fn start_again() -> String {
    "Ask the person who manages the connection for a new connect link, and open it in this browser.".into()
}

fn new_consent_link() -> String {
    "Ask the person who manages the connection for a new admin-consent link (GET /connections/{id} gives it), and open it in this browser.".into()
}

/// Microsoft's `error` and `error_description` for a connection, explained
/// (the fix names this deployment's redirect URI and client id).
pub(crate) fn explained(
    s: &Services,
    conn: &Connection,
    redirect: &str,
    error: &str,
    description: &str,
) -> aadsts::Explanation {
    let client_id = s.client_id();
    let ctx = aadsts::Context {
        redirect_uri: Some(redirect),
        cloud: Some(conn.cloud),
        client_id: Some(&client_id),
    };
    aadsts::explain(error, description, &ctx)
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

    #[test]
    fn every_error_is_a_page_with_its_status() {
        let cases = [
            (PageError::ConnectLinkIncomplete, 400),
            (PageError::AlreadyUsed(Flow::SignIn), 400),
            (PageError::Beaten(Flow::AdminConsent), 409),
            (PageError::ConnectionGone("c".into()), 404),
            (PageError::SaveFailed, 503),
            (PageError::MailboxUnknown, 502),
            (PageError::NotConfigured("x".into()), 500),
        ];
        for (e, status) in cases {
            let what = e.to_string();
            assert_eq!(HttpResponse::from(e).status(), status, "{what}");
        }
    }
}
