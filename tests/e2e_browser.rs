//! End to end in a real browser: Debian's Chromium (headless) against the demo
//! (`examples/demo.rs`), driven over the DevTools protocol by `tests/browser/demo.mjs` with
//! Node's built-in WebSocket. `.ci/run` installs Chromium and runs this with
//! `cargo test --test e2e_browser -- --ignored`; without Chromium or Node it is skipped with a
//! message.
//!
//! The test builds the demo (`cargo build --example demo`) when its binary is missing or older
//! than its sources, starts it on `127.0.0.1:0`, and leaves a screenshot at
//! `target/e2e/demo.png`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
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

/// The demo binary, built if needed (the outer cargo has released its lock by now).
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let binary = profile_dir.join("examples").join("demo");
    let newest_source = [
        "examples/demo.rs",
        "examples/demo/index.html",
        "src",
        "Cargo.toml",
    ]
    .iter()
    .filter_map(|p| newest_mtime(&root().join(p)))
    .max();
    let stale = match (binary.metadata().and_then(|m| m.modified()), newest_source) {
        (Ok(built), Some(source)) => built < source,
        _ => true,
    };
    if stale {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "demo"])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --example demo failed");
    }
    binary
}

fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = path.metadata().ok()?;
    if meta.is_dir() {
        std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| newest_mtime(&e.path()))
            .max()
    } else {
        meta.modified().ok()
    }
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
        Command::new(demo_binary())
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

    let shots = root().join("target").join("e2e");
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
