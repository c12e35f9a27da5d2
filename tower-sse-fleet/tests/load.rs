//! The load client against a small raw server on `127.0.0.1:0`: it reconnects after the
//! stream's `retry:` with `Last-Event-ID`, so that a server that resumes loses and repeats
//! nothing; and a response that is not `200 text/event-stream` stops the client for good.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower_sse_fleet::load::{LoadArgs, Summary, load, parse_url};

/// Events a connection sends before the server closes it.
const PER_CONNECTION: u64 = 3;

/// Serves every connection with `respond(request head)`, then closes it. Counts requests that
/// carried a `Last-Event-ID`.
async fn serve(respond: fn(&str) -> String) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resumed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&resumed);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(n @ 1..) = stream.read(&mut buffer).await else {
                        return;
                    };
                    head.extend_from_slice(&buffer[..n]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if head.contains("\r\nlast-event-id:") {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                let _ = stream.write_all(respond(&head).as_bytes()).await;
                // Closing ends the body (no length, not chunked: read to close).
            });
        }
    });
    (addr, resumed)
}

/// `retry: 50`, then the next `PER_CONNECTION` numbers after the request's `Last-Event-ID`
/// (from 1 without one), each with its id.
fn resuming(head: &str) -> String {
    let last: u64 = head
        .lines()
        .find_map(|line| line.strip_prefix("last-event-id:"))
        .map_or(0, |id| id.trim().parse().unwrap());
    let mut response = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nretry: 50\n\n",
    );
    for n in last + 1..=last + PER_CONNECTION {
        response.push_str(&format!("id: {n}\ndata: {n}\n\n"));
    }
    response
}

fn no_content(_: &str) -> String {
    "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_owned()
}

async fn run(addr: SocketAddr, clients: u32, duration: Duration) -> Summary {
    load(LoadArgs {
        url: parse_url(&format!("http://{addr}/events")).unwrap(),
        clients,
        ramp: Duration::ZERO,
        duration,
        zero_unix_ms: None,
        csv: None,
        column: "reconnects".to_owned(),
        threads: None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn clients_reconnect_after_the_retry_hint_and_resume_without_loss() {
    let (addr, resumed) = serve(resuming).await;
    let summary = run(addr, 4, Duration::from_millis(1500)).await;
    // With the default 3 s retry there would be no reconnect within 1.5 s; with 50 ms, many.
    assert!(summary.reconnects >= 4 * 3, "{summary}");
    assert_eq!(summary.connects, 4, "{summary}");
    // Every reconnect carries the last id (those still connecting at the end never arrived).
    let resumed = resumed.load(Ordering::Relaxed);
    assert!(
        resumed <= summary.reconnects && resumed + 4 >= summary.reconnects,
        "{resumed}: {summary}"
    );
    assert!(summary.tally.events >= 4 * 4 * PER_CONNECTION, "{summary}");
    let t = summary.tally;
    assert_eq!(
        (t.gaps, t.lost, t.duplicates, t.unreadable),
        (0, 0, 0, 0),
        "{summary}"
    );
    assert_eq!(summary.failed, 0, "{summary}");
}

#[tokio::test]
async fn a_204_stops_every_client_for_good() {
    let (addr, _) = serve(no_content).await;
    let summary = run(addr, 3, Duration::from_millis(500)).await;
    assert_eq!(summary.connects, 3, "{summary}");
    assert_eq!(summary.reconnects, 0, "{summary}");
    assert_eq!(summary.failed, 3, "{summary}");
    assert_eq!(summary.statuses.get(&204), Some(&3), "{summary}");
    assert_eq!(summary.tally.events, 0, "{summary}");
}
