//! Loopback load benchmark: bare hyper vs `tower-sse` vs axum's `Sse`, in one process.
//!
//! Run with: `cargo bench --bench loadgen -- [--quick]`
//!
//! There is nothing to `curl`: the servers listen on ephemeral ports of 127.0.0.1 for the
//! duration of the run, and the clients are in the same process (raw `TcpStream`s speaking
//! HTTP/1.1, so that client work is small and the same for every variant).
//!
//! Four variants of one hyper HTTP/1.1 server (hyper-util's `TowerToHyperService`, one listener
//! each) serve the same events:
//!
//! - `bare`: a `service_fn` whose body yields the events (the baseline);
//! - `sse`: `SseLayer::new()` around that `service_fn`;
//! - `sse+buf`: `SseLayer::new().slow_client(SlowClient::new())` around it;
//! - `axum`: an axum `Router` whose handlers return `Sse` with `KeepAlive`.
//!
//! Workloads, each run for R rounds with the variants alternating (bare, sse, sse+buf, axum,
//! bare, …); the report gives medians over the rounds and the median of the per-round ratios to
//! `bare` (to axum for heartbeat CPU):
//!
//! - firehose: C clients read as fast as they can for T s; events/s and MB/s on the wire; once
//!   with one 100-byte event per body frame, once with [`BATCH`] events per frame (`bare`, `sse`
//!   and `sse+buf` only: axum's `Sse` writes one event per frame);
//! - paced: each stream's producer sends an event every 1 ms carrying the time it was made;
//!   each client records read time − that time; p50/p99 and what is added over `bare`;
//! - memory (first, before anything has been freed for the allocator to hand out again): S
//!   idle streams per variant (`heartbeat(100 ms)` for `tower-sse`, `KeepAlive::interval(100
//!   ms)` for axum, nothing for bare), `VmRSS` before/after opening them, every stream held open
//!   to the end of the phase so that each measurement gets fresh pages; minus bare's. Bare's
//!   streams never write a body byte, so they never get hyper's queue of body buffers (allocated
//!   at a connection's first body write, about 260 B); `--only memory-primed`, in a process of
//!   its own, has every variant's stream write one comment line first, which puts that queue in
//!   every variant and leaves what each one adds by itself;
//! - idle: 10,000 idle streams (2,000 with `--quick`), one variant at a time, their clients in a
//!   child process (this binary re-executed with `--idle-child ADDR N`): the servers' CPU over a
//!   window from the threads' schedstat (and `utime`+`stime`), per heartbeat received, per
//!   second.
//!
//! The number of streams is bounded by `RLIMIT_NOFILE` (read from `/proc/self/limits`): a stream
//! of the memory phase holds two descriptors here, one of the idle phase one here and one in the
//! child.
//!
//! Bounded: about 2.5 minutes in full, 35 s with `--quick`; a watchdog ends the process if a
//! phase hangs. Only 127.0.0.1 is used. `--only memory,firehose,paced,idle` and `--variant
//! bare,sse,sse+buf,axum` narrow a run (to profile one case; ratios need `bare` in the run);
//! `--heartbeat-ms N` sets the memory and idle phases' interval (100 ms by default: 100,000
//! heartbeats/s for 10,000 streams, more than two shared cores deliver on time).
//!
//! For the idle phase: `--rounds N` and `--idle-window-ms N` take more and longer CPU windows;
//! the variant `sse-exact` (`heartbeat_slack(Duration::ZERO)`, only run when named in
//! `--variant`) compares the layer's default heartbeat slack with none; `--perf-ctl CTL,ACK`
//! enables and disables a `perf stat --control fifo:CTL,ACK -D -1 -p PID` around each CPU window,
//! to count syscalls per heartbeat. `--slow-client-timeout-ms N` sets `sse+buf`'s stall timeout
//! (10 s by default): an idle buffered stream's stall timer wakes its pump once every
//! `floor(timeout / heartbeat) + 1` heartbeats (every heartbeat with the layer's defaults, 15 s
//! and 10 s; every 11th with a 1 s heartbeat and the 10 s timeout).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, header};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::IntervalStream;
use tower::{Layer, service_fn};
use tower_sse::{SlowClient, SseLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The firehose event: 100 bytes, as `data: ` + [`PAYLOAD`] + a blank line.
const EVENT: &[u8] = b"data: {\"seq\":1,\"price\":101.25,\"symbol\":\"ACME\",\"side\":\"buy\",\"qty\":300,\"venue\":\"XNYS\",\"pad\":\"xxxxx\"}\n\n";
const PAYLOAD: &str = "{\"seq\":1,\"price\":101.25,\"symbol\":\"ACME\",\"side\":\"buy\",\"qty\":300,\"venue\":\"XNYS\",\"pad\":\"xxxxx\"}";
/// Events per frame in the batched firehose.
const BATCH: usize = 10;
const PACE: Duration = Duration::from_millis(1);
/// The heartbeat / keep-alive interval of the memory and idle phases: 100 ms, or
/// `--heartbeat-ms N`.
fn heartbeat() -> Duration {
    static HEARTBEAT: OnceLock<Duration> = OnceLock::new();
    *HEARTBEAT.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        let ms = args
            .iter()
            .position(|arg| arg == "--heartbeat-ms")
            .and_then(|at| args.get(at + 1)?.parse().ok())
            .unwrap_or(100);
        Duration::from_millis(ms)
    })
}
/// How many variants there are.
const N: usize = 5;
const VARIANTS: [&str; N] = ["bare", "sse", "sse+buf", "axum", "sse-exact"];
/// What runs without `--variant`: `sse-exact` is for comparing heartbeat slack against `sse`.
const DEFAULT_VARIANTS: [usize; 4] = [0, 1, 2, 3];

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rounds: usize,
    firehose_rounds: usize,
    firehose_clients: usize,
    firehose_window: Duration,
    batch_rounds: usize,
    paced_clients: usize,
    paced_window: Duration,
    idle_streams: usize,
    idle_window: Duration,
    memory_rounds: usize,
    memory_streams: usize,
    warm_up: Duration,
    deadline: Duration,
}

