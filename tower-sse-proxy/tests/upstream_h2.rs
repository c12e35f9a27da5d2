//! HTTP/2 to upstreams (`--upstream-http2`), the binary against real HTTP/2 servers on loopback
//! that allow few streams per connection: event streams past an upstream's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` get a connection of their own instead of waiting for the
//! response-head timeout; connections with free streams are reused; a closed one is not; h2c
//! prior knowledge and TLS with ALPN h2 both; a refused `GET` is sent again, a `POST` is not.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Running, TempFile, tls_acceptor};
use tokio::net::TcpListener;

/// A bound for failures only: the machine may be loaded.
const WAIT: Duration = Duration::from_secs(15);

/// An HTTP/2 upstream (h2c, or TLS with ALPN h2) that allows `limit` concurrent streams per
/// connection. Every request gets an event stream whose first event names the connection it
/// came on (`data: conn N PATH`), and that stays open while the connection does.
struct H2Upstream {
    addr: SocketAddr,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    /// Response bodies not yet dropped (a stream the proxy reset is dropped).
    open: Arc<AtomicUsize>,
    /// Closes every open connection when sent (an upstream restart; the port stays bound).
    restart: tokio::sync::watch::Sender<()>,
    /// Sends GOAWAY on every open connection when sent (a graceful restart: open streams go
    /// on, new ones must go elsewhere).
    drain: tokio::sync::watch::Sender<()>,
}

impl H2Upstream {
    async fn start(limit: u32, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (restart, restarted) = tokio::sync::watch::channel(());
        let (drain, drained) = tokio::sync::watch::channel(());
        let count = Arc::clone(&connections);
        let open_count = Arc::clone(&open);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let tls = tls.clone();
                let open = Arc::clone(&open_count);
                let mut restarted = restarted.clone();
                restarted.mark_unchanged();
                let mut drained = drained.clone();
                drained.mark_unchanged();
                tokio::spawn(async move {
                    // The senders of the connection's streams: they end with it.
                    let held = Arc::new(Mutex::new(Vec::new()));
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let held = Arc::clone(&held);
                        let open = Arc::clone(&open);
                        async move {
                            let (mut tx, response) = support::sse_channel();
                            let event = format!("data: conn {n} {}\n\n", request.uri().path());
                            tx.send_data(Bytes::from(event)).await.unwrap();
                            held.lock().unwrap().push(tx);
                            open.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(response.map(|body| Counted { body, open }))
                        }
                    });
                    let io: Box<dyn Io> = match tls {
                        None => Box::new(stream),
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                            Box::new(stream)
                        }
                    };
                    let mut builder =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    builder.max_concurrent_streams(limit);
                    let serve = builder.serve_connection(TokioIo::new(io), service);
                    let mut serve = std::pin::pin!(serve);
                    loop {
                        tokio::select! {
                            _ = serve.as_mut() => break,
                            _ = restarted.changed() => break,
                            Ok(()) = drained.changed() => serve.as_mut().graceful_shutdown(),
                        }
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            open,
            restart,
            drain,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// A connection's stream, TLS or not.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A response body that counts itself open until dropped.
struct Counted<B> {
    body: B,
    open: Arc<AtomicUsize>,
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }
}

/// Opens an event stream through the proxy (HTTP/1.1, a connection of its own) and reads until
/// its first event. Returns the status, the text read, and the body, to hold the stream open.
async fn open_stream(proxy: SocketAddr, path: &str) -> (StatusCode, String, Incoming) {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, "proxy.test")
        .header(header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(WAIT, send.send_request(request))
        .await
        .unwrap_or_else(|_| panic!("{path}: no response head within {WAIT:?}"))
        .unwrap();
    let status = response.status();
    let mut body = response.into_body();
    let mut text = String::new();
    while status == StatusCode::OK && !text.contains("data: ") {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{path}: no first event within {WAIT:?}: {text:?}"));
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            other => panic!("{path}: the stream ended before its first event: {other:?}"),
        }
    }
    (status, text, body)
}

