// Drives headless Chromium over the DevTools protocol for tests/e2e_compression.rs: an
// EventSource in the page reads `ROUNDS` rounds of one identity and one compressed stream of
// `COUNT` events each, acknowledging every event (`/ack`) as it arrives (the server sends the
// next one only then), and timing each from the server's send time to `onmessage`.
// Prints `STREAM <route> <id> <events>` per stream and `LATENCY <route> <µs>` per event.
//
//   node [--experimental-websocket] tests/clients/chromium.mjs BASE_URL DEVTOOLS_PORT ROUNDS COUNT
import { fail, openPage } from "../../test-support/js/devtools.mjs";

const [base, devtoolsPort, rounds, count] = process.argv.slice(2);
setTimeout(() => fail("timed out after 50 s"), 50_000).unref();

const { evaluate, close } = await openPage(devtoolsPort, `${base}/`);

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
close();
process.exit(0);