impl Plan {
    /// `descriptors`: how many sockets this process may open (two per stream: both ends).
    fn new(quick: bool, descriptors: usize) -> Self {
        let plan = if quick {
            Self {
                rounds: 3,
                firehose_rounds: 4,
                firehose_clients: 4,
                firehose_window: Duration::from_millis(300),
                batch_rounds: 2,
                paced_clients: 16,
                paced_window: Duration::from_millis(400),
                idle_streams: 2000,
                idle_window: Duration::from_millis(500),
                memory_rounds: 1,
                memory_streams: 1000,
                warm_up: Duration::from_millis(150),
                deadline: Duration::from_secs(60),
            }
        } else {
            Self {
                rounds: 5,
                firehose_rounds: 10,
                firehose_clients: 4,
                firehose_window: Duration::from_millis(600),
                batch_rounds: 5,
                paced_clients: 16,
                paced_window: Duration::from_millis(1200),
                idle_streams: 10_000,
                idle_window: Duration::from_millis(1500),
                memory_rounds: 2,
                memory_streams: 1000,
                warm_up: Duration::from_millis(200),
                deadline: Duration::from_secs(240),
            }
        };
        // The CPU phase holds one variant's streams at a time, their clients in a child process
        // (one descriptor here per stream); the memory phase holds every stream it opens until
        // its end, both ends in this process.
        let streams = descriptors / 2;
        let memory_total = plan.memory_rounds * DEFAULT_VARIANTS.len();
        Self {
            idle_streams: plan.idle_streams.min(descriptors),
            memory_streams: plan.memory_streams.min(streams / memory_total),
            ..plan
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time, memory and CPU of this process.

/// The instant every timestamp in events counts from.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// CPU time of this process: (sum of the threads' schedstat run time, utime, stime), in ns.
fn cpu_ns() -> (u64, u64, u64) {
    let mut sched = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            sched += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // USER_HZ is 100 on Linux.
    (sched, ticks(11) * 10_000_000, ticks(12) * 10_000_000)
}

/// The machine's load averages (other processes compete for the same cores).
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The soft `RLIMIT_NOFILE`, from `/proc/self/limits`.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(1024)
}

// ---------------------------------------------------------------------------------------------
// The servers.

/// The inner body of `bare`, `sse` and `sse+buf`: what the path asked for.
enum LoadBody {
    /// The same frame (one 100-byte event, or [`BATCH`] of them), as fast as it is polled.
    Firehose(&'static [u8]),
    /// An event every [`PACE`] with the time it was made.
    Paced(Interval),
    /// Nothing, ever.
    Idle,
    /// One comment line (`:\n`), then nothing: a stream that has written once, as every real
    /// stream has (hyper's HTTP/1 connection allocates its queue of body buffers at the first
    /// body write and keeps it).
    Primed(bool),
}

impl Body for LoadBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Firehose(frame) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(frame))))),
            Self::Paced(interval) => {
                ready!(interval.poll_tick(cx));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!(
                    "data: {}\n\n",
                    now_ns()
                ))))))
            }
            Self::Idle | Self::Primed(true) => Poll::Pending,
            Self::Primed(written) => {
                *written = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b":\n")))))
            }
        }
    }
}

/// [`BATCH`] firehose events in one frame, built once.
fn batch_frame() -> &'static [u8] {
    static FRAME: OnceLock<&'static [u8]> = OnceLock::new();
    FRAME.get_or_init(|| EVENT.repeat(BATCH).leak())
}

