//! Shared support for the integration tests: the loopback servers and clients of
//! `tower-sse-test-support` (real servers on `127.0.0.1:0`, a raw TCP client for exact wire
//! bytes, a hyper client), and the proxy process itself.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub use tower_sse_test_support::eventually;
pub use tower_sse_test_support::loopback::*;

use std::net::SocketAddr;
use std::time::Duration;

/// A running `tower-sse-proxy` process started with any arguments; killed on drop.
pub struct Running {
    pub child: tokio::process::Child,
    /// The first stdout line (`listening on ...`) and any others printed at startup.
    pub stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `--listen 127.0.0.1:0` and then `extra`: the start of every proxy a test runs (a config
/// file, or upstreams given in `extra`).
pub fn listen_args(extra: &[&str]) -> Vec<String> {
    ["--listen", "127.0.0.1:0"]
        .iter()
        .chain(extra)
        .map(|&arg| arg.to_owned())
        .collect()
}

/// `--listen 127.0.0.1:0 --upstream URL` and then `extra`: a proxy in front of one upstream.
pub fn proxy_args(upstream_url: &str, extra: &[&str]) -> Vec<String> {
    listen_args(&[&["--upstream", upstream_url], extra].concat())
}

impl Running {
    /// Starts the binary on `127.0.0.1:0` in front of the plain-HTTP upstream at `upstream`,
    /// with the flags `extra`.
    pub fn proxy(upstream: SocketAddr, extra: &[&str]) -> Self {
        Self::start(&proxy_args(&format!("http://{upstream}"), extra))
    }

    /// Starts the binary on `127.0.0.1:0` with the arguments `extra` (a config file, or an
    /// upstream that is not plain HTTP).
    pub fn listen(extra: &[&str]) -> Self {
        Self::start(&listen_args(extra))
    }

    /// Starts the binary with `args` (stderr collected in the background).
    pub fn start(args: &[String]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tower-sse-proxy"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the proxy");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = std::sync::Arc::clone(&stderr);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// The next stdout line, within 30 s (a bound for failures only: a first start of the
    /// binary on a loaded 2-core CI machine took over 5 s).
    pub async fn line(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!("no stdout line ({other:?}); stderr:\n{}", self.log()),
        }
    }

    /// The address in a `... on http(s)://ADDR...` line.
    pub async fn addr(&mut self) -> SocketAddr {
        let line = self.line().await;
        line.split("://")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The log once it contains `needle`, or after `timeout`.
    pub async fn log_within(&self, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) || tokio::time::Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `signal` (`-TERM`, `-HUP`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the proxy already exited");
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A temporary file holding `text`, removed on drop.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    pub fn new(name: &str, text: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tower-sse-proxy-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    pub fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens `path` on `host` as an event stream over raw HTTP/1.1 and reads until its response
/// head is in (within 5 s per read): the stream is then open in the proxy, so that a drain or a
/// reload that follows sees it. Returns the connection and the bytes read so far.
pub async fn hold_stream(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
    held.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), held.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the held stream closed before its head");
        head.extend_from_slice(&buf[..n]);
    }
    (held, head)
}

/// A TLS acceptor for a loopback upstream: rustls (ring) with the PEM certificate `cert` and key
/// `key`, offering the ALPN protocol `alpn` (`b"h2"`, `b"http/1.1"`).
pub fn tls_acceptor(cert: &str, key: &str, alpn: &[u8]) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject as _;

    let mut server = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    server.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server))
}
