//! I9 — untouched passthrough: a response that is not an event stream (or that the application
//! asked the layer to skip) keeps its status, headers, body frames, size hint and trailers
//! exactly, through real hyper servers on loopback and through the service directly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use support::{raw_exchange, serve, split_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::{Layer, ServiceExt};
use tower_sse::{SseLayer, SseOverride, SseService};

const TIMEOUT: Duration = Duration::from_secs(4);

/// Removes the `date` header line from a raw HTTP/1.1 response, the one part of the bytes that
/// legitimately differs between two servers.
fn without_date(raw: &[u8]) -> Vec<u8> {
    let (head, body) = split_head(raw);
    let head: Vec<&str> = head
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect();
    let mut out = head.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

/// The header lines of a raw head (status line excluded, `date` excluded), in wire order.
fn header_lines(head: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .map(str::to_owned)
        .collect()
}

/// Serves `inner` twice, with and without an `SseLayer` (short heartbeat, a retry hint, so that
/// anything the layer injected would show), sends `request` to both and returns both raw
/// responses.
async fn with_and_without_layer<S, B>(inner: S, request: &[u8]) -> (Vec<u8>, Vec<u8>)
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let layer = SseLayer::new()
        .heartbeat(Duration::from_millis(50))
        .retry(Duration::from_millis(1000));
    let layered = serve(layer.layer(inner.clone())).await;
    let bare = serve(inner).await;
    let through_layer = raw_exchange(layered, request, None, TIMEOUT).await;
    let direct = raw_exchange(bare, request, None, TIMEOUT).await;
    (through_layer, direct)
}

const JSON: &str = r#"{"id":42,"items":["a","b","c"],"text":"data: not an event\n\n"}"#;

#[tokio::test]
async fn json_response_with_content_length_is_byte_identical_over_http1() {
    let inner = tower::service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, JSON.len())
                .header("x-app", "kept")
                .body(Full::from(JSON))
                .unwrap(),
        )
    });
    // The request even asks for an event stream: the response decides, and it is JSON.
    let request = b"GET /data HTTP/1.1\r\nHost: test\r\nAccept: application/json, text/event-stream\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n";
    let (through_layer, direct) = with_and_without_layer(inner, request).await;

    assert_eq!(
        String::from_utf8_lossy(&without_date(&through_layer)),
        String::from_utf8_lossy(&without_date(&direct))
    );
    let (head, body) = split_head(&through_layer);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(
        header_lines(&head),
        [
            "content-type: application/json".to_owned(),
            format!("content-length: {}", JSON.len()),
            "x-app: kept".to_owned(),
            "connection: close".to_owned(),
        ],
        "{head}"
    );
    assert_eq!(body, JSON.as_bytes());
}

#[tokio::test]
async fn streamed_non_sse_body_keeps_every_frame_boundary_and_its_trailers() {
    let service = SseService::new(tower::service_fn(|_: Request<Empty<Bytes>>| async {
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(16);
        for chunk in ["first", "second frame", "3", "data: x\n\n"] {
            tx.try_send(Frame::data(Bytes::from_static(chunk.as_bytes())))
                .unwrap();
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        tx.try_send(Frame::trailers(trailers)).unwrap();
        drop(tx);
        Ok::<_, Infallible>(
            Response::builder()
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(body)
                .unwrap(),
        )
    }));
    let request = Request::builder()
        .header(header::ACCEPT, "text/event-stream")
        .body(Empty::new())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers().len(), 1, "{:?}", response.headers());
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/octet-stream"
    );

    let mut body = response.into_body();
    for expected in ["first", "second frame", "3", "data: x\n\n"] {
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), expected);
    }
    let frame = body.frame().await.unwrap().unwrap();
    let trailers = frame.into_trailers().unwrap();
    assert_eq!(trailers.len(), 1);
    assert_eq!(trailers["x-checksum"], "abc123");
    assert!(body.frame().await.is_none());
}

/// A body that reports a size range and ends when told, to check both are forwarded as they are.
struct Hinted {
    hint: SizeHint,
    ended: bool,
}

impl Body for Hinted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

async fn through_service<B>(body: B) -> tower_sse::SseBody<B>
where
    B: Send + 'static,
{
    let mut body = Some(body);
    let service = SseService::new(tower::service_fn(move |_: Request<Empty<Bytes>>| {
        let body = body.take().unwrap();
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .unwrap(),
            )
        }
    }));
    service
        .oneshot(Request::new(Empty::new()))
        .await
        .unwrap()
        .into_body()
}

