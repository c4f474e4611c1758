//! Attachments on their way to Graph: each S3 object is inspected once (its
//! size, checked against Microsoft's 150 MB limit in one place), then sent
//! inline or through an upload session in ranges of at most 4 MiB, read from
//! S3 range by range so a large file never sits in memory.

use std::time::Duration;

use async_trait::async_trait;
use relay365::Sensitive;
use relay365::microsoft::graph::GraphError;
use relay365::services::Services;
use serde_json::{Value, json};

use crate::error::SendError;
use crate::message::{CHUNK, UPLOAD_SESSION_FROM, file_attachment};
use crate::request::{self, Attachment, Source};

/// Ranged reads of stored objects: S3 deployed, anything with the same
/// answers in a test.
#[async_trait]
pub trait Objects: Send + Sync {
    /// The object's size; 400 when it does not exist, 503 when the store fails.
    async fn size(&self, bucket: &str, key: &str) -> Result<u64, SendError>;
    /// Bytes `start..=end` of the object.
    async fn range(&self, bucket: &str, key: &str, start: u64, end: u64) -> Result<Vec<u8>, SendError>;
}

/// The sizes of a request's attachments, in order: inline ones by their
/// bytes, S3 ones by one HEAD each. The only place the 150 MB limit is checked.
///
/// # Errors
/// 413 for an attachment over the limit; the object store's errors.
pub async fn sizes(objects: Option<&dyn Objects>, attachments: &[Attachment]) -> Result<Vec<u64>, SendError> {
    let mut out = Vec::with_capacity(attachments.len());
    for a in attachments {
        let size = match &a.source {
            Source::Inline(b) => b.len() as u64,
            Source::S3 { bucket, key } => {
                let objects = objects.ok_or_else(|| SendError::new(500, "misconfigured", "no S3 client"))?;
                objects.size(bucket, key).await?
            }
        };
        if size > request::MAX_ATTACHMENT_BYTES {
            return Err(SendError::new(
                413,
                "too_large",
                format!(
                    "attachment {} is {size} bytes; Microsoft accepts at most 150 MB",
                    a.name
                ),
            ));
        }
        out.push(size);
    }
    Ok(out)
}

/// Why an attachment did not reach Graph.
pub enum Upload {
    /// Graph refused or failed.
    Graph(GraphError),
    /// Anything else, already in the caller's words.
    Other(SendError),
}

#[async_trait]
impl Objects for relay365::aws::sdk::LazyClient<aws_sdk_s3::Client> {
    async fn size(&self, bucket: &str, key: &str) -> Result<u64, SendError> {
        let head = self
            .get()
            .await
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|x| x.is_not_found()) {
                    SendError::new(
                        400,
                        "invalid_request",
                        format!("attachment s3://{bucket}/{key} does not exist"),
                    )
                } else {
                    SendError::new(
                        503,
                        "unavailable",
                        format!("could not read s3://{bucket}/{key}: retry later"),
                    )
                }
            })?;
        Ok(head.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn range(&self, bucket: &str, key: &str, start: u64, end: u64) -> Result<Vec<u8>, SendError> {
        let obj = self
            .get()
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes={start}-{end}"))
            .send()
            .await
            .map_err(|_| {
                SendError::new(
                    503,
                    "unavailable",
                    format!("could not read s3://{bucket}/{key}: retry later"),
                )
            })?;
        let bytes =
            obj.body.collect().await.map_err(|_| {
                SendError::new(503, "unavailable", "reading an S3 attachment was cut off: retry")
            })?;
        Ok(bytes.into_bytes().to_vec())
    }
}

/// Adds one attachment of a known `size` to the draft at `base`.
///
/// # Errors
/// [`Upload`].
pub async fn add(
    s: &Services,
    objects: Option<&dyn Objects>,
    token: &Sensitive,
    base: &str,
    a: &Attachment,
    size: u64,
) -> Result<(), Upload> {
    let read = |bucket: &str, key: &str, start: u64, end: u64| {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        async move {
            match objects {
                Some(o) => o.range(&bucket, &key, start, end).await,
                None => Err(SendError::new(500, "misconfigured", "no S3 client")),
            }
        }
    };
    if size < UPLOAD_SESSION_FROM {
        let bytes = match &a.source {
            Source::Inline(b) => b.clone(),
            Source::S3 { bucket, key } if size > 0 => {
                read(bucket, key, 0, size - 1).await.map_err(Upload::Other)?
            }
            Source::S3 { .. } => Vec::new(),
        };
        s.graph
            .send(
                reqwest::Method::POST,
                &format!("{base}/attachments"),
                token,
                Some(&file_attachment(a, &bytes)),
                &[],
            )
            .await
            .map_err(Upload::Graph)?;
        return Ok(());
    }
    let session: Value = s
        .graph
        .send(
            reqwest::Method::POST,
            &format!("{base}/attachments/createUploadSession"),
            token,
            Some(&json!({"AttachmentItem": {"attachmentType": "file", "name": a.name, "size": size, "contentType": a.content_type}})),
            &[],
        )
        .await
        .map_err(Upload::Graph)?
        .json()
        .map_err(Upload::Graph)?;
    let url = session["uploadUrl"].as_str().unwrap_or("").to_string();
    let url_ok = url::Url::parse(&url)
        .is_ok_and(|u| u.scheme() == "https" || relay365::model::target::is_loopback(&u));
    if !url_ok {
        return Err(Upload::Other(SendError::new(
            502,
            "graph_failed",
            "Microsoft returned an unusable upload URL",
        )));
    }
    let mut start = 0u64;
    while start < size {
        let end = (start + CHUNK).min(size) - 1;
        let chunk = match &a.source {
            Source::Inline(b) => b[start as usize..=end as usize].to_vec(),
            Source::S3 { bucket, key } => read(bucket, key, start, end).await.map_err(Upload::Other)?,
        };
        // The upload URL is pre-authenticated: no bearer token goes there.
        let resp = s
            .http
            .put(&url)
            .timeout(Duration::from_secs(60))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("bytes {start}-{end}/{size}"))
            .body(chunk)
            .send()
            .await
            .map_err(|_| {
                Upload::Other(SendError::new(
                    502,
                    "graph_failed",
                    "uploading an attachment range failed: retry",
                ))
            })?;
        if !resp.status().is_success() {
            return Err(Upload::Other(SendError::new(
                502,
                "graph_failed",
                format!(
                    "Microsoft refused an attachment range ({})",
                    resp.status().as_u16()
                ),
            )));
        }
        start = end + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inline_sizes_need_no_store_and_references_need_one() {
        let inline = Attachment {
            name: "a".into(),
            content_type: "text/plain".into(),
            source: Source::Inline(vec![0; 10]),
        };
        assert_eq!(
            sizes(None, std::slice::from_ref(&inline)).await.unwrap(),
            vec![10]
        );
        let by_ref = Attachment {
            name: "b".into(),
            content_type: "application/pdf".into(),
            source: Source::S3 {
                bucket: "b".into(),
                key: "k".into(),
            },
        };
        let e = sizes(None, &[inline, by_ref]).await.unwrap_err();
        assert_eq!(e.status, 500);
    }
}
