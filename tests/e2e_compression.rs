//! End to end with real clients (issue 12): headless Chromium's `EventSource`, Node's `fetch` and
//! `curl --compressed -N` receive every event of a compressed event stream while it is open.
//!
//! The server (in this process, on `127.0.0.1:0`) sends event `k + 1` only once the client has
//! acknowledged event `k` (`GET /ack`, or the test itself for curl, which reads curl's output as
//! it comes): a layer that held an event back until more data or the end came would stall the
//! stream, and the test would fail on its timeout. The stream never ends on its own. Chromium's
//! per-event latency (server send time to `onmessage`) over the compressed stream and over
//! identity is printed as `FIGURE:` lines; it is not asserted.
//!
//! `.ci/run` runs this with `cargo test --all-features --test e2e_compression -- --ignored`;
//! without Chromium, Node or curl the test that needs it is skipped with a message.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use tower::{Layer, ServiceExt};
use tower_sse::{Coding, Compression, SseLayer};
use tower_sse_test_support::browser::{self, Chromium, Killed, lines};
use tower_sse_test_support::loopback::{self, BoxError};

/// How long a client may take for the whole scenario.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server waits for the acknowledgement of an event before it gives up.
const ACK_TIMEOUT: Duration = Duration::from_secs(20);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn works(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What the server saw of one stream.
#[derive(Debug, Clone, Default)]
struct Seen {
    accept_encoding: String,
    content_encoding: Option<String>,
}

/// The server's shared state: acknowledgements per stream, and what each stream's exchange
/// looked like.
#[derive(Default)]
struct State {
    acks: Mutex<HashMap<String, tokio::sync::watch::Sender<usize>>>,
    seen: Mutex<HashMap<String, Seen>>,
}

impl State {
    /// Stream `id`'s client has received `count` events.
    fn ack(&self, id: &str, count: usize) {
        if let Some(sender) = self.acks.lock().unwrap().get(id) {
            sender.send_modify(|acked| *acked = (*acked).max(count));
        }
    }

    fn seen(&self, id: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no stream {id:?} was opened"))
    }
}

/// Event `n` of a stream: a JSON progress event (~300 B) carrying its send time.
fn event(n: usize, sent_us: u128) -> String {
    format!(
        "id: {n}\ndata: {{\"n\":{n},\"record\":\"rec-{:06}\",\"processed\":{},\"failed\":{},\
         \"total\":250000,\"rate\":{}.{},\"stage\":\"transform\",\"worker\":\"w-{}\",\
         \"message\":\"page {} of the export fetched and transformed\",\"sent_us\":{sent_us}}}\n\n",
        n * 7919 % 1_000_000,
        n * 3,
        n / 41,
        880 + n * 37 % 90,
        n % 10,
        n % 8,
        n / 4,
    )
}

fn query(request: &Request<Incoming>, key: &str) -> Option<String> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// The event stream `id`: `count` events, each sent once the one before was acknowledged and at
/// least `gap` after it; then the stream stays open.
fn events(state: &Arc<State>, id: String, count: usize, gap: Duration) -> Response<BoxBody> {
    let (ack_tx, mut ack_rx) = tokio::sync::watch::channel(0);
    state.acks.lock().unwrap().insert(id, ack_tx);
    let (mut tx, response) = loopback::sse_channel();
    tokio::spawn(async move {
        for n in 0..count {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            if tx
                .send_data(event(n, now.as_micros()).into())
                .await
                .is_err()
            {
                return;
            }
            let acked = tokio::time::timeout(ACK_TIMEOUT, ack_rx.wait_for(|acked| *acked > n));
            if !matches!(acked.await, Ok(Ok(_))) {
                // Never acknowledged: end the stream (the client sees too few events).
                return;
            }
            tokio::time::sleep(gap).await;
        }
        // Open until the client leaves (the task ends with the test's runtime).
        let _open = tx;
        std::future::pending::<()>().await;
    });
    response.map(|body| body.map_err(BoxError::from).boxed_unsync())
}

/// Serves `/` (an empty page for the browser), `/events?id=..&n=..` (compressed with the
/// layer's defaults), `/events-identity?id=..&n=..` (the same layer without compression) and
/// `/ack?id=..&n=..`.
async fn serve(state: Arc<State>) -> SocketAddr {
    let inner = {
        let state = state.clone();
        tower::service_fn(move |request: Request<Incoming>| {
            let state = state.clone();
            async move {
                let id = query(&request, "id").unwrap_or_default();
                let count = query(&request, "n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let gap = Duration::from_millis(
                    query(&request, "gap_ms")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(10),
                );
                let mut response = events(&state, id, count, gap);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/event-stream"),
                );
                Ok::<_, Infallible>(response)
            }
        })
    };
    let compressed = SseLayer::new()
        .no_heartbeat()
        .no_retry()
        // br is offered only when named: every coding is tested here.
        .compress(Compression::new().order([Coding::Zstd, Coding::Gzip, Coding::Br]))
        .layer(inner.clone());
    let identity = SseLayer::new().no_heartbeat().no_retry().layer(inner);
    let service = tower::service_fn(move |request: Request<Incoming>| {
        let (state, compressed, identity) = (state.clone(), compressed.clone(), identity.clone());
        async move {
            let id = query(&request, "id").unwrap_or_default();
            let response = match request.uri().path() {
                "/" => Response::builder()
                    .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                    .body(
                        http_body_util::Full::from("<!doctype html><title>compression</title>")
                            .map_err(BoxError::from)
                            .boxed_unsync(),
                    )
                    .unwrap(),
                "/ack" => {
                    let count = query(&request, "n")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    state.ack(&id, count);
                    Response::builder()
                        .status(StatusCode::NO_CONTENT)
                        .body(
                            http_body_util::Empty::new()
                                .map_err(BoxError::from)
                                .boxed_unsync(),
                        )
                        .unwrap()
                }
                path @ ("/events" | "/events-identity") => {
                    let accept_encoding = request
                        .headers()
                        .get(header::ACCEPT_ENCODING)
                        .map(|v| v.to_str().unwrap_or("?").to_owned())
                        .unwrap_or_default();
                    let response = if path == "/events" {
                        compressed.oneshot(request).await.unwrap()
                    } else {
                        identity.oneshot(request).await.unwrap()
                    };
                    let content_encoding = response
                        .headers()
                        .get(header::CONTENT_ENCODING)
                        .map(|v| v.to_str().unwrap().to_owned());
                    state.seen.lock().unwrap().insert(
                        id,
                        Seen {
                            accept_encoding,
                            content_encoding,
                        },
                    );
                    response.map(BodyExt::boxed_unsync)
                }
                _ => Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(
                        http_body_util::Empty::new()
                            .map_err(BoxError::from)
                            .boxed_unsync(),
                    )
                    .unwrap(),
            };
            Ok::<_, Infallible>(response)
        }
    });
    loopback::serve(service).await
}

