//! Stream features end to end, the binary against real upstreams on loopback: resume (an
//! upstream that dies mid-stream is asked again with `Last-Event-ID`, the client's response
//! stays open), compression (each event decodable while the stream is open), and a SIGHUP reload
//! that leaves open streams their settings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Running, dechunk, raw_exchange, split_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_sse_test_support::dying_upstream::{Plan as Death, dying_upstream, event};

/// The ids of the events in `data`, each checked against its `data:` line; comments and
/// `retry:` lines are skipped.
fn ids(data: &str) -> Vec<usize> {
    data.split("\n\n")
        .filter(|block| block.lines().any(|line| line.starts_with("id: ")))
        .map(|block| {
            let id: usize = block
                .lines()
                .find_map(|line| line.strip_prefix("id: "))
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                block
                    .lines()
                    .any(|line| line == format!("data: event {id}")),
                "event {id} is not whole: {block:?}"
            );
            id
        })
        .collect()
}

async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/event-stream\r\n\
         Connection: close\r\n\r\n"
    );
    let raw = raw_exchange(addr, request.as_bytes(), None, Duration::from_secs(8)).await;
    assert!(!raw.is_empty(), "no answer to {path}");
    let (head, body) = split_head(&raw);
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        let (data, complete) = dechunk(&body);
        assert!(complete, "{path}: no last chunk");
        data
    } else {
        body
    };
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn with_resume_an_upstream_that_dies_mid_stream_is_spliced_and_the_client_gets_every_event_once()
 {
    let (upstream, seen) = dying_upstream(vec![
        Death::ResetMidEvent(3),
        Death::TruncatedMidLine(2),
        Death::End(3),
    ])
    .await;
    let mut proxy = Running::proxy(
        upstream,
        &["--admin", "127.0.0.1:0", "--retry", "100ms", "--resume"],
    );
    let addr = proxy.addr().await;
    let admin = proxy.addr().await;

    let (head, data) = get(addr, "/events").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // One response: every event once, in order, whole; then the clean end of the third
    // upstream response.
    assert_eq!(ids(&data), (1..=8).collect::<Vec<_>>(), "{data:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        [None, Some("3".to_owned()), Some("5".to_owned())]
    );

    let (_, metrics) = get(admin, "/metrics").await;
    for line in [
        "tower_sse_resume_streams_total{route=\"default\"} 1",
        "tower_sse_resume_interrupted_total{route=\"default\"} 2",
        "tower_sse_resume_attempts_total{route=\"default\"} 2",
        "tower_sse_resumed_total{route=\"default\"} 2",
        "tower_sse_resume_given_up_total{route=\"default\",reason=\"attempts\"} 0",
        "tower_sse_streams_opened_total{route=\"default\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}

#[tokio::test]
async fn without_resume_the_clients_stream_ends_where_the_upstream_died() {
    let (upstream, seen) = dying_upstream(vec![Death::ResetMidEvent(3)]).await;
    let mut proxy = Running::proxy(upstream, &["--route", "/live/=resume"]);
    let addr = proxy.addr().await;
    let request = b"GET /events HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/event-stream\r\n\
                    Connection: close\r\n\r\n";
    let raw = raw_exchange(addr, request, None, Duration::from_secs(4)).await;
    let (_, body) = split_head(&raw);
    let (data, _) = dechunk(&body);
    let data = String::from_utf8_lossy(&data);
    assert!(data.contains("data: event 3\n\n"), "{data:?}");
    assert!(!data.contains("event 4"), "{data:?}");
    assert_eq!(*seen.lock().unwrap(), [None]);
}

/// An upstream whose event stream sends event 1, event 2 after 200 ms, then stays open. Returns
/// its address and the `Accept-Encoding` of each request it got.
async fn slow_upstream() -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&record);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0_u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                seen.lock().unwrap().push(head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("accept-encoding")
                        .then(|| value.trim().to_owned())
                }));
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                          transfer-encoding: chunked\r\n\r\n",
                    )
                    .await?;
                let chunk = |text: &str| format!("{:x}\r\n{text}\r\n", text.len());
                stream.write_all(chunk(&event(1)).as_bytes()).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                stream.write_all(chunk(&event(2)).as_bytes()).await?;
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn with_compress_a_gzip_client_decodes_each_event_while_the_stream_is_open() {
    use std::io::Write as _;

    let (upstream, seen) = slow_upstream().await;
    let mut proxy = Running::proxy(upstream, &["--no-retry", "--compress"]);
    let addr = proxy.addr().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /events HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/event-stream\r\n\
              Accept-Encoding: gzip\r\n\r\n",
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut decoded_at = Vec::new();
    for want in [event(1), format!("{}{}", event(1), event(2))] {
        loop {
            let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
                .await
                .expect("the event did not arrive decodable in time")
                .unwrap();
            assert_ne!(n, 0, "the proxy closed the stream");
            raw.extend_from_slice(&buf[..n]);
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let (head, body) = raw.split_at(end + 4);
            let head = String::from_utf8_lossy(head).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
            assert!(head.contains("vary: accept-encoding"), "{head}");
            let (compressed, complete) = dechunk(body);
            assert!(!complete, "the stream ended");
            let mut decoder = flate2::write::GzDecoder::new(Vec::new());
            decoder.write_all(&compressed).unwrap();
            decoder.flush().unwrap();
            if decoder.get_ref().as_slice() == want.as_bytes() {
                decoded_at.push(tokio::time::Instant::now());
                break;
            }
        }
    }
    // The second event came 200 ms after the first, and was decodable then: not held back.
    assert!(decoded_at[1] - decoded_at[0] >= Duration::from_millis(100));
    // The upstream was asked for identity: the proxy compresses its own output.
    assert_eq!(*seen.lock().unwrap(), [Some("identity".to_owned())]);
}

