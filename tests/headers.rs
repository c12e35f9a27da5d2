//! Headers of event streams on the wire, over HTTP/1.1 and HTTP/2, through a real hyper server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use support::{raw_exchange, serve, split_head};
use tower::ServiceBuilder;
use tower_sse::SseLayer;

fn app() -> impl tower::Service<
    Request<hyper::body::Incoming>,
    Response = Response<tower_sse::SseBody<Full<Bytes>>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(SseLayer::new().retry(Duration::from_millis(1500)))
        .service_fn(|_req: Request<hyper::body::Incoming>| async {
            Ok(Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
                .header(header::CACHE_CONTROL, "private")
                .header(header::CONTENT_LENGTH, "17")
                .header("x-app", "kept")
                .body(Full::from("data: hello\r\n\r\n"))
                .unwrap())
        })
}

#[tokio::test]
async fn http1_wire_bytes_carry_the_headers_and_the_retry_hint_first() {
    let addr = serve(app()).await;
    let raw = raw_exchange(
        addr,
        b"GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        None,
        Duration::from_secs(5),
    )
    .await;
    let (head, body) = split_head(&raw);
    let head_lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head_lower.contains("\r\ncache-control: private, no-cache, no-transform"),
        "{head}"
    );
    assert!(head_lower.contains("\r\nx-accel-buffering: no"), "{head}");
    assert!(
        head_lower.contains("\r\ncontent-type: text/event-stream; charset=utf-8"),
        "{head}"
    );
    assert!(head_lower.contains("\r\nx-app: kept"), "{head}");
    assert!(!head_lower.contains("content-length"), "{head}");
    assert!(!head_lower.contains("keep-alive"), "{head}");
    assert!(head_lower.contains("transfer-encoding: chunked"), "{head}");
    let (data, complete) = support::dechunk(&body);
    assert!(complete);
    assert_eq!(data, b"retry: 1500\ndata: hello\r\n\r\n");
}

#[tokio::test]
async fn http2_response_carries_the_headers_and_no_connection_headers() {
    let addr = serve(app()).await;
    let client = support::client(true);
    let request = Request::get(format!("http://{addr}/events"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let headers = response.headers();
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "private, no-cache, no-transform"
    );
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get(header::CONTENT_LENGTH).is_none());
    assert!(headers.get(header::CONNECTION).is_none());
    let mut body = response.into_body();
    let first = support::next_data(&mut body, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first, "retry: 1500\n");
    let rest = support::next_data(&mut body, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(rest, "data: hello\r\n\r\n");
}
