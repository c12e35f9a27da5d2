//! Headless Chromium and Node for the browser end-to-end tests (`tests/e2e_compression.rs`,
//! `tower-sse-demo/tests/e2e_browser.rs`).
//!
//! The Rust side starts Chromium with a throwaway profile and a DevTools port of its choosing
//! ([`Chromium::launch`]); a Node script then drives the page over that port with the shared
//! client `test-support/js/devtools.mjs`, which needs a global `WebSocket`: [`node`] gives a
//! Node command that has one. Every child process is killed when its handle
//! is dropped, so a failing assertion leaves no browser behind.
//!
//! ```no_run
//! use tower_sse_test_support::browser::{self, Chromium};
//!
//! let (Some(chromium), Some(mut node)) = (Chromium::launch(), browser::node()) else {
//!     eprintln!("chromium or node not installed: skipped");
//!     return;
//! };
//! let output = node
//!     .arg("tests/clients/chromium.mjs")
//!     .arg(chromium.devtools_port().to_string())
//!     .output()
//!     .unwrap();
//! drop(chromium); // kills the browser and removes its profile
//! assert!(output.status.success());
//! ```

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long [`Chromium::launch`] waits for Chromium to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The flags Chromium runs with: headless, no sandbox (CI runs as root), no GPU, and nothing
/// that reaches outside the machine (QUIC, component updates, sync, background networking).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
];

/// A child process, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Chromium (`/usr/bin/chromium`, or `chromium-browser` elsewhere), if installed.
pub fn chromium_path() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A `node` command whose scripts have a global `WebSocket` (with `--experimental-websocket`
/// on Node 20.10 to 22.3, bare from 22.4), or `None` when Node is missing or has none (Node 18,
/// Debian bookworm's own).
pub fn node() -> Option<Command> {
    let has_websocket = |flags: &[&str]| {
        Command::new("node")
            .args(flags)
            .args([
                "-e",
                "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let flags: &[&str] = if has_websocket(&[]) {
        &[]
    } else if has_websocket(&["--experimental-websocket"]) {
        &["--experimental-websocket"]
    } else {
        return None;
    };
    let mut command = Command::new("node");
    command.args(flags);
    Some(command)
}

/// Sends every line of `reader` down the returned channel as it comes (from a thread that ends
/// with the reader or when the receiver is dropped).
pub fn lines(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads lines of `reader` until one contains `marker` and returns it; `None` when the reader
/// ends or `timeout` passes first. The rest of the output is read and dropped, so the child
/// never blocks on a full pipe.
pub fn wait_for_line(
    reader: impl Read + Send + 'static,
    marker: &str,
    timeout: Duration,
) -> Option<String> {
    let lines = lines(reader);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).ok()?;
        if line.contains(marker) {
            // Keep draining in the background.
            std::thread::spawn(move || for _ in lines {});
            return Some(line);
        }
    }
}

/// A headless Chromium on `about:blank` with a fresh profile in the temporary directory; killed,
/// and its profile removed, on drop.
#[derive(Debug)]
pub struct Chromium {
    process: Killed,
    profile: PathBuf,
    port: u16,
}

impl Chromium {
    /// Launches Chromium with [`CHROMIUM_FLAGS`] and waits (up to 60 s) for its DevTools port.
    /// `None` when Chromium is not installed ([`chromium_path`]).
    ///
    /// # Panics
    ///
    /// When Chromium is installed but does not start, or prints no DevTools address in time.
    pub fn launch() -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = chromium_path()?;
        let profile = std::env::temp_dir().join(format!(
            "tower-sse-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        let mut process = Killed(
            Command::new(path)
                .args(CHROMIUM_FLAGS)
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("about:blank")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("chromium did not start"),
        );
        let stderr = process.0.stderr.take().expect("piped stderr");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/UUID"
        let port = wait_for_line(stderr, "DevTools listening on ws://", LAUNCH_TIMEOUT)
            .and_then(|line| {
                let rest = line.split("ws://").nth(1)?;
                let authority = rest.split('/').next()?;
                authority.rsplit(':').next()?.parse().ok()
            })
            .expect("Chromium printed no DevTools address");
        Some(Self {
            process,
            profile,
            port,
        })
    }

    /// The DevTools HTTP and WebSocket port on 127.0.0.1.
    pub fn devtools_port(&self) -> u16 {
        self.port
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        // Chromium's helper processes outlive the browser's SIGKILL by a few milliseconds and
        // may still write into the profile while it is being removed.
        for _ in 0..40 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_line_returns_the_first_line_with_the_marker() {
        let input: &[u8] = b"starting\nDevTools listening on ws://127.0.0.1:9/x\nlater ws://\n";
        let line = wait_for_line(input, "ws://", Duration::from_secs(5));
        assert_eq!(
            line.as_deref(),
            Some("DevTools listening on ws://127.0.0.1:9/x")
        );
    }

    #[test]
    fn wait_for_line_gives_none_when_the_output_ends_without_it() {
        let input: &[u8] = b"starting\nfailed\n";
        assert_eq!(wait_for_line(input, "ws://", Duration::from_secs(5)), None);
    }
}
