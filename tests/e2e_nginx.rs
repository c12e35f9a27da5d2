//! End to end through a real nginx (Debian's package) with its default proxy settings:
//! `proxy_buffering on`, HTTP/1.0 to the upstream. `.ci/run` installs nginx and runs these with
//! `cargo test --test e2e_nginx -- --ignored`; without nginx on the PATH they are skipped with a
//! message.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::ServiceBuilder;
use tower_sse::SseLayer;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// An upstream: `/events` sends `count` small events `interval` apart (after `silence`), then
/// ends. With `layered`, `SseLayer` (heartbeat 300 ms) is in front.
async fn upstream(layered: bool) -> SocketAddr {
    let service = tower::service_fn(|request: Request<hyper::body::Incoming>| async move {
        let query = request.uri().query().unwrap_or_default().to_owned();
        let param = |name: &str, default: u64| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let count = param("count", 10);
        let interval = Duration::from_millis(param("interval_ms", 100));
        let silence = Duration::from_millis(param("silence_ms", 0));
        let events = futures_util::stream::unfold(0u64, move |i| async move {
            if i == count {
                return None;
            }
            tokio::time::sleep(if i == 0 { silence } else { interval }).await;
            let event = format!("id: {i}\ndata: ev-{i}\n\n");
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), i + 1))
        });
        let body: Body = BodyExt::boxed_unsync(StreamBody::new(events));
        Ok::<_, Infallible>(
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(body)
                .unwrap(),
        )
    });
    let layer = SseLayer::new()
        .heartbeat(Duration::from_millis(300))
        .no_retry();
    if layered {
        support::serve(ServiceBuilder::new().layer(layer).service(service)).await
    } else {
        support::serve(service).await
    }
}

struct Nginx {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts nginx with its default proxy settings in front of `layered` and `bare` upstreams:
/// `/layered/…` and `/bare/…`, and the same under `/short/…` with `proxy_read_timeout 1s`.
async fn nginx(bin: &Path, layered: SocketAddr, bare: SocketAddr) -> Nginx {
    let dir = std::env::temp_dir().join(format!(
        "tower-sse-nginx-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = TempDir(dir);
    let d = dir.0.display();
    let port = free_port();
    let conf = format!(
        "worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/client;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /layered/ {{ proxy_pass http://{layered}/; }}
        location /bare/ {{ proxy_pass http://{bare}/; }}
        location /short/layered/ {{ proxy_pass http://{layered}/; proxy_read_timeout 1s; }}
        location /short/bare/ {{ proxy_pass http://{bare}/; proxy_read_timeout 1s; }}
    }}
}}
"
    );
    let conf_path = dir.0.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx starts");
    // Wait until it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Nginx {
        child,
        port,
        _dir: dir,
    }
}

/// Reads a response from `path` through nginx; returns each read's arrival time (since the
/// request) with the bytes read so far.
async fn timed_get(port: u16, path: &str, limit: Duration) -> Vec<(Duration, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    let start = Instant::now();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reads = Vec::new();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(start + limit, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        reads.push((start.elapsed(), all.clone()));
    }
    reads
}

/// When the bytes `ev-{i}\n` were first seen, for each event.
fn arrivals(reads: &[(Duration, Vec<u8>)], count: u64) -> Vec<Option<Duration>> {
    (0..count)
        .map(|i| {
            let marker = format!("ev-{i}\n");
            reads
                .iter()
                .find(|(_, bytes)| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
                .map(|(t, _)| *t)
        })
        .collect()
}

macro_rules! require_nginx {
    () => {
        match nginx_binary() {
            Some(bin) => bin,
            None => {
                eprintln!("nginx not installed: skipped (.ci/run installs it)");
                return;
            }
        }
    };
}

#[tokio::test]
#[ignore = "needs nginx; run by .ci/run with --ignored"]
async fn events_cross_a_default_nginx_as_they_are_produced_only_with_the_layer() {
    let bin = require_nginx!();
    let nginx = nginx(&bin, upstream(true).await, upstream(false).await).await;
    let count = 10;
    let layered = timed_get(
        nginx.port,
        "/layered/events?count=10&interval_ms=150",
        Duration::from_secs(5),
    )
    .await;
    let bare = timed_get(
        nginx.port,
        "/bare/events?count=10&interval_ms=150",
        Duration::from_secs(5),
    )
    .await;

    let head = String::from_utf8_lossy(&layered.last().unwrap().1).to_ascii_lowercase();
    // nginx consumes `X-Accel-Buffering` (it never reaches the client); the other headers do.
    assert!(
        head.contains("cache-control: no-cache, no-transform"),
        "{head}"
    );
    assert!(!head.contains("x-accel-buffering"), "{head}");
    let layered = arrivals(&layered, count);
    let bare = arrivals(&bare, count);
    eprintln!("FIGURE: nginx layered arrivals {layered:?}");
    eprintln!("FIGURE: nginx bare arrivals {bare:?}");
    for (i, arrival) in layered.iter().enumerate() {
        let produced = Duration::from_millis(150 * i as u64);
        let arrival = arrival.expect("every event arrives");
        // Each event within 250 ms of its production (tolerant: shared, noisy machine).
        assert!(
            arrival < produced + Duration::from_millis(250),
            "event {i} produced at {produced:?} arrived at {arrival:?}"
        );
    }
    // Without the layer, nginx holds the small events in its buffer until the upstream ends
    // (~1.35 s): the first event arrives with the last.
    let first_bare = bare[0].expect("bare events arrive at the end");
    assert!(
        first_bare >= Duration::from_millis(1200),
        "bare first event at {first_bare:?}: nginx did not buffer?"
    );
}

#[tokio::test]
#[ignore = "needs nginx; run by .ci/run with --ignored"]
async fn heartbeats_keep_a_stream_alive_through_a_short_proxy_read_timeout() {
    let bin = require_nginx!();
    let nginx = nginx(&bin, upstream(true).await, upstream(false).await).await;
    // The upstream is silent for 2.5 s, longer than nginx's 1 s proxy_read_timeout, then sends.
    let path = "events?count=2&silence_ms=2500&interval_ms=10";
    let layered = timed_get(
        nginx.port,
        &format!("/short/layered/{path}"),
        Duration::from_secs(6),
    )
    .await;
    let bare = timed_get(
        nginx.port,
        &format!("/short/bare/{path}"),
        Duration::from_secs(6),
    )
    .await;
    let layered_arrivals = arrivals(&layered, 2);
    let bare_arrivals = arrivals(&bare, 2);
    eprintln!("FIGURE: nginx read-timeout layered {layered_arrivals:?}, bare {bare_arrivals:?}");
    assert!(
        layered_arrivals.iter().all(Option::is_some),
        "events lost behind nginx with heartbeats: {:?}",
        String::from_utf8_lossy(&layered.last().unwrap().1)
    );
    // The stream carried comment heartbeats while silent.
    let (_, body) = support::split_head(&layered.last().unwrap().1);
    let (data, complete) = support::dechunk(&body);
    assert!(complete);
    let parsed = support::sse_parser::parse(&data);
    assert!(parsed.comments >= 3, "{:?}", String::from_utf8_lossy(&data));
    assert_eq!(parsed.events.len(), 2);
    // Without heartbeats nginx gives up after 1 s of silence: the events never arrive.
    assert_eq!(bare_arrivals, [None, None]);
    let bare_end = bare.last().map(|(t, _)| *t).unwrap_or_default();
    assert!(
        bare_end < Duration::from_millis(2400),
        "bare ended at {bare_end:?}"
    );
}
