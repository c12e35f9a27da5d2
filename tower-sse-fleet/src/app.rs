//! The `app` and `produce` subcommands: one event log in a Redis Stream, served as SSE by any
//! number of app instances, the way production fleets serve one log.
//!
//! - `produce` appends `seq=<n>` to the stream every interval (n continues from the last entry);
//! - `app` serves `GET <any path>` as `text/event-stream`: each event is `id: <stream id>` and
//!   `data: <n>`. A request with `Last-Event-ID` first gets every entry after that id (XRANGE),
//!   then the live tail; one task per instance follows the tail (XREAD BLOCK) and hands entries
//!   to the open streams. A stream that falls too far behind the tail ends (its client comes
//!   back with `Last-Event-ID` and loses nothing).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use redis::AsyncCommands as _;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// The options of `app`, parsed once from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct AppArgs {
    /// Address to listen on (port 0 picks one; the first stdout line names it).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The Redis server.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// The stream's key.
    #[arg(long, default_value = "fleet:events")]
    pub key: String,
}

/// The options of `produce`, parsed once from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    /// The Redis server.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// The stream's key.
    #[arg(long, default_value = "fleet:events")]
    pub key: String,
    /// Between two events.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// Keep about this many entries (XADD MAXLEN ~).
    #[arg(long, default_value_t = 100_000)]
    pub keep: usize,
}

/// A Redis Stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId(pub u64, pub u64);

impl EntryId {
    /// Parses `<ms>-<seq>`; anything else (a stale or foreign `Last-Event-ID`) is `None`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.trim().split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its stream id.
    pub id: EntryId,
    /// Its sequence number.
    pub seq: u64,
}

impl Entry {
    /// The event's bytes on the wire.
    #[must_use]
    pub fn to_sse(&self) -> Bytes {
        Bytes::from(format!("id: {}\ndata: {}\n\n", self.id, self.seq))
    }
}

/// How long a Redis command may take before it fails. The client's default (500 ms) is shorter
/// than the tail's `XREAD BLOCK 1000`, and on a loaded machine a burst of reconnects' `XRANGE`
/// took longer: each such failure ended a fresh stream and cost its client another reconnect.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A multiplexed connection with [`REDIS_RESPONSE_TIMEOUT`].
async fn connect(
    client: &redis::Client,
    url: &str,
) -> Result<redis::aio::MultiplexedConnection, String> {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("{url}: {e}"))
}

fn entries(ids: &[redis::streams::StreamId]) -> Vec<Entry> {
    ids.iter()
        .filter_map(|e| {
            Some(Entry {
                id: EntryId::parse(&e.id)?,
                seq: e.get::<u64>("seq")?,
            })
        })
        .collect()
}

