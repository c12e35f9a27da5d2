//! A raw HTTP/1.1 event-stream upstream on loopback that honours `Last-Event-ID` and dies in a
//! chosen way on each connection: the upstream of the resume tests (`tests/resume.rs`) and of the
//! proxy's `--resume` tests (`tower-sse-proxy/tests/streams.rs`).
//!
//! Event `n` is [`event(n)`](event): `id: n`, `data: event n`. A request with `Last-Event-ID: k`
//! gets events from `k + 1`, one without it from 1. Every response says `connection: close`, so a
//! client opens a new connection (and gets the next plan) for each request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The `Last-Event-ID` of each request an upstream got, in order (`None`: no such header).
pub type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// How one upstream connection's response goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// `n` events after the client's id, then a TCP reset.
    ResetAtBoundary(usize),
    /// `n` events and the first line of the next, then a TCP reset.
    ResetMidEvent(usize),
    /// `n` events and part of the next event's second line, then the connection closes without
    /// the last chunk (a truncated chunked body).
    TruncatedMidLine(usize),
    /// `n` events, then a clean end of the body.
    End(usize),
    /// 204 No Content.
    NoContent,
    /// 503 Service Unavailable.
    Unavailable,
}

/// Event `id` as the upstream writes it: `id: {id}\ndata: event {id}\n\n`.
pub fn event(id: usize) -> String {
    format!("id: {id}\ndata: event {id}\n\n")
}

/// How long the upstream waits after writing its last bytes before it resets or closes the
/// connection, so that the client (or a proxy in between) has read them.
const LINGER: Duration = Duration::from_millis(50);

/// Serves `plans` (one per connection, the last one repeated) on a fresh loopback port. Returns
/// the address and the `Last-Event-ID` of each request.
pub async fn dying_upstream(plans: Vec<Plan>) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    tokio::spawn(serve_plans(listener, plans, Arc::clone(&seen)));
    (addr, seen)
}

/// Serves `plans` on `listener` until it fails, recording each request's `Last-Event-ID` in
/// `seen`.
pub async fn serve_plans(listener: TcpListener, plans: Vec<Plan>, seen: Seen) {
    assert!(!plans.is_empty(), "an upstream needs at least one plan");
    let count = AtomicUsize::new(0);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let n = count.fetch_add(1, Ordering::SeqCst);
        let plan = plans[n.min(plans.len() - 1)];
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let _ = answer(stream, plan, &seen).await;
        });
    }
}

/// Reads a request head from `stream` and answers it as `plan` says.
///
/// # Errors
///
/// Any I/O error of the connection.
pub async fn answer(
    mut stream: TcpStream,
    plan: Plan,
    seen: &Mutex<Vec<Option<String>>>,
) -> std::io::Result<()> {
    let Some(id) = read_last_event_id(&mut stream).await? else {
        return Ok(());
    };
    seen.lock().unwrap().push(id.clone());
    let next = id.map_or(1, |id| id.parse::<usize>().unwrap() + 1);
    let status = match plan {
        Plan::NoContent => "204 No Content",
        Plan::Unavailable => "503 Service Unavailable",
        _ => "200 OK",
    };
    let mut response = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    if matches!(plan, Plan::NoContent | Plan::Unavailable) {
        response.push_str("content-length: 0\r\n");
    } else {
        response.push_str("content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n");
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).await?;
    let chunk = |text: &str| format!("{:x}\r\n{text}\r\n", text.len());
    let events = |n: usize| -> String { (next..next + n).map(|id| chunk(&event(id))).collect() };
    match plan {
        Plan::ResetAtBoundary(n) | Plan::ResetMidEvent(n) => {
            let mut body = events(n);
            if matches!(plan, Plan::ResetMidEvent(_)) {
                body.push_str(&chunk(&format!("id: {}\n", next + n)));
            }
            stream.write_all(body.as_bytes()).await?;
            stream.flush().await?;
            tokio::time::sleep(LINGER).await;
            stream.set_zero_linger()?;
            drop(stream);
        }
        Plan::TruncatedMidLine(n) => {
            let mut body = events(n);
            body.push_str(&chunk(&format!("id: {}\ndata: eve", next + n)));
            stream.write_all(body.as_bytes()).await?;
            tokio::time::sleep(LINGER).await;
            stream.shutdown().await?;
        }
        Plan::End(n) => {
            let mut body = events(n);
            body.push_str("0\r\n\r\n");
            stream.write_all(body.as_bytes()).await?;
            stream.shutdown().await?;
        }
        Plan::NoContent | Plan::Unavailable => stream.shutdown().await?,
    }
    Ok(())
}

/// Reads a request head; returns its `Last-Event-ID` (`Some(None)` without one), or `None` when
/// the connection closed first.
///
/// # Errors
///
/// Any I/O error of the connection.
pub async fn read_last_event_id(stream: &mut TcpStream) -> std::io::Result<Option<Option<String>>> {
    let mut head = Vec::new();
    let mut buf = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    Ok(Some(head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("last-event-id")
            .then(|| value.trim().to_owned())
    })))
}
