//! Run with: cargo bench -p tower-sse-proxy --bench vs_nginx -- [--streams 4000] [--firehose-mib 512] [--proxy-arg ARG]... [--no-nginx]
//!
//! The proxy and Debian's nginx (`/usr/sbin/nginx`, configured for SSE: `proxy_buffering off`,
//! `proxy_http_version 1.1`, `Connection ""`, a long read timeout, `worker_processes auto`,
//! upstream keep-alive) one after the other in front of the same in-process upstream, on
//! loopback, with the same workloads:
//!
//! - idle streams: N clients each open an event stream, get its first event, and stay; the
//!   RSS of the proxy (nginx: master and workers) is read from /proc before and after, and the
//!   difference divided by N;
//! - firehose: one stream of 1 KiB events, as fast as the upstream can write, for a fixed
//!   number of MiB: MB/s at the client;
//! - paced events: 8 streams, an event every 5 ms each, 2,000 events in all: the added latency
//!   (receive time minus send time, both in this process), p50 and p99; the same measured with
//!   no proxy gives the baseline.
//!
//! Prints a Markdown table with the ratios. Loopback only; every loop is bounded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs,
    reason = "a benchmark: a failed step ends it"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

type Body = StreamBody<tokio_stream_shim::Receiver>;

/// A tiny `Stream` over an mpsc receiver (no tokio-stream dependency).
mod tokio_stream_shim {
    use super::{Bytes, Frame, Infallible, mpsc};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(crate) struct Receiver(pub(crate) mpsc::Receiver<Bytes>);

    impl futures_util::Stream for Receiver {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0
                .poll_recv(cx)
                .map(|item| item.map(|bytes| Ok(Frame::data(bytes))))
        }
    }
}

