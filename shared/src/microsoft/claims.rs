//! What Microsoft says about who signed in and what an app may do, read from
//! the three documents that carry it: the ID token of a sign-in (`tid`,
//! `oid`, `aud`, `iss`), the app-only access token after admin consent
//! (`roles`, the application permissions granted) and the OpenID discovery
//! document of a domain (its `issuer` names the organisation's tenant id).
//!
//! These are pure functions over outside input: they never panic, whatever
//! the bytes, and their errors never repeat a token or any part of one. They
//! read, they do not verify signatures: each caller says why the document can
//! be trusted (it came over TLS straight from Microsoft's endpoint).

use base64::Engine;
use serde::Deserialize;

/// The tenant Microsoft's documentation uses for personal Microsoft accounts.
pub const CONSUMER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// Longest token or document read (Entra's tokens are a few KB; a discovery
/// document about 2 KB): anything longer is not what Microsoft sends.
pub const MAX_INPUT: usize = 64 * 1024;

/// Why a token or a document could not be read. The words name the part that
/// is wrong, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Not three base64url parts separated by dots, or too long.
    #[error("the token is not a JSON Web Token (three base64url parts)")]
    NotJwt,
    /// The payload is not a JSON object.
    #[error("the token's payload is not a JSON object")]
    Payload,
    /// A claim the caller needs is missing or has the wrong type.
    #[error("the token has no usable {0} claim")]
    Missing(&'static str),
    /// The discovery document is not JSON with an `issuer` string.
    #[error("the OpenID discovery document has no issuer")]
    NoIssuer,
    /// The issuer is not `https://{login host}/{tenant id}/v2.0`.
    #[error("the issuer does not name a tenant id")]
    IssuerShape,
}

/// The claims of a Microsoft identity platform ID token that bind a sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdClaims {
    /// The tenant the user signed in to (a GUID, lowercase).
    pub tid: String,
    /// The user's object id in that tenant (immutable, never reused).
    pub oid: String,
    /// The audience: the app (client) id the token was issued to.
    pub aud: String,
    /// The issuer, `https://login.microsoftonline.com/{tid}/v2.0` in the global cloud.
    pub iss: String,
    /// The user name shown to people (mutable: never used to decide anything).
    pub preferred_username: Option<String>,
}

/// Decodes the payload (the middle part) of a JWT into a JSON object,
/// without checking its signature.
///
/// # Errors
/// [`ClaimsError::NotJwt`] or [`ClaimsError::Payload`].
pub fn jwt_payload(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, ClaimsError> {
    if token.len() > MAX_INPUT {
        return Err(ClaimsError::NotJwt);
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotJwt);
    };
    // Base64url without padding is what JWTs use; padding is tolerated.
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClaimsError::NotJwt)?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(ClaimsError::Payload),
    }
}

fn string_claim(
    map: &serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<String, ClaimsError> {
    map.get(name)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(ClaimsError::Missing(name))
}

/// Reads the claims of an ID token that bind a sign-in: `tid` (a tenant id),
/// `oid`, `aud` and `iss`, and checks that `iss` names the same tenant as
/// `tid` (a v2.0 issuer, `…/{tid}/v2.0`).
///
/// # Errors
/// [`ClaimsError`] naming the part that is missing or wrong.
pub fn id_token_claims(token: &str) -> Result<IdClaims, ClaimsError> {
    let map = jwt_payload(token)?;
    let tid = string_claim(&map, "tid")?;
    if !is_tenant_id(&tid) {
        return Err(ClaimsError::Missing("tid"));
    }
    let tid = tid.to_ascii_lowercase();
    let iss = string_claim(&map, "iss")?;
    if tenant_of_issuer(&iss).as_deref() != Some(tid.as_str()) {
        return Err(ClaimsError::Missing("iss"));
    }
    Ok(IdClaims {
        tid,
        oid: string_claim(&map, "oid")?,
        aud: string_claim(&map, "aud")?,
        iss,
        preferred_username: string_claim(&map, "preferred_username").ok(),
    })
}

/// The application permissions an app-only access token carries (its
/// `roles` claim); an empty list when it has none (no permission granted).
///
/// # Errors
/// [`ClaimsError::NotJwt`] / [`ClaimsError::Payload`] when the token cannot be
/// read, [`ClaimsError::Missing`] when `roles` is not a list of strings.
pub fn token_roles(token: &str) -> Result<Vec<String>, ClaimsError> {
    let map = jwt_payload(token)?;
    match map.get("roles") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or(ClaimsError::Missing("roles"))
            })
            .collect(),
        Some(_) => Err(ClaimsError::Missing("roles")),
    }
}

