//! Who may connect a delegated connection: a user of the mailbox's own
//! organisation who is that mailbox, and after the first sign-in only that
//! same user.
//!
//! The organisation is a tenant id. The ID token's `tid` must equal the
//! connection's tenant id, or the tenant its domain names (resolved through
//! Microsoft's OpenID discovery), or, for the multi-tenant names
//! (`organizations`, `common`), the tenant that discovery names for the
//! mailbox's domain. The user is the mailbox when their `userPrincipalName`
//! is the mailbox (a UPN's domain is always a verified domain of the user's
//! own organisation) or when the organisation lists the mailbox among their
//! `proxyAddresses`. The `mail` attribute is never enough: any
//! organisation's administrator can set it to any address.
//!
//! Nothing here writes: a refusal leaves the record, the token secret and
//! Graph as they were, and the connect link keeps working for the right
//! person.

use relay365::microsoft::claims::{self, ClaimsError, IdClaims};
use relay365::model::connection::Connection;
use relay365::services::Services;
use serde::Deserialize;

/// The signed-in user's profile, as Graph's `/me` answers it.
#[derive(Debug, Deserialize)]
pub(crate) struct Me {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(rename = "userPrincipalName", default)]
    pub(crate) upn: Option<String>,
    #[serde(rename = "proxyAddresses", default)]
    pub(crate) proxy_addresses: Vec<String>,
}

/// The properties of `/me` a sign-in reads (`proxyAddresses` only comes when named).
pub(crate) const ME_PATH: &str = "/me?$select=id,userPrincipalName,mail,proxyAddresses";

/// Who signed in, once accepted: what the record keeps.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The mailbox (the connection's, or the UPN when it named none).
    pub(crate) mailbox: String,
    pub(crate) tid: String,
    pub(crate) oid: String,
}

/// Why a sign-in is not accepted. Each names who was expected and who
/// signed in (addresses and tenant ids, never a token); the page each makes
/// is in `pages`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// The token answer had no ID token, or one that cannot be read.
    #[error("Microsoft's answer did not say who signed in ({0})")]
    NoIdentity(String),
    /// The ID token was issued to another app.
    #[error("the ID token was issued to another app")]
    Audience,
    /// Microsoft knows no organisation for the domain.
    #[error("no organisation has verified the domain {domain}")]
    UnknownDomain { domain: String },
    /// Discovery could not be read just now.
    #[error("Microsoft's OpenID discovery did not answer ({0})")]
    Discovery(String),
    /// The user signed in to another organisation than the mailbox's.
    #[error("signed in from organisation {tid}, expected {expected_tid}")]
    OtherOrganisation {
        mailbox: String,
        expected_tid: String,
        signed_in: String,
        tid: String,
    },
    /// The user is not the mailbox.
    #[error("signed in as another account than the mailbox")]
    NotTheMailbox { mailbox: String, signed_in: String },
    /// The mailbox was connected by another user (`oid`) of the organisation.
    #[error("signed in as another user than the one who connected the mailbox")]
    OtherUser {
        mailbox: String,
        signed_in: String,
        tid: String,
    },
}

/// The ID token's claims, checked to be for this app.
///
/// The ID token is not signature-checked, and need not be: it came in the
/// body of our own request to Microsoft's token endpoint, over TLS, in
/// exchange for a single-use code bound to our PKCE verifier and client
/// credential (OpenID Connect Core 3.1.3.7: "the TLS server validation MAY
/// be used to validate the issuer in place of checking the token
/// signature"). What is checked is what says the token is about this
/// sign-in: `aud` is our client id, and `iss` names the same tenant as `tid`.
pub(crate) fn id_claims(id_token: Option<&str>, client_id: &str) -> Result<IdClaims, Refusal> {
    let raw = id_token.ok_or_else(|| Refusal::NoIdentity("no id_token".into()))?;
    let c = claims::id_token_claims(raw).map_err(|e: ClaimsError| Refusal::NoIdentity(e.to_string()))?;
    if !c.aud.eq_ignore_ascii_case(client_id) {
        return Err(Refusal::Audience);
    }
    Ok(c)
}

