//! `relay365 send`: a mail from a connection through `POST /mail/send`.
//! Small attachments travel inline; larger ones are uploaded to the stack's
//! attachments bucket first and sent by reference, since one request to the
//! API carries at most 6 MB. Every send has an idempotency key (given, or
//! made here and printed), so running the same command again never sends
//! twice.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use clap::Args;
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::{CliError, aws_error};
use crate::stack::Stack;
use crate::ui::{self, Mode, s};

/// Files up to this size go inline (base64 in the request) ...
pub const INLINE_MAX: u64 = 1024 * 1024;
/// ... as long as everything inline stays under this (API requests and
/// Lambda invocations carry 6 MB; base64 adds a third).
pub const INLINE_TOTAL_MAX: u64 = 3 * 1024 * 1024;
/// Uploads larger than this go in parts of this size.
pub const PART: u64 = 8 * 1024 * 1024;

/// `relay365 send`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("body").required(true).args(["text", "html", "body_file"])))]
pub struct SendArgs {
    /// The connection to send from.
    pub id: String,
    /// Recipients (repeat, or comma separated).
    #[arg(long, value_delimiter = ',', value_name = "ADDR")]
    pub to: Vec<String>,
    /// Cc recipients.
    #[arg(long, value_delimiter = ',', value_name = "ADDR")]
    pub cc: Vec<String>,
    /// Bcc recipients.
    #[arg(long, value_delimiter = ',', value_name = "ADDR")]
    pub bcc: Vec<String>,
    /// The subject.
    #[arg(long)]
    pub subject: String,
    /// A plain-text body.
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
    /// An HTML body.
    #[arg(long, value_name = "HTML")]
    pub html: Option<String>,
    /// The body from a file (HTML when it ends in .html or .htm).
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Files to attach (repeat).
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Send as another mailbox (needs Send As rights).
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// Reply in the thread of this message id.
    #[arg(long, value_name = "MESSAGE_ID")]
    pub reply_to_message_id: Option<String>,
    /// The idempotency key (default: a new one, printed).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|error| CliError::File {
        path: path.display().to_string(),
        error,
    })
}

/// A content type from a file name, for the common kinds (Graph needs one).
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "xml" => "application/xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "zip" => "application/zip",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "eml" => "message/rfc822",
        _ => "application/octet-stream",
    }
}

