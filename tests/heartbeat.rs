#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Heartbeats on the wire, through a real hyper server over HTTP/1.1 and HTTP/2: a client with
//! an idle timer shorter than the upstream's silence never fires it, sees only comment lines
//! during the silence, and gets the events that follow intact; a busy upstream gets none.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version, header};
use http_body_util::channel::Sender;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::sse_parser::parse;
use tokio::time::{Instant, MissedTickBehavior};
use tower::ServiceBuilder;
use tower_sse::{CloseReason, SseLayer};

/// The layer's heartbeat interval.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// The client gives up when no byte arrives for this long (3 heartbeat intervals).
const CLIENT_IDLE: Duration = Duration::from_millis(300);
/// How long the upstream stays silent: five times the client's idle timer.
const SILENCE: Duration = Duration::from_millis(1500);
const RETRY: Duration = Duration::from_millis(1000);

/// The events the upstream sends after its silence, as separate frames.
const EVENTS: [&[u8]; 3] = [
    b"id: 1\ndata: first\n\n",
    b"event: update\ndata: second\ndata: line two\nid: 2\n\n",
    b"data: third\r\n\r\n",
];

/// Serves `layer` over a handler whose SSE body is fed by `produce`, on its own task.
async fn serve_with<F, Fut>(layer: SseLayer, produce: F) -> SocketAddr
where
    F: Fn(Sender<Bytes, Infallible>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let service =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |_request: Request<Incoming>| {
                let produce = produce.clone();
                async move {
                    let (sender, response) = support::sse_channel();
                    tokio::spawn(produce(sender));
                    Ok::<_, Infallible>(response)
                }
            });
    support::serve(service).await
}

/// Requests the event stream and reads it to its end like a client with an idle timer: any
/// read that waits longer than [`CLIENT_IDLE`] fails the test. Returns every body byte.
async fn read_with_idle_timer(addr: SocketAddr, http2: bool) -> Vec<u8> {
    let client = support::client(http2);
    let request = Request::get(format!("http://{addr}/events"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let expected_version = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    assert_eq!(response.version(), expected_version);
    let mut body = response.into_body();
    let started = Instant::now();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(CLIENT_IDLE, body.frame()).await {
            Err(_) => panic!(
                "the client's {CLIENT_IDLE:?} idle timer fired {:?} into the stream; received so \
                 far: {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&out)
            ),
            Ok(None) => return out,
            Ok(Some(frame)) => {
                if let Ok(data) = frame.unwrap().into_data() {
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

async fn silent_upstream_keeps_the_client_alive_with_comments_only(http2: bool) {
    let layer = SseLayer::new().heartbeat(HEARTBEAT).retry(RETRY);
    let metrics = layer.metrics_handle();
    let addr = serve_with(layer, |mut sender| async move {
        tokio::time::sleep(SILENCE).await;
        for event in EVENTS {
            if sender.send_data(Bytes::from_static(event)).await.is_err() {
                return;
            }
        }
    })
    .await;

    let started = Instant::now();
    let out = read_with_idle_timer(addr, http2).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= SILENCE,
        "the stream ended after only {elapsed:?}"
    );

    // What came before the events is the retry hint and heartbeat comments, nothing else.
    let upstream = EVENTS.concat();
    assert!(
        out.ends_with(&upstream),
        "the events did not arrive intact and last: {:?}",
        String::from_utf8_lossy(&out)
    );
    let before_events = &out[..out.len() - upstream.len()];
    let heartbeats = before_events
        .strip_prefix(b"retry: 1000\n".as_slice())
        .unwrap_or_else(|| panic!("no retry hint first: {:?}", String::from_utf8_lossy(&out)));
    assert!(
        heartbeats.len().is_multiple_of(2) && heartbeats.chunks(2).all(|line| line == b":\n"),
        "not only heartbeat comments during the silence: {:?}",
        String::from_utf8_lossy(heartbeats)
    );
    let count = heartbeats.len() / 2;
    // 1.5 s of silence at 100 ms: 15 heartbeats, fewer when the machine is slow, never more
    // than one per interval.
    assert!(
        (5..=16).contains(&count),
        "{count} heartbeats in {SILENCE:?}"
    );

    // The reference parser sees exactly the upstream's events, the hint, and the comments.
    let parsed = parse(&out);
    assert_eq!(parsed.events, parse(&upstream).events);
    assert_eq!(
        parsed.triples(),
        [
            ("message", "first", "1"),
            ("update", "second\nline two", "2"),
            ("message", "third", "2"),
        ]
    );
    assert_eq!(parsed.retries, [1000]);
    assert_eq!(parsed.comments, count);

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.heartbeats, count as u64);
    assert_eq!(snapshot.closed(CloseReason::UpstreamEnded), 1);
    assert_eq!(snapshot.open_streams, 0);
    eprintln!(
        "http2={http2}: {count} heartbeats over {SILENCE:?} of upstream silence (interval \
         {HEARTBEAT:?}, client idle timer {CLIENT_IDLE:?}); stream lasted {elapsed:?}"
    );
}

async fn busy_upstream_gets_no_heartbeat(http2: bool) {
    const EVENT_EVERY: Duration = Duration::from_millis(20);
    const COUNT: usize = 50;
    let layer = SseLayer::new().heartbeat(HEARTBEAT).retry(RETRY);
    let metrics = layer.metrics_handle();
    let addr = serve_with(layer, |mut sender| async move {
        let mut ticks = tokio::time::interval(EVENT_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for i in 1..=COUNT {
            ticks.tick().await;
            let event = format!("id: {i}\ndata: tick {i}\n\n");
            if sender.send_data(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    })
    .await;

    let started = Instant::now();
    let out = read_with_idle_timer(addr, http2).await;
    let elapsed = started.elapsed();

    let parsed = parse(&out);
    assert_eq!(parsed.comments, 0, "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(parsed.retries, [1000]);
    assert_eq!(parsed.events.len(), COUNT);
    for (i, event) in parsed.events.iter().enumerate() {
        assert_eq!(event.data, format!("tick {}", i + 1));
        assert_eq!(event.last_event_id, (i + 1).to_string());
    }
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.heartbeats, 0);
    assert_eq!(snapshot.closed(CloseReason::UpstreamEnded), 1);
    eprintln!(
        "http2={http2}: {COUNT} events every {EVENT_EVERY:?} over {elapsed:?}, heartbeat \
         {HEARTBEAT:?}: 0 heartbeats"
    );
}

#[tokio::test]
async fn a_silent_upstream_sends_http1_clients_only_heartbeat_comments_so_their_idle_timer_never_fires()
 {
    silent_upstream_keeps_the_client_alive_with_comments_only(false).await;
}

#[tokio::test]
async fn a_silent_upstream_sends_http2_clients_only_heartbeat_comments_so_their_idle_timer_never_fires()
 {
    silent_upstream_keeps_the_client_alive_with_comments_only(true).await;
}

#[tokio::test]
async fn a_busy_upstream_gets_no_heartbeat_over_http1() {
    busy_upstream_gets_no_heartbeat(false).await;
}

#[tokio::test]
async fn a_busy_upstream_gets_no_heartbeat_over_http2() {
    busy_upstream_gets_no_heartbeat(true).await;
}