/// The tenant id Microsoft's OpenID discovery names for `domain`
/// (`{login}/{domain}/v2.0/.well-known/openid-configuration`).
async fn discover(s: &Services, conn: &Connection, domain: &str) -> Result<String, Refusal> {
    let url = format!(
        "{}/{domain}/v2.0/.well-known/openid-configuration",
        s.config.login_base(conn.cloud)
    );
    let (status, body) = relay365::https::send_and_read(s.http.get(&url))
        .await
        .map_err(|why| Refusal::Discovery(why.into()))?;
    match status {
        200 => claims::tenant_from_discovery(&body).map_err(|e| Refusal::Discovery(e.to_string())),
        // Entra's answer for a domain no organisation verified: 400 invalid_tenant, AADSTS90002.
        400 | 404 => Err(Refusal::UnknownDomain {
            domain: domain.to_string(),
        }),
        other => Err(Refusal::Discovery(format!("status {other}"))),
    }
}

/// The tenant id of the mailbox's organisation: the one a previous sign-in
/// recorded, else the connection's tenant id, else the tenant its domain (or,
/// for `organizations`/`common`, the mailbox's domain) belongs to.
async fn expected_tenant(s: &Services, conn: &Connection, mailbox: &str) -> Result<String, Refusal> {
    if let Some(tid) = &conn.tid {
        return Ok(tid.to_ascii_lowercase());
    }
    let tenant = conn.tenant_id.trim();
    if claims::is_tenant_id(tenant) {
        return Ok(tenant.to_ascii_lowercase());
    }
    let multi = ["organizations", "common", "consumers"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(tenant));
    let domain = if multi {
        claims::domain_of(mailbox)
    } else {
        claims::domain_of(&format!("@{tenant}"))
    };
    let domain = domain.ok_or_else(|| Refusal::UnknownDomain {
        domain: if multi {
            mailbox.rsplit('@').next().unwrap_or(mailbox)
        } else {
            tenant
        }
        .to_string(),
    })?;
    discover(s, conn, &domain).await
}

/// Checks that the sign-in is the mailbox's own account in the mailbox's
/// organisation (and the account that connected it before, if any).
pub(crate) async fn check(
    s: &Services,
    conn: &Connection,
    id: &IdClaims,
    me: &Me,
) -> Result<Accepted, Refusal> {
    let upn = me.upn.clone().unwrap_or_default();
    let signed_in = if upn.is_empty() {
        id.preferred_username
            .clone()
            .unwrap_or_else(|| "an account without a user name".into())
    } else {
        upn.clone()
    };
    // Graph's user and the ID token's user must be one account.
    if me
        .id
        .as_deref()
        .is_some_and(|oid| !oid.eq_ignore_ascii_case(&id.oid))
    {
        return Err(Refusal::NoIdentity(
            "the ID token and Graph name different users".into(),
        ));
    }
    let mailbox = match &conn.mailbox {
        Some(m) => m.clone(),
        // A connection made without a mailbox is for the account that signs in.
        None if !upn.is_empty() => upn.clone(),
        None => return Err(Refusal::NoIdentity("no userPrincipalName".into())),
    };
    let expected_tid = expected_tenant(s, conn, &mailbox).await?;
    if id.tid != expected_tid {
        return Err(Refusal::OtherOrganisation {
            mailbox,
            expected_tid,
            signed_in,
            tid: id.tid.clone(),
        });
    }
    let proxy = format!("smtp:{mailbox}");
    let is_mailbox = upn.eq_ignore_ascii_case(&mailbox)
        || me.proxy_addresses.iter().any(|p| p.eq_ignore_ascii_case(&proxy));
    if !is_mailbox {
        return Err(Refusal::NotTheMailbox { mailbox, signed_in });
    }
    if let Some(oid) = &conn.oid
        && !oid.eq_ignore_ascii_case(&id.oid)
    {
        return Err(Refusal::OtherUser {
            mailbox,
            signed_in,
            tid: id.tid.clone(),
        });
    }
    Ok(Accepted {
        mailbox,
        tid: id.tid.clone(),
        oid: id.oid.clone(),
    })
}
