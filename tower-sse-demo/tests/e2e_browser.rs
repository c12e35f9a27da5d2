//! End to end in a real browser: Debian's Chromium (headless) against the demo binary, driven
//! over the DevTools protocol by `tests/browser/demo.mjs` with Node's global WebSocket (Node >=
//! 20.10) and the shared client `test-support/js/devtools.mjs`.
//! `.ci/run` installs Chromium and runs this with
//! `cargo test -p tower-sse-demo --test e2e_browser -- --ignored`; without Chromium or Node it is
//! skipped with a message.
//!
//! Cargo builds the demo for this test (`CARGO_BIN_EXE_tower-sse-demo`); the test starts it on
//! `127.0.0.1:0` and leaves a screenshot at `e2e/demo.png` in the target directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tower_sse_test_support::browser::{self, Chromium, Killed};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
#[ignore = "needs Chromium and Node; run by .ci/run with --ignored"]
fn the_demo_reaches_100_percent_in_chromium_and_survives_server_cuts() {
    let (Some(chromium), Some(mut node)) = (Chromium::launch(), browser::node()) else {
        eprintln!("chromium or node >= 20.10 not installed: skipped (.ci/run installs chromium)");
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
    let line = browser::wait_for_line(
        demo.0.stdout.take().unwrap(),
        "open http://",
        Duration::from_secs(60),
    )
    .expect("the demo printed no address");
    let base = line
        .split("open ")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('/')
        .to_owned();

    // The workspace's target directory, or the one `CARGO_TARGET_DIR` names.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("..").join("target"), PathBuf::from);
    let shots = target.join("e2e");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("demo.png");
    let started = Instant::now();
    let output = node
        .arg(root().join("tests/browser/demo.mjs"))
        .arg(&base)
        .arg(chromium.devtools_port().to_string())
        .arg(&screenshot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    eprintln!("FIGURE: browser scenario took {:?}", started.elapsed());
    drop(chromium);
    assert!(output.status.success(), "browser scenario failed");
    assert!(stdout.contains("RESULT: live == server"));
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
}