/// Whether `s` is a tenant id (a GUID), as opposed to a domain or one of the
/// multi-tenant names (`organizations`, `common`, `consumers`).
pub fn is_tenant_id(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

/// The tenant id a v2.0 issuer names: `https://{host}/{tenant id}/v2.0`
/// (lowercase), or `None` for any other shape, including the template
/// `{tenantid}` of the multi-tenant documents.
pub fn tenant_of_issuer(issuer: &str) -> Option<String> {
    if issuer.len() > 2048 {
        return None;
    }
    let url = url::Url::parse(issuer).ok()?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        return None;
    }
    let mut segments = url
        .path()
        .trim_end_matches('/')
        .trim_start_matches('/')
        .split('/');
    let (Some(tenant), Some("v2.0"), None) = (segments.next(), segments.next(), segments.next()) else {
        return None;
    };
    is_tenant_id(tenant).then(|| tenant.to_ascii_lowercase())
}

#[derive(Deserialize)]
struct Discovery {
    issuer: Option<String>,
}

/// The tenant id of an OpenID discovery document
/// (`{login}/{domain}/v2.0/.well-known/openid-configuration`): Microsoft
/// answers a domain's document with the issuer of the organisation that
/// verified the domain, `https://login.microsoftonline.com/{tenant id}/v2.0`.
///
/// # Errors
/// [`ClaimsError::NoIssuer`] when the body is not such a document,
/// [`ClaimsError::IssuerShape`] when its issuer names no tenant id.
pub fn tenant_from_discovery(body: &[u8]) -> Result<String, ClaimsError> {
    if body.len() > MAX_INPUT {
        return Err(ClaimsError::NoIssuer);
    }
    let doc: Discovery = serde_json::from_slice(body).map_err(|_| ClaimsError::NoIssuer)?;
    let issuer = doc.issuer.ok_or(ClaimsError::NoIssuer)?;
    tenant_of_issuer(&issuer).ok_or(ClaimsError::IssuerShape)
}

/// The permissions of `required` that `roles` does not grant, in the order
/// asked. A `ReadWrite` permission grants its `Read` (Graph accepts the
/// higher-privileged permission for every read), compared case-insensitively.
pub fn missing_roles<'a>(required: &[&'a str], roles: &[String]) -> Vec<&'a str> {
    let has = |name: &str| roles.iter().any(|r| r.eq_ignore_ascii_case(name));
    required
        .iter()
        .copied()
        .filter(|p| {
            let wider = p.strip_suffix(".Read").map(|stem| format!("{stem}.ReadWrite"));
            !has(p) && !wider.is_some_and(|w| has(&w))
        })
        .collect()
}

