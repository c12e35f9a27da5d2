//! Unit tests of [`SseBody`]: the event-stream state machine driven through the body over
//! scripted inner bodies on a paused clock, the invariants as property tests, and the size of a
//! stream's state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

use crate::CloseReason;

mod stream {
    use super::*;
    use crate::SseShutdown;
    use crate::config::Config;
    use crate::test_helpers::sse_parser::parse;
    use crate::test_helpers::{ScriptBody, Step};
    use http_body_util::BodyExt;

    const S: Duration = Duration::from_secs(1);

    fn config(f: impl FnOnce(&mut Config)) -> Arc<Config> {
        let mut config = Config::default();
        config.settings.retry = None;
        config.settings.heartbeat = None;
        f(&mut config);
        Arc::new(config)
    }

    /// `data: a` at 250 ms, then silence.
    fn one_event_at_250_ms() -> Vec<Step> {
        vec![
            Step::Wait(Duration::from_millis(250)),
            Step::Data(b"data: a\n\n"),
            Step::Wait(100 * S),
        ]
    }

    /// A heartbeat every `S` (1 s) on a grid of `slack`, nothing else injected.
    fn heartbeat_with_slack(slack: Duration) -> Arc<Config> {
        config(|c| {
            c.settings.heartbeat = Some(S);
            c.heartbeat_slack = Some(slack);
        })
    }

    fn sse(
        steps: Vec<Step>,
        config: &Arc<Config>,
    ) -> (SseBody<ScriptBody>, Arc<std::sync::atomic::AtomicBool>) {
        let body = ScriptBody::new(steps);
        let dropped = Arc::clone(&body.dropped);
        (
            SseBody::sse(
                Some(Upstream::direct(body)),
                Arc::clone(config),
                config.settings,
            ),
            dropped,
        )
    }

