// Drives headless Chromium over the DevTools protocol for tests/e2e_compression.rs: an
// EventSource in the page reads `ROUNDS` rounds of one identity and one compressed stream of
// `COUNT` events each, acknowledging every event (`/ack`) as it arrives (the server sends the
// next one only then), and timing each from the server's send time to `onmessage`.
// Prints `STREAM <route> <id> <events>` per stream and `LATENCY <route> <µs>` per event.
//
//   node --experimental-websocket tests/clients/chromium.mjs BASE_URL DEVTOOLS_PORT ROUNDS COUNT
const [base, devtoolsPort, rounds, count] = process.argv.slice(2);
const fail = (message) => {
  console.error(`FAIL: ${message}`);
  process.exit(1);
};
setTimeout(() => fail("timed out after 50 s"), 50_000).unref();

const target = await (
  await fetch(`http://127.0.0.1:${devtoolsPort}/json/new?${base}/`, { method: "PUT" })
).json();
const ws = new WebSocket(target.webSocketDebuggerUrl);
await new Promise((resolve, reject) => {
  ws.addEventListener("open", resolve);
  ws.addEventListener("error", reject);
});
let seq = 0;
const waiting = new Map();
ws.addEventListener("message", (m) => {
  const d = JSON.parse(m.data);
  if (d.id && waiting.has(d.id)) {
    waiting.get(d.id)(d);
    waiting.delete(d.id);
  }
});
const cdp = (method, params = {}) =>
  new Promise((resolve) => {
    const id = ++seq;
    waiting.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });
const evaluate = async (expression) => {
  const r = await cdp("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
  if (r.error) throw new Error(JSON.stringify(r.error));
  if (r.result.exceptionDetails) throw new Error(JSON.stringify(r.result.exceptionDetails));
  return r.result.result.value;
};

for (let i = 0; i < 100 && (await evaluate("document.readyState")) !== "complete"; i++) {
  await new Promise((r) => setTimeout(r, 50));
}

// Reads one stream in the page; resolves to the latencies, or rejects on an error or a wrong
// event.
const read = (route, id) =>
  evaluate(`new Promise((resolve, reject) => {
    const source = new EventSource('/${route}?id=${id}&n=${count}');
    const latencies = [];
    source.onmessage = (message) => {
      const now = (performance.timeOrigin + performance.now()) * 1000;
      const event = JSON.parse(message.data);
      if (event.n !== latencies.length || message.lastEventId !== String(event.n)) {
        source.close();
        reject(new Error('event ' + event.n + ' arrived as number ' + latencies.length));
        return;
      }
      latencies.push(Math.round(now - event.sent_us));
      fetch('/ack?id=${id}&n=' + latencies.length);
      if (latencies.length === ${count}) {
        source.close();
        resolve(latencies);
      }
    };
    source.onerror = () => {
      source.close();
      reject(new Error('EventSource error after ' + latencies.length + ' events'));
    };
  })`);

for (let round = 0; round < Number(rounds); round++) {
  // Alternate which goes first.
  const routes = round % 2 === 0 ? ["events-identity", "events"] : ["events", "events-identity"];
  for (const route of routes) {
    const id = `chromium-${route}-${round}`;
    let latencies;
    try {
      latencies = await read(route, id);
    } catch (error) {
      fail(`${id}: ${error.message}`);
    }
    console.log(`STREAM ${route} ${id} ${latencies.length}`);
    for (const latency of latencies) console.log(`LATENCY ${route} ${latency}`);
  }
}
ws.close();
process.exit(0);
