//! Run with: cargo run --example proxy -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9000
//!
//! Then: curl -N -H 'Accept: text/event-stream' http://127.0.0.1:8080/events
//!
//! `SseLayer` in front of hyper-util's legacy `Client`: the smallest reverse proxy that makes an
//! upstream's event streams survive buffering proxies and idle-killing load balancers. Every
//! request goes to the upstream (its path and query appended to the upstream URL), both bodies
//! stream, and every `text/event-stream` response coming back gets anti-buffering headers, a
//! `retry:` hint and heartbeats; every other response passes through untouched.
//!
//! Left out on purpose: routes, TLS, upgrades, timeouts, metrics, a config file. The installable
//! `tower-sse-proxy` (the workspace member) has them: `cargo install --path tower-sse-proxy`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_sse::SseLayer;

type Body = Either<Incoming, Full<bytes::Bytes>>;
#[tokio::main]
async fn main() {
    let (listen, upstream) = arguments();
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();

    // One stack for every connection; the layer decides per response whether it is an event
    // stream, and asks the upstream for uncompressed ones so that it can add heartbeats.
    let service = ServiceBuilder::new()
        .layer(
            SseLayer::new()
                .heartbeat(Duration::from_secs(15))
                .retry(Duration::from_secs(3)),
        )
        .service_fn(move |request: Request<Incoming>| {
            let client = client.clone();
            let upstream = upstream.clone();
            async move { Ok::<_, Infallible>(forward(&client, &upstream, request).await) }
        });

    let listener = TcpListener::bind(listen).await.expect("cannot bind");
    println!("listening on http://{}", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends `request` to `upstream`: its response, or a 502.
async fn forward(
    client: &Client<HttpConnector, Incoming>,
    upstream: &Uri,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", PathAndQuery::as_str);
    let uri = format!("{}{target}", upstream.to_string().trim_end_matches('/'));
    *request.uri_mut() = uri.parse().unwrap_or_else(|_| upstream.clone());
    // The upstream gets HTTP/1.1 and its own Host; the client gets its own version back.
    let version = std::mem::replace(request.version_mut(), http::Version::HTTP_11);
    request.headers_mut().remove(header::HOST);
    remove_hop_by_hop(request.headers_mut());

    match client.request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            parts.version = version;
            Response::from_parts(parts, Either::Left(body))
        }
        Err(error) => {
            eprintln!("upstream request failed: {error}");
            let mut response = Response::new(Either::Right(Full::from("502 bad gateway\n")));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    }
}

/// Removes the headers that describe one connection, not the message (RFC 9110, 7.6.1).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut names: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    names.extend([
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ]);
    names.extend([
        header::TRANSFER_ENCODING,
        HeaderName::from_static("keep-alive"),
    ]);
    for name in names {
        headers.remove(name);
    }
}

/// `--listen ADDR` (default 127.0.0.1:8080) and `--upstream URL` (default http://127.0.0.1:9000).
fn arguments() -> (SocketAddr, Uri) {
    let (mut listen, mut upstream) = (
        "127.0.0.1:8080".to_owned(),
        "http://127.0.0.1:9000".to_owned(),
    );
    let mut args = std::env::args().skip(1);
    while let (Some(flag), Some(value)) = (args.next(), args.next()) {
        match flag.as_str() {
            "--listen" => listen = value,
            "--upstream" => upstream = value,
            _ => eprintln!("ignored: {flag} (known: --listen ADDR, --upstream URL)"),
        }
    }
    let listen = listen
        .parse()
        .expect("--listen: an address like 127.0.0.1:8080");
    (
        listen,
        upstream
            .parse()
            .expect("--upstream: a URL like http://host:9000"),
    )
}