    /// Collects the body's data frames with the (paused) time each arrived, since the start.
    async fn frames<B>(mut body: B) -> Vec<(Duration, Bytes)>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: fmt::Debug,
    {
        let start = Instant::now();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                out.push((start.elapsed(), data));
            }
        }
        out
    }

    fn joined(frames: &[(Duration, Bytes)]) -> Vec<u8> {
        frames.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn passthrough_forwards_frames_trailers_and_hints() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let inner = ScriptBody::new([
            Step::Data(b"a"),
            Step::Data(b"bc"),
            Step::Trailers(trailers.clone()),
        ]);
        let mut body = SseBody::passthrough(inner);
        assert!(!body.is_end_stream());
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            seen.push(frame.unwrap());
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].data_ref().unwrap(), "a");
        assert_eq!(seen[1].data_ref().unwrap(), "bc");
        assert_eq!(seen[2].trailers_ref().unwrap(), &trailers);

        let full = SseBody::passthrough(http_body_util::Full::new(Bytes::from_static(b"12345")));
        assert_eq!(full.size_hint().exact(), Some(5));
        let empty = SseBody::passthrough(http_body_util::Empty::<Bytes>::new());
        assert!(empty.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_hint_comes_first_and_frames_pass_unchanged() {
        let config = config(|c| c.settings.retry = Some(Duration::from_millis(2500)));
        let (body, _) = sse(
            vec![
                Step::Data(b"data: a\n\n"),
                Step::Wait(Duration::from_millis(5)),
                Step::Data(b"data: b\n\n"),
            ],
            &config,
        );
        assert_eq!(body.size_hint().exact(), None);
        let frames = frames(body).await;
        let timeline: Vec<(Duration, &[u8])> =
            frames.iter().map(|(t, b)| (*t, b.as_ref())).collect();
        // The first frame is not held for the second, which is not ready yet.
        assert_eq!(
            timeline,
            [
                (Duration::ZERO, &b"retry: 2500\n"[..]),
                (Duration::ZERO, b"data: a\n\n"),
                (Duration::from_millis(5), b"data: b\n\n"),
            ]
        );
        assert_eq!(config.metrics.snapshot().events, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn frames_ready_in_the_same_poll_are_handed_on_as_one() {
        let config = config(|_| {});
        let mut steps = vec![Step::Data(b"data: a\n"), Step::Data(b"\n")];
        steps.extend((0..10).map(|_| Step::Data(b"data: b\n\n")));
        steps.push(Step::Wait(Duration::from_millis(1)));
        steps.push(Step::Data(b"data: c\n\n"));
        let (body, _) = sse(steps, &config);
        let frames = frames(body).await;
        let bytes: Vec<&[u8]> = frames.iter().map(|(_, b)| b.as_ref()).collect();
        let mut first = b"data: a\n\n".to_vec();
        for _ in 0..10 {
            first.extend_from_slice(b"data: b\n\n");
        }
        assert_eq!(bytes, [&first[..], b"data: c\n\n"]);
        assert_eq!(config.metrics.snapshot().events, 12);
    }

    #[tokio::test(start_paused = true)]
    async fn merging_stops_at_the_limit_and_keeps_trailers_and_errors_for_the_next_poll() {
        let config = config(|_| {});
        let chunk: &'static [u8] = Box::leak(
            format!("data: {}\n\n", "x".repeat(1000))
                .into_bytes()
                .into_boxed_slice(),
        );
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-done", "1".parse().unwrap());
        let mut steps: Vec<Step> = (0..40).map(|_| Step::Data(chunk)).collect();
        steps.push(Step::Trailers(trailers.clone()));
        let (mut body, _) = sse(steps, &config);
        let mut sizes = Vec::new();
        loop {
            let frame = body.frame().await.unwrap().unwrap();
            match frame.into_data() {
                Ok(data) => sizes.push(data.len()),
                Err(frame) => {
                    assert_eq!(frame.trailers_ref(), Some(&trailers));
                    break;
                }
            }
        }
        assert!(body.frame().await.is_none());
        assert_eq!(sizes.iter().sum::<usize>(), 40 * chunk.len());
        assert!(sizes.len() >= 2, "{sizes:?}");
        assert!(
            sizes
                .iter()
                .all(|n| *n <= machine::COALESCE_LIMIT + chunk.len()),
            "{sizes:?}"
        );

        let (mut body, _) = sse(
            vec![
                Step::Data(b"data: a\n\n"),
                Step::Data(b"data: b\n"),
                Step::Error,
            ],
            &config,
        );
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "data: a\n\ndata: b\n"
        );
        assert!(body.frame().await.unwrap().is_err());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_fill_silence_and_traffic_postpones_them() {
        let config = config(|c| c.settings.heartbeat = Some(10 * S));
        let (body, _) = sse(
            vec![
                Step::Wait(25 * S),
                Step::Data(b"data: a\n\n"),
                Step::Wait(9 * S),
                Step::Data(b"data: b\n\n"),
                Step::Wait(9 * S),
                Step::Data(b"data: c\n\n"),
                Step::Wait(15 * S),
            ],
            &config,
        );
        let frames = frames(body).await;
        let timeline: Vec<(u64, &[u8])> = frames
            .iter()
            .map(|(t, b)| (t.as_secs(), b.as_ref()))
            .collect();
        assert_eq!(
            timeline,
            [
                (10, &b":\n"[..]),
                (20, b":\n"),
                (25, b"data: a\n\n"),
                (34, b"data: b\n\n"),
                (43, b"data: c\n\n"),
                (53, b":\n"),
            ]
        );
        let snapshot = config.metrics.snapshot();
        assert_eq!(snapshot.heartbeats, 3);
        assert_eq!(snapshot.closed(CloseReason::UpstreamEnded), 1);
        assert_eq!(snapshot.open_streams, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_go_out_on_the_slack_grid_and_keep_it() {
        // Heartbeat 1 s, slack 100 ms: after data at 250 ms the heartbeat falls due at 1.25 s
        // and is set for 1.3 s (the grid). Polled late, at 1.35 s, it is dated 1.3 s, so the
        // next one goes out at 2.3 s (not 2.4 s: the stream keeps the grid).
        let config = heartbeat_with_slack(Duration::from_millis(100));
        let (mut body, _) = sse(one_event_at_250_ms(), &config);
        let start = Instant::now();
        let ms = Duration::from_millis;
        let data = |frame: Option<Result<Frame<Bytes>, BoxError>>| {
            frame.unwrap().unwrap().into_data().unwrap()
        };
        assert_eq!(data(body.frame().await), "data: a\n\n");
        assert_eq!(start.elapsed(), ms(250));
        // One poll that waits (the data is dated 250 ms), then none until 1.35 s.
        let waited = tokio::time::timeout(ms(1), body.frame()).await;
        assert!(waited.is_err());
        tokio::time::sleep_until(start + ms(1_350)).await;
        assert_eq!(data(body.frame().await), ":\n");
        assert_eq!(start.elapsed(), ms(1_350));
        assert_eq!(data(body.frame().await), ":\n");
        assert_eq!(start.elapsed(), ms(2_300));
        assert_eq!(data(body.frame().await), ":\n");
        assert_eq!(start.elapsed(), ms(3_300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_polled_far_too_late_is_not_followed_by_a_burst() {
        // Heartbeat 1 s, slack 100 ms, polled only at 3.05 s: one heartbeat then, dated then
        // (it is more than a slack past its grid instant), and the next at 4.1 s (due 4.05 s).
        let config = heartbeat_with_slack(Duration::from_millis(100));
        let (mut body, _) = sse(vec![Step::Wait(100 * S)], &config);
        let start = Instant::now();
        let ms = Duration::from_millis;
        let waited = tokio::time::timeout(ms(1), body.frame()).await;
        assert!(waited.is_err());
        tokio::time::sleep_until(start + ms(3_050)).await;
        for at in [3_050, 4_100, 5_100] {
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(frame, ":\n");
            assert_eq!(start.elapsed(), ms(at));
        }
        assert_eq!(config.metrics.snapshot().heartbeats, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn without_slack_each_heartbeat_goes_out_when_due() {
        let config = heartbeat_with_slack(Duration::ZERO);
        let (mut body, _) = sse(one_event_at_250_ms(), &config);
        let start = Instant::now();
        for _ in 0..3 {
            body.frame().await.unwrap().unwrap();
        }
        // Data at 250 ms, heartbeats at 1.25 s and 2.25 s.
        assert_eq!(start.elapsed(), Duration::from_millis(2_250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_upstream_gets_no_heartbeat() {
        let config = config(|c| c.settings.heartbeat = Some(10 * S));
        let mut steps = Vec::new();
        for _ in 0..20 {
            steps.push(Step::Data(b"data: tick\n\n"));
            steps.push(Step::Wait(9 * S));
        }
        let (body, _) = sse(steps, &config);
        let frames = frames(body).await;
        assert_eq!(frames.len(), 20);
        assert_eq!(config.metrics.snapshot().heartbeats, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_is_skipped_mid_line_and_counted() {
        let config = config(|c| c.settings.heartbeat = Some(10 * S));
        let (body, _) = sse(
            vec![
                Step::Data(b"data: hal"),
                Step::Wait(25 * S),
                Step::Data(b"f\n\n"),
            ],
            &config,
        );
        let frames = frames(body).await;
        assert_eq!(joined(&frames), b"data: half\n\n");
        assert_eq!(config.metrics.snapshot().heartbeats_skipped, 2);
        assert_eq!(config.metrics.snapshot().heartbeats, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_inside_an_open_event_is_one_comment_line() {
        let config = config(|c| c.settings.heartbeat = Some(10 * S));
        let (body, _) = sse(
            vec![
                Step::Data(b"event: x\ndata: a\n"),
                Step::Wait(15 * S),
                Step::Data(b"data: b\n\n"),
            ],
            &config,
        );
        let out = joined(&frames(body).await);
        assert_eq!(out, b"event: x\ndata: a\n:\ndata: b\n\n");
        let parsed = parse(&out);
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.events[0].event_type, "x");
        assert_eq!(parsed.events[0].data, "a\nb");
    }

    #[tokio::test(start_paused = true)]
    async fn no_heartbeat_between_a_cr_and_its_lf() {
        // I2: `data: a\r` | `\ndata: b\r\n\r\n` with a heartbeat due between the two frames:
        // skipped (and counted), so that the upstream's CRLF stays whole.
        let config = config(|c| {
            c.settings.heartbeat = Some(10 * S);
            c.settings.retry = None;
        });
        let (body, _) = sse(
            vec![
                Step::Data(b"data: a\r"),
                Step::Wait(15 * S),
                Step::Data(b"\ndata: b\r\n\r\n"),
            ],
            &config,
        );
        let out = joined(&frames(body).await);
        assert_eq!(out, b"data: a\r\ndata: b\r\n\r\n");
        let parsed = parse(&out);
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.events[0].data, "a\nb");
        assert_eq!(config.metrics.snapshot().heartbeats_skipped, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_after_a_cr_ends_with_cr_once_the_stream_used_a_lone_cr() {
        let config = config(|c| {
            c.settings.heartbeat = Some(10 * S);
            c.settings.retry = None;
        });
        let (body, _) = sse(
            vec![
                Step::Data(b"data: a\rdata: b\r"),
                Step::Wait(15 * S),
                Step::Data(b"\r"),
            ],
            &config,
        );
        let out = joined(&frames(body).await);
        assert_eq!(out, b"data: a\rdata: b\r:\r\r");
        let parsed = parse(&out);
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.events[0].data, "a\nb");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leading_bom_is_removed_after_the_retry_hint() {
        let config = config(|c| c.settings.retry = Some(S));
        let (body, _) = sse(
            vec![
                Step::Data(b"\xEF"),
                Step::Data(b"\xBB"),
                Step::Data(b"\xBFdata: a\n\n"),
            ],
            &config,
        );
        assert_eq!(joined(&frames(body).await), b"retry: 1000\ndata: a\n\n");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_ends_cleanly_and_heartbeats_do_not_count_as_upstream_activity() {
        let config = config(|c| {
            c.settings.heartbeat = Some(10 * S);
            c.settings.idle_timeout = Some(25 * S);
            c.settings.retry = Some(S);
        });
        let (body, dropped) = sse(vec![Step::Data(b"data: a\n\n"), Step::Stall], &config);
        let frames = frames(body).await;
        let timeline: Vec<(u64, &[u8])> = frames
            .iter()
            .map(|(t, b)| (t.as_secs(), b.as_ref()))
            .collect();
        assert_eq!(
            timeline,
            [
                (0, &b"retry: 1000\n"[..]),
                (0, b"data: a\n\n"),
                (10, b":\n"),
                (20, b":\n"),
                (25, b"retry: 1000\n"),
            ]
        );
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(
            config.metrics.snapshot().closed(CloseReason::IdleTimeout),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_mid_line_cuts_without_a_hint() {
        let config = config(|c| {
            c.settings.idle_timeout = Some(5 * S);
            c.settings.retry = Some(S);
        });
        let (body, _) = sse(vec![Step::Data(b"data: par"), Step::Stall], &config);
        let out = joined(&frames(body).await);
        // Never a line break after a partial line: the client drops the partial event.
        assert_eq!(out, b"retry: 1000\ndata: par");
    }

    #[tokio::test(start_paused = true)]
    async fn lifetime_ends_at_the_next_event_boundary() {
        let config = config(|c| {
            c.settings.max_lifetime = Some(10 * S);
            c.settings.lifetime_jitter = 0.0;
        });
        let (body, dropped) = sse(
            vec![
                Step::Data(b"data: a\n"),
                Step::Wait(12 * S),
                Step::Data(b"data: b\n"),
                Step::Wait(S),
                Step::Data(b"\n"),
                Step::Data(b"data: never\n\n"),
            ],
            &config,
        );
        let frames = frames(body).await;
        assert_eq!(joined(&frames), b"data: a\ndata: b\n\n");
        assert_eq!(frames.last().unwrap().0, 13 * S);
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(config.metrics.snapshot().closed(CloseReason::Lifetime), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lifetime_cuts_after_the_grace_when_no_boundary_comes() {
        let config = config(|c| {
            c.settings.max_lifetime = Some(10 * S);
            c.settings.lifetime_jitter = 0.0;
            c.settings.close_grace = 2 * S;
            c.settings.retry = Some(S);
        });
        let (body, _) = sse(vec![Step::Data(b"data: a\n"), Step::Stall], &config);
        let frames = frames(body).await;
        assert_eq!(joined(&frames), b"retry: 1000\ndata: a\nretry: 1000\n");
        assert_eq!(frames.last().unwrap().0, 12 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn jittered_lifetimes_fall_between_80_and_100_percent() {
        let config = config(|c| c.settings.max_lifetime = Some(100 * S));
        for _ in 0..20 {
            let (body, _) = sse(vec![Step::Stall], &config);
            let start = Instant::now();
            let _ = frames(body).await;
            let lived = start.elapsed();
            assert!(lived >= 80 * S && lived <= 100 * S, "{lived:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drain_ends_streams_within_the_window_with_a_jittered_hint() {
        let shutdown = SseShutdown::new();
        let config = config(|c| {
            c.shutdown = Some(shutdown.clone());
            c.settings.drain_window = 10 * S;
            c.settings.retry = Some(S);
        });
        let mut ends = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (body, dropped) = sse(vec![Step::Data(b"data: a\n\n"), Step::Stall], &config);
            tasks.push(tokio::spawn(async move { (frames(body).await, dropped) }));
        }
        tokio::time::sleep(S).await;
        let drained_at = Instant::now();
        shutdown.drain();
        for task in tasks {
            let (frames, dropped) = task.await.unwrap();
            assert!(dropped.load(Ordering::SeqCst));
            let (at, last) = frames.last().unwrap();
            let hint = std::str::from_utf8(last).unwrap();
            let millis: u64 = hint
                .strip_prefix("retry: ")
                .unwrap()
                .trim_end()
                .parse()
                .unwrap();
            assert!((800..=1200).contains(&millis), "{hint}");
            ends.push(*at - S);
        }
        assert!(ends.iter().all(|d| *d <= 10 * S));
        // Spread over the window, not all at once.
        let early = ends.iter().filter(|d| **d < 5 * S).count();
        assert!(
            (10..=40).contains(&early),
            "{early} of 50 ended in the first half"
        );
        assert_eq!(config.metrics.snapshot().closed(CloseReason::Shutdown), 50);
        assert!(drained_at.elapsed() <= 10 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_opened_during_a_drain_ends_at_once() {
        let shutdown = SseShutdown::new();
        shutdown.drain();
        let config = config(|c| {
            c.shutdown = Some(shutdown.clone());
            c.settings.retry = Some(S);
        });
        let (body, dropped) = sse(vec![Step::Data(b"data: a\n\n")], &config);
        let frames = frames(body).await;
        assert_eq!(frames.len(), 1);
        assert!(frames[0].1.starts_with(b"retry: "));
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_error_is_forwarded_and_the_body_fused() {
        let config = config(|_| {});
        let (mut body, dropped) = sse(vec![Step::Data(b"data: a\n"), Step::Error], &config);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "data: a\n"
        );
        assert!(body.frame().await.unwrap().is_err());
        assert!(dropped.load(Ordering::SeqCst));
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
        assert_eq!(
            config.metrics.snapshot().closed(CloseReason::UpstreamError),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_end_forwards_the_end_without_adding_a_blank_line() {
        let config = config(|c| c.settings.retry = Some(S));
        let (body, _) = sse(vec![Step::Data(b"data: incomplete\n")], &config);
        assert_eq!(
            joined(&frames(body).await),
            b"retry: 1000\ndata: incomplete\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_body_drops_the_inner_body_and_counts_client_gone() {
        let config = config(|c| c.settings.heartbeat = Some(S));
        let (mut body, dropped) = sse(vec![Step::Data(b"data: a\n\n"), Step::Stall], &config);
        body.frame().await.unwrap().unwrap();
        assert_eq!(config.metrics.snapshot().open_streams, 1);
        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
        let snapshot = config.metrics.snapshot();
        assert_eq!(snapshot.open_streams, 0);
        assert_eq!(snapshot.closed(CloseReason::ClientGone), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shared_counters_are_published_when_the_stream_waits() {
        let config = config(|_| {});
        let (mut body, _) = sse(vec![Step::Data(b"data: a\n\n"), Step::Stall], &config);
        body.frame().await.unwrap().unwrap();
        // Not yet: counts are published when the stream waits, not per frame.
        assert_eq!(config.metrics.snapshot().bytes, 0);
        let waited = tokio::time::timeout(Duration::from_millis(1), body.frame()).await;
        assert!(waited.is_err());
        let snapshot = config.metrics.snapshot();
        assert_eq!((snapshot.bytes, snapshot.events), (9, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn trailers_of_an_event_stream_are_forwarded() {
        let config = config(|_| {});
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-done", "1".parse().unwrap());
        let (mut body, _) = sse(
            vec![Step::Data(b"data: a\n\n"), Step::Trailers(trailers.clone())],
            &config,
        );
        body.frame().await.unwrap().unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.trailers_ref(), Some(&trailers));
        assert!(body.frame().await.is_none());
    }
}

mod proptests {
    use super::*;
    use crate::config::Config;
    use crate::test_helpers::sse_parser::{CASES, CHUNKED_CASES, parse};
    use crate::test_helpers::{ScriptBody, Step};
    use crate::test_helpers::{events_of, split};
    use http_body_util::BodyExt;
    use proptest::prelude::*;

    /// Plays `chunks`, each after `waits[i]` milliseconds of silence, through an `SseBody` with a
    /// 10 ms heartbeat and a retry hint, on a paused clock; returns the client's bytes.
    fn relay(chunks: Vec<Vec<u8>>, waits: &[u64]) -> Vec<u8> {
        let mut config = Config::default();
        config.settings.heartbeat = Some(Duration::from_millis(10));
        config.settings.retry = Some(Duration::from_millis(1234));
        let config = Arc::new(config);
        let mut steps = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            steps.push(Step::Wait(Duration::from_millis(
                waits.get(i).copied().unwrap_or(0),
            )));
            steps.push(Step::Data(Box::leak(chunk.into_boxed_slice())));
        }
        steps.push(Step::Wait(Duration::from_millis(25)));
        let body = SseBody::sse(
            Some(Upstream::direct(ScriptBody::new(steps))),
            Arc::clone(&config),
            config.settings,
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move { body.collect().await.unwrap().to_bytes().to_vec() })
    }

    #[test]
    fn conformance_cases_survive_a_heartbeat_at_every_byte_offset() {
        for case in CASES {
            for offset in 0..=case.input.len() {
                let chunks = vec![case.input[..offset].to_vec(), case.input[offset..].to_vec()];
                let out = relay(chunks, &[0, 15]);
                assert_eq!(
                    parse(&out).triples(),
                    case.expected.to_vec(),
                    "{} split at {offset}: {:?}",
                    case.name,
                    String::from_utf8_lossy(&out)
                );
            }
        }
        for case in CHUNKED_CASES {
            let chunks: Vec<Vec<u8>> = case.chunks.iter().map(|c| c.to_vec()).collect();
            let waits = vec![15; chunks.len()];
            let out = relay(chunks, &waits);
            assert_eq!(
                parse(&out).triples(),
                case.expected.to_vec(),
                "{}",
                case.name
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// I2: a client that splits lines on LF and strips one CR reads the upstream's lines
        /// (plus the layer's own heartbeats and hint) from LF and CRLF streams, whatever the
        /// framing and the pauses.
        #[test]
        fn a_naive_line_splitter_reads_the_upstream_lines(
            stream in crate::scanner::tests::arb_lf_crlf_stream(),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            waits in proptest::collection::vec(prop_oneof![Just(0u64), Just(15), Just(35)], 0..12),
        ) {
            use crate::scanner::tests::naive_lines_without;
            let out = relay(split(&stream, &cuts), &waits);
            let mut got = naive_lines_without(&out, b":");
            prop_assert_eq!(got.first().map(Vec::as_slice), Some(&b"retry: 1234"[..]));
            got.remove(0);
            prop_assert_eq!(got, naive_lines_without(&stream, b":"));
        }

        /// I1 with heartbeats forced at random points in time.
        #[test]
        fn heartbeats_at_random_times_change_no_event(
            stream in proptest::collection::vec(
                prop_oneof![
                    Just(b"data: x".to_vec()), Just(b"data".to_vec()), Just(b"event: e".to_vec()),
                    Just(b"id: 7".to_vec()), Just(b":c".to_vec()), Just(b"retry: 5".to_vec()),
                    Just(b"\r".to_vec()), Just(b"\n".to_vec()), Just(b"\r\n".to_vec()),
                    Just(b"\xEF\xBB\xBF".to_vec()), Just(b"\xEF".to_vec()),
                ],
                0..30,
            ).prop_map(|parts| parts.concat()),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            waits in proptest::collection::vec(prop_oneof![Just(0u64), Just(5), Just(15), Just(35)], 0..12),
        ) {
            let chunks = split(&stream, &cuts);
            let out = relay(chunks, &waits);
            let expected = parse(&stream);
            let got = parse(&out);
            prop_assert_eq!(events_of(&got), events_of(&expected));
            // Only the layer's own retry value is added.
            let mut retries = vec![1234];
            retries.extend(expected.retries.iter().copied());
            prop_assert_eq!(got.retries, retries);
        }
    }
}

mod size {
    use super::*;
    use crate::config::Config;

    /// The layer's own memory per idle stream: the boxed `Machine`, what `SseBody` holds inline,
    /// and the stream's slot in its runtime's timer wheel. Target (BENCHMARKS.md): at most 256
    /// bytes with the default configuration. Overrides, a lifetime, a shutdown handle,
    /// compression or a stashed frame add the `Rare` box (and its own parts).
    #[test]
    fn an_idle_stream_costs_at_most_256_bytes_of_the_layers_own_memory() {
        let boxed = std::mem::size_of::<machine::Machine>();
        let inline = std::mem::size_of::<SseBody<http_body_util::Empty<Bytes>>>();
        let slot = crate::timer::SLOT_SIZE;
        eprintln!(
            "FIGURE: Machine {boxed} B boxed, SseBody<Empty> {inline} B inline, wheel slot {slot} B"
        );
        eprintln!(
            "FIGURE: parts: SharedTimer {} State {} Tally {} Scanner {} Phase {} Rare {} Instant {}",
            std::mem::size_of::<crate::timer::SharedTimer>(),
            std::mem::size_of::<machine::State>(),
            std::mem::size_of::<tally::Tally>(),
            std::mem::size_of::<crate::scanner::Scanner>(),
            std::mem::size_of::<machine::Phase>(),
            std::mem::size_of::<machine::Rare>(),
            std::mem::size_of::<Instant>(),
        );
        assert!(boxed + inline + slot <= 256, "{boxed} + {inline} + {slot}");
        assert!(inline <= 24, "{inline}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_with_the_default_configuration_makes_no_rare_box() {
        let config = Arc::new(Config::default());
        let machine = machine::Machine::new(Arc::clone(&config), config.settings, None);
        assert!(!machine.has_rare());
        let mut lifetime = config.settings;
        lifetime.max_lifetime = Some(Duration::from_secs(60));
        let machine = machine::Machine::new(Arc::clone(&config), lifetime, None);
        assert!(machine.has_rare());
    }
}
