//! What Microsoft's sign-in errors mean, in words a person can act on.
//!
//! Microsoft reports failures as an OAuth `error` plus an `error_description`
//! that starts with an `AADSTSnnnn` code. Microsoft warns against branching on
//! the text, so code branches on `error` and uses the AADSTS code only to
//! choose the explanation shown to a person: what happened, and the exact
//! change that fixes it (for a redirect mismatch: the exact URI to register).

/// Facts that make an explanation specific.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    /// The redirect URI this deployment sends, to register exactly.
    pub redirect_uri: Option<&'a str>,
    /// The cloud's display name and portal.
    pub cloud: Option<crate::model::cloud::Cloud>,
    /// The app (client) id.
    pub client_id: Option<&'a str>,
}

/// An explanation of one failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The AADSTS code, or the OAuth error when there is none.
    pub code: String,
    /// One line: what went wrong.
    pub title: String,
    /// What to do about it.
    pub fix: String,
}

/// Pulls the first `AADSTSnnnn` code out of an `error_description`.
pub fn code_of(description: &str) -> Option<String> {
    let start = description.find("AADSTS")?;
    let digits: String = description[start + 6..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

/// Explains an error: by AADSTS code when the description has one, else by
/// the OAuth `error` value.
pub fn explain(error: &str, description: &str, ctx: &Context<'_>) -> Explanation {
    let code = code_of(description);
    let portal = ctx.cloud.map_or("https://portal.azure.com", |c| c.portal());
    let cloud = ctx
        .cloud
        .map_or("the cloud this deployment is set to", |c| c.display_name());
    let app = ctx
        .client_id
        .map_or_else(|| "the app registration".to_string(), |id| format!("app {id}"));
    let redirect = ctx
        .redirect_uri
        .unwrap_or("this deployment's /oauth/callback URL");
    let (title, fix): (String, String) = match code.as_deref().unwrap_or(error) {
        "AADSTS50011" | "AADSTS500113" | "AADSTS900971" => (
            "The redirect URI is not registered on the app.".into(),
            format!(
                "In {portal}, open {app} > Authentication > Web > Redirect URIs and add exactly {redirect} \
                 (same scheme, host, path and trailing slash), save, then connect again."
            ),
        ),
        "AADSTS700016" => (
            "The app was not found in this tenant.".into(),
            format!(
                "Check the client_id in the app secret, that the app is registered in {cloud}, and that it is \
                 multi-tenant or registered in the tenant you sign in to."
            ),
        ),
        "AADSTS7000215" | "AADSTS70002" => (
            "The client secret is wrong.".into(),
            "Use the secret's Value (not its Secret ID) from Certificates & secrets, and store it with \
             infra/set-app-secret.sh."
                .into(),
        ),
        "AADSTS7000222" => (
            "The client secret has expired.".into(),
            "Create a new client secret under Certificates & secrets and store it with infra/set-app-secret.sh."
                .into(),
        ),
        "AADSTS700027" | "AADSTS700024" => (
            "The certificate assertion was refused.".into(),
            "Upload the certificate's public part under Certificates & secrets > Certificates, check the PFX and \
             password in the app secret, and that this machine's clock is right."
                .into(),
        ),
        "AADSTS65001" => (
            "Nobody has consented to this app's permissions yet.".into(),
            "Sign in again and accept the consent prompt, or have an administrator grant consent for the tenant.".into(),
        ),
        "AADSTS65004" | "access_denied" => (
            "The sign-in was cancelled or the consent was declined.".into(),
            "Start again from the connect link and accept the permissions; if you did not mean to connect this \
             mailbox, nothing needs doing."
                .into(),
        ),
        "AADSTS90094" | "AADSTS90008" => (
            "An administrator must approve this app.".into(),
            "Ask a Global or Privileged Role Administrator to grant admin consent (Enterprise applications > \
             Permissions > Grant admin consent), then connect again."
                .into(),
        ),
        "AADSTS50076" => (
            "Multi-factor authentication is required.".into(),
            "Connect again and complete the MFA prompt; a Conditional Access policy or a new location asked for it."
                .into(),
        ),
        "AADSTS50079" => (
            "The user must register for multi-factor authentication.".into(),
            "Register a second factor at https://aka.ms/mfasetup, then connect again.".into(),
        ),
        "AADSTS90072" => (
            "The account you signed in with is not in this tenant.".into(),
            "Sign in with an account of the mailbox's organisation, or have an admin add you as an external user."
                .into(),
        ),
        "AADSTS50194" => (
            "The app is single-tenant but was used with a multi-tenant endpoint.".into(),
            "Give the connection its tenant_id (the directory id or domain), or make the app multi-tenant.".into(),
        ),
        "AADSTS90002" | "AADSTS90038" => (
            "The tenant belongs to another Microsoft cloud.".into(),
            format!(
                "This deployment talks to {cloud}. Set RELAY365_CLOUD (or the connection's cloud) to the \
                 tenant's cloud and register the app in that cloud's portal."
            ),
        ),
        "AADSTS53003" => (
            "A Conditional Access policy blocked the sign-in.".into(),
            "Ask your administrator to allow this app, device or location in the Conditional Access policy.".into(),
        ),
        "AADSTS70008" | "AADSTS700082" => (
            "The sign-in expired after a long time without use.".into(),
            "Connect the mailbox again from its connect link.".into(),
        ),
        "AADSTS50173" => (
            "The sign-in was revoked, usually by a password change or reset.".into(),
            "Connect the mailbox again from its connect link.".into(),
        ),
        "AADSTS54005" => (
            "This sign-in link was already used.".into(),
            "Start again from the connect link; each sign-in can be completed once.".into(),
        ),
        "AADSTS50196" => (
            "Microsoft saw too many identical sign-in requests.".into(),
            "Wait a minute and try again.".into(),
        ),
        "invalid_grant" => (
            "Microsoft no longer accepts this sign-in.".into(),
            "Connect the mailbox again from its connect link.".into(),
        ),
        "invalid_client" => (
            "Microsoft refused the app's credentials.".into(),
            "Check the client_id and client secret or certificate in the app secret.".into(),
        ),
        "consent_required" | "interaction_required" | "login_required" => (
            "Microsoft needs the user to sign in or consent again.".into(),
            "Connect again from the connect link.".into(),
        ),
        "temporarily_unavailable" | "server_error" => (
            "Microsoft's sign-in service is having trouble.".into(),
            "Wait a moment and try again.".into(),
        ),
        _ => (
            "Microsoft refused the sign-in.".into(),
            "Check the app registration and try again; the code below says more.".into(),
        ),
    };
    Explanation {
        code: code.unwrap_or_else(|| error.to_string()),
        title,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_taken_from_the_description() {
        assert_eq!(
            code_of("AADSTS700082: The refresh token has expired").as_deref(),
            Some("AADSTS700082")
        );
        assert_eq!(code_of("no code here"), None);
        assert_eq!(code_of("AADSTS"), None);
    }

    #[test]
    fn redirect_mismatch_names_the_exact_uri() {
        let ctx = Context {
            redirect_uri: Some("https://x.example/oauth/callback"),
            ..Default::default()
        };
        let e = explain(
            "invalid_request",
            "AADSTS50011: The redirect URI ... does not match",
            &ctx,
        );
        assert_eq!(e.code, "AADSTS50011");
        assert!(e.fix.contains("https://x.example/oauth/callback"), "{}", e.fix);
    }

    #[test]
    fn falls_back_to_the_oauth_error() {
        let e = explain("access_denied", "The user cancelled", &Context::default());
        assert_eq!(e.code, "access_denied");
        assert!(e.title.contains("cancelled"));
    }
}