#[tokio::test]
async fn size_hint_and_end_of_stream_are_forwarded_from_the_inner_body() {
    let mut full = through_service(Full::<Bytes>::from(JSON)).await;
    assert_eq!(full.size_hint().exact(), Some(JSON.len() as u64));
    assert!(!full.is_end_stream());
    let frame = full.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), JSON);
    assert!(full.is_end_stream());
    assert_eq!(full.size_hint().exact(), Some(0));

    let empty = through_service(Empty::<Bytes>::new()).await;
    assert!(empty.is_end_stream());
    assert_eq!(empty.size_hint().exact(), Some(0));

    let mut hint = SizeHint::new();
    hint.set_lower(5);
    hint.set_upper(100);
    let ranged = through_service(Hinted { hint, ended: false }).await;
    assert_eq!(ranged.size_hint().lower(), 5);
    assert_eq!(ranged.size_hint().upper(), Some(100));
    assert!(!ranged.is_end_stream());
    let ended = through_service(Hinted {
        hint: SizeHint::default(),
        ended: true,
    })
    .await;
    assert!(ended.is_end_stream());
    assert_eq!(ended.size_hint().upper(), None);
}

#[tokio::test]
async fn grpc_like_body_reaches_an_http2_client_with_its_trailers() {
    let layered = SseLayer::new()
        .heartbeat(Duration::from_millis(50))
        .layer(tower::service_fn(|_: Request<Incoming>| async {
            let (mut tx, body) = Channel::<Bytes, Infallible>::new(16);
            tokio::spawn(async move {
                tx.send_data(Bytes::from_static(b"\0\0\0\0\x05hello"))
                    .await
                    .unwrap();
                // Silence longer than the heartbeat: a passthrough body gets no heartbeat.
                tokio::time::sleep(Duration::from_millis(150)).await;
                tx.send_data(Bytes::from_static(b"\0\0\0\0\x05world"))
                    .await
                    .unwrap();
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                trailers.insert("grpc-message", HeaderValue::from_static("fine"));
                tx.send_trailers(trailers).await.unwrap();
            });
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/grpc")
                    .header("grpc-encoding", "identity")
                    .body(body)
                    .unwrap(),
            )
        }));
    let addr = serve(layered).await;
    let request = Request::post(format!("http://{addr}/pkg.Service/Method"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(Full::from(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let response = tokio::time::timeout(TIMEOUT, support::client(true).request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "application/grpc");
    assert_eq!(headers["grpc-encoding"], "identity");
    assert!(headers.get(header::CACHE_CONTROL).is_none(), "{headers:?}");
    assert!(headers.get("x-accel-buffering").is_none(), "{headers:?}");

    let collected = tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected.trailers().cloned().expect("no trailers arrived");
    assert_eq!(trailers.len(), 2, "{trailers:?}");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(
        collected.to_bytes(),
        Bytes::from_static(b"\0\0\0\0\x05hello\0\0\0\0\x05world")
    );
}

fn status_app(request: &Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body): (u16, &'static str) = match request.uri().path() {
        "/204" => (204, ""),
        "/404" => (404, "data: not found\n\n"),
        _ => (503, "data: down\n\n"),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "private");
    if status == 503 {
        builder = builder.header(header::RETRY_AFTER, "5");
    }
    Ok(builder.body(Full::from(body)).unwrap())
}

#[tokio::test]
async fn status_204_404_and_503_event_streams_pass_through_unchanged() {
    let inner = tower::service_fn(|request: Request<Incoming>| async move { status_app(&request) });
    // hyper writes `connection: close` after the application's headers, then the length it
    // takes from the body's exact size hint (which the layer must forward for it to be there).
    for (path, status_line, body, expected_headers) in [
        (
            "/204",
            "HTTP/1.1 204 No Content",
            "",
            &[
                "content-type: text/event-stream",
                "cache-control: private",
                "connection: close",
            ][..],
        ),
        (
            "/404",
            "HTTP/1.1 404 Not Found",
            "data: not found\n\n",
            &[
                "content-type: text/event-stream",
                "cache-control: private",
                "connection: close",
                "content-length: 17",
            ][..],
        ),
        (
            "/503",
            "HTTP/1.1 503 Service Unavailable",
            "data: down\n\n",
            &[
                "content-type: text/event-stream",
                "cache-control: private",
                "retry-after: 5",
                "connection: close",
                "content-length: 12",
            ][..],
        ),
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nLast-Event-ID: 7\r\nConnection: close\r\n\r\n"
        );
        let (through_layer, direct) = with_and_without_layer(inner, request.as_bytes()).await;
        assert_eq!(
            String::from_utf8_lossy(&without_date(&through_layer)),
            String::from_utf8_lossy(&without_date(&direct)),
            "{path}"
        );
        let (head, received) = split_head(&through_layer);
        assert!(head.starts_with(status_line), "{path}: {head}");
        assert_eq!(header_lines(&head), expected_headers, "{path}: {head}");
        assert_eq!(received, body.as_bytes(), "{path}");
    }
}

#[tokio::test]
async fn sse_override_skip_leaves_an_event_stream_byte_identical() {
    // One event, silence well past the 50 ms heartbeat, a second event, the end; with a
    // Content-Length the application chose (22 bytes) and its own Cache-Control.
    let inner = tower::service_fn(|request: Request<Incoming>| async move {
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(16);
        tokio::spawn(async move {
            tx.send_data(Bytes::from_static(b"data: one\n\n"))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send_data(Bytes::from_static(b"data: two\n\n"))
                .await
                .unwrap();
        });
        let mut response = Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "private")
            .header(header::CONTENT_LENGTH, "22")
            .body(body)
            .unwrap();
        if request.uri().path() == "/skip" {
            response.extensions_mut().insert(SseOverride::skip());
        }
        Ok::<_, Infallible>(response)
    });
    let request =
        b"GET /skip HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n";
    let (through_layer, direct) = with_and_without_layer(inner, request).await;
    assert_eq!(
        String::from_utf8_lossy(&without_date(&through_layer)),
        String::from_utf8_lossy(&without_date(&direct))
    );
    let (head, body) = split_head(&through_layer);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(
        header_lines(&head),
        [
            "content-type: text/event-stream",
            "cache-control: private",
            "content-length: 22",
            "connection: close",
        ],
        "{head}"
    );
    assert_eq!(body, b"data: one\n\ndata: two\n\n");

    // Control: the same response without the override is handled by the same layer.
    let request =
        b"GET /handled HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n";
    let (through_layer, _) = with_and_without_layer(inner, request).await;
    let (head, body) = split_head(&through_layer);
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("\r\ncache-control: private, no-cache, no-transform"),
        "{head}"
    );
    assert!(head.contains("\r\nx-accel-buffering: no"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    let (data, complete) = support::dechunk(&body);
    assert!(complete);
    assert!(
        data.starts_with(b"retry: 1000\ndata: one\n\n:\n"),
        "{data:?}"
    );
    let parsed = support::sse_parser::parse(&data);
    assert_eq!(
        parsed.triples(),
        [("message", "one", ""), ("message", "two", "")]
    );
    assert!(parsed.comments >= 1);
}

#[tokio::test]
async fn http1_upgrade_handshake_and_echo_work_through_the_layer() {
    let layered = SseLayer::new()
        .heartbeat(Duration::from_millis(50))
        .layer(tower::service_fn(
            |mut request: Request<Incoming>| async move {
                let on_upgrade = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    let upgraded = on_upgrade.await.unwrap();
                    let mut io = hyper_util::rt::TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = io.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        io.write_all(&buf[..n]).await.unwrap();
                    }
                });
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header(header::CONNECTION, "upgrade")
                        .header(header::UPGRADE, "echo")
                        .body(Empty::<Bytes>::new())
                        .unwrap(),
                )
            },
        ));
    let addr = serve(layered).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "connection closed during the handshake: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    let lines = header_lines(head.trim_end_matches("\r\n"));
    assert_eq!(lines, ["connection: upgrade", "upgrade: echo"], "{head}");

    for message in [&b"ping"[..], b"data: not sse\n\n", b"\0\x01\x02"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    // Nothing else arrives on the upgraded connection: no heartbeat, no hint.
    let mut extra = [0u8; 16];
    let quiet = tokio::time::timeout(Duration::from_millis(150), stream.read(&mut extra)).await;
    assert!(quiet.is_err(), "unexpected bytes: {quiet:?} {extra:?}");
}
