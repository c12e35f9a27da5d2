// Drives headless Chromium over the DevTools protocol against the demo (tower-sse-demo):
// starts a job, lets the server cut the stream twice mid-job, waits for 100 %, compares the page
// with the server's /state, reloads (a fresh EventSource replays the run), compares again, and
// takes a screenshot. Run by tests/e2e_browser.rs; needs Node >= 20.10 (a global WebSocket, for
// test-support/js/devtools.mjs).
//
//   node [--experimental-websocket] tower-sse-demo/tests/browser/demo.mjs BASE_URL DEVTOOLS_PORT SCREENSHOT.png
import { writeFileSync } from "node:fs";

import { fail, openPage } from "../../../test-support/js/devtools.mjs";

const [base, devtoolsPort, screenshotPath] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
setTimeout(() => fail("timed out after 60 s"), 60_000).unref();

const { cdp, evaluate, close } = await openPage(devtoolsPort, "about:blank");

const snapshot = () =>
  evaluate(`(() => {
    const q = (s) => document.querySelector(s);
    if (!q('#state')) return null;
    return {
      state: q('#state').dataset.state || q('#state').textContent,
      reconnects: +q('#reconnects').textContent,
      processed: +q('#processed').textContent,
      total: +q('#total').textContent,
      progress: +q('#progress').dataset.value,
      failures: [...document.querySelectorAll('#failures li')].map((li) => +li.dataset.id),
      done: q('#done').dataset.done === 'true',
      lastEventId: q('#last-event-id')?.textContent,
    };
  })()`);
const waitFor = async (what, predicate, timeoutMs) => {
  const until = Date.now() + timeoutMs;
  let last;
  while (Date.now() < until) {
    last = await snapshot();
    if (last && predicate(last)) return last;
    await sleep(50);
  }
  fail(`${what}: last seen ${JSON.stringify(last)}`);
};
const serverState = (job) => evaluate(`fetch('/jobs/${job}/state').then((r) => r.json())`);
const same = (page, server) =>
  page.processed === server.processed &&
  page.total === server.total &&
  page.done === server.done &&
  JSON.stringify(page.failures) === JSON.stringify(server.failures);

const job = `browser${Date.now() % 1_000_000}`;
await cdp("Page.enable");
await cdp("Emulation.setDeviceMetricsOverride", { width: 1100, height: 900, deviceScaleFactor: 1, mobile: false });
// 200 records, 20 ms each: about 4 s of work, long enough to cut it twice.
await cdp("Page.navigate", { url: `${base}/jobs/${job}?total=200&delay_ms=20` });
await waitFor("the stream opens", (s) => s.state === "open", 10_000);
await evaluate(`document.querySelector('#start').click()`);

// The server cuts the stream mid-job, twice; each time the page reconnects with Last-Event-ID.
const started = Date.now();
for (let cut = 1; cut <= 2; cut++) {
  await waitFor(`progress before cut ${cut}`, (s) => s.processed >= 50 * cut && !s.done, 15_000);
  const answer = await evaluate(`fetch('/jobs/${job}/cut', { method: 'POST' }).then((r) => r.json())`);
  if (!(answer.cut >= 1)) fail(`cut ${cut} ended no stream: ${JSON.stringify(answer)}`);
  await waitFor(`reconnect after cut ${cut}`, (s) => s.reconnects >= cut && s.state === "open", 10_000);
  console.log(`cut ${cut}: page reconnected and resumed`);
}
const live = await waitFor("the job reaches 100 %", (s) => s.done, 30_000);
const server = await serverState(job);
console.log(`FIGURE: browser job done in ${Date.now() - started} ms after start, reconnects ${live.reconnects}`);
console.log(`live page: ${JSON.stringify(live)}`);
console.log(`server:    ${JSON.stringify(server)}`);
if (live.progress !== live.total) fail(`progress bar at ${live.progress} of ${live.total}`);
if (!same(live, server)) fail("the live page differs from the server's state");
if (server.failures.length === 0) fail("the job reported no failures");

if (screenshotPath) {
  await sleep(1200); // one metrics tick, so the counters panel is filled
  const shot = await cdp("Page.captureScreenshot", { format: "png" });
  writeFileSync(screenshotPath, Buffer.from(shot.result.data, "base64"));
  console.log(`screenshot: ${screenshotPath}`);
}

// A reload starts a fresh EventSource without Last-Event-ID: the run is replayed.
await cdp("Page.reload");
const reloaded = await waitFor("the reloaded page shows the finished job", (s) => s.done, 15_000);
if (!same(reloaded, server)) fail(`after reload: ${JSON.stringify(reloaded)}`);
console.log("RESULT: live == server, reload == server, reconnected after each cut");
close();
process.exit(0);