fn paced_interval() -> Interval {
    let mut interval = tokio::time::interval(PACE);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

async fn handle(request: Request<Incoming>) -> Result<Response<LoadBody>, Infallible> {
    let body = match request.uri().path() {
        "/firehose" => LoadBody::Firehose(EVENT),
        "/batch" => LoadBody::Firehose(batch_frame()),
        "/paced" => LoadBody::Paced(paced_interval()),
        "/idle-primed" => LoadBody::Primed(false),
        _ => LoadBody::Idle,
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

fn axum_router(keep_alive: Duration) -> axum::Router {
    let keep = move || KeepAlive::new().interval(keep_alive);
    axum::Router::new()
        .route(
            "/firehose",
            get(move || async move {
                let events =
                    stream::repeat_with(|| Ok::<_, Infallible>(Event::default().data(PAYLOAD)));
                Sse::new(events).keep_alive(keep())
            }),
        )
        .route(
            "/paced",
            get(move || async move {
                let events = IntervalStream::new(paced_interval())
                    .map(|_| Ok::<_, Infallible>(Event::default().data(now_ns().to_string())));
                Sse::new(events).keep_alive(keep())
            }),
        )
        .route(
            "/idle",
            get(move || async move {
                Sse::new(stream::pending::<Result<Event, Infallible>>()).keep_alive(keep())
            }),
        )
        .route(
            "/idle-primed",
            get(move || async move {
                let first =
                    stream::once(async { Ok::<_, Infallible>(Event::default().comment("")) });
                Sse::new(first.chain(stream::pending())).keep_alive(keep())
            }),
        )
}

/// One listening server: its address, its live connections, and a switch that ends them all.
struct Server {
    addr: SocketAddr,
    active: Arc<AtomicUsize>,
    cut: watch::Sender<u64>,
}

impl Server {
    async fn start<S, B>(service: S) -> Self
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let active = Arc::new(AtomicUsize::new(0));
        let (cut, cut_rx) = watch::channel(0u64);
        let live = Arc::clone(&active);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                let live = Arc::clone(&live);
                let mut cut = cut_rx.clone();
                cut.mark_unchanged();
                live.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = cut.changed() => {}
                    }
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, active, cut }
    }

    /// Ends every connection of this server and waits until they are gone.
    async fn cut_all(&self) {
        self.cut.send_modify(|epoch| *epoch += 1);
        let until = Instant::now() + Duration::from_secs(5);
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The variants, in [`VARIANTS`] order; `heartbeat` for the `tower-sse` ones and axum's
/// keep-alive (`None`: the defaults, 15 s).
async fn servers(heartbeat: Option<Duration>) -> [Server; N] {
    let inner = service_fn(handle);
    let mut layer = SseLayer::new();
    if let Some(interval) = heartbeat {
        layer = layer.heartbeat(interval);
    }
    let buffered = layer
        .clone()
        .slow_client(match number_arg("--slow-client-timeout-ms") {
            Some(ms) => SlowClient::new().timeout(Duration::from_millis(ms as u64)),
            None => SlowClient::new(),
        });
    let exact = layer.clone().heartbeat_slack(Duration::ZERO);
    [
        Server::start(TowerToHyperService::new(inner)).await,
        Server::start(TowerToHyperService::new(layer.layer(inner))).await,
        Server::start(TowerToHyperService::new(buffered.layer(inner))).await,
        Server::start(TowerToHyperService::new(axum_router(
            heartbeat.unwrap_or(Duration::from_secs(15)),
        )))
        .await,
        Server::start(TowerToHyperService::new(exact.layer(inner))).await,
    ]
}

// ---------------------------------------------------------------------------------------------
// The clients.

/// Connects and sends `GET path`; returns the socket and whatever followed the response head.
async fn open(addr: SocketAddr, path: &str) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: loadgen\r\nAccept: text/event-stream\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 200") {
                return Err(std::io::Error::other("not a 200"));
            }
            return Ok((socket, head.split_off(end + 4)));
        }
    }
}

/// Counts occurrences of `needle` (two bytes) across reads.
struct Counter {
    finder: memchr::memmem::Finder<'static>,
    needle: [u8; 2],
    last: u8,
}

impl Counter {
    fn new(needle: &'static [u8; 2]) -> Self {
        Self {
            finder: memchr::memmem::Finder::new(needle),
            needle: *needle,
            last: 0,
        }
    }

    fn count(&mut self, bytes: &[u8]) -> u64 {
        let Some(&last) = bytes.last() else {
            return 0;
        };
        let mut n = self.finder.find_iter(bytes).count() as u64;
        if self.last == self.needle[0] && bytes[0] == self.needle[1] {
            n += 1;
        }
        self.last = last;
        n
    }
}

