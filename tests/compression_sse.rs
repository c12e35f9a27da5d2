#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The layer's own compression of event streams (issue 12, I11): every byte the client has
//! received decodes at once, to exactly the identity stream's bytes; headers; negotiation end to
//! end; heartbeats decodable during idle gaps; the slow-client buffer.
//!
//! Run with: `cargo test -p tower-sse --features gzip,br,zstd --test compression_sse`.

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tokio_stream::StreamExt as _;
use tower::{ServiceBuilder, ServiceExt};
use tower_sse::{Coding, Compression, SlowClient, SseLayer};
use tower_sse_test_support::decode::Decoder;

const CODINGS: [Coding; 3] = [Coding::Gzip, Coding::Br, Coding::Zstd];

/// One step of a scripted inner body.
#[derive(Debug, Clone)]
enum Step {
    Data(Bytes),
    Wait(Duration),
}

/// An inner body that plays its steps on the tokio clock.
struct Script {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for Script {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            match self.steps.pop_front() {
                None => return Poll::Ready(None),
                Some(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(Step::Wait(wait)) => {
                    self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
        }
    }
}

fn event_stream<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    response
}

fn sse_request(accept_encoding: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .header(header::ACCEPT, "text/event-stream")
        .header(header::ACCEPT_ENCODING, accept_encoding)
        .body(Full::default())
        .unwrap()
}

/// Plays `steps` through the layer (heartbeat 1 s) on a paused clock and returns the body's
/// output between the moments it is pending: `checkpoints[k]` is what came out after the k-th
/// wait. With `coding`, the layer compresses with it.
async fn checkpoints(steps: Vec<Step>, coding: Option<Coding>) -> (Vec<Vec<u8>>, Option<String>) {
    let mut layer = SseLayer::new().heartbeat(Duration::from_secs(1));
    if let Some(coding) = coding {
        layer = layer.compress(Compression::new().order([coding]));
    }
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_: Request<Full<Bytes>>| {
            let steps = steps.clone();
            async move {
                Ok::<_, Infallible>(event_stream(Script {
                    steps: steps.into(),
                    sleep: None,
                }))
            }
        });
    let response = service
        .oneshot(sse_request("gzip, deflate, br, zstd"))
        .await
        .unwrap();
    let encoding = response
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap().to_owned());
    let mut body = response.into_body();
    let mut out = Vec::new();
    loop {
        let mut chunk = Vec::new();
        let ended = loop {
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(Some(frame)) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        chunk.extend_from_slice(&data);
                    }
                }
                Poll::Ready(None) => break true,
                Poll::Pending => break false,
            }
        };
        out.push(chunk);
        if ended {
            assert!(body.is_end_stream());
            return (out, encoding);
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
}

/// After every point where the body is pending, and at its end, the compressed output decodes
/// to exactly the identity output so far.
fn check_prefixes(steps: &[Step], coding: Coding) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (identity, none) = runtime.block_on(checkpoints(steps.to_vec(), None));
    let (encoded, encoding) = runtime.block_on(checkpoints(steps.to_vec(), Some(coding)));
    prop_assert_eq!(none, None);
    prop_assert_eq!(encoding.as_deref(), Some(coding.as_str()));
    prop_assert_eq!(identity.len(), encoded.len(), "the same number of waits");
    let mut decoder = Decoder::new(Some(coding.as_str()));
    let mut expected = Vec::new();
    let last = identity.len() - 1;
    for (k, (plain, packed)) in identity.iter().zip(&encoded).enumerate() {
        expected.extend_from_slice(plain);
        // Output whenever there is some, and none while idle (the end adds the coding's trailer).
        prop_assert!(
            plain.is_empty() == packed.is_empty() || k == last,
            "checkpoint {k}"
        );
        let decoded = decoder.feed(packed);
        prop_assert!(
            decoded == expected.as_slice(),
            "decoded prefix differs ({coding})"
        );
    }
    Ok(())
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let text = prop::collection::vec(
        prop::sample::select(b"data: {\"id\":42,\"n\":7}\r\n:event xyz".to_vec()),
        1..400,
    );
    let binary = prop::collection::vec(any::<u8>(), 1..64);
    let big = (1usize..4).prop_map(|kib| {
        b"data: {\"progress\":0.5,\"record\":\"abc\"}\n\n"
            .iter()
            .copied()
            .cycle()
            .take(kib * 12 * 1024)
            .collect::<Vec<u8>>()
    });
    let step = prop_oneof![
        6 => text.prop_map(|t| Step::Data(Bytes::from(t))),
        1 => binary.prop_map(|b| Step::Data(Bytes::from(b))),
        1 => big.prop_map(|b| Step::Data(Bytes::from(b))),
        3 => (1u64..25).prop_map(|tenths| Step::Wait(Duration::from_millis(tenths * 100))),
    ];
    prop::collection::vec(step, 0..24)
}

