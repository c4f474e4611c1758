//! Unit tests of the Graph client: `Retry-After`'s forms, what an error
//! answer becomes, reading a body within its cap and its attempt timeout,
//! and links that point outside Graph.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[test]
fn retry_after_forms() {
    let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
    assert_eq!(parse_retry_after("2.128", now), Some(Duration::from_millis(2128)));
    assert_eq!(parse_retry_after("-1", now), None);
    assert_eq!(parse_retry_after("soon", now), None);
    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
    // A date years ahead waits no longer than a huge number of seconds does.
    let years = httpdate::fmt_http_date(now + Duration::from_secs(10 * 365 * 86400));
    assert_eq!(parse_retry_after(&years, now), Some(MAX_RETRY_AFTER));
    assert_eq!(parse_retry_after("1e300", now), Some(MAX_RETRY_AFTER));
}

#[test]
fn graph_error_json_keeps_code_message_and_request_id() {
    let body =
        br#"{"error":{"code":"ErrorSendAsDenied","message":"no rights","innerError":{"request-id":"r-1"}}}"#;
    match GraphError::from_answer(403, body, None) {
        GraphError::Api {
            status,
            code,
            message,
            request_id,
        } => {
            assert_eq!(
                (status, code.as_str(), message.as_str()),
                (403, "ErrorSendAsDenied", "no rights")
            );
            assert_eq!(request_id.as_deref(), Some("r-1"));
        }
        other => panic!("{other:?}"),
    }
}

/// A one-route HTTP/1.1 server: each connection gets the next of
/// `answers` (head, body length, bytes actually sent), then is closed.
async fn serve(answers: Vec<(&'static str, usize, usize)>) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        for (head, len, sent) in answers {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            count.fetch_add(1, Ordering::SeqCst);
            let head = format!("HTTP/1.1 {head}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n");
            sock.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = sent;
            while left > 0 {
                let n = left.min(chunk.len());
                if sock.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
                left -= n;
            }
            if sent < len {
                // Never finish: only the attempt's timeout ends the read.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(sock);
                });
            }
        }
    });
    (url, served)
}

/// `get_capped` against [`serve`] with a policy `deadline`; and how
/// many requests the server saw.
async fn capped(
    answers: Vec<(&'static str, usize, usize)>,
    deadline: Duration,
    cap: usize,
) -> (Result<Capped, GraphError>, usize) {
    let (url, served) = serve(answers).await;
    let policy = RetryPolicy {
        deadline,
        ..RetryPolicy::default()
    };
    let client = GraphClient::new(crate::https::client().unwrap(), &url, policy);
    let got = client
        .get_capped("/me/messages/x", &Sensitive::new("t"), cap)
        .await;
    (got, served.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_capped_read_keeps_the_cap_counts_the_rest_and_retries_the_head_as_send_does() {
    let big = 3_000_000;
    let answers = vec![
        ("429 Too Many Requests\r\nretry-after: 0", 0, 0),
        ("200 OK", big, big),
    ];
    let (got, served) = capped(answers, Duration::from_secs(20), 1000).await;
    let got = got.unwrap();
    assert_eq!((got.head.len(), got.len, got.complete), (1000, big as u64, true));
    assert!(!got.is_whole());
    assert_eq!(served, 2, "the 429 was retried");
}

#[tokio::test]
async fn an_error_answer_is_read_only_up_to_its_cap() {
    let answers = vec![("404 Not Found", 5_000_000, 5_000_000)];
    let (got, _) = capped(answers, Duration::from_secs(20), 10).await;
    assert_eq!(got.unwrap_err().status(), Some(404));
}

#[tokio::test]
async fn a_body_that_never_ends_is_cut_by_the_attempt_timeout() {
    // 10 MB announced, 1 MB sent: the read ends when the attempt's
    // time (here the 1 s minimum) is up, with what came.
    let answers = vec![("200 OK", 10_000_000, 1_000_000)];
    let (got, _) = capped(answers, Duration::from_millis(100), 100).await;
    let got = got.unwrap();
    assert_eq!((got.head.len(), got.len, got.complete), (100, 1_000_000, false));
}

#[test]
fn links_outside_graph_are_refused() {
    let c = GraphClient::new(
        crate::https::client().unwrap(),
        "https://graph.microsoft.com",
        RetryPolicy::default(),
    );
    assert!(
        c.url("https://graph.microsoft.com/v1.0/me/messages?$skiptoken=x")
            .is_ok()
    );
    assert!(c.url("https://evil.example/v1.0/me").is_err());
    assert_eq!(c.url("/me").unwrap(), "https://graph.microsoft.com/v1.0/me");
}
