//! What API Gateway checks before an `AWS_IAM` route runs: a Signature
//! Version 4 signature of the request, recomputed from the request as it
//! arrived with the secret key of the access key it names.
//!
//! Written from AWS's description of the algorithm (canonical request,
//! string to sign, derived signing key), independently of the `aws-sigv4`
//! crate callers sign with, so a signing bug on either side shows here.
//! Checked against AWS's published test vector in the tests below.

use aws_lc_rs::{digest, hmac};
use relay365::digest::hex;

/// Why a request's signature was refused (API Gateway answers all of them 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `Authorization: AWS4-HMAC-SHA256 …` header.
    #[error("the request is not signed with SigV4")]
    Unsigned,
    /// The header does not parse, or a part the scope needs is missing.
    #[error("the Authorization header is malformed: {0}")]
    Malformed(&'static str),
    /// The access key is not one this gateway knows.
    #[error("the security token included in the request is invalid (unknown access key)")]
    UnknownKey,
    /// Signed for another service or region.
    #[error("the credential should be scoped to {0}")]
    WrongScope(String),
    /// `X-Amz-Date` is more than 15 minutes from now.
    #[error("signature expired: the request time is more than 15 minutes from now")]
    Expired,
    /// The signature does not match.
    #[error("the request signature we calculated does not match the signature you provided")]
    Mismatch,
}

/// A request as the gateway received it.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// Method.
    pub method: &'a str,
    /// Path, percent-encoded as received.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: &'a str,
    /// Headers (names in any case).
    pub headers: &'a [(String, String)],
    /// Body.
    pub body: &'a [u8],
}

/// The access key a request is signed with, once its signature checks out
/// with `secret_for(access key)` for `service` in `region` at `now_unix`.
///
/// # Errors
/// [`Refused`] says why it does not.
pub fn verify(
    req: &Signed<'_>,
    region: &str,
    service: &str,
    now_unix: i64,
    secret_for: impl Fn(&str) -> Option<String>,
) -> Result<String, Refused> {
    let header = |name: &str| {
        req.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let auth = header("authorization")
        .first()
        .and_then(|a| a.strip_prefix("AWS4-HMAC-SHA256 "))
        .ok_or(Refused::Unsigned)?
        .to_string();
    let part = |name: &str| {
        auth.split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(name).and_then(|p| p.strip_prefix('=')))
    };
    let credential = part("Credential").ok_or(Refused::Malformed("no Credential"))?;
    let signed_headers = part("SignedHeaders").ok_or(Refused::Malformed("no SignedHeaders"))?;
    let signature = part("Signature").ok_or(Refused::Malformed("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, date, cred_region, cred_service, "aws4_request"] = scope[..] else {
        return Err(Refused::Malformed(
            "Credential is not key/date/region/service/aws4_request",
        ));
    };
    if cred_region != region || cred_service != service {
        return Err(Refused::WrongScope(format!("{region}/{service}")));
    }
    let secret = secret_for(key).ok_or(Refused::UnknownKey)?;
    let amz_date = header("x-amz-date")
        .first()
        .map(|d| d.to_string())
        .ok_or(Refused::Malformed("no X-Amz-Date"))?;
    let at = time::PrimitiveDateTime::parse(
        &amz_date,
        time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
    )
    .map_err(|_| Refused::Malformed("X-Amz-Date is not YYYYMMDDTHHMMSSZ"))?
    .assume_utc()
    .unix_timestamp();
    if (now_unix - at).abs() > 15 * 60 {
        return Err(Refused::Expired);
    }
    if !amz_date.starts_with(date) {
        return Err(Refused::Malformed("the Credential date is not X-Amz-Date's"));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") {
        return Err(Refused::Malformed("SignedHeaders must include host"));
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let values = header(name);
        if values.is_empty() {
            return Err(Refused::Malformed("a signed header is missing"));
        }
        let joined: Vec<String> = values
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", joined.join(",")));
    }
    let payload_hash = hex(digest::digest(&digest::SHA256, req.body).as_ref());
    if let Some(given) = header("x-amz-content-sha256").first()
        && *given != payload_hash
    {
        return Err(Refused::Mismatch);
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        req.method,
        canonical_path(req.path),
        canonical_query(req.query)
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let mut k = mac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for step in [region, service, "aws4_request"] {
        k = mac(&k, step.as_bytes());
    }
    let expected = hex(&mac(&k, string_to_sign.as_bytes()));
    let equal = expected.len() == signature.len()
        && aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), signature.as_bytes())
            .is_ok();
    if equal {
        Ok(key.to_string())
    } else {
        Err(Refused::Mismatch)
    }
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// RFC 3986 unreserved characters stay; everything else is `%XX`.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Every service but S3 encodes the path twice: the path as sent (already
/// encoded once) is encoded again, after removing `.` and `..` segments.
fn canonical_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let normalized = segments.join("/");
    if normalized.is_empty() {
        return "/".to_string();
    }
    normalized.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// Parameters decoded, encoded again, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (encode(&k), encode(&v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn headers(sig: &str) -> Vec<(String, String)> {
        vec![
            ("Host".into(), "example.amazonaws.com".into()),
            ("X-Amz-Date".into(), "20150830T123600Z".into()),
            (
                "Authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
                ),
            ),
        ]
    }

    /// `GET /` with no body and these headers, as in the test suite.
    fn get_root(headers: &[(String, String)]) -> Signed<'_> {
        Signed {
            method: "GET",
            path: "/",
            query: "",
            headers,
            body: b"",
        }
    }

    fn check(sig: &str, now: i64) -> Result<String, Refused> {
        let h = headers(sig);
        verify(&get_root(&h), "us-east-1", "service", now, |k| {
            (k == "AKIDEXAMPLE").then(|| SECRET.to_string())
        })
    }

    /// AWS's Signature Version 4 test suite, `get-vanilla`.
    const GET_VANILLA: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    const AT: i64 = 1_440_938_160; // 2015-08-30T12:36:00Z

    #[test]
    fn the_published_test_vector_verifies_and_a_changed_one_does_not() {
        assert_eq!(check(GET_VANILLA, AT).as_deref(), Ok("AKIDEXAMPLE"));
        let forged = GET_VANILLA.replace('5', "6");
        assert_eq!(check(&forged, AT), Err(Refused::Mismatch));
        assert_eq!(check(GET_VANILLA, AT + 16 * 60), Err(Refused::Expired));
    }

    #[test]
    fn the_scope_and_the_key_must_be_the_gateway_s() {
        let h = headers(GET_VANILLA);
        let req = get_root(&h);
        assert!(matches!(
            verify(&req, "eu-west-1", "service", AT, |_| Some(SECRET.into())),
            Err(Refused::WrongScope(_))
        ));
        assert_eq!(
            verify(&req, "us-east-1", "service", AT, |_| None),
            Err(Refused::UnknownKey)
        );
        let none: Vec<(String, String)> = Vec::new();
        let unsigned = Signed {
            headers: &none,
            ..req
        };
        assert_eq!(
            verify(&unsigned, "us-east-1", "service", AT, |_| Some(SECRET.into())),
            Err(Refused::Unsigned)
        );
    }

    #[test]
    fn paths_are_encoded_twice_and_queries_sorted() {
        assert_eq!(
            canonical_path("/connections/sup%20port"),
            "/connections/sup%2520port"
        );
        assert_eq!(canonical_path("/a/./b/../c"), "/a/c");
        assert_eq!(canonical_query("b=2&a=x%20y&a=1"), "a=1&a=x%20y&b=2");
    }
}