#[test]
fn every_flush_point_decodes_to_the_identity_output_so_far() {
    for coding in CODINGS {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&steps(), |steps| check_prefixes(&steps, coding))
            .unwrap();
    }
}

#[test]
fn heartbeats_during_idle_gaps_are_decodable_at_once() {
    let steps = vec![
        Step::Data(Bytes::from_static(b"data: {\"a\":1}\n\n")),
        Step::Wait(Duration::from_millis(3500)),
        Step::Data(Bytes::from_static(b"data: {\"a\":2}\n\n")),
    ];
    for coding in CODINGS {
        check_prefixes(&steps, coding).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (encoded, _) = runtime.block_on(checkpoints(steps.clone(), Some(coding)));
        // Three heartbeats in the gap, each decodable in the checkpoint it was sent in.
        let mut decoder = Decoder::new(Some(coding.as_str()));
        let mut heartbeats = 0;
        let mut seen = 0;
        for packed in &encoded {
            let decoded = decoder.feed(packed);
            if decoded[seen..] == *b":\n" {
                heartbeats += 1;
            }
            seen = decoded.len();
        }
        assert_eq!(heartbeats, 3, "{coding}");
    }
}

#[tokio::test]
async fn headers_of_a_compressed_stream() {
    let service = ServiceBuilder::new()
        .layer(SseLayer::new().compress(Compression::new()))
        .service_fn(|request: Request<Full<Bytes>>| async move {
            assert_eq!(request.headers()[header::ACCEPT_ENCODING], "identity");
            let mut response = event_stream(Full::<Bytes>::from("data: 1\n\n"));
            response
                .headers_mut()
                .insert(header::VARY, "origin".parse().unwrap());
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, "9".parse().unwrap());
            Ok::<_, Infallible>(response)
        });
    for (accept, expected) in [
        ("gzip", Some("gzip")),
        // br is offered only when named in the order: a client's preference for it gets gzip.
        ("br;q=0.9, gzip;q=0.8", Some("gzip")),
        ("br", None),
        ("gzip, deflate, br, zstd", Some("zstd")),
        ("identity;q=0", None),
        ("deflate", None),
    ] {
        let response = service.clone().oneshot(sse_request(accept)).await.unwrap();
        let headers = response.headers().clone();
        assert_eq!(
            headers
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap()),
            expected,
            "{accept}"
        );
        assert_eq!(headers[header::VARY], "origin, accept-encoding");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache, no-transform");
        assert_eq!(headers["x-accel-buffering"], "no");
        assert!(!headers.contains_key(header::CONTENT_LENGTH));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let plain = match expected {
            None => body.to_vec(),
            Some(token) => Decoder::new(Some(token)).feed(&body).to_vec(),
        };
        assert_eq!(plain, b"retry: 3000\ndata: 1\n\n", "{accept}");
    }
}

#[tokio::test]
async fn a_head_request_gets_the_headers_of_the_compressed_get() {
    let service = ServiceBuilder::new()
        .layer(SseLayer::new().compress(Compression::new()))
        .service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(event_stream(Full::<Bytes>::default()))
        });
    for (accept, expected) in [("gzip", Some("gzip")), ("deflate", None)] {
        let mut head = sse_request(accept);
        *head.method_mut() = http::Method::HEAD;
        let head = service.clone().oneshot(head).await.unwrap();
        let get = service.clone().oneshot(sse_request(accept)).await.unwrap();
        for name in [
            header::CONTENT_ENCODING,
            header::VARY,
            header::CACHE_CONTROL,
        ] {
            assert_eq!(
                head.headers().get(&name),
                get.headers().get(&name),
                "{name}"
            );
        }
        assert_eq!(
            head.headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap()),
            expected
        );
        let body = head.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }
}

#[tokio::test]
async fn an_event_stream_that_arrives_encoded_passes_through() {
    let service = ServiceBuilder::new()
        .layer(SseLayer::new().compress(Compression::new()))
        .service_fn(|_: Request<Full<Bytes>>| async {
            let mut response = event_stream(Full::<Bytes>::from(&b"\x1f\x8bnot really"[..]));
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
            Ok::<_, Infallible>(response)
        });
    let response = service.oneshot(sse_request("gzip, br")).await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, &b"\x1f\x8bnot really"[..]);
}

