//! Loopback support for integration tests (the root's `tests/` and `tower-sse-proxy`'s): real
//! servers on `127.0.0.1:0`, a raw TCP client for exact wire bytes, and a hyper client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The error type bodies use in the tests.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `service` over HTTP/1.1 and HTTP/2 (prior knowledge) on a fresh loopback port until
/// the test's runtime ends. Returns the address.
pub async fn serve<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), service)
}

/// Serves `service` as [`serve`] does, on `listener` (for sockets with options of their own).
pub fn serve_on<S, B>(listener: TcpListener, service: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A service that answers every request with what `f` makes of it.
pub fn service_fn<F, Fut, B>(
    f: F,
) -> impl tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future = Fut>
+ Clone
where
    F: FnMut(Request<Incoming>) -> Fut + Clone,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>>,
{
    tower::service_fn(f)
}

/// Sends `request` (raw bytes) and reads the raw response until the connection closes or
/// `until` is found in what was read, or `timeout` passes. Returns what was read.
pub async fn raw_exchange(
    addr: SocketAddr,
    request: &[u8],
    until: Option<&[u8]>,
    timeout: Duration,
) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 8192];
    // `timeout_at` never fires while reads keep succeeding at once: check between reads too.
    while tokio::time::Instant::now() < deadline {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if let Some(needle) = until
                    && out.windows(needle.len()).any(|w| w == needle)
                {
                    break;
                }
            }
            Ok(Err(_)) => break,
        }
    }
    out
}

/// Splits a raw HTTP/1.1 response into its head (status line and headers) and body bytes.
pub fn split_head(raw: &[u8]) -> (String, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        raw[end + 4..].to_vec(),
    )
}

/// Decodes a `Transfer-Encoding: chunked` body (complete or not) into its data, and whether the
/// last chunk was seen.
pub fn dechunk(mut body: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_text = std::str::from_utf8(&body[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (out, true);
        }
        let start = line_end + 2;
        if body.len() < start + size {
            out.extend_from_slice(&body[start..]);
            return (out, false);
        }
        out.extend_from_slice(&body[start..start + size]);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
}

/// A hyper client over HTTP/1.1 (`http2 == false`) or HTTP/2 prior knowledge.
pub fn client(
    http2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
> {
    let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    builder.http2_only(http2);
    builder.build_http()
}

/// Reads the next data frame of `body`, or `None` at the end; panics after `timeout`.
pub async fn next_data<B>(body: &mut B, timeout: Duration) -> Option<Bytes>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    loop {
        let frame = tokio::time::timeout(timeout, body.frame())
            .await
            .expect("timed out waiting for a frame")?
            .unwrap();
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

/// An SSE response whose body is fed through the returned sender.
pub fn sse_channel() -> (
    http_body_util::channel::Sender<Bytes, Infallible>,
    Response<http_body_util::channel::Channel<Bytes, Infallible>>,
) {
    let (tx, body) = http_body_util::channel::Channel::new(64);
    let response = Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap();
    (tx, response)
}