/// Opens `paths` at once; every stream must get 200 and its first event.
async fn open_all(proxy: &Running, addr: SocketAddr, paths: &[String]) -> Vec<(String, Incoming)> {
    let opened = futures_util::future::join_all(paths.iter().map(|path| open_stream(addr, path)));
    let mut streams = Vec::new();
    for (path, (status, text, body)) in paths.iter().zip(opened.await) {
        assert_eq!(status, StatusCode::OK, "{path}: {text}\n{}", proxy.log());
        assert!(text.contains(&format!(" {path}\n")), "{path}: {text}");
        streams.push((text, body));
    }
    streams
}

/// The connection numbers the streams' first events name.
fn connections_of(streams: &[(String, Incoming)]) -> Vec<usize> {
    let mut seen: Vec<usize> = streams
        .iter()
        .map(|(text, _)| {
            let rest = &text[text.find("data: conn ").unwrap() + "data: conn ".len()..];
            rest.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    seen.sort_unstable();
    seen
}

#[tokio::test]
async fn streams_past_the_upstreams_limit_get_another_connection() {
    // The upstream allows 2 streams per connection; the proxy counts up to 2 per connection.
    let upstream = H2Upstream::start(2, None).await;
    let mut proxy = Running::proxy(
        upstream.addr,
        &[
            "--upstream-http2",
            "--upstream-h2-max-streams",
            "2",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let addr = proxy.addr().await;
    let admin = proxy.addr().await;
    let paths: Vec<String> = (0..5).map(|i| format!("/events/{i}")).collect();
    let streams = open_all(&proxy, addr, &paths).await;
    // Five open streams, at most two per connection: at least three connections.
    let per_connection = connections_of(&streams);
    assert!(upstream.connections() >= 3, "{per_connection:?}");
    for n in 1..=upstream.connections() {
        let on = per_connection.iter().filter(|&&c| c == n).count();
        assert!(on <= 2, "connection {n} carries {on}: {per_connection:?}");
    }
    // /metrics counts them.
    let raw = support::raw_exchange(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        None,
        WAIT,
    )
    .await;
    let metrics = String::from_utf8_lossy(&raw);
    let label = format!("{{upstream=\"{}\"}}", upstream.addr);
    for name in [
        "tower_sse_proxy_upstream_h2_connections",
        "tower_sse_proxy_upstream_h2_connections_opened_total",
    ] {
        let line = format!("{name}{label} {}\n", upstream.connections());
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }

    // Streams that end free their places: the next one takes one, on an open connection.
    let before = upstream.connections();
    drop(streams);
    assert!(
        support::eventually(WAIT, || upstream.open() == 0).await,
        "the proxy kept {} upstream streams",
        upstream.open()
    );
    let again = open_all(&proxy, addr, &["/events/again".to_owned()]).await;
    assert_eq!(
        upstream.connections(),
        before,
        "{:?}",
        connections_of(&again)
    );
}

#[tokio::test]
async fn the_upstreams_own_stream_limit_counts_when_below_the_cap() {
    // The proxy's cap (the default, 100) is above the upstream's 2. A new connection takes
    // requests once the upstream's SETTINGS have come, so even the first burst is spread.
    let upstream = H2Upstream::start(2, None).await;
    let mut proxy = Running::proxy(upstream.addr, &["--upstream-http2"]);
    let addr = proxy.addr().await;
    let paths: Vec<String> = (0..5).map(|i| format!("/events/{i}")).collect();
    let streams = open_all(&proxy, addr, &paths).await;
    assert!(
        upstream.connections() >= 3,
        "{:?}",
        connections_of(&streams)
    );
    // Once the limit is known, the next streams are spread at once too.
    let paths: Vec<String> = (5..10).map(|i| format!("/events/{i}")).collect();
    let more = open_all(&proxy, addr, &paths).await;
    assert!(upstream.connections() >= 5, "{:?}", connections_of(&more));
}

/// Opens event streams at `path` until one gets 200 (within [`WAIT`]): a request that reaches
/// the proxy before it has seen a connection close may fail. Returns its text and body.
async fn first_ok(proxy: &Running, addr: SocketAddr, path: &str) -> (String, Incoming) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, text, body) = open_stream(addr, path).await;
        if status == StatusCode::OK {
            return (text, body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: no 200 within {WAIT:?}\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_connection_with_free_streams_is_reused_and_a_closed_or_draining_one_is_not() {
    let upstream = H2Upstream::start(10, None).await;
    let mut proxy = Running::proxy(upstream.addr, &["--upstream-http2"]);
    let addr = proxy.addr().await;
    let paths: Vec<String> = (0..3).map(|i| format!("/events/{i}")).collect();
    let mut streams = open_all(&proxy, addr, &paths).await;
    assert_eq!(connections_of(&streams), [1, 1, 1]);
    assert_eq!(upstream.connections(), 1);

    // A graceful restart: GOAWAY on the connection, its open streams go on. Streams the proxy
    // opened before it read the GOAWAY are the upstream's to serve (hyper's first GOAWAY allows
    // any stream); after it, new streams go on a new connection. None fails.
    upstream.drain.send(()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, text, body) = open_stream(addr, "/events/drained").await;
        assert_eq!(status, StatusCode::OK, "{text}\n{}", proxy.log());
        let on_new = text.contains("data: conn 2 /events/drained\n");
        streams.push((text, body));
        if on_new {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no new connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.connections(), 2);
    assert_eq!(
        upstream.open(),
        streams.len(),
        "the streams of the draining connection were cut"
    );

    // The upstream restarts: its connections close, its port stays. New streams go on a new
    // connection (none waits on, or fails on, a closed one).
    upstream.restart.send(()).unwrap();
    drop(streams);
    let (text, _body) = first_ok(&proxy, addr, "/events/after").await;
    assert!(text.contains("data: conn 3 /events/after\n"), "{text}");
    assert_eq!(upstream.connections(), 3);
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn certificate() -> (String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

#[tokio::test]
async fn an_https_upstream_gets_alpn_h2_and_another_connection_at_the_limit() {
    let (cert, key) = certificate();
    let ca = TempFile::new("h2-ca.pem", &cert);
    let upstream = H2Upstream::start(2, Some(tls_acceptor(&cert, &key, b"h2"))).await;
    let mut proxy = Running::listen(&[
        "--upstream",
        &format!("https://localhost:{}", upstream.addr.port()),
        "--upstream-ca",
        &ca.path(),
        "--upstream-http2",
        "--upstream-h2-max-streams",
        "2",
    ]);
    let addr = proxy.addr().await;
    let paths: Vec<String> = (0..3).map(|i| format!("/events/{i}")).collect();
    let streams = open_all(&proxy, addr, &paths).await;
    assert!(
        upstream.connections() >= 2,
        "{:?}",
        connections_of(&streams)
    );
}

/// An h2c upstream (h2's own server, which can refuse a stream) that refuses the first request
/// it receives (`REFUSED_STREAM`) and answers the others 200; counts the requests it received.
async fn refusing_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let handshake = h2::server::Builder::new()
                    .max_concurrent_streams(100)
                    .handshake::<_, Bytes>(stream);
                let Ok(mut connection) = handshake.await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    if count.fetch_add(1, Ordering::SeqCst) == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    } else {
                        let _ = respond.send_response(http::Response::new(()), true);
                    }
                }
            });
        }
    });
    (addr, received)
}

#[tokio::test]
async fn a_refused_get_is_sent_again_and_a_refused_post_with_a_body_is_not() {
    let (upstream, received) = refusing_upstream().await;
    let mut proxy = Running::proxy(upstream, &["--upstream-http2"]);
    let addr = proxy.addr().await;
    let get = b"GET /x HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n";
    let raw = support::raw_exchange(addr, get, None, WAIT).await;
    let head = String::from_utf8_lossy(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", proxy.log());
    assert_eq!(received.load(Ordering::SeqCst), 2);

    // A request with a body is not sent twice: the upstream may have read it.
    let (upstream, received) = refusing_upstream().await;
    let mut proxy = Running::proxy(upstream, &["--upstream-http2"]);
    let addr = proxy.addr().await;
    let post = b"POST /x HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let raw = support::raw_exchange(addr, post, None, WAIT).await;
    let head = String::from_utf8_lossy(&raw);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}\n{}", proxy.log());
    assert_eq!(received.load(Ordering::SeqCst), 1);
}