#[tokio::test]
async fn other_responses_are_not_compressed() {
    let service = ServiceBuilder::new()
        .layer(SseLayer::new().compress(Compression::new()))
        .service_fn(|_: Request<Full<Bytes>>| async {
            let mut response = Response::new(Full::<Bytes>::from("{}"));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            Ok::<_, Infallible>(response)
        });
    let response = service.oneshot(sse_request("gzip")).await.unwrap();
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
    assert!(!response.headers().contains_key(header::VARY));
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "{}"
    );
}

/// A progress event of about 300 bytes.
fn progress_event(n: usize) -> String {
    let mut event = format!(
        "id: {n}\nevent: progress\ndata: {{\"record\":\"rec-{:06}\",\"processed\":{},\"failed\":{},\
         \"total\":100000,\"rate\":{}.{},\"stage\":\"transform\",\"ts\":\"2026-12-02T10:{:02}:{:02}.{:03}Z\"",
        n * 7919 % 1_000_000,
        n * 3,
        n / 50,
        900 + n % 100,
        n % 10,
        n / 60 % 60,
        n % 60,
        n % 1000
    );
    if n % 10 == 3 {
        event.push_str(",\"error\":\"upstream timeout while fetching page 17\"");
    }
    event.push_str("}\n\n");
    event
}

/// A real server on loopback; the client decodes incrementally and must read each event while
/// the stream is open, before the next is sent; then heartbeats during an idle gap.
#[tokio::test]
async fn loopback_each_event_decodes_while_the_stream_is_open() {
    for (coding, slow_client) in [
        (Coding::Gzip, false),
        (Coding::Br, false),
        (Coding::Zstd, false),
        (Coding::Gzip, true),
        (Coding::Zstd, true),
    ] {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let handler = support::service_fn(move |_| {
            let rx = rx.clone();
            async move {
                let rx = rx.lock().await.take().unwrap();
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                    .map(|b| Ok::<_, Infallible>(Frame::data(b)));
                Ok(event_stream(http_body_util::StreamBody::new(stream)))
            }
        });
        let layer = SseLayer::new()
            .heartbeat(Duration::from_millis(100))
            .compress(Compression::new().order([coding]));
        let addr = if slow_client {
            let layer = layer.slow_client(SlowClient::new().max_buffer(64 * 1024));
            support::serve(ServiceBuilder::new().layer(layer).service(handler)).await
        } else {
            support::serve(ServiceBuilder::new().layer(layer).service(handler)).await
        };

        let client = support::client(false);
        let request = Request::builder()
            .uri(format!("http://{addr}/events"))
            .header(header::ACCEPT, "text/event-stream")
            .header(header::ACCEPT_ENCODING, "gzip, deflate, br, zstd")
            .body(Full::default())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(
            response.headers()[header::CONTENT_ENCODING],
            coding.as_str()
        );
        assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
        let mut body = response.into_body();
        let mut decoder = Decoder::new(Some(coding.as_str()));
        let mut decoded_len = decoder.feed(&[]).len();
        let mut expected = b"retry: 3000\n".to_vec();
        for n in 0..50 {
            let event = progress_event(n);
            expected.extend_from_slice(event.as_bytes());
            tx.send(Bytes::from(event)).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            // Heartbeats may come in between: compare without them.
            while strip_heartbeats(&decoder.feed(&[])[..decoded_len]) != expected {
                assert!(
                    Instant::now() < deadline,
                    "event {n} not decodable ({coding})"
                );
                let chunk = support::next_data(&mut body, Duration::from_secs(2))
                    .await
                    .expect("stream ended early");
                decoded_len = decoder.feed(&chunk).len();
            }
        }
        // Idle: heartbeats arrive and decode at once.
        let before = decoder.feed(&[]).len();
        let deadline = Instant::now() + Duration::from_secs(2);
        while decoder.feed(&[])[before..]
            .windows(2)
            .filter(|w| w == b":\n")
            .count()
            < 2
        {
            assert!(Instant::now() < deadline, "no heartbeat decoded ({coding})");
            let chunk = support::next_data(&mut body, Duration::from_secs(2))
                .await
                .unwrap();
            decoder.feed(&chunk);
        }
        // The end: the encoder is finished, the decoded stream is complete.
        drop(tx);
        while let Some(chunk) = support::next_data(&mut body, Duration::from_secs(2)).await {
            decoder.feed(&chunk);
        }
        assert_eq!(strip_heartbeats(decoder.feed(&[])), expected, "{coding}");
        if let Decoder::Gzip(gzip) = decoder {
            // The gzip trailer (CRC and length) was written and checks out.
            gzip.finish().unwrap();
        }
    }
}

fn strip_heartbeats(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.split_inclusive('\n')
        .filter(|line| *line != ":\n")
        .collect::<String>()
        .into_bytes()
}
