//! The product's features end to end, each against real servers on loopback: the config file
//! (routes by host and path, errors, `--check-config`, SIGHUP reload), the robustness bounds
//! (response-head timeout, silent connections, bad bodies and heads), the admin listener, JSON
//! logs, WebSocket upgrades, TLS both ways and HTTP/2 with trailers to the upstream.

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
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::{Running, TempFile, dechunk, raw_exchange, split_head, tls_acceptor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers every request with `NAME PATH` (plain text), or with a short event
/// stream for paths ending in `/events` (held open under `/hold/`).
async fn named_upstream(name: &'static str) -> SocketAddr {
    support::serve(support::service_fn(
        move |request: Request<Incoming>| async move {
            let path = request.uri().path().to_owned();
            if path.ends_with("/events") {
                let (mut tx, response) = support::sse_channel();
                tokio::spawn(async move {
                    let _ = tx
                        .send_data(Bytes::from(format!("data: {name} {path}\n\n")))
                        .await;
                    if path.contains("/hold/") {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                });
                return Ok::<_, Infallible>(response.map(http_body_util::Either::Left));
            }
            Ok(Response::new(http_body_util::Either::Right(Full::from(
                format!("{name} {path}"),
            ))))
        },
    ))
    .await
}

/// A raw HTTP/1.1 GET with `Connection: close`; returns the lowercased head and the body
/// (dechunked when chunked).
async fn get(addr: SocketAddr, host: &str, path: &str, sse: bool) -> (String, String) {
    let accept = if sse {
        "Accept: text/event-stream\r\n"
    } else {
        ""
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{accept}Connection: close\r\n\r\n");
    let raw = raw_exchange(addr, request.as_bytes(), None, Duration::from_secs(4)).await;
    assert!(!raw.is_empty(), "no answer to {path}");
    let (head, body) = split_head(&raw);
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&body).0
    } else {
        body
    };
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_config_file_routes_by_host_and_path_to_several_upstreams() {
    let a = named_upstream("a").await;
    let b = named_upstream("b").await;
    let config = TempFile::new(
        "routes.toml",
        &format!(
            r#"
[[listen]]
addr = "127.0.0.1:0"

[defaults]
upstream = "http://{a}"
retry = "2s"

[[route]]
host = "b.test"
upstream = "http://{b}"

[[route]]
path = "/fast/"
retry = "1.5s"

[[route]]
name = "b-fast"
host = "b.test"
path = "/fast/"
upstream = "http://{b}"
retry = "500ms"
"#
        ),
    );
    let mut proxy = Running::start(&["--config".to_owned(), config.path()]);
    let first = proxy.line().await;
    assert!(
        first.starts_with("listening on http://127.0.0.1:"),
        "{first}"
    );
    assert!(
        first.ends_with(&format!(", proxying to http://{a}")),
        "{first}"
    );
    let addr: SocketAddr = first["listening on http://".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    assert_eq!(get(addr, "x.test", "/json", false).await.1, "a /json");
    assert_eq!(get(addr, "B.test:8080", "/json", false).await.1, "b /json");
    let cases = [
        ("x.test", "/events", "retry: 2000\ndata: a /events\n\n"),
        (
            "x.test",
            "/fast/events",
            "retry: 1500\ndata: a /fast/events\n\n",
        ),
        ("b.test", "/events", "retry: 2000\ndata: b /events\n\n"),
        (
            "b.test",
            "/fast/events",
            "retry: 500\ndata: b /fast/events\n\n",
        ),
    ];
    for (host, path, expected) in cases {
        let (head, body) = get(addr, host, path, true).await;
        assert!(head.starts_with("http/1.1 200"), "{host}{path}: {head}");
        assert_eq!(body, expected, "{host}{path}");
    }
    let log = proxy
        .log_within("route=b-fast", Duration::from_secs(1))
        .await;
    assert!(log.contains("route=b-fast"), "{log}");

    // --check-config prints the effective configuration, with the flags on top, and exits 0.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tower-sse-proxy"))
        .args([
            "--config",
            &config.path(),
            "--check-config",
            "--heartbeat",
            "5s",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("heartbeat = \"5s\""), "{text}");
    assert!(text.contains("name = \"b-fast\""), "{text}");
    assert!(text.contains("host = \"b.test\""), "{text}");
    assert!(text.contains("backlog = 4096"), "{text}");
    assert!(text.contains("response-timeout = \"1m\""), "{text}");
}

#[tokio::test]
async fn a_bad_config_file_exits_2_naming_the_file_line_and_key_and_starts_nothing() {
    let config = TempFile::new(
        "bad.toml",
        "[defaults]\nupstream = \"http://127.0.0.1:9\"\n\n[[route]]\npath = \"/a/\"\nheartbeat = \"often\"\n",
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tower-sse-proxy"))
        .args(["--config", &config.path()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        stderr.contains(&format!("{}:6:", config.path())),
        "{stderr}"
    );
    assert!(stderr.contains("`heartbeat`"), "{stderr}");
}

#[tokio::test]
async fn sighup_reloads_the_routes_and_a_bad_file_changes_nothing() {
    let upstream = named_upstream("a").await;
    let text = |retry: &str| {
        format!(
            "[defaults]\nupstream = \"http://{upstream}\"\n\n[[route]]\npath = \"/a/\"\nretry = \"{retry}\"\n"
        )
    };
    let config = TempFile::new("reload.toml", &text("1s"));
    let mut proxy = Running::listen(&["--config", &config.path()]);
    let addr = proxy.addr().await;
    assert!(
        get(addr, "x", "/a/events", true)
            .await
            .1
            .starts_with("retry: 1000\n")
    );

    std::fs::write(&config.0, text("2s")).unwrap();
    proxy.signal("-HUP");
    let log = proxy
        .log_within("routes reloaded", Duration::from_secs(2))
        .await;
    assert!(log.contains("routes reloaded"), "{log}");
    assert!(
        get(addr, "x", "/a/events", true)
            .await
            .1
            .starts_with("retry: 2000\n")
    );

    std::fs::write(&config.0, "[defaults]\nbogus = 1\n").unwrap();
    proxy.signal("-HUP");
    let log = proxy
        .log_within("reload failed", Duration::from_secs(2))
        .await;
    assert!(log.contains("reload failed"), "{log}");
    assert!(
        get(addr, "x", "/a/events", true)
            .await
            .1
            .starts_with("retry: 2000\n")
    );
}

/// An upstream that accepts connections, reads requests and never answers.
async fn silent_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(1..) = stream.read(&mut buf).await {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_or_the_unreachable_answer_after_the_response_timeout()
 {
    let upstream = silent_upstream().await;
    let mut proxy = Running::proxy(
        upstream,
        &[
            "--response-timeout",
            "300ms",
            "--route",
            "/live/=unreachable-sse,retry:1s",
        ],
    );
    let addr = proxy.addr().await;
    let started = Instant::now();
    let (head, body) = get(addr, "x", "/events", true).await;
    assert!(head.starts_with("http/1.1 504"), "{head}");
    assert!(body.contains("no response within 300ms"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let (head, body) = get(addr, "x", "/live/events", true).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.starts_with("retry: "), "{body:?}");
}

#[tokio::test]
async fn silent_and_slow_connections_are_closed_after_the_header_timeout() {
    let upstream = named_upstream("a").await;
    let mut proxy = Running::proxy(upstream, &["--header-timeout", "300ms"]);
    let addr = proxy.addr().await;
    for opening in [&b""[..], b"P", b"GET / HTTP/1.1\r\nHost: x\r\n"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(_) | Err(_))),
            "{:?}: still open after 3 s",
            String::from_utf8_lossy(opening)
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
            "{:?}: closed after {elapsed:?}",
            String::from_utf8_lossy(opening)
        );
    }
    // A prompt client is served as usual.
    assert_eq!(get(addr, "x", "/json", false).await.1, "a /json");
}

#[tokio::test]
async fn a_malformed_request_body_gets_400_and_a_garbage_upstream_head_gets_502_with_the_reason() {
    // The upstream reads the whole body before answering.
    let reader = support::serve(support::service_fn(
        |request: Request<Incoming>| async move {
            let body = request.into_body().collect().await;
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(format!(
                "{}",
                body.is_ok()
            ))))
        },
    ))
    .await;
    let mut proxy = Running::proxy(reader, &[]);
    let addr = proxy.addr().await;
    let raw = raw_exchange(
        addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        None,
        Duration::from_secs(15),
    )
    .await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 400"), "{text}");
    assert!(text.contains("request body"), "{text}");

    // An upstream that answers with garbage.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"HELLO THERE\r\n\r\n").await;
            });
        }
    });
    let mut proxy = Running::proxy(garbage, &[]);
    let addr = proxy.addr().await;
    let (head, body) = get(addr, "x", "/events", true).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert!(body.contains("invalid response head"), "{body}");
    assert!(!body.contains("unreachable"), "{body}");
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_health_and_readiness_that_turns_503_when_the_drain_starts()
 {
    let upstream = named_upstream("a").await;
    let mut proxy = Running::proxy(
        upstream,
        &[
            "--admin",
            "127.0.0.1:0",
            "--drain",
            "1500ms",
            "--route",
            "/feeds/=retry:1s",
        ],
    );
    let addr = proxy.addr().await;
    let admin = proxy.addr().await;
    assert_eq!(get(admin, "x", "/healthz", false).await.1, "ok\n");
    let (head, _) = get(admin, "x", "/readyz", false).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    get(addr, "x", "/events", true).await;
    get(addr, "x", "/feeds/events", true).await;
    get(addr, "x", "/json", false).await;
    let (_, metrics) = get(admin, "x", "/metrics", false).await;
    for line in [
        "tower_sse_streams_opened_total{route=\"default\"} 1",
        "tower_sse_streams_opened_total{route=\"/feeds/\"} 1",
        "tower_sse_proxy_requests_total{route=\"default\",status=\"200\"} 2",
        "tower_sse_streams_closed_total{route=\"/feeds/\",reason=\"upstream_ended\"} 1",
        "tower_sse_streams_open{route=\"default\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }

    // A held stream keeps the drain going; readiness turns 503 at once.
    // The stream must be open before the signal: under load the proxy may not have read the
    // request yet, and a drain with no stream ends (and the process exits) at once.
    let (_held, _) = support::hold_stream(addr, "x", "/hold/events").await;
    proxy.signal("-TERM");
    let started = Instant::now();
    loop {
        let (head, body) = get(admin, "x", "/readyz", false).await;
        if head.starts_with("http/1.1 503") {
            assert_eq!(body, "draining\n");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still ready: {head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(4), proxy.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let upstream = named_upstream("a").await;
    let mut proxy = Running::proxy(upstream, &["--log-format", "json"]);
    let addr = proxy.addr().await;
    get(addr, "x", "/events", true).await;
    let log = proxy
        .log_within("sse stream closed", Duration::from_secs(2))
        .await;
    assert!(log.contains("sse stream closed"), "{log}");
    for line in log.lines() {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    }
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_both_ways() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        let _ = socket.send(message).await;
                    }
                }
            });
        }
    });
    let mut proxy = Running::proxy(upstream, &[]);
    let addr = proxy.addr().await;
    let (mut socket, response) = tokio::time::timeout(
        Duration::from_secs(3),
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .expect("handshake timed out")
    .unwrap_or_else(|error| panic!("{error}\n{}", proxy.log()));
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "world"] {
        socket.send(Message::text(text)).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(2), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), text);
    }
    socket.close(None).await.unwrap();
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn certificate() -> (String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

fn tls_client(ca_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn tls_to_clients_with_alpn_h2_and_to_an_https_upstream_with_a_ca_file() {
    let (upstream_cert, upstream_key) = certificate();
    let (proxy_cert, proxy_key) = certificate();
    let ca = TempFile::new("ca.pem", &upstream_cert);
    let cert = TempFile::new("cert.pem", &proxy_cert);
    let key = TempFile::new("key.pem", &proxy_key);

    // The https upstream: rustls in front of the named upstream's service.
    let acceptor = tls_acceptor(&upstream_cert, &upstream_key, b"http/1.1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let (mut tx, response) = support::sse_channel();
                    let path = request.uri().path().to_owned();
                    tokio::spawn(async move {
                        let _ = tx
                            .send_data(Bytes::from(format!("data: tls {path}\n\n")))
                            .await;
                    });
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let mut proxy = Running::listen(&[
        "--upstream",
        &format!("https://127.0.0.1:{}", upstream.port()),
        "--upstream-ca",
        &ca.path(),
        "--tls-cert",
        &cert.path(),
        "--tls-key",
        &key.path(),
    ]);
    let line = proxy.line().await;
    assert!(
        line.starts_with("listening on https://127.0.0.1:"),
        "{line}"
    );
    let addr: SocketAddr = line["listening on https://".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    for (alpn, http2) in [(&b"h2"[..], true), (&b"http/1.1"[..], false)] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tls_client(&proxy_cert, &[alpn])
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = hyper_util::rt::TokioIo::new(tls);
        let request = Request::get("https://localhost/secure/events")
            .header(header::ACCEPT, "text/event-stream")
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = if http2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        };
        assert_eq!(response.status(), StatusCode::OK, "{}", proxy.log());
        let body = tokio::time::timeout(Duration::from_secs(3), response.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(
            body,
            "retry: 3000\ndata: tls /secure/events\n\n",
            "{}",
            proxy.log()
        );
    }
}

#[tokio::test]
async fn an_http2_upstream_passes_trailers_through_like_grpc() {
    let upstream = support::serve(support::service_fn(
        |request: Request<Incoming>| async move {
            assert_eq!(request.version(), http::Version::HTTP_2);
            let te = request.headers().get(header::TE).cloned();
            let frames = vec![
                Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(
                    b"\0\0\0\0\x02hi",
                ))),
                Ok(http_body::Frame::trailers({
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert(
                        "x-te-seen",
                        te.unwrap_or_else(|| http::HeaderValue::from_static("none")),
                    );
                    trailers
                })),
            ];
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/grpc")
                    .body(body)
                    .unwrap(),
            )
        },
    ))
    .await;
    let mut proxy = Running::proxy(upstream, &["--upstream-http2"]);
    let addr = proxy.addr().await;
    let client = support::client(true);
    let request = Request::post(format!("http://{addr}/pkg.Service/Call"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(Full::from(&b"\0\0\0\0\0"[..]))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", proxy.log());
    let collected = tokio::time::timeout(Duration::from_secs(3), response.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected.trailers().cloned().expect("no trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-te-seen"], "trailers");
    assert_eq!(collected.to_bytes(), &b"\0\0\0\0\x02hi"[..]);
}

#[tokio::test]
async fn the_readme_config_file_loads() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```toml\n# proxy.toml\n")
        .expect("no proxy.toml block")
        + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let config = TempFile::new("readme.toml", &readme[start..end]);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tower-sse-proxy"))
        .args(["--config", &config.path(), "--check-config"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("addr = \"0.0.0.0:8080\""), "{stdout}");
    assert!(stdout.contains("path = \"/feeds/\""), "{stdout}");
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let upstream = named_upstream("a").await;
    let mut proxy = Running::proxy(upstream, &[]);
    let addr = proxy.addr().await;
    let big = "x".repeat(1 << 20);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let raw = raw_exchange(addr, request.as_bytes(), None, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "{}",
        &text[..text.len().min(200)]
    );
}

/// An upstream that reads the whole request body and answers with its length; counts the bodies
/// it read in full.
async fn body_reader() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&read);
    let addr = support::serve(support::service_fn(move |request: Request<Incoming>| {
        let count = Arc::clone(&count);
        async move {
            let answer = match request.into_body().collect().await {
                Ok(body) => {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    body.to_bytes().len().to_string()
                }
                Err(error) => format!("error: {error}"),
            };
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(answer)))
        }
    }))
    .await;
    (addr, read)
}

#[tokio::test]
async fn request_bodies_over_max_body_get_413_per_route_and_never_reach_the_upstream() {
    let (upstream, read) = body_reader().await;
    let mut proxy = Running::proxy(
        upstream,
        &["--max-body", "1KiB", "--route", "/upload/=max-body:16KiB"],
    );
    let addr = proxy.addr().await;
    let post = |http2: bool, path: &str, size: usize| {
        let request = Request::post(format!("http://{addr}{path}"))
            .body(Full::from(vec![b'x'; size]))
            .unwrap();
        async move {
            let response = tokio::time::timeout(
                Duration::from_secs(4),
                support::client(http2).request(request),
            )
            .await
            .unwrap()
            .unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };

    // At the limit: forwarded. Over it, with a declared length: 413 at once, over HTTP/1.1 and
    // HTTP/2.
    assert_eq!(
        post(false, "/small", 1024).await,
        (StatusCode::OK, "1024".to_owned())
    );
    for http2 in [false, true] {
        let (status, body) = post(http2, "/small", 1025).await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "http2 {http2}: {body}"
        );
        assert!(body.contains("larger than 1024 bytes"), "{body}");
    }
    // A route's own limit.
    assert_eq!(
        post(false, "/upload/a", 10_000).await,
        (StatusCode::OK, "10000".to_owned())
    );
    assert_eq!(
        post(false, "/upload/a", 16 * 1024 + 1).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // A chunked body declares no length: it is counted as it streams, and cut at the limit.
    let chunk = format!("258\r\n{}\r\n", "y".repeat(600));
    let request = format!(
        "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let raw = raw_exchange(addr, request.as_bytes(), None, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("connection: close"), "{text}");

    // The upstream read the two bodies within their limits, and no other in full.
    assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A body under the limit still passes chunked.
    let request = format!(
        "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}0\r\n\r\n"
    );
    let raw = raw_exchange(addr, request.as_bytes(), None, Duration::from_secs(3)).await;
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("600"), "{body:?}");
}

/// The `/metrics` sample `name{labels}` whose labels include every one of `want`.
fn sample(metrics: &str, name: &str, want: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (family, labels) = series.split_once('{')?;
        (family == name && want.iter().all(|label| labels.contains(label)))
            .then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn the_admin_metrics_have_a_histogram_of_stream_durations_by_route() {
    let upstream = named_upstream("a").await;
    let mut proxy = Running::proxy(
        upstream,
        &["--admin", "127.0.0.1:0", "--route", "/feeds/=retry:1s"],
    );
    let addr = proxy.addr().await;
    let admin = proxy.addr().await;

    // A stream that ends at once (the upstream ends it), a JSON answer (not a stream), and a
    // stream the client holds for 300 ms before leaving.
    get(addr, "x", "/events", true).await;
    get(addr, "x", "/json", false).await;
    let (held, _) = support::hold_stream(addr, "x", "/feeds/hold/events").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);

    let name = "tower_sse_proxy_stream_duration_seconds";
    let feeds = "route=\"/feeds/\"";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = get(admin, "x", "/metrics", false).await.1;
        if sample(&metrics, &format!("{name}_count"), &[feeds]) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains(&format!("# TYPE {name} histogram")),
        "{metrics}"
    );
    let feeds_count = sample(&metrics, &format!("{name}_count"), &[feeds]);
    assert_eq!(feeds_count, Some(1.0), "{metrics}");
    // Held for at least the 300 ms the client waited.
    let sum = sample(&metrics, &format!("{name}_sum"), &[feeds]).unwrap();
    assert!(sum >= 0.3, "{sum}\n{metrics}");
    let bucket = format!("{name}_bucket");
    assert_eq!(
        sample(&metrics, &bucket, &[feeds, "le=\"0.1\""]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &bucket, &[feeds, "le=\"+Inf\""]),
        Some(1.0),
        "{metrics}"
    );
    // The default route: one stream (the JSON answer is not one).
    let default = "route=\"default\"";
    assert_eq!(
        sample(&metrics, &format!("{name}_count"), &[default]),
        Some(1.0),
        "{metrics}"
    );
}

/// Reads one `Content-Length` response from `stream`: its head and body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |value| value.trim().parse().unwrap());
            if seen.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&seen[end + 4..end + 4 + length]);
                return (head, body.into_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(4), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before a whole response");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// How long until `stream` is closed by the other side (at most 4 s; panics after).
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(4), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(_) | Err(_))), "still open after 4 s");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    started.elapsed()
}

#[tokio::test]
async fn idle_client_connections_are_closed_after_the_keepalive_timeout_and_busy_ones_are_not() {
    let upstream = named_upstream("a").await;
    // A header timeout shorter than the keep-alive one: only the first head is bound by it.
    let mut proxy = Running::proxy(
        upstream,
        &[
            "--header-timeout",
            "200ms",
            "--keepalive-timeout",
            "600ms",
            "--no-heartbeat",
        ],
    );
    let addr = proxy.addr().await;
    let request = b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n";

    // HTTP/1.1: idle after one answer, closed after the keep-alive timeout (not the header
    // timeout); a request within it is served on the same connection and restarts the wait.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.1, "a /json");
    tokio::time::sleep(Duration::from_millis(350)).await;
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.1, "a /json");
    let idle = closed_after(&mut stream).await;
    assert!(idle >= Duration::from_millis(550), "closed after {idle:?}");

    // An event stream in progress is not idle, however quiet it is.
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(b"GET /hold/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut seen = Vec::new();
    while !seen.windows(7).any(|w| w == b"/events") {
        let n = tokio::time::timeout(Duration::from_secs(4), held.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // The event's chunk may end in a later segment than its data.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = tokio::time::timeout(Duration::from_millis(10), held.read(&mut buf)).await;
    let quiet = tokio::time::timeout(Duration::from_millis(1200), held.read(&mut buf)).await;
    assert!(quiet.is_err(), "the stream was closed or sent {quiet:?}");

    // HTTP/2: after the last stream, a GOAWAY and the connection ends.
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::get(format!("http://{addr}/json"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(4), conn).await;
    assert!(ended.is_ok(), "the HTTP/2 connection is still open");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed after {:?}",
        started.elapsed()
    );
}
