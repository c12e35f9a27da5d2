//! End to end in a real browser: Debian's Chromium (headless) against the demo binary, driven
//! over the DevTools protocol by `tests/browser/demo.mjs` with Node's built-in WebSocket.
//! `.ci/run` installs Chromium and runs this with
//! `cargo test -p tower-sse-demo --test e2e_browser -- --ignored`; without Chromium or Node it is
//! skipped with a message.
//!
//! Cargo builds the demo for this test (`CARGO_BIN_EXE_tower-sse-demo`); the test starts it on
//! `127.0.0.1:0` and leaves a screenshot at `target/e2e/demo.png` in the workspace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn node_ok() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Reads lines from `reader` until one contains `marker`; returns it.
fn wait_for_line(reader: impl Read + Send + 'static, marker: &'static str) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if line.contains(marker) {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no line with {marker:?}"))
}

#[test]
#[ignore = "needs Chromium and Node; run by .ci/run with --ignored"]
fn the_demo_reaches_100_percent_in_chromium_and_survives_server_cuts() {
    let (Some(chromium), true) = (chromium(), node_ok()) else {
        eprintln!("chromium or node not installed: skipped (.ci/run installs chromium)");
        return;
    };

    let mut demo = Killed(
        Command::new(env!("CARGO_BIN_EXE_tower-sse-demo"))
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let line = wait_for_line(demo.0.stdout.take().unwrap(), "open http://");
    let base = line
        .split("open ")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('/')
        .to_owned();

    let profile = std::env::temp_dir().join(format!("tower-sse-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let mut browser = Killed(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = wait_for_line(
        browser.0.stderr.take().unwrap(),
        "DevTools listening on ws://",
    );
    let port = line
        .split("ws://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("devtools port")
        .to_owned();

    let shots = root().join("..").join("target").join("e2e");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("demo.png");
    let started = Instant::now();
    let output = Command::new("node")
        .arg("--experimental-websocket")
        .arg(root().join("tests/browser/demo.mjs"))
        .args([&base, &port])
        .arg(&screenshot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    eprintln!("FIGURE: browser scenario took {:?}", started.elapsed());
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "browser scenario failed");
    assert!(stdout.contains("RESULT: live == server"));
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
}
