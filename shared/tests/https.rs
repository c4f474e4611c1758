//! The outbound client connects to public addresses only: a name that
//! resolves to loopback (or anything private) is refused outside a local run,
//! whatever the URL looks like. A whole answer is read up to its cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-shot HTTP server on loopback that answers 200 and counts connections.
async fn server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });
    (port, hits)
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_outside_a_local_run() {
    let (port, hits) = server().await;
    let strict = relay365::https::client().unwrap();
    let err = strict
        .get(format!("http://localhost:{port}/hook"))
        .send()
        .await
        .expect_err("localhost must not be reached outside a local run");
    let words = format!("{:?}", err);
    assert!(words.contains("public"), "{words}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a connection was made"
    );

    let local = relay365::https::client_for(true).unwrap();
    let ok = local
        .get(format!("http://localhost:{port}/hook"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A loopback server that answers every request with `body`.
async fn answering(body: Vec<u8>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&body).await;
        }
    });
    port
}

#[tokio::test]
async fn a_whole_answer_is_read_up_to_its_cap() {
    let local = relay365::https::client_for(true).unwrap();
    let max = relay365::https::ANSWER_MAX;
    let port = answering(vec![b'x'; max]).await;
    let (status, body) = relay365::https::send_and_read(local.get(format!("http://127.0.0.1:{port}/")))
        .await
        .unwrap();
    assert_eq!((status, body.len()), (200, max));
    let port = answering(vec![b'x'; max + 1]).await;
    let err = relay365::https::send_and_read(local.get(format!("http://127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    assert_eq!(err, "the answer was too large");
}