/// The domain of an address (`contoso.com` of `ann@contoso.com`), lowercase,
/// when it has the shape of a DNS name.
pub fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn jwt(claims: &serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(br#"{"typ":"JWT","alg":"RS256"}"#),
            b64.encode(claims.to_string())
        )
    }

    /// The claims of a v2.0 ID token as the ID token claims reference lists them.
    fn id_token(tid: &str, iss_tenant: &str) -> String {
        jwt(&serde_json::json!({
            "aud": "6731de76-14a6-49ae-97bc-6eba6914391e",
            "iss": format!("https://login.microsoftonline.com/{iss_tenant}/v2.0"),
            "iat": 1_536_275_124, "nbf": 1_536_275_124, "exp": 1_536_279_024,
            "name": "Abe Lincoln", "oid": "00000000-0000-0000-66f3-3332eca7ea81",
            "preferred_username": "AbeLi@microsoft.com",
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "tid": tid, "ver": "2.0"
        }))
    }

    #[test]
    fn an_id_token_gives_its_tenant_user_and_audience() {
        let c = id_token_claims(&id_token(&TID.to_uppercase(), TID)).unwrap();
        assert_eq!(c.tid, TID);
        assert_eq!(c.oid, "00000000-0000-0000-66f3-3332eca7ea81");
        assert_eq!(c.aud, "6731de76-14a6-49ae-97bc-6eba6914391e");
        assert_eq!(c.preferred_username.as_deref(), Some("AbeLi@microsoft.com"));
    }

    #[test]
    fn an_issuer_of_another_tenant_or_a_missing_claim_is_refused() {
        let other = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        assert_eq!(
            id_token_claims(&id_token(TID, other)),
            Err(ClaimsError::Missing("iss"))
        );
        assert_eq!(
            id_token_claims(&id_token("contoso.com", TID)),
            Err(ClaimsError::Missing("tid"))
        );
        let no_oid = jwt(&serde_json::json!({"tid": TID, "aud": "a",
            "iss": format!("https://login.microsoftonline.com/{TID}/v2.0")}));
        assert_eq!(id_token_claims(&no_oid), Err(ClaimsError::Missing("oid")));
    }

    #[test]
    fn what_is_not_a_jwt_is_an_error_that_repeats_nothing() {
        for bad in [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "x.!!!.y",
            "x.bnVsbA.y",
            "x.WzFd.y",
        ] {
            let e = id_token_claims(bad).unwrap_err();
            assert!(
                matches!(e, ClaimsError::NotJwt | ClaimsError::Payload),
                "{bad}: {e}"
            );
        }
        let secret = "eyJzZWNyZXQiOiJzM2NyM3QifQ";
        let e = token_roles(&format!("h.{secret}x.s")).unwrap_err().to_string();
        assert!(!e.contains(secret), "{e}");
    }

    #[test]
    fn roles_are_read_from_an_app_only_token() {
        let t = jwt(&serde_json::json!({"roles": ["Mail.Read", "Mail.Send"], "idtyp": "app"}));
        assert_eq!(token_roles(&t).unwrap(), ["Mail.Read", "Mail.Send"]);
        // Consented with no application permission: no roles claim at all.
        assert!(
            token_roles(&jwt(&serde_json::json!({"idtyp": "app"})))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            token_roles(&jwt(&serde_json::json!({"roles": "Mail.Read"}))),
            Err(ClaimsError::Missing("roles"))
        );
    }

    #[test]
    fn missing_roles_accept_the_wider_permission() {
        let roles = vec!["Mail.ReadWrite".to_string(), "mail.send".to_string()];
        assert!(missing_roles(&["Mail.Read", "Mail.Send"], &roles).is_empty());
        assert_eq!(
            missing_roles(&["Mail.Read", "Calendars.Read", "Mail.Send"], &[]),
            ["Mail.Read", "Calendars.Read", "Mail.Send"]
        );
        assert_eq!(
            missing_roles(&["Mail.ReadWrite"], &["Mail.Read".to_string()]),
            ["Mail.ReadWrite"]
        );
    }

    /// What `GET https://login.microsoftonline.com/microsoft.com/v2.0/.well-known/openid-configuration`
    /// answers (the fields relay365 reads and their neighbours).
    const DOMAIN_DISCOVERY: &str = r#"{"token_endpoint":"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token","token_endpoint_auth_methods_supported":["client_secret_post","private_key_jwt","client_secret_basic"],"jwks_uri":"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/discovery/v2.0/keys","response_modes_supported":["query","fragment","form_post"],"subject_types_supported":["pairwise"],"id_token_signing_alg_values_supported":["RS256"],"response_types_supported":["code","id_token","code id_token","id_token token"],"scopes_supported":["openid","profile","email","offline_access"],"issuer":"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0","request_uri_parameter_supported":false,"userinfo_endpoint":"https://graph.microsoft.com/oidc/userinfo","authorization_endpoint":"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/authorize","http_logout_supported":true,"frontchannel_logout_supported":true,"end_session_endpoint":"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/logout","claims_supported":["sub","iss","cloud_instance_name","cloud_instance_host_name","cloud_graph_host_name","msgraph_host","aud","exp","iat","auth_time","acr","nonce","preferred_username","name","tid","ver","at_hash","c_hash","email"],"kerberos_endpoint":"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/kerberos","tenant_region_scope":"WW","cloud_instance_name":"microsoftonline.com","cloud_graph_host_name":"graph.windows.net","msgraph_host":"graph.microsoft.com","rbac_url":"https://pas.windows.net"}"#;

    #[test]
    fn a_domain_discovery_document_names_its_tenant() {
        assert_eq!(tenant_from_discovery(DOMAIN_DISCOVERY.as_bytes()).unwrap(), TID);
        // The multi-tenant documents name a template, not a tenant.
        let common = br#"{"issuer":"https://login.microsoftonline.com/{tenantid}/v2.0"}"#;
        assert_eq!(tenant_from_discovery(common), Err(ClaimsError::IssuerShape));
        assert_eq!(tenant_from_discovery(b"{}"), Err(ClaimsError::NoIssuer));
        assert_eq!(tenant_from_discovery(b"<html>"), Err(ClaimsError::NoIssuer));
        // Other clouds have their own login host and the same shape.
        for host in ["login.microsoftonline.us", "login.partner.microsoftonline.cn"] {
            assert_eq!(
                tenant_of_issuer(&format!("https://{host}/{TID}/v2.0")).as_deref(),
                Some(TID)
            );
        }
        for bad in [
            format!("https://sts.windows.net/{TID}/"),
            format!("https://login.microsoftonline.com/{TID}/v2.0/extra"),
            format!("https://login.microsoftonline.com/{TID}/v2.0?x=1"),
            format!("ftp://login.microsoftonline.com/{TID}/v2.0"),
            "https://login.microsoftonline.com/contoso.com/v2.0".to_string(),
        ] {
            assert_eq!(tenant_of_issuer(&bad), None, "{bad}");
        }
    }

    #[test]
    fn domains_come_from_addresses() {
        assert_eq!(domain_of("Ann@Contoso.COM").as_deref(), Some("contoso.com"));
        for bad in ["ann", "ann@", "ann@localhost", "a@b..c", "a@b/c.d", "a@-.é"] {
            assert_eq!(domain_of(bad), None, "{bad}");
        }
    }
}
