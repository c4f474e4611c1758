//! Staging of an email contact's attachments: Connect takes attachments
//! only as URLs, so each file that fits its limits ([`plan_attachments`]
//! sorts a mail's attachments by them) is copied from Graph into the
//! attachments bucket under `connect/{connection}/{event id}/` and passed as
//! a presigned GET URL.
//!
//! A retry of the same event must send the same request for Connect to
//! recognise its `ClientToken`: the staged objects are kept, and their URLs
//! are signed as of the object's `Last-Modified`. An object staged more than
//! [`STAGED_FRESH`] ago is staged again, so its URL is valid for at least
//! [`PRESIGN_VALIDITY`] less that.

use std::time::{Duration, SystemTime};

use aws_sdk_connect::types::EmailAttachment;
use aws_sdk_s3::error::ProvideErrorMetadata;
use serde_json::Value;

use super::{cut, graph_failed};
use crate::destination::{Delivery, MailSource};
use crate::dispatcher::Dispatcher;

/// Files an email contact may carry (the feature specifications: 10 file
/// attachments per email).
pub const ATTACHMENTS_MAX: usize = 10;
/// The largest file an email contact may carry (20 MB per attachment).
pub const ATTACHMENT_BYTES_MAX: u64 = 20 * 1024 * 1024;
/// The file types Connect supports for email attachments.
pub const ATTACHMENT_EXTENSIONS: [&str; 18] = [
    "csv", "doc", "docx", "heic", "jfif", "jpeg", "jpg", "mov", "mp4", "pdf", "png", "ppt", "pptx", "rtf",
    "txt", "wav", "xls", "xlsx",
];

/// A staged object older than this is staged again before its URL is signed.
pub const STAGED_FRESH: Duration = Duration::from_secs(1800);
/// How long a presigned URL is valid from its signing time (the object's
/// `Last-Modified`): at least half an hour after it is sent to Connect.
pub const PRESIGN_VALIDITY: Duration = Duration::from_secs(3600);
/// The longest file name Connect takes.
const FILE_NAME_MAX: usize = 256;

/// One attachment of a mail, as Graph lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Graph's attachment id.
    pub id: String,
    /// The file name.
    pub name: String,
    /// Its size as Graph reports it.
    pub size: u64,
    /// A file (`#microsoft.graph.fileAttachment`), not an item or a link.
    pub is_file: bool,
}

/// Which attachments go to Connect and which are only named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentPlan {
    /// Passed as presigned URLs.
    pub passed: Vec<Listed>,
    /// Named in the description: the file name and why it was left out.
    pub left_out: Vec<(String, String)>,
}

/// Sorts a mail's attachments into those Connect takes (in the mail's
/// order, up to [`ATTACHMENTS_MAX`]) and those it would refuse.
pub fn plan_attachments(listed: &[Listed]) -> AttachmentPlan {
    let mut plan = AttachmentPlan::default();
    for a in listed {
        let why = if !a.is_file {
            Some("not a file (an attached item or a link)".to_string())
        } else if !extension_allowed(&a.name) {
            Some("a file type Amazon Connect does not take".to_string())
        } else if a.size > ATTACHMENT_BYTES_MAX {
            Some(format!(
                "{} MB, over Amazon Connect's {} MB per file",
                a.size.div_ceil(1024 * 1024),
                ATTACHMENT_BYTES_MAX / (1024 * 1024)
            ))
        } else if plan.passed.len() >= ATTACHMENTS_MAX {
            Some(format!(
                "more than Amazon Connect's {ATTACHMENTS_MAX} files per email"
            ))
        } else {
            None
        };
        match why {
            Some(why) => plan.left_out.push((a.name.clone(), why)),
            None => plan.passed.push(a.clone()),
        }
    }
    plan
}

/// Whether Connect takes a file of this name (by its extension).
pub fn extension_allowed(name: &str) -> bool {
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .is_some_and(|ext| ATTACHMENT_EXTENSIONS.contains(&ext.as_str()))
}

/// Stages the attachments `plan` passes and returns them as Connect takes
/// them; one that cannot be passed, or all of them when the deployment has
/// no attachments bucket, moves to the plan's left-out list with the reason.
///
/// # Errors
/// [`Delivery::Retry`] when Graph or S3 fail in a way that passes.
pub(super) async fn stage_attachments(
    d: &Dispatcher,
    source: Option<MailSource<'_>>,
    event: &Value,
    plan: &mut AttachmentPlan,
) -> Result<Vec<EmailAttachment>, Delivery> {
    let mut attachments = Vec::new();
    let event_id = event["id"].as_str().unwrap_or_default();
    if !plan.passed.is_empty()
        && let Some(src) = source
    {
        match d.services.config.attachments_bucket.clone() {
            Some(bucket) => {
                let passed = std::mem::take(&mut plan.passed);
                for (n, a) in passed.iter().enumerate() {
                    match stage(d, src, &bucket, event, n, a).await? {
                        Ok(url) => attachments.push(
                            EmailAttachment::builder()
                                .file_name(safe_file_name(&a.name))
                                .s3_url(url)
                                .build()
                                .map_err(|e| {
                                    Delivery::Retry(format!("an attachment could not be built: {e}"))
                                })?,
                        ),
                        Err(why) => plan.left_out.push((a.name.clone(), why)),
                    }
                }
            }
            None => {
                tracing::warn!(event = %event_id, "RELAY365_ATTACHMENTS_BUCKET is not set: attachments are named in the contact's description only");
                for a in std::mem::take(&mut plan.passed) {
                    plan.left_out
                        .push((a.name, "this deployment has no attachments bucket".to_string()));
                }
            }
        }
    }
    Ok(attachments)
}

