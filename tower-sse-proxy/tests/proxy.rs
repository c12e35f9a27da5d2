//! The `tower-sse-proxy` binary as a real process in front of a real upstream, both on loopback.
//!
//! The tests run the binary cargo builds for them (`CARGO_BIN_EXE_tower-sse-proxy`).
//! Every proxy is started with `--listen 127.0.0.1:0`, prints `listening on http://ADDR, ...` as
//! its first stdout line, and is killed when its guard is dropped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

mod support;

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use support::{Running, dechunk, eventually, raw_exchange, split_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

// ---------------------------------------------------------------------------------------------
// The upstream

/// What the upstream's `/events` sends, one entry per frame, ~75 ms apart: ids, an event that
/// echoes the `Last-Event-ID` it received, CRLF lines, a comment, an event split across frames.
fn upstream_frames(last_event_id: Option<&str>) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"id: 1\ndata: first\n\n"),
        Bytes::from(format!(
            "event: echo\ndata: last-event-id={}\n\n",
            last_event_id.unwrap_or("none")
        )),
        Bytes::from_static(b": upstream comment\r\nid: 2\r\ndata: second\r\n\r\n"),
        Bytes::from_static(b"id: 3\ndata: fo"),
        Bytes::from_static(b"ur\n\n"),
    ]
}

fn upstream_bytes(last_event_id: Option<&str>) -> Vec<u8> {
    upstream_frames(last_event_id).concat()
}

