//! Signs requests to the stack's IAM routes with Signature Version 4, as
//! API Gateway requires for `AuthorizationType: AWS_IAM`, with `aws-sigv4`
//! (the signer the AWS SDKs use).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use crate::error::CliError;

/// The headers to add to a request (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` for temporary credentials) so that `execute-api`
/// in `region` accepts it at `time`. `headers` are the ones the request will
/// carry (they are signed too; `host` is taken from the URL).
///
/// # Errors
/// [`CliError::Usage`] when the URL or a header cannot be signed.
pub fn sign_headers(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, CliError> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| CliError::Usage(format!("cannot sign the request: {e}")))?
        .into();
    let signable = SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body))
        .map_err(|e| CliError::Usage(format!("cannot sign a request to {url}: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| CliError::Usage(format!("cannot sign a request to {url}: {e}")))?
        .into_parts();
    let (added, _params) = instructions.into_parts();
    Ok(added
        .into_iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(unix)
    }

    /// The reference value was computed by botocore (`SigV4Auth`, the Python
    /// SDK's signer) for this request, key, body and time:
    /// `SigV4Auth(Credentials("AKIDEXAMPLE", "wJal…KEY", "session-token-example"),
    /// "execute-api", "eu-west-1").add_auth(req)` at 2026-11-22T10:00:00Z.
    #[test]
    fn a_request_is_signed_exactly_as_botocore_signs_it() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token-example".into()),
            None,
            "test",
        );
        let added = sign_headers(
            "POST",
            "https://abc123.execute-api.eu-west-1.amazonaws.com/connections/sup%20port/subscriptions?b=2&a=1",
            &[("content-type", "application/json")],
            br#"{"id":"support","auth":"delegated"}"#,
            &creds,
            "eu-west-1",
            at(1_795_341_600),
        )
        .unwrap();
        let get = |n: &str| added.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-date"), Some("20261122T100000Z"));
        assert_eq!(get("x-amz-security-token"), Some("session-token-example"));
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/eu-west-1/execute-api/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
                 Signature=7777357fcc6ccf1e6ab80eae5c111d27428e63628aa8f6373b10b0bc58fea5bc"
            )
        );
    }

    #[test]
    fn another_body_key_or_time_signs_differently() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let sig = |body: &[u8], t: u64| {
            sign_headers(
                "POST",
                "https://h.example/x",
                &[],
                body,
                &creds,
                "us-east-1",
                at(t),
            )
            .unwrap()
        };
        assert_ne!(sig(b"a", 1_795_341_600), sig(b"b", 1_795_341_600));
        assert_ne!(sig(b"a", 1_795_341_600), sig(b"a", 1_795_341_601));
        assert!(!format!("{:?}", sig(b"a", 1)).contains("secret"));
    }
}