/// Puts one attachment into the bucket (unless an earlier try did) and
/// returns its presigned URL, or why it cannot be passed.
///
/// # Errors
/// [`Delivery::Retry`] when Graph or S3 fail in a way that passes.
async fn stage(
    d: &Dispatcher,
    src: MailSource<'_>,
    bucket: &str,
    event: &Value,
    n: usize,
    a: &Listed,
) -> Result<Result<String, String>, Delivery> {
    let s3 = d.s3.get().await;
    let key = format!(
        "connect/{}/{}/{n}-{}",
        event["connection_id"].as_str().unwrap_or_default(),
        event["id"].as_str().unwrap_or_default(),
        safe_file_name(&a.name)
    );
    let mut staged = staged_at(s3, bucket, &key).await?;
    if staged.is_none_or(|at| SystemTime::now().duration_since(at).unwrap_or_default() > STAGED_FRESH) {
        let Ok(id) = relay365::microsoft::paths::item_id(&a.id) else {
            return Ok(Err("its id is not Graph's".into()));
        };
        let path = format!("{}/attachments/{id}/$value", src.base);
        let cap = ATTACHMENT_BYTES_MAX as usize + 1;
        let got = match d.services.graph.get_capped(&path, src.token, cap).await {
            Ok(g) => g,
            Err(e) if e.status() == Some(404) => return Ok(Err("removed from the mail".into())),
            Err(e) => return Err(graph_failed(d, src, "an attachment", e).await),
        };
        if got.len > ATTACHMENT_BYTES_MAX {
            return Ok(Err(format!(
                "over Amazon Connect's {} MB per file",
                ATTACHMENT_BYTES_MAX / (1024 * 1024)
            )));
        }
        if !got.complete {
            return Err(Delivery::Retry(format!(
                "Microsoft Graph: attachment {} arrived incomplete",
                a.name
            )));
        }
        s3.put_object()
            .bucket(bucket)
            .key(&key)
            .body(got.head.into())
            .send()
            .await
            .map_err(|e| {
                Delivery::Retry(format!(
                    "the attachments bucket {bucket} refused an attachment: {}",
                    e.code().unwrap_or("unreachable")
                ))
            })?;
        staged = staged_at(s3, bucket, &key).await?;
    }
    let Some(signed_at) = staged else {
        return Err(Delivery::Retry(format!(
            "the attachments bucket {bucket} does not show an attachment just put there"
        )));
    };
    let presigning = aws_sdk_s3::presigning::PresigningConfig::builder()
        .start_time(signed_at)
        .expires_in(PRESIGN_VALIDITY)
        .build()
        .map_err(|e| Delivery::Retry(format!("an attachment URL could not be signed: {e}")))?;
    let signed = s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .presigned(presigning)
        .await
        .map_err(|e| Delivery::Retry(format!("an attachment URL could not be signed: {e}")))?;
    Ok(Ok(signed.uri().to_string()))
}

/// When the object at `key` was staged (its `Last-Modified`), if it is there.
///
/// # Errors
/// [`Delivery::Retry`] when the bucket cannot be read.
async fn staged_at(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<SystemTime>, Delivery> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => Ok(Some(
            head.last_modified()
                .and_then(|t| SystemTime::try_from(*t).ok())
                .unwrap_or_else(SystemTime::now),
        )),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
        Err(e) => Err(Delivery::Retry(format!(
            "the attachments bucket {bucket} could not be read: {}",
            e.code().unwrap_or("unreachable")
        ))),
    }
}

/// A file name Connect and S3 take: control characters and `/` dropped,
/// at most [`FILE_NAME_MAX`] characters (the extension kept).
fn safe_file_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_control() || c == '/' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if clean.chars().count() <= FILE_NAME_MAX {
        return clean;
    }
    match clean.rsplit_once('.') {
        Some((stem, ext)) if ext.chars().count() < 16 => {
            format!("{}.{ext}", cut(stem, FILE_NAME_MAX - ext.chars().count() - 1))
        }
        _ => cut(&clean, FILE_NAME_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> Listed {
        Listed {
            id: format!("id-{name}"),
            name: name.into(),
            size,
            is_file: true,
        }
    }

    #[test]
    fn attachments_over_connect_s_limits_are_named_not_passed() {
        let mut listed = vec![
            file("invoice.pdf", 10_000),
            file("huge.pdf", ATTACHMENT_BYTES_MAX + 1),
            file("run.exe", 10),
            Listed {
                is_file: false,
                ..file("forwarded.eml", 10)
            },
        ];
        for i in 0..11 {
            listed.push(file(&format!("photo{i}.JPG"), 100));
        }
        let plan = plan_attachments(&listed);
        assert_eq!(plan.passed.len(), ATTACHMENTS_MAX);
        assert_eq!(plan.passed[0].name, "invoice.pdf");
        let names: Vec<&str> = plan.left_out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "huge.pdf",
                "run.exe",
                "forwarded.eml",
                "photo9.JPG",
                "photo10.JPG"
            ]
        );
        assert!(plan.left_out[0].1.contains("20 MB"), "{:?}", plan.left_out[0]);
        assert!(plan.left_out[1].1.contains("file type"));
        assert!(plan.left_out[3].1.contains("10 files"));
    }

    #[test]
    fn file_names_fit_connect_and_urls_outlive_a_restage() {
        assert!(PRESIGN_VALIDITY >= STAGED_FRESH * 2);
        assert_eq!(safe_file_name("a/b\u{7}.pdf"), "a_b_.pdf");
        let long = safe_file_name(&format!("{}.pdf", "x".repeat(400)));
        assert_eq!(long.chars().count(), FILE_NAME_MAX);
        assert!(long.ends_with(".pdf"));
    }
}