/// A multi-threaded runtime serving the test's routes; the test's thread stays free to block.
fn server() -> (tokio::runtime::Runtime, Arc<State>, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = Arc::new(State::default());
    let addr = runtime.block_on(serve(state.clone()));
    (runtime, state, addr)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
#[ignore = "needs Chromium and Node; run by .ci/run with --ignored"]
fn chromium_eventsource_receives_every_compressed_event_while_the_stream_is_open() {
    let (Some(chromium), Some(mut node)) = (Chromium::launch(), browser::node()) else {
        eprintln!("chromium or node >= 20.10 not installed: skipped (.ci/run installs them)");
        return;
    };
    let (_runtime, state, addr) = server();

    // Rounds of identity and compressed streams in turn, so that both see the same machine.
    let output = node
        .arg(root().join("tests/clients/chromium.mjs"))
        .arg(format!("http://{addr}"))
        .arg(chromium.devtools_port().to_string())
        .args(["4", "100"])
        .output()
        .unwrap();
    drop(chromium);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines().filter(|line| !line.starts_with("LATENCY")) {
        eprintln!("{line}");
    }
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser scenario failed");

    let mut latencies: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut streams = 0;
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            // STREAM <route> <id> <events received>
            Some("STREAM") => {
                let (route, id) = (words.next().unwrap(), words.next().unwrap());
                let received: usize = words.next().unwrap().parse().unwrap();
                assert_eq!(received, 100, "{line}");
                let seen = state.seen(id);
                if streams == 0 {
                    eprintln!("Chromium sent Accept-Encoding: {}", seen.accept_encoding);
                }
                // Chromium offers zstd on loopback; the layer prefers it.
                assert!(seen.accept_encoding.contains("zstd"), "{seen:?}");
                if route == "events" {
                    assert_eq!(seen.content_encoding.as_deref(), Some("zstd"), "{seen:?}");
                } else {
                    assert_eq!(seen.content_encoding, None, "{seen:?}");
                }
                streams += 1;
            }
            // LATENCY <route> <microseconds>
            Some("LATENCY") => {
                let route = words.next().unwrap();
                let route = if route == "events" {
                    "zstd"
                } else {
                    "identity"
                };
                latencies
                    .entry(route)
                    .or_default()
                    .push(words.next().unwrap().parse().unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(streams, 8, "four rounds of two streams");
    for (route, mut values) in latencies {
        values.sort_by(f64::total_cmp);
        eprintln!(
            "FIGURE: Chromium EventSource, {route}: {} events, latency p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            values.len(),
            percentile(&values, 0.5),
            percentile(&values, 0.99),
            values.last().unwrap()
        );
    }
}

/// Runs `node tests/clients/fetch.mjs` against stream `id` asking for `accept_encoding`.
fn node_fetch(addr: SocketAddr, id: &str, accept_encoding: &str, count: usize) -> String {
    let output = Command::new("node")
        .arg(root().join("tests/clients/fetch.mjs"))
        .arg(format!("http://{addr}"))
        .args([id, accept_encoding, &count.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "node fetch failed");
    stdout
}

#[test]
#[ignore = "needs Node; run by .ci/run with --ignored"]
fn node_fetch_decodes_every_event_while_the_stream_is_open() {
    if !works("node", "--version") {
        eprintln!("node not installed: skipped (.ci/run installs it)");
        return;
    }
    let (_runtime, state, addr) = server();
    // Node 20's fetch decodes gzip, deflate and br (not zstd).
    for coding in ["gzip", "br"] {
        let id = format!("node-{coding}");
        let stdout = node_fetch(addr, &id, coding, 50);
        assert!(
            stdout.contains(&format!("DONE 50 events, content-encoding {coding}")),
            "{stdout}"
        );
        let seen = state.seen(&id);
        assert_eq!(seen.accept_encoding, coding);
        assert_eq!(seen.content_encoding.as_deref(), Some(coding));
    }
}

/// Runs `curl --compressed -N` on stream `id` (with `accept_encoding` instead of curl's own list
/// if given), acknowledging each event as its last line comes out of curl. Returns the response
/// head curl printed and the events' `data:` lines.
fn curl(
    addr: SocketAddr,
    state: &State,
    id: &str,
    accept_encoding: Option<&str>,
    count: usize,
) -> (String, Vec<String>) {
    let mut command = Command::new("curl");
    command.args(["--compressed", "-N", "-s", "-i", "--max-time", "60"]);
    if let Some(value) = accept_encoding {
        command.arg("-H").arg(format!("Accept-Encoding: {value}"));
    }
    let mut child = Killed(
        command
            .arg(format!("http://{addr}/events?id={id}&n={count}&gap_ms=5"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = lines(child.0.stdout.take().unwrap());
    let mut head = String::new();
    let mut in_head = true;
    let mut data = Vec::new();
    while data.len() < count {
        let line = stdout
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("curl: {} of {count} events, then nothing", data.len()));
        let line = line.trim_end_matches('\r');
        if in_head {
            in_head = !line.is_empty();
            head.push_str(line);
            head.push('\n');
        } else if let Some(value) = line.strip_prefix("data: ") {
            data.push(value.to_owned());
            // Event k is out of curl's decoder: the server may send k + 1.
            state.ack(id, data.len());
        }
    }
    // The stream is still open: curl would have ended its output otherwise.
    assert!(
        matches!(child.0.try_wait(), Ok(None)),
        "curl exited before it was stopped"
    );
    (head, data)
}

#[test]
#[ignore = "needs curl; run by .ci/run with --ignored"]
fn curl_compressed_prints_every_event_while_the_stream_is_open() {
    if !works("curl", "--version") {
        eprintln!("curl not installed: skipped (.ci/run installs it)");
        return;
    }
    let (_runtime, state, addr) = server();
    let curl_version = String::from_utf8(Command::new("curl").arg("-V").output().unwrap().stdout)
        .unwrap_or_default();
    for (coding, accept_encoding) in [
        // curl's own list; it offers zstd when built with it, and the layer prefers it.
        (None, None),
        (Some("gzip"), Some("gzip")),
        (Some("br"), Some("br")),
    ] {
        let id = format!("curl-{}", coding.unwrap_or("default"));
        let (head, data) = curl(addr, &state, &id, accept_encoding, 30);
        let seen = state.seen(&id);
        let expected = coding.unwrap_or(if curl_version.contains("zstd/") {
            "zstd"
        } else {
            "gzip"
        });
        assert_eq!(seen.content_encoding.as_deref(), Some(expected), "{seen:?}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-encoding: {expected}")),
            "{head}"
        );
        for (n, value) in data.iter().enumerate() {
            assert!(value.starts_with(&format!("{{\"n\":{n},")), "{value}");
        }
    }
}