/// Runs `relay365 send`.
///
/// # Errors
/// When a file cannot be read, an upload fails, or the API refuses the mail.
pub async fn run(stack: &Stack, args: &SendArgs, mode: Mode) -> Result<ExitCode, CliError> {
    if args.to.is_empty() && args.cc.is_empty() && args.bcc.is_empty() && args.reply_to_message_id.is_none() {
        return Err(CliError::Usage(
            "give at least one recipient: --to, --cc or --bcc".into(),
        ));
    }
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4().simple()));
    let body = match (&args.text, &args.html, &args.body_file) {
        (Some(t), _, _) => json!({"text": t}),
        (_, Some(h), _) => json!({"html": h}),
        (_, _, Some(f)) => {
            let text = String::from_utf8(read(f)?)
                .map_err(|_| CliError::Usage(format!("{} is not UTF-8 text", f.display())))?;
            let name = f.to_string_lossy().to_ascii_lowercase();
            if name.ends_with(".html") || name.ends_with(".htm") {
                json!({"html": text})
            } else {
                json!({"text": text})
            }
        }
        _ => {
            return Err(CliError::Usage(
                "give a body: --text, --html or --body-file".into(),
            ));
        }
    };
    let mut attachments = Vec::new();
    let mut inline_total = 0u64;
    for path in &args.attach {
        let meta = std::fs::metadata(path).map_err(|error| CliError::File {
            path: path.display().to_string(),
            error,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        let ctype = content_type(&name);
        if meta.len() <= INLINE_MAX && inline_total + meta.len() <= INLINE_TOTAL_MAX {
            inline_total += meta.len();
            let bytes = read(path)?;
            attachments.push(json!({
                "name": name, "content_type": ctype,
                "content_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
            }));
        } else {
            let bucket = stack.output("AttachmentsBucketName").map_err(|_| {
                CliError::Usage(format!(
                    "{name} is larger than {INLINE_MAX} bytes and stack {} has no attachments bucket: deploy with CreateAttachmentsBucket=true, or attach smaller files",
                    stack.name
                ))
            })?;
            // send-mail reads a connection's attachments only under {connection_id}/.
            let object = format!("{}/relay365-cli/{key}/{name}", args.id);
            upload(stack, bucket, &object, path, meta.len()).await?;
            attachments.push(json!({
                "name": name, "content_type": ctype,
                "s3": {"bucket": bucket, "key": object},
            }));
        }
    }
    let mut request = json!({
        "connection_id": args.id,
        "to": args.to, "cc": args.cc, "bcc": args.bcc,
        "subject": args.subject,
        "body": body,
        "idempotency_key": key,
    });
    if !attachments.is_empty() {
        request["attachments"] = Value::Array(attachments);
    }
    if let Some(f) = &args.from {
        request["from"] = f.clone().into();
    }
    if let Some(m) = &args.reply_to_message_id {
        request["reply_to_message_id"] = m.clone().into();
    }
    let bar = ui::spinner("sending");
    let answer = Api::new(stack)?
        .call("POST", "/mail/send", Some(&request), &[("idempotency-key", &key)])
        .await;
    bar.finish_and_clear();
    let answer = answer?;
    match mode {
        Mode::Json => {
            let mut out = answer.clone();
            out["idempotency_key"] = key.clone().into();
            ui::json(&out);
        }
        Mode::Human => match s(&answer, "status") {
            "sent" if answer["idempotent_replay"] == true => println!(
                "{}",
                ui::check_line(
                    true,
                    &format!("already sent earlier with idempotency key {key}; not sent again"),
                    None
                )
            ),
            "sent" => println!(
                "{}",
                ui::check_line(true, &format!("sent (idempotency key {key})"), None)
            ),
            other => println!(
                "{}",
                ui::check_line(
                    true,
                    &format!("{other}: the send continues in the background (idempotency key {key})"),
                    Some(
                        "run the same command with --idempotency-key to learn the result; it will not send twice"
                    )
                )
            ),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts a file into the attachments bucket, in parts above [`PART`], with a progress bar.
async fn upload(stack: &Stack, bucket: &str, key: &str, path: &Path, len: u64) -> Result<(), CliError> {
    let s3 = aws_sdk_s3::Client::new(&stack.sdk);
    let name = path.display().to_string();
    let bar = ui::bytes_bar(len, &format!("uploading {name}"));
    let file_error = |error| CliError::File {
        path: name.clone(),
        error,
    };
    if len <= PART {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| aws_error(&format!("reading {name}"), e))?;
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| aws_error(&format!("uploading {name} to s3://{bucket}"), e))?;
        bar.finish_and_clear();
        return Ok(());
    }
    let started = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| aws_error(&format!("uploading {name} to s3://{bucket}"), e))?;
    let upload_id = started.upload_id.unwrap_or_default();
    let mut parts = Vec::new();
    let mut file = tokio::fs::File::open(path).await.map_err(file_error)?;
    let mut number = 1;
    let mut done = 0u64;
    while done < len {
        use tokio::io::AsyncReadExt;
        let size = PART.min(len - done);
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
        file.read_exact(&mut buf).await.map_err(|error| CliError::File {
            path: name.clone(),
            error,
        })?;
        let part = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(buf))
            .send()
            .await;
        let part = match part {
            Ok(p) => p,
            Err(e) => {
                let _ = s3
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                return Err(aws_error(&format!("uploading {name} to s3://{bucket}"), e));
            }
        };
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag)
                .build(),
        );
        done += size;
        number += 1;
        bar.set_position(done);
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_error(&format!("uploading {name} to s3://{bucket}"), e))?;
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("Report.PDF"), "application/pdf");
        assert_eq!(content_type("call.wav"), "audio/wav");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