/// The clock the paced events carry: nanoseconds since the benchmark started.
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_nanos() -> u64 {
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The upstream: `/idle` (one event, then open until the process ends), `/fire?MIB` (1 KiB
/// events as fast as possible), `/paced` (250 events 5 ms apart, each carrying its send time).
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(&request))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn answer(request: &Request<Incoming>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    tokio::spawn(async move {
        match path.as_str() {
            "/idle" => {
                let _ = tx.send(Bytes::from_static(b"data: hi\n\n")).await;
                tx.closed().await;
            }
            "/fire" => {
                let mib: u64 = query.parse().unwrap_or(64);
                let mut event = b"data: ".to_vec();
                event.resize(1022, b'x');
                event.extend_from_slice(b"\n\n");
                let frame = Bytes::from(event.repeat(16));
                for _ in 0..mib * 64 {
                    if tx.send(frame.clone()).await.is_err() {
                        return;
                    }
                }
            }
            "/paced" => {
                for _ in 0..250 {
                    let line = format!("data: {}\n\n", now_nanos());
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            _ => {}
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(tokio_stream_shim::Receiver(rx)))
        .unwrap()
}

/// Opens an event stream at `path` on `addr` and reads until `until` is seen; returns the
/// connection (left open) and what was read.
async fn open(addr: SocketAddr, path: &str, until: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.windows(until.len()).any(|w| w == until) {
        assert!(Instant::now() < deadline, "no {until:?} from {addr}{path}");
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("read timed out")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    (stream, seen)
}

/// RSS in bytes of `pid` and its children (nginx's workers).
fn rss_tree(pid: u32) -> u64 {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let ppid: u32 = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if ppid == pid {
                pids.push(child);
            }
        }
    }
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

struct Target {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    _dir: Option<std::path::PathBuf>,
}

impl Drop for Target {
    fn drop(&mut self) {
        // nginx's workers outlive a SIGKILLed master: ask it to stop (SIGTERM), then wait.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.start_kill();
        if let Some(dir) = &self._dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start_proxy(upstream: SocketAddr, extra: &[String]) -> Target {
    let addr = free_port();
    // BENCH_PROXY_WRAPPER=heaptrack runs the proxy under a profiler (its RSS is then not the
    // proxy's alone).
    let binary = env!("CARGO_BIN_EXE_tower-sse-proxy");
    let mut command = match std::env::var("BENCH_PROXY_WRAPPER") {
        Ok(wrapper) => {
            let mut command = Command::new(wrapper);
            command.arg(binary);
            command
        }
        Err(_) => Command::new(binary),
    };
    let child = command
        .args([
            "--listen",
            &addr.to_string(),
            "--upstream",
            &format!("http://{upstream}"),
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(addr).await;
    Target {
        name: "tower-sse-proxy",
        child,
        addr,
        _dir: None,
    }
}

async fn start_nginx(upstream: SocketAddr) -> Option<Target> {
    let binary = std::path::Path::new("/usr/sbin/nginx");
    if !binary.exists() {
        return None;
    }
    let addr = free_port();
    let dir = std::env::temp_dir().join(format!("tower-sse-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let config = format!(
        "worker_processes auto;\nworker_rlimit_nofile 20000;\npid {dir}/nginx.pid;\n\
         error_log stderr error;\nevents {{ worker_connections 19000; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
         upstream up {{ server {upstream}; keepalive 64; }}\n\
         server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://up;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         proxy_buffering off;\n      proxy_read_timeout 1h;\n    }}\n  }}\n}}\n",
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(binary)
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &path.display().to_string(),
        ])
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(addr).await;
    Some(Target {
        name: "nginx",
        child,
        addr,
        _dir: Some(dir),
    })
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on {addr}");
}

struct Figures {
    bytes_per_stream: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn idle_memory(addr: SocketAddr, pid: u32, streams: usize) -> f64 {
    // Warm up: pools, buffers and worker threads that exist once, not per stream.
    let mut warm = Vec::new();
    for _ in 0..64 {
        warm.push(open(addr, "/idle", b"data: hi\n\n").await.0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_tree(pid);
    let mut open_streams = Vec::with_capacity(streams);
    for chunk in 0..streams.div_ceil(100) {
        let count = 100.min(streams - chunk * 100);
        let batch = futures_util::future::join_all(
            (0..count).map(|_| open(addr, "/idle", b"data: hi\n\n")),
        )
        .await;
        open_streams.extend(batch.into_iter().map(|(stream, _)| stream));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_tree(pid);
    drop(open_streams);
    drop(warm);
    (after.saturating_sub(before)) as f64 / streams as f64
}

async fn firehose(addr: SocketAddr, mib: u64) -> f64 {
    let (mut stream, seen) = open(addr, &format!("/fire?{mib}"), b"data: ").await;
    let started = Instant::now();
    let mut total = seen.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    let want = mib * 1024 * 1024;
    while total < want {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("firehose stalled")
            .unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    total as f64 / started.elapsed().as_secs_f64() / 1e6
}

async fn paced(addr: SocketAddr) -> Vec<u64> {
    let delays = Arc::new(std::sync::Mutex::new(Vec::new()));
    let received = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let delays = Arc::clone(&delays);
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let (mut stream, mut seen) = open(addr, "/paced", b"data: ").await;
                let mut buf = [0u8; 4096];
                let mut pending = String::new();
                loop {
                    let now = now_nanos();
                    pending.push_str(&String::from_utf8_lossy(&seen));
                    seen.clear();
                    while let Some(start) = pending.find("data: ") {
                        let rest = &pending[start + 6..];
                        let Some(end) = rest.find('\n') else { break };
                        if let Ok(sent) = rest[..end].parse::<u64>() {
                            delays.lock().unwrap().push(now.saturating_sub(sent));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        pending = rest[end..].to_owned();
                    }
                    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
                    {
                        Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                    if pending.contains("0\r\n\r\n") {
                        break;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let mut delays = std::mem::take(&mut *delays.lock().unwrap());
    delays.sort_unstable();
    delays
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn measure(target: &Target, streams: usize, mib: u64, baseline: &[u64]) -> Figures {
    let pid = target.child.id().unwrap();
    let bytes_per_stream = idle_memory(target.addr, pid, streams).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mb_per_s = firehose(target.addr, mib).await;
    let delays = paced(target.addr).await;
    let base50 = percentile(baseline, 0.5);
    let base99 = percentile(baseline, 0.99);
    Figures {
        bytes_per_stream,
        mb_per_s,
        p50_us: percentile(&delays, 0.5) - base50,
        p99_us: percentile(&delays, 0.99) - base99,
    }
}

fn main() {
    let mut streams = 4000;
    let mut mib = 512;
    let mut extra = Vec::new();
    let mut no_nginx = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--streams" => streams = args.next().and_then(|v| v.parse().ok()).unwrap_or(streams),
            "--proxy-arg" => extra.extend(args.next()),
            "--firehose-mib" => mib = args.next().and_then(|v| v.parse().ok()).unwrap_or(mib),
            "--no-nginx" => no_nginx = true,
            _ => {} // cargo bench passes --bench
        }
    }
    START.get_or_init(Instant::now);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let upstream = upstream().await;
        let baseline = paced(upstream).await;
        println!(
            "baseline (no proxy): paced delay p50 {:.0} µs, p99 {:.0} µs",
            percentile(&baseline, 0.5),
            percentile(&baseline, 0.99)
        );
        let proxy = start_proxy(upstream, &extra).await;
        let ours = measure(&proxy, streams, mib, &baseline).await;
        drop(proxy);
        if no_nginx {
            print_row("tower-sse-proxy", &ours);
            return;
        }
        let Some(nginx) = start_nginx(upstream).await else {
            println!("/usr/sbin/nginx is missing (apt-get install nginx): proxy figures only");
            print_row("tower-sse-proxy", &ours);
            return;
        };
        let theirs = measure(&nginx, streams, mib, &baseline).await;
        println!("\n{streams} idle streams, {mib} MiB firehose, 8 × 250 paced events\n");
        println!("| | RSS per idle stream | firehose | added p50 | added p99 |");
        println!("|---|---|---|---|---|");
        print_row("tower-sse-proxy", &ours);
        print_row(nginx.name, &theirs);
        println!(
            "| ratio (proxy / nginx) | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
            ours.bytes_per_stream / theirs.bytes_per_stream,
            ours.mb_per_s / theirs.mb_per_s,
            ours.p50_us / theirs.p50_us,
            ours.p99_us / theirs.p99_us,
        );
    });
}

fn print_row(name: &str, figures: &Figures) {
    println!(
        "| {name} | {:.1} KiB | {:.0} MB/s | {:.0} µs | {:.0} µs |",
        figures.bytes_per_stream / 1024.0,
        figures.mb_per_s,
        figures.p50_us,
        figures.p99_us
    );
}