async fn firehose_client(
    addr: SocketAddr,
    path: &'static str,
    bytes: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
) {
    let Ok((mut socket, first)) = open(addr, path).await else {
        return;
    };
    let mut counter = Counter::new(b"\n\n");
    events.fetch_add(counter.count(&first), Ordering::Relaxed);
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = socket.read(&mut buf).await {
        if n == 0 {
            return;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        events.fetch_add(counter.count(&buf[..n]), Ordering::Relaxed);
    }
}

/// Reads paced events until `stop`; returns the latencies (ns) of events made after `from_ns`.
async fn paced_client(addr: SocketAddr, from_ns: u64, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut samples = Vec::with_capacity(4096);
    let Ok((mut socket, mut pending)) = open(addr, "/paced").await else {
        return samples;
    };
    let mut buf = vec![0u8; 16 * 1024];
    let finder = memchr::memmem::Finder::new(b"data: ");
    loop {
        let read_at = now_ns();
        let mut consumed = 0;
        while let Some(at) = finder.find(&pending[consumed..]) {
            let digits = consumed + at + 6;
            let Some(len) = memchr::memchr(b'\n', &pending[digits..]) else {
                break;
            };
            let stamp = std::str::from_utf8(&pending[digits..digits + len])
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(stamp) = stamp.filter(|&stamp| stamp >= from_ns) {
                samples.push(read_at.saturating_sub(stamp));
            }
            consumed = digits + len;
        }
        pending.drain(..consumed);
        if stop.load(Ordering::Relaxed) {
            return samples;
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return samples,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// Opens an idle stream (signalling `opened`), then counts heartbeat lines until aborted.
async fn idle_client(
    addr: SocketAddr,
    path: &'static str,
    permits: Arc<Semaphore>,
    opened: Arc<AtomicUsize>,
    heartbeats: Arc<AtomicU64>,
) {
    let permit = permits.acquire_owned().await;
    let Ok((mut socket, first)) = open(addr, path).await else {
        return;
    };
    drop(permit);
    opened.fetch_add(1, Ordering::SeqCst);
    let mut counter = Counter::new(b":\n");
    heartbeats.fetch_add(counter.count(&first), Ordering::Relaxed);
    let mut buf = [0u8; 256];
    while let Ok(n) = socket.read(&mut buf).await {
        if n == 0 {
            return;
        }
        heartbeats.fetch_add(counter.count(&buf[..n]), Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The workloads: one measurement of one variant.

#[derive(Debug, Clone, Copy, Default)]
struct Firehose {
    events_per_s: f64,
    mb_per_s: f64,
}

/// `path`: `/firehose` (one event per frame) or `/batch` ([`BATCH`] per frame).
async fn firehose(server: &Server, plan: &Plan, path: &'static str) -> Firehose {
    let bytes = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..plan.firehose_clients {
        clients.spawn(firehose_client(
            server.addr,
            path,
            Arc::clone(&bytes),
            Arc::clone(&events),
        ));
    }
    tokio::time::sleep(plan.warm_up).await;
    let (b0, e0, t0) = (
        bytes.load(Ordering::Relaxed),
        events.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(plan.firehose_window).await;
    let (b1, e1, t1) = (
        bytes.load(Ordering::Relaxed),
        events.load(Ordering::Relaxed),
        Instant::now(),
    );
    clients.shutdown().await;
    server.cut_all().await;
    let secs = (t1 - t0).as_secs_f64();
    Firehose {
        events_per_s: (e1 - e0) as f64 / secs,
        mb_per_s: (b1 - b0) as f64 / secs / 1e6,
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Paced {
    p50_us: f64,
    p99_us: f64,
    samples: usize,
}

async fn paced(server: &Server, plan: &Plan) -> Paced {
    let stop = Arc::new(AtomicBool::new(false));
    let from = now_ns() + u64::try_from(plan.warm_up.as_nanos()).unwrap_or(0);
    let mut clients = JoinSet::new();
    for _ in 0..plan.paced_clients {
        clients.spawn(paced_client(server.addr, from, Arc::clone(&stop)));
    }
    tokio::time::sleep(plan.warm_up + plan.paced_window).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    while let Some(result) = clients.join_next().await {
        samples.extend(result.unwrap_or_default());
    }
    server.cut_all().await;
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
        samples.get(i).map_or(f64::NAN, |&ns| ns as f64 / 1e3)
    };
    Paced {
        p50_us: at(0.50),
        p99_us: at(0.99),
        samples: samples.len(),
    }
}

/// Idle streams of one server held open by client tasks.
struct IdleStreams {
    clients: JoinSet<()>,
    opened: usize,
    heartbeats: Arc<AtomicU64>,
}

/// Opens `n` idle streams of `path` (`/idle` or `/idle-primed`) on `server` (128 at a time) and
/// waits until their heads arrived and their first heartbeats went by.
async fn open_idle(addr: SocketAddr, path: &'static str, n: usize) -> IdleStreams {
    let permits = Arc::new(Semaphore::new(128));
    let opened = Arc::new(AtomicUsize::new(0));
    let heartbeats = Arc::new(AtomicU64::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..n {
        clients.spawn(idle_client(
            addr,
            path,
            Arc::clone(&permits),
            Arc::clone(&opened),
            Arc::clone(&heartbeats),
        ));
    }
    let until = Instant::now() + Duration::from_secs(20);
    while opened.load(Ordering::SeqCst) < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the first heartbeats: every timer armed, every stream in its steady state.
    tokio::time::sleep(heartbeat() * 3).await;
    IdleStreams {
        clients,
        opened: opened.load(Ordering::SeqCst),
        heartbeats,
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct IdleCpu {
    streams: usize,
    /// CPU cores used during the window (schedstat).
    cpu_cores: f64,
    /// utime alone, and stime alone (in the kernel: syscalls, TCP, epoll, futex).
    user_cores: f64,
    sys_cores: f64,
    heartbeats_per_s: f64,
}

/// CPU of `plan.idle_streams` idle streams of `server` over `plan.idle_window`: the clients run
/// in a child process, the CPU measured is this process's (the servers) alone.
async fn idle_cpu(server: &Server, plan: &Plan) -> IdleCpu {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .arg("--idle-child")
        .arg(server.addr.to_string())
        .arg(plan.idle_streams.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The child says `open N` once its streams are open, then `hb COUNT` for every line it gets.
    let opened: usize = from_child
        .next_line()
        .await
        .unwrap()
        .and_then(|line| line.strip_prefix("open ")?.parse().ok())
        .unwrap_or(0);
    let mut ask = async || -> u64 {
        to_child.write_all(b"hb\n").await.unwrap();
        let line = from_child.next_line().await.unwrap().unwrap_or_default();
        line.strip_prefix("hb ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // Past the first heartbeats: every timer armed, every stream in its steady state.
    tokio::time::sleep(heartbeat() * 3).await;
    let h0 = ask().await;
    perf_control("enable");
    let (cpu0, user0, sys0) = cpu_ns();
    let t0 = Instant::now();
    tokio::time::sleep(plan.idle_window).await;
    let (cpu1, user1, sys1) = cpu_ns();
    let t1 = Instant::now();
    perf_control("disable");
    let h1 = ask().await;
    drop(to_child);
    let _ = child.wait().await;
    server.cut_all().await;
    let secs = (t1 - t0).as_secs_f64();
    IdleCpu {
        streams: opened,
        cpu_cores: (cpu1 - cpu0) as f64 / 1e9 / secs,
        user_cores: (user1 - user0) as f64 / 1e9 / secs,
        sys_cores: (sys1 - sys0) as f64 / 1e9 / secs,
        heartbeats_per_s: (h1 - h0) as f64 / secs,
    }
}

/// With `--perf-ctl CTL,ACK` (two FIFOs), writes `command` (`enable`, `disable`) to a
/// `perf stat --control fifo:CTL,ACK -D -1 -p PID` started beside this process and waits for its
/// acknowledgement, so that perf counts only the idle phase's CPU windows (syscalls per
/// heartbeat: divide by the heartbeats of the windows).
fn perf_control(command: &str) {
    static FIFOS: OnceLock<Option<(String, String)>> = OnceLock::new();
    let fifos = FIFOS.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        let at = args.iter().position(|arg| arg == "--perf-ctl")?;
        let (ctl, ack) = args.get(at + 1)?.split_once(',')?;
        Some((ctl.to_owned(), ack.to_owned()))
    });
    let Some((ctl, ack)) = fifos else {
        return;
    };
    let done = std::fs::OpenOptions::new()
        .write(true)
        .open(ctl)
        .and_then(|mut fifo| {
            std::io::Write::write_all(&mut fifo, format!("{command}\n").as_bytes())
        })
        .and_then(|()| {
            let mut reply = [0u8; 16];
            std::io::Read::read(&mut std::fs::File::open(ack)?, &mut reply)
        });
    if let Err(error) = done {
        eprintln!("loadgen: --perf-ctl {ctl},{ack}: {error}");
    }
}

/// The child side of [`idle_cpu`]: opens `n` idle streams on `addr`, prints `open N` when they
/// are open, answers each `hb` line on stdin with `hb COUNT` (heartbeats received so far), and
/// exits when stdin closes.
fn idle_child(addr: SocketAddr, n: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        use tokio::io::AsyncBufReadExt;
        let streams = open_idle(addr, "/idle", n).await;
        let mut out = tokio::io::stdout();
        out.write_all(format!("open {}\n", streams.opened).as_bytes())
            .await
            .unwrap();
        out.flush().await.unwrap();
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {
            let count = streams.heartbeats.load(Ordering::Relaxed);
            out.write_all(format!("hb {count}\n").as_bytes())
                .await
                .unwrap();
            out.flush().await.unwrap();
        }
    });
    runtime.shutdown_background();
}

// ---------------------------------------------------------------------------------------------
// Report.

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    }
}

/// Median over rounds of `f(result)`, for variant `v`.
fn med<T: Copy>(rounds: &[[T; N]], v: usize, f: impl Fn(T) -> f64) -> f64 {
    median(rounds.iter().map(|r| f(r[v])).collect())
}

/// Median over rounds of `f(variant) / f(base)` in the same round.
fn ratio<T: Copy>(rounds: &[[T; N]], v: usize, base: usize, f: impl Fn(T) -> f64) -> f64 {
    median(rounds.iter().map(|r| f(r[v]) / f(r[base])).collect())
}

/// Median over rounds of `f(variant) - f(base)` in the same round.
fn added<T: Copy>(rounds: &[[T; N]], v: usize, base: usize, f: impl Fn(T) -> f64) -> f64 {
    median(rounds.iter().map(|r| f(r[v]) - f(r[base])).collect())
}

/// What to run: every workload and variant unless `--only` / `--variant` narrow it (for
/// profiling one case; ratios need `bare`, and `vs axum` needs `axum`).
struct Select {
    workloads: Vec<String>,
    variants: Vec<usize>,
}

impl Select {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let list = |flag: &str| -> Option<Vec<String>> {
            let at = args.iter().position(|arg| arg == flag)?;
            Some(args.get(at + 1)?.split(',').map(str::to_owned).collect())
        };
        let workloads = list("--only").unwrap_or_else(|| {
            ["memory", "firehose", "paced", "idle"]
                .map(str::to_owned)
                .to_vec()
        });
        let variants = list("--variant").map_or_else(
            || DEFAULT_VARIANTS.to_vec(),
            |names| {
                (0..VARIANTS.len())
                    .filter(|&v| names.iter().any(|n| n == VARIANTS[v]))
                    .collect()
            },
        );
        Self {
            workloads,
            variants,
        }
    }

    fn runs(&self, workload: &str) -> bool {
        self.workloads.iter().any(|w| w == workload)
    }
}

/// The number after `flag` on the command line.
fn number_arg(flag: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|arg| arg == flag)?;
    args.get(at + 1)?.parse().ok()
}

fn main() {
    // The idle phase's clients run in a child process (this binary, re-executed), so that the
    // server gets this process's descriptors and its CPU is measured alone.
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--idle-child") {
        let addr = args.get(at + 1).and_then(|a| a.parse().ok());
        let n = args.get(at + 2).and_then(|n| n.parse().ok());
        let (Some(addr), Some(n)) = (addr, n) else {
            eprintln!("loadgen: --idle-child ADDR STREAMS");
            std::process::exit(2);
        };
        idle_child(addr, n);
        return;
    }
    // Every variant sends the same event bytes.
    assert_eq!(EVENT, format!("data: {PAYLOAD}\n\n").as_bytes());
    assert_eq!(EVENT.len(), 100);
    let quick = std::env::args().any(|arg| arg == "--quick");
    let select = Select::from_args();
    let nofile = open_files_limit();
    // Keep 256 descriptors for everything else.
    let mut plan = Plan::new(quick, nofile.saturating_sub(256));
    // `--rounds N` and `--idle-window-ms N`: more and longer CPU windows (the idle phase's
    // utime/stime split has a 10 ms resolution); the watchdog gets the time they add.
    if let Some(rounds) = number_arg("--rounds") {
        plan.deadline += plan.deadline * u32::try_from(rounds).unwrap_or(u32::MAX) / 5;
        plan.rounds = rounds;
    }
    if let Some(ms) = number_arg("--idle-window-ms") {
        let window = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
        plan.deadline += window * u32::try_from(plan.rounds * N).unwrap_or(u32::MAX);
        plan.idle_window = window;
    }
    let deadline = plan.deadline;
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("loadgen: still running after {deadline:?}, giving up");
        std::process::exit(2);
    });
    origin();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    runtime.block_on(run(plan, &select, nofile));
    println!(
        "\ntotal {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

/// Runs `measure` for each selected variant, R rounds, alternating.
async fn run_rounds<T, F>(
    set: &[Server; N],
    select: &Select,
    rounds: usize,
    measure: F,
) -> Vec<[T; N]>
where
    T: Copy + Default,
    F: AsyncFn(&Server) -> T,
{
    let mut all = Vec::new();
    for _ in 0..rounds {
        let mut round = [T::default(); N];
        for &v in &select.variants {
            round[v] = measure(&set[v]).await;
        }
        all.push(round);
    }
    all
}

async fn run(plan: Plan, select: &Select, nofile: usize) {
    let workers = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "loadgen: variants alternating {VARIANTS:?}; {workers} runtime workers, servers and \
         clients in this process, 127.0.0.1 only; RLIMIT_NOFILE {nofile}; load average {}",
        load_average()
    );
    // First, while no earlier phase has left freed memory for the allocator to hand out again.
    // Each memory measurement needs pages fresh from the kernel: one kind per process.
    if select.runs("memory") {
        memory(&plan, select, "/idle").await;
    } else if select.runs("memory-primed") {
        memory(&plan, select, "/idle-primed").await;
    }
    if select.runs("firehose") {
        let set = servers(None).await;
        let measure = async |s: &Server| firehose(s, &plan, "/firehose").await;
        let rounds = run_rounds(&set, select, plan.firehose_rounds, measure).await;
        // A last `bare`, so that every round's variants sit between two `bare` measurements.
        let tail = firehose(&set[0], &plan, "/firehose").await;
        report_firehose(&plan, &rounds, tail, 1);
        let batched = Select {
            workloads: Vec::new(),
            variants: select
                .variants
                .iter()
                .copied()
                .filter(|&v| v != 3)
                .collect(),
        };
        let measure = async |s: &Server| firehose(s, &plan, "/batch").await;
        let rounds = run_rounds(&set, &batched, plan.batch_rounds, measure).await;
        let tail = firehose(&set[0], &plan, "/batch").await;
        report_firehose(&plan, &rounds, tail, BATCH);
    }
    if select.runs("paced") {
        let set = servers(None).await;
        let rounds = run_rounds(&set, select, plan.rounds, async |s| paced(s, &plan).await).await;
        report_paced(&plan, select, &rounds);
    }
    if select.runs("idle") {
        let set = servers(Some(heartbeat())).await;
        let rounds = run_rounds(&set, select, plan.rounds, async |s| {
            idle_cpu(s, &plan).await
        })
        .await;
        report_idle(&plan, select, &rounds);
    }
}

/// Memory per idle stream: `VmRSS` before and after opening each variant's streams, every stream
/// held open until the end of the phase, so that each measurement gets memory fresh from the
/// kernel rather than what an earlier one freed (the allocator would hand that out again without
/// `VmRSS` moving). Odd rounds go in reverse order.
///
/// `path`: `/idle` (bare never writes a body byte) or `/idle-primed` (every variant's stream
/// writes one comment line first, so that hyper's write queue is in every variant).
async fn memory(plan: &Plan, select: &Select, path: &'static str) {
    let set = servers(Some(heartbeat())).await;
    let mut rounds: Vec<[f64; N]> = Vec::new();
    let mut held = Vec::new();
    let mut opened = [0usize; N];
    for round in 0..plan.memory_rounds {
        let mut order = select.variants.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut per_stream = [f64::NAN; N];
        for v in order {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let before = tower_sse_test_support::rss_bytes().unwrap_or(0);
            let streams = open_idle(set[v].addr, path, plan.memory_streams).await;
            let after = tower_sse_test_support::rss_bytes().unwrap_or(0);
            per_stream[v] = (after as f64 - before as f64) / streams.opened.max(1) as f64;
            opened[v] = streams.opened;
            held.push(streams);
        }
        rounds.push(per_stream);
    }
    for mut streams in held {
        streams.clients.shutdown().await;
    }
    for server in &set {
        server.cut_all().await;
    }
    println!(
        "\nmemory ({path}): {} idle streams per variant and round, {} rounds, all held open to \
         the end (HTTP/1.1, one connection each; heartbeat / keep-alive {:?}, bare: \
         none); VmRSS growth per stream, client and server side together",
        plan.memory_streams,
        plan.memory_rounds,
        heartbeat()
    );
    println!(
        "{:<9} {:>8} {:>12} {:>13}   per round",
        "variant", "streams", "B/stream", "added B/str"
    );
    for &v in &select.variants {
        let name = VARIANTS[v];
        let per_round: Vec<String> = rounds.iter().map(|r| format!("{:.0}", r[v])).collect();
        println!(
            "{name:<9} {:>8} {:>12.0} {:>13.0}   {}",
            opened[v],
            med(&rounds, v, |r| r),
            added(&rounds, v, 0, |r| r),
            per_round.join(" ")
        );
    }
}

fn report_firehose(plan: &Plan, rounds: &[[Firehose; N]], tail: Firehose, batch: usize) {
    println!(
        "\nfirehose: {} clients, {:?} window after {:?} warm-up, 100-byte events, {batch} per \
         body frame, HTTP/1.1 chunked, {} rounds; ratio: to the mean of the `bare` runs before \
         and after",
        plan.firehose_clients,
        plan.firehose_window,
        plan.warm_up,
        rounds.len()
    );
    // Each round's `bare` and the next one (or the tail) bracket the round's other variants.
    let bracket = |r: usize, v: usize| -> f64 {
        let next = rounds.get(r + 1).map_or(tail, |next| next[0]);
        let base = f64::midpoint(rounds[r][0].events_per_s, next.events_per_s);
        rounds[r][v].events_per_s / base
    };
    println!(
        "{:<9} {:>12} {:>9} {:>14}   per-round events/s",
        "variant", "events/s", "MB/s", "ratio to bare"
    );
    for (v, name) in VARIANTS.iter().enumerate() {
        if rounds.iter().all(|r| r[v].events_per_s == 0.0) {
            continue;
        }
        let per_round: Vec<String> = rounds
            .iter()
            .map(|r| format!("{:.0}k", r[v].events_per_s / 1e3))
            .collect();
        println!(
            "{name:<9} {:>12.0} {:>9.1} {:>14.3}   {}",
            med(rounds, v, |r| r.events_per_s),
            med(rounds, v, |r| r.mb_per_s),
            median((0..rounds.len()).map(|r| bracket(r, v)).collect()),
            per_round.join(" ")
        );
    }
}

fn report_paced(plan: &Plan, select: &Select, rounds: &[[Paced; N]]) {
    println!(
        "\npaced: {} streams, an event every {PACE:?} each, {:?} window; latency = client read \
         time - time the event was made",
        plan.paced_clients, plan.paced_window
    );
    println!(
        "{:<9} {:>9} {:>9} {:>14} {:>14} {:>9}   per-round p99 µs",
        "variant", "p50 µs", "p99 µs", "added p50 µs", "added p99 µs", "samples"
    );
    for &v in &select.variants {
        let name = VARIANTS[v];
        let per_round: Vec<String> = rounds
            .iter()
            .map(|r| format!("{:.0}", r[v].p99_us))
            .collect();
        println!(
            "{name:<9} {:>9.1} {:>9.1} {:>14.1} {:>14.1} {:>9.0}   {}",
            med(rounds, v, |r| r.p50_us),
            med(rounds, v, |r| r.p99_us),
            added(rounds, v, 0, |r| r.p50_us),
            added(rounds, v, 0, |r| r.p99_us),
            med(rounds, v, |r| r.samples as f64),
            per_round.join(" ")
        );
    }
}

fn report_idle(plan: &Plan, select: &Select, rounds: &[[IdleCpu; N]]) {
    let streams = select
        .variants
        .iter()
        .map(|&v| med(rounds, v, |r| r.streams as f64))
        .fold(f64::NAN, f64::max);
    println!(
        "\nidle: {streams:.0} streams per variant (HTTP/1.1, one connection each), heartbeat / \
         keep-alive {:?} (bare: none), {:?} CPU window, {} rounds; CPU of the servers' process \
         (the clients run in a child process); user and sys from utime / stime (10 ms ticks); \
         vs axum: per-round ratios of CPU cores, and of CPU per heartbeat (the one to read when \
         the machine cannot deliver every heartbeat on time: hb/s below streams / interval)",
        heartbeat(),
        plan.idle_window,
        rounds.len()
    );
    println!(
        "{:<9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}   per-round µs/hb vs axum",
        "variant", "CPU cores", "hb/s", "CPU µs/hb", "user µs", "sys µs", "vs axum", "µs/hb vs"
    );
    let axum = 3;
    let per_hb = |cores: f64, r: IdleCpu| {
        if r.heartbeats_per_s > 0.0 {
            cores / r.heartbeats_per_s * 1e6
        } else {
            f64::NAN
        }
    };
    for &v in &select.variants {
        let name = VARIANTS[v];
        let per_round: Vec<String> = rounds
            .iter()
            .map(|r| {
                format!(
                    "{:.3}",
                    per_hb(r[v].cpu_cores, r[v]) / per_hb(r[axum].cpu_cores, r[axum])
                )
            })
            .collect();
        println!(
            "{name:<9} {:>9.3} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>8.3} {:>8.3}   {}",
            med(rounds, v, |r| r.cpu_cores),
            med(rounds, v, |r| r.heartbeats_per_s),
            med(rounds, v, |r| per_hb(r.cpu_cores, r)),
            med(rounds, v, |r| per_hb(r.user_cores, r)),
            med(rounds, v, |r| per_hb(r.sys_cores, r)),
            ratio(rounds, v, axum, |r| r.cpu_cores),
            ratio(rounds, v, axum, |r| per_hb(r.cpu_cores, r)),
            per_round.join(" ")
        );
    }
}