/// Appends an event every interval until the process is stopped.
///
/// # Errors
///
/// When Redis cannot be reached or refuses a command.
pub async fn produce(args: ProduceArgs) -> Result<(), String> {
    let client = redis::Client::open(args.redis.as_str()).map_err(|e| format!("--redis: {e}"))?;
    let mut con = connect(&client, &args.redis).await?;
    let last: StreamRangeReply = con
        .xrevrange_count(&args.key, "+", "-", 1)
        .await
        .map_err(|e| format!("XREVRANGE: {e}"))?;
    let mut seq = entries(&last.ids).first().map_or(0, |e| e.seq);
    let mut tick = tokio::time::interval(args.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    println!("producing to {} every {:?}", args.key, args.every);
    loop {
        tick.tick().await;
        seq += 1;
        let _: String = redis::cmd("XADD")
            .arg(&args.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(args.keep)
            .arg("*")
            .arg("seq")
            .arg(seq)
            .query_async(&mut con)
            .await
            .map_err(|e| format!("XADD: {e}"))?;
    }
}

struct State {
    tail: broadcast::Sender<Entry>,
    con: redis::aio::MultiplexedConnection,
    key: String,
}

/// Serves the log until the process is stopped.
///
/// # Errors
///
/// When Redis cannot be reached or the address cannot be bound.
pub async fn app(args: AppArgs) -> Result<(), String> {
    let client = redis::Client::open(args.redis.as_str()).map_err(|e| format!("--redis: {e}"))?;
    let con = connect(&client, &args.redis).await?;
    let tail_con = connect(&client, &args.redis).await?;
    let (tail, _) = broadcast::channel(4096);
    tokio::spawn(follow(tail_con, args.key.clone(), tail.clone()));
    let state = Arc::new(State {
        tail,
        con,
        key: args.key.clone(),
    });
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{local}, serving {}", args.key);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(serve(&state, &request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Follows the tail of the stream and hands each entry to the open streams.
async fn follow(
    mut con: redis::aio::MultiplexedConnection,
    key: String,
    tail: broadcast::Sender<Entry>,
) {
    let mut last = "$".to_owned();
    let options = StreamReadOptions::default().block(1000).count(1000);
    loop {
        let reply: Result<Option<StreamReadReply>, _> =
            con.xread_options(&[&key], &[&last], &options).await;
        match reply {
            Ok(Some(reply)) => {
                for stream in &reply.keys {
                    if let Some(newest) = stream.ids.last() {
                        last.clone_from(&newest.id);
                    }
                    for entry in entries(&stream.ids) {
                        let _ = tail.send(entry);
                    }
                }
            }
            Ok(None) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

type Body = StreamBody<
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>,
>;

/// Where a stream is: the backlog to send, then the tail after the last id sent.
struct Cursor {
    backlog: std::vec::IntoIter<Entry>,
    last: Option<EntryId>,
    tail: broadcast::Receiver<Entry>,
    from: Option<EntryId>,
    con: redis::aio::MultiplexedConnection,
    key: String,
    caught_up: bool,
}

fn serve<B>(state: &State, request: &http::Request<B>) -> http::Response<Body> {
    let from = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(EntryId::parse);
    let cursor = Cursor {
        backlog: Vec::new().into_iter(),
        last: from,
        // Subscribed before the backlog is read, so that nothing falls between the two.
        tail: state.tail.subscribe(),
        from,
        con: state.con.clone(),
        key: state.key.clone(),
        caught_up: from.is_none(),
    };
    let stream = futures_util::stream::unfold(cursor, next_frame);
    let mut response = http::Response::new(StreamBody::new(Box::pin(stream) as _));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

async fn next_frame(mut cursor: Cursor) -> Option<(Result<Frame<Bytes>, Infallible>, Cursor)> {
    if !cursor.caught_up {
        cursor.caught_up = true;
        let start = cursor
            .from
            .map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let reply: Result<StreamRangeReply, _> = cursor
            .con
            .xrange_count(&cursor.key, start, "+", 100_000)
            .await;
        // Redis unreachable: end the stream, the client comes back later.
        cursor.backlog = entries(&reply.ok()?.ids).into_iter();
    }
    loop {
        let entry = match cursor.backlog.next() {
            Some(entry) => entry,
            // Lagged or closed: end the stream; the client resumes with Last-Event-ID.
            None => cursor.tail.recv().await.ok()?,
        };
        if cursor.last.is_some_and(|last| entry.id <= last) {
            continue;
        }
        cursor.last = Some(entry.id);
        return Some((Ok(Frame::data(entry.to_sse())), cursor));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_and_order_like_redis() {
        assert_eq!(
            EntryId::parse("1700000000000-3"),
            Some(EntryId(1_700_000_000_000, 3))
        );
        assert!(EntryId::parse("1-2") < EntryId::parse("1-10"));
        assert!(EntryId::parse("2-0") > EntryId::parse("1-10"));
        assert_eq!(EntryId::parse("17"), None);
        assert_eq!(EntryId::parse("a-b"), None);
        assert_eq!(EntryId(5, 1).to_string(), "5-1");
    }

    #[test]
    fn an_entry_is_one_event_with_its_id_and_number() {
        let entry = Entry {
            id: EntryId(5, 1),
            seq: 42,
        };
        assert_eq!(&entry.to_sse()[..], b"id: 5-1\ndata: 42\n\n");
    }
}