/// The upstream's `/json`: gzip-compressed JSON, made once.
fn gzip_json() -> &'static [u8] {
    static GZ: OnceLock<Vec<u8>> = OnceLock::new();
    GZ.get_or_init(|| {
        let items: Vec<String> = (0..200)
            .map(|i| format!(r#"{{"id":{i},"name":"item {i}"}}"#))
            .collect();
        let json = format!(r#"{{"items":[{}]}}"#, items.join(","));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(json.as_bytes()).unwrap();
        encoder.finish().unwrap()
    })
}

/// The request heads the upstream received: path and query, headers.
type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

type UpstreamBody = Either<http_body_util::channel::Channel<Bytes, Infallible>, Full<Bytes>>;

/// Serves `/events` (add `?hold` to keep the stream open after the last frame) and `/json`.
async fn upstream() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let record = Arc::clone(&seen);
    let service = support::service_fn(move |request: Request<Incoming>| {
        let record = Arc::clone(&record);
        async move {
            let target = request
                .uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned();
            record
                .lock()
                .unwrap()
                .push((target.clone(), request.headers().clone()));
            Ok::<_, Infallible>(answer(&target, request.headers()))
        }
    });
    (support::serve(service).await, seen)
}

/// Answers by the last segment of the path, so that the proxy's route prefixes (`/a/events`)
/// reach the same answers: `events` (`?hold` keeps it open), `json`, `ticks` (an event every
/// 50 ms) and `firehose` (32 KiB of events every millisecond).
fn answer(target: &str, headers: &HeaderMap) -> Response<UpstreamBody> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let name = path.rsplit('/').next().unwrap_or_default();
    match (name, query) {
        ("events", "" | "hold") => {
            let last_event_id = headers
                .get("last-event-id")
                .and_then(|value| value.to_str().ok());
            let frames = upstream_frames(last_event_id);
            let hold = query == "hold";
            let (mut tx, response) = support::sse_channel();
            tokio::spawn(async move {
                for (i, frame) in frames.into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(75)).await;
                    }
                    if tx.send_data(frame).await.is_err() {
                        return;
                    }
                }
                if hold {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            });
            response.map(Either::Left)
        }
        ("ticks", "") => {
            let (mut tx, response) = support::sse_channel();
            tokio::spawn(async move {
                // At most 10 s; the test's runtime ends it sooner.
                for n in 0..200 {
                    let tick = Bytes::from(format!("data: tick {n}\n\n"));
                    if tx.send_data(tick).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            response.map(Either::Left)
        }
        ("firehose", "") => {
            let (mut tx, response) = support::sse_channel();
            tokio::spawn(async move {
                // 32 events of 1 KiB per frame, a frame per millisecond (about 30 MB/s): fills
                // the socket buffers of a client that does not read within a fraction of a
                // second without spinning a core. At most 10 s, until the proxy hangs up.
                let mut event = b"event: load\ndata: ".to_vec();
                event.resize(1022, b'x');
                event.extend_from_slice(b"\n\n");
                let frame = Bytes::from(event.repeat(32));
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while tokio::time::Instant::now() < deadline {
                    if tx.send_data(frame.clone()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            response.map(Either::Left)
        }
        ("json", "") => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, "gzip")
            .header(header::CONTENT_LENGTH, gzip_json().len())
            .body(Either::Right(Full::from(gzip_json())))
            .unwrap(),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Either::Right(Full::default()))
            .unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy process

/// A running proxy in front of one upstream, its address taken from its first stdout line;
/// killed on drop.
struct Proxy {
    running: Running,
    addr: SocketAddr,
}

impl Proxy {
    async fn start(upstream: SocketAddr, flags: &[&str]) -> Self {
        let mut running = Running::proxy(upstream, flags);
        let first = running.line().await;
        let addr = first
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.split(',').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
        assert!(
            first.ends_with(&format!(", proxying to http://{upstream}")),
            "{first}"
        );
        Self { running, addr }
    }

    fn log(&self) -> String {
        self.running.log()
    }

    /// The log once it contains `needle` (it is read from the pipe by another task), or after
    /// a second, whatever it holds then.
    async fn log_with(&self, needle: &str) -> String {
        self.log_within(needle, Duration::from_secs(1)).await
    }

    /// [`log_with`](Self::log_with), waiting up to `timeout`.
    async fn log_within(&self, needle: &str, timeout: Duration) -> String {
        self.running.log_within(needle, timeout).await
    }
}

/// The proxy's binary, built by cargo along with this test.
fn proxy_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tower-sse-proxy"))
}

// ---------------------------------------------------------------------------------------------
// Helpers

const SSE_REQUEST: &str = "GET /events HTTP/1.1\r\nHost: proxy.test\r\n\
                           Accept: text/event-stream\r\nConnection: close\r\n\r\n";

/// Sends a raw HTTP/1.1 request and reads until the proxy closes the connection.
async fn exchange(proxy: &Proxy, request: &str) -> (String, Vec<u8>) {
    let raw = raw_exchange(proxy.addr, request.as_bytes(), None, Duration::from_secs(4)).await;
    assert!(!raw.is_empty(), "no response; proxy log:\n{}", proxy.log());
    let (head, body) = split_head(&raw);
    (head.to_ascii_lowercase(), body)
}

/// The value of header `name` (lowercase) in a lowercased response head.
fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A request for the event stream at `path`, closing the connection after the response.
fn sse_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/event-stream\r\n\
         Connection: close\r\n\r\n"
    )
}

/// The whole event stream at `path` through `proxy` (a 200, ended cleanly), dechunked.
async fn stream_data(proxy: &Proxy, path: &str) -> String {
    let (head, body) = exchange(proxy, &sse_request(path)).await;
    assert!(head.starts_with("http/1.1 200 ok"), "{path}: {head}");
    let (data, complete) = dechunk(&body);
    let data = String::from_utf8_lossy(&data).into_owned();
    assert!(complete, "{path}: no last chunk: {data:?}");
    data
}

/// The dechunked body read so far, and whether the last chunk was seen.
fn body_so_far(raw: &[u8]) -> Option<(Vec<u8>, bool)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(dechunk(&raw[end + 4..]))
}

/// Reads from `stream` into `raw` until `done` holds, the connection closes, or `timeout`.
async fn read_until(
    stream: &mut TcpStream,
    raw: &mut Vec<u8>,
    timeout: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while !done(raw) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return done(raw),
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn an_event_stream_gets_sse_headers_and_the_default_retry_hint_before_the_upstream_bytes() {
    let (upstream, _) = upstream().await;
    let proxy = Proxy::start(upstream, &[]).await;
    let (head, body) = exchange(&proxy, SSE_REQUEST).await;

    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    let cache_control = header_value(&head, "cache-control").unwrap_or_default();
    assert!(cache_control.contains("no-cache"), "{head}");
    assert!(cache_control.contains("no-transform"), "{head}");
    assert_eq!(
        header_value(&head, "x-accel-buffering"),
        Some("no"),
        "{head}"
    );
    assert_eq!(
        header_value(&head, "content-type"),
        Some("text/event-stream"),
        "{head}"
    );
    assert!(header_value(&head, "content-length").is_none(), "{head}");
    assert!(header_value(&head, "keep-alive").is_none(), "{head}");

    let (data, complete) = dechunk(&body);
    assert!(
        complete,
        "no last chunk: {:?}",
        String::from_utf8_lossy(&data)
    );
    let mut expected = b"retry: 3000\n".to_vec();
    expected.extend_from_slice(&upstream_bytes(None));
    assert_eq!(
        String::from_utf8_lossy(&data),
        String::from_utf8_lossy(&expected)
    );
    let log = proxy.log_with("sse stream opened").await;
    assert!(log.contains("sse stream opened"), "{log}");
}

#[tokio::test]
async fn retry_flag_sets_the_hint_in_milliseconds() {
    let (upstream, _) = upstream().await;
    let proxy = Proxy::start(upstream, &["--retry", "1500ms"]).await;
    let (_, body) = exchange(&proxy, SSE_REQUEST).await;
    let (data, complete) = dechunk(&body);
    assert!(complete);
    let mut expected = b"retry: 1500\n".to_vec();
    expected.extend_from_slice(&upstream_bytes(None));
    assert_eq!(
        String::from_utf8_lossy(&data),
        String::from_utf8_lossy(&expected)
    );
}

#[tokio::test]
async fn no_retry_flag_leaves_the_upstream_bytes_alone() {
    let (upstream, _) = upstream().await;
    let proxy = Proxy::start(upstream, &["--no-retry"]).await;
    let (head, body) = exchange(&proxy, SSE_REQUEST).await;
    assert_eq!(
        header_value(&head, "x-accel-buffering"),
        Some("no"),
        "{head}"
    );
    let (data, complete) = dechunk(&body);
    assert!(complete);
    assert_eq!(
        String::from_utf8_lossy(&data),
        String::from_utf8_lossy(&upstream_bytes(None))
    );
}

#[tokio::test]
async fn last_event_id_and_end_to_end_headers_reach_the_upstream_and_hop_by_hop_ones_do_not() {
    let (upstream, seen) = upstream().await;
    let proxy = Proxy::start(upstream, &[]).await;
    let request = "GET /events HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/event-stream\r\n\
                   Accept-Encoding: gzip, br\r\nLast-Event-ID: 42\r\nCache-Control: no-cache\r\n\
                   X-App: kept\r\nX-Forwarded-For: 203.0.113.9\r\nKeep-Alive: timeout=5\r\n\
                   X-Hop: dropped\r\nTE: trailers\r\nConnection: close, X-Hop\r\n\r\n";
    let (_, body) = exchange(&proxy, request).await;

    // The upstream saw the id (it echoes it in an event)...
    let (data, complete) = dechunk(&body);
    assert!(complete);
    assert!(
        contains(&data, b"event: echo\ndata: last-event-id=42\n\n"),
        "{}",
        String::from_utf8_lossy(&data)
    );
    let mut expected = b"retry: 3000\n".to_vec();
    expected.extend_from_slice(&upstream_bytes(Some("42")));
    assert_eq!(data, expected);

    // ...and these headers.
    let seen = seen.lock().unwrap();
    let [(target, headers)] = seen.as_slice() else {
        panic!("upstream requests: {seen:?}");
    };
    assert_eq!(target, "/events");
    assert_eq!(headers["last-event-id"], "42");
    assert_eq!(headers["accept"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-app"], "kept");
    assert_eq!(headers["host"], upstream.to_string());
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    // The layer asks the upstream for an uncompressed event stream.
    assert_eq!(headers["accept-encoding"], "identity");
    for hop in [
        "keep-alive",
        "x-hop",
        "te",
        "connection",
        "transfer-encoding",
    ] {
        assert!(headers.get(hop).is_none(), "{hop} forwarded: {headers:?}");
    }
}

#[tokio::test]
async fn gzip_json_passes_through_byte_for_byte_with_its_content_encoding() {
    let (upstream, seen) = upstream().await;
    let proxy = Proxy::start(upstream, &[]).await;
    let (head, body) = exchange(
        &proxy,
        "GET /json HTTP/1.1\r\nHost: proxy.test\r\nAccept: application/json\r\n\
         Accept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .await;

    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert_eq!(
        header_value(&head, "content-encoding"),
        Some("gzip"),
        "{head}"
    );
    assert_eq!(
        header_value(&head, "content-type"),
        Some("application/json"),
        "{head}"
    );
    let length = gzip_json().len().to_string();
    assert_eq!(
        header_value(&head, "content-length"),
        Some(length.as_str()),
        "{head}"
    );
    assert!(header_value(&head, "transfer-encoding").is_none(), "{head}");
    assert!(header_value(&head, "x-accel-buffering").is_none(), "{head}");
    assert!(header_value(&head, "cache-control").is_none(), "{head}");
    assert_eq!(body, gzip_json());
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut json).unwrap();
    assert!(json.starts_with(r#"{"items":[{"id":0,"#), "{json}");
    // Not a request for an event stream: its Accept-Encoding went to the upstream as is.
    assert_eq!(seen.lock().unwrap()[0].1["accept-encoding"], "gzip");
}

#[tokio::test]
async fn http2_clients_get_the_event_stream_without_connection_headers() {
    let (upstream, _) = upstream().await;
    let proxy = Proxy::start(upstream, &[]).await;
    let client = support::client(true);
    let request = Request::get(format!("http://{}/events", proxy.addr))
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert!(
        headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("no-transform")
    );
    assert_eq!(headers["x-accel-buffering"], "no");
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
    ] {
        assert!(headers.get(name).is_none(), "{name}: {headers:?}");
    }
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = support::next_data(&mut body, Duration::from_secs(3)).await {
        data.extend_from_slice(&chunk);
    }
    let mut expected = b"retry: 3000\n".to_vec();
    expected.extend_from_slice(&upstream_bytes(None));
    assert_eq!(
        String::from_utf8_lossy(&data),
        String::from_utf8_lossy(&expected)
    );
}

/// A port nobody listens on: bound, then released.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The log line of an `--unreachable-sse` answer.
const UNREACHABLE_LINE: &str = "upstream unreachable: answered the event-stream request";

/// Checks a plain 502 answer.
fn assert_plain_502(head: &str, body: &[u8]) {
    assert!(head.starts_with("http/1.1 502 bad gateway"), "{head}");
    assert_eq!(
        header_value(head, "content-type"),
        Some("text/plain; charset=utf-8"),
        "{head}"
    );
    assert!(header_value(head, "x-accel-buffering").is_none(), "{head}");
    assert_eq!(body, b"502 bad gateway: upstream unreachable\n");
}

/// Checks an `--unreachable-sse` answer (a 200 event stream whose body is one `retry:` line,
/// ended cleanly) and returns the hint in milliseconds.
fn unreachable_hint(head: &str, body: &[u8]) -> u64 {
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert_eq!(
        header_value(head, "content-type"),
        Some("text/event-stream"),
        "{head}"
    );
    let cache_control = header_value(head, "cache-control").unwrap_or_default();
    assert!(cache_control.contains("no-cache"), "{head}");
    assert!(cache_control.contains("no-transform"), "{head}");
    assert_eq!(
        header_value(head, "x-accel-buffering"),
        Some("no"),
        "{head}"
    );
    assert!(header_value(head, "content-length").is_none(), "{head}");
    let (data, complete) = dechunk(body);
    let text = String::from_utf8_lossy(&data).into_owned();
    assert!(complete, "no clean end (last chunk): {text:?}");
    // The whole body: `retry: `, ASCII digits, LF; nothing before or after.
    text.strip_prefix("retry: ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("not exactly one retry line: {text:?}"))
}

/// How many lines of `log` contain `needle`.
fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[tokio::test]
async fn an_unreachable_upstream_gets_a_plain_502() {
    let proxy = Proxy::start(closed_port(), &[]).await;
    // Without `--unreachable-sse`, even a request for an event stream.
    let (head, body) = exchange(&proxy, SSE_REQUEST).await;
    assert_plain_502(&head, &body);
    let log = proxy.log_with("upstream request failed").await;
    assert!(log.contains("upstream request failed"), "{log}");
    assert!(!log.contains(UNREACHABLE_LINE), "{log}");
}

#[tokio::test]
async fn unreachable_sse_answers_an_event_stream_request_with_200_and_one_jittered_retry_line() {
    let proxy = Proxy::start(closed_port(), &["--unreachable-sse", "--retry", "2s"]).await;
    const REQUESTS: usize = 8;
    let mut hints = Vec::new();
    for _ in 0..REQUESTS {
        let (head, body) = exchange(&proxy, SSE_REQUEST).await;
        let millis = unreachable_hint(&head, &body);
        // 2 s ± 50 %.
        assert!((1000..=3000).contains(&millis), "{millis}");
        hints.push(millis);
    }
    // Jittered per answer: eight draws from 2,001 values are not all equal.
    hints.sort_unstable();
    hints.dedup();
    assert!(hints.len() > 1, "the same hint every time: {hints:?}");

    // One warn line per answer, and not the 502's line.
    assert!(
        eventually(Duration::from_secs(2), || {
            count_lines(&proxy.log(), UNREACHABLE_LINE) >= REQUESTS
        })
        .await,
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(UNREACHABLE_LINE))
        .collect();
    assert_eq!(lines.len(), REQUESTS, "{log}");
    for line in lines {
        assert!(line.contains(" WARN "), "{line}");
        assert!(line.contains("retry_ms=2000"), "{line}");
    }
    assert!(!log.contains("upstream request failed"), "{log}");
}

#[tokio::test]
async fn unreachable_sse_leaves_the_502_to_requests_that_do_not_ask_for_an_event_stream() {
    let proxy = Proxy::start(closed_port(), &["--unreachable-sse"]).await;
    for accept in [
        "Accept: application/json\r\n",
        // A wildcard is not a request for an event stream.
        "Accept: */*\r\n",
        "",
    ] {
        let request =
            format!("GET /json HTTP/1.1\r\nHost: proxy.test\r\n{accept}Connection: close\r\n\r\n");
        let (head, body) = exchange(&proxy, &request).await;
        assert_plain_502(&head, &body);
    }
    // The log is read from the pipe by another task: wait for the three lines.
    eventually(Duration::from_secs(2), || {
        count_lines(&proxy.log(), "upstream request failed") >= 3
    })
    .await;
    let log = proxy.log();
    assert_eq!(count_lines(&log, "upstream request failed"), 3, "{log}");
    assert!(!log.contains(UNREACHABLE_LINE), "{log}");
    // The same proxy still answers an event-stream request with the default 3 s ± 50 %.
    let (head, body) = exchange(&proxy, SSE_REQUEST).await;
    let millis = unreachable_hint(&head, &body);
    assert!((1500..=4500).contains(&millis), "{millis}");
}

#[tokio::test]
async fn unreachable_sse_in_a_route_applies_to_its_paths_only_with_the_route_retry() {
    let proxy = Proxy::start(
        closed_port(),
        &[
            "--retry",
            "2s",
            "--route",
            "/live/=unreachable-sse,retry:400ms",
        ],
    )
    .await;
    let (head, body) = exchange(&proxy, &sse_request("/live/events")).await;
    let millis = unreachable_hint(&head, &body);
    assert!((200..=600).contains(&millis), "{millis}");
    let (head, body) = exchange(&proxy, &sse_request("/events")).await;
    assert_plain_502(&head, &body);
    let log = proxy.log_with("upstream request failed").await;
    assert_eq!(count_lines(&log, UNREACHABLE_LINE), 1, "{log}");
    assert!(
        log.lines()
            .any(|line| line.contains(UNREACHABLE_LINE) && line.contains("route=/live/")),
        "{log}"
    );
}

#[tokio::test]
async fn bad_arguments_exit_with_code_2_and_name_the_flag_on_stderr() {
    let cases: [(&[&str], &str); 10] = [
        (&["--upstream", "http://127.0.0.1:9", "--bogus"], "--bogus"),
        (
            &["--upstream", "http://127.0.0.1:9", "--retry", "3x"],
            "--retry",
        ),
        (&["--listen", "127.0.0.1:0"], "missing --upstream"),
        (
            &["--upstream", "http://127.0.0.1:9", "--max-buffer", "lots"],
            "--max-buffer",
        ),
        (
            &["--upstream", "http://127.0.0.1:9", "--route", "/llm/"],
            "--route",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:9",
                "--route",
                "/llm/=bogus:1s",
            ],
            "bogus",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:9",
                "--route",
                "/llm/=retry:1s,retry:2s",
            ],
            "retry given more than once",
        ),
        (
            &["--upstream", "http://127.0.0.1:9", "--unreachable-sse=yes"],
            "--unreachable-sse",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:9",
                "--route",
                "/live/=unreachable-sse:on",
            ],
            "unreachable-sse takes no value",
        ),
        (&["--upstream", "ftp://127.0.0.1:9"], "--upstream"),
    ];
    for (args, needle) in cases {
        let output = tokio::time::timeout(
            Duration::from_secs(5),
            Command::new(proxy_binary())
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the proxy did not exit")
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    // --help and --version: stdout, exit 0.
    for flag in ["--help", "--version"] {
        let output = Command::new(proxy_binary())
            .arg(flag)
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{flag}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("tower-sse-proxy"), "{flag}: {stdout}");
    }
}

#[tokio::test]
async fn sigterm_drains_an_open_stream_with_a_retry_hint_and_exits_0() {
    let (upstream, _) = upstream().await;
    let mut proxy = Proxy::start(upstream, &["--drain", "200ms"]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /events?hold HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    let all_sent = upstream_bytes(None);
    let got_everything = read_until(&mut stream, &mut raw, Duration::from_secs(3), |raw| {
        body_so_far(raw).is_some_and(|(data, _)| data.ends_with(&all_sent))
    })
    .await;
    assert!(got_everything, "{:?}", String::from_utf8_lossy(&raw));

    let pid = proxy.running.child.id().expect("the proxy already exited");
    let signalled = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());

    let ended = read_until(&mut stream, &mut raw, Duration::from_secs(3), |raw| {
        body_so_far(raw).is_some_and(|(_, complete)| complete)
    })
    .await;
    let (data, complete) = body_so_far(&raw).unwrap();
    let text = String::from_utf8_lossy(&data).into_owned();
    assert!(ended && complete, "no clean end: {text:?}\n{}", proxy.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );

    // The stream: the hint, the upstream's bytes, a final (jittered) hint, the end.
    let rest = text
        .strip_prefix("retry: 3000\n")
        .and_then(|rest| rest.strip_prefix(String::from_utf8_lossy(&all_sent).as_ref()))
        .unwrap_or_else(|| panic!("{text:?}"));
    let millis: u64 = rest
        .strip_prefix("retry: ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no final retry line: {rest:?}"));
    assert!((2400..=3600).contains(&millis), "{millis}");

    let status = tokio::time::timeout(Duration::from_secs(3), proxy.running.child.wait())
        .await
        .unwrap_or_else(|_| panic!("the proxy did not exit within 3 s:\n{}", proxy.log()))
        .unwrap();
    assert!(signalled.elapsed() < Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
    let log = proxy.log_with("all connections closed").await;
    assert!(log.contains("sse stream closed"), "{log}");
    assert!(log.contains("reason=\"shutdown\""), "{log}");
    assert!(log.contains("all connections closed"), "{log}");
}

#[tokio::test]
async fn routes_write_their_own_retry_hint_and_the_longest_prefix_wins() {
    let (upstream, seen) = upstream().await;
    let proxy = Proxy::start(
        upstream,
        &[
            "--retry",
            "2s",
            "--route",
            "/a/=retry:1s",
            "--route",
            "/b/=retry:250ms,heartbeat:5s",
            "--route",
            "/a/deep/=retry:500ms",
        ],
    )
    .await;
    let cases = [
        ("/a/events", "retry: 1000\n"),
        ("/b/events", "retry: 250\n"),
        ("/a/deep/events", "retry: 500\n"),
        // No route: the global flag. `/ab/` does not start with `/a/`.
        ("/events", "retry: 2000\n"),
        ("/ab/events", "retry: 2000\n"),
    ];
    // All at once: each stream takes about 300 ms.
    let streams =
        futures_util::future::join_all(cases.iter().map(|(path, _)| stream_data(&proxy, path)))
            .await;
    let upstream_text = String::from_utf8(upstream_bytes(None)).unwrap();
    for ((path, hint), data) in cases.iter().zip(&streams) {
        assert_eq!(*data, format!("{hint}{upstream_text}"), "{path}");
    }
    // The path reaches the upstream unchanged, whatever the route.
    let mut targets: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(target, _)| target.clone())
        .collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        [
            "/a/deep/events",
            "/a/events",
            "/ab/events",
            "/b/events",
            "/events"
        ]
    );
    let log = proxy.log_with("route=/a/deep/").await;
    assert!(log.contains("route=/a/deep/"), "{log}");
}

#[tokio::test]
async fn a_no_retry_route_writes_no_hint_while_other_paths_keep_the_global_one() {
    let (upstream, _) = upstream().await;
    let proxy = Proxy::start(
        upstream,
        &["--retry", "1500ms", "--route", "/quiet/=no-retry"],
    )
    .await;
    let upstream_text = String::from_utf8(upstream_bytes(None)).unwrap();
    let (quiet, global) = tokio::join!(
        stream_data(&proxy, "/quiet/events"),
        stream_data(&proxy, "/events"),
    );
    assert_eq!(quiet, upstream_text);
    assert!(!quiet.contains("retry:"), "{quiet:?}");
    assert_eq!(global, format!("retry: 1500\n{upstream_text}"));
}

#[tokio::test]
async fn a_client_that_never_reads_a_drop_oldest_route_is_closed_as_slow_and_others_keep_streaming()
{
    let (upstream, _) = upstream().await;
    let proxy = Proxy::start(
        upstream,
        &[
            "--route",
            "/feeds/=slow-client-policy:drop-oldest,max-buffer:8KiB,slow-client-timeout:300ms",
        ],
    )
    .await;

    // A client on a route without the slow-client buffer (the global settings), reading all the
    // time; `ticks` counts the events it got.
    let mut reader = TcpStream::connect(proxy.addr).await.unwrap();
    reader
        .write_all(b"GET /ticks HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let reading = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf).await {
                received.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let ticks = || {
        body_so_far(&received.lock().unwrap()).map_or(0, |(data, _)| {
            data.windows(b"data: tick ".len())
                .filter(|window| *window == b"data: tick ")
                .count()
        })
    };
    assert!(
        eventually(Duration::from_secs(2), || ticks() >= 2).await,
        "no ticks: {}",
        proxy.log()
    );

    // A client on the firehose that sends its request and never reads. A small receive buffer
    // keeps what the kernel takes for it small.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(proxy.addr).await.unwrap();
    stalled
        .write_all(
            b"GET /feeds/firehose HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let requested = tokio::time::Instant::now();
    let ticks_at_request = ticks();

    let log = proxy
        .log_within("reason=\"slow_client\"", Duration::from_secs(3))
        .await;
    let closed_after = requested.elapsed();
    assert!(
        log.contains("reason=\"slow_client\""),
        "no slow-client close within 3 s:\n{log}"
    );
    // Not before the client was given its 300 ms.
    assert!(
        closed_after >= Duration::from_millis(300),
        "{closed_after:?}"
    );
    // The firehose's stream, on its route, is the one closed (the reader's keeps going, below).
    assert!(
        log.lines().any(|line| line.contains("sse stream opened")
            && line.contains("path=/feeds/firehose route=/feeds/")),
        "{log}"
    );

    // The other stream kept going while the firehose stalled, and still does.
    let ticks_at_close = ticks();
    assert!(
        ticks_at_close > ticks_at_request,
        "no tick during the stall ({ticks_at_request} -> {ticks_at_close})"
    );
    assert!(
        eventually(Duration::from_secs(1), || ticks() >= ticks_at_close + 3).await,
        "the reader stopped receiving after the close: {} ticks\n{log}",
        ticks()
    );
    assert!(!reading.is_finished(), "the reader's stream ended");
    reading.abort();
    drop(stalled);
}