/// An upstream whose event stream sends one event and then stays open.
async fn held_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0_u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                          transfer-encoding: chunked\r\n\r\n10\r\ndata: first\n\n\n\r\n",
                    )
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

/// Opens an event stream at `/live/events` and returns the connection.
async fn open_stream(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /live/events HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    stream
}

/// The heartbeat comments (`:` lines) `stream` gets within `window`.
async fn heartbeats_within(stream: &mut TcpStream, window: Duration) -> usize {
    let mut raw = Vec::new();
    let mut buf = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.as_slice(), |end| &raw[end + 4..]);
    let (data, _) = dechunk(body);
    String::from_utf8_lossy(&data)
        .lines()
        .filter(|line| *line == ":")
        .count()
}

#[tokio::test]
async fn a_stream_opened_before_a_sighup_keeps_its_settings_and_new_ones_get_the_reloaded_ones() {
    let upstream = held_upstream().await;
    let text = |heartbeat: &str| {
        format!(
            "[defaults]\nupstream = \"http://{upstream}\"\n\n\
             [[route]]\npath = \"/live/\"\nheartbeat = \"{heartbeat}\"\n"
        )
    };
    let config = support::TempFile::new("reload-keeps.toml", &text("100ms"));
    let mut proxy = Running::listen(&["--config", &config.path()]);
    let addr = proxy.addr().await;
    let mut old = open_stream(addr).await;
    assert!(heartbeats_within(&mut old, Duration::from_millis(450)).await >= 2);

    std::fs::write(&config.0, text("1h")).unwrap();
    proxy.signal("-HUP");
    let log = proxy
        .log_within("routes reloaded", Duration::from_secs(2))
        .await;
    assert!(log.contains("routes reloaded"), "{log}");

    let mut new = open_stream(addr).await;
    let (old_beats, new_beats) = tokio::join!(
        heartbeats_within(&mut old, Duration::from_millis(600)),
        heartbeats_within(&mut new, Duration::from_millis(600)),
    );
    assert!(
        old_beats >= 3,
        "the old stream lost its 100 ms heartbeat: {old_beats}"
    );
    assert_eq!(
        new_beats, 0,
        "the new stream did not get the reloaded 1 h heartbeat"
    );
}
