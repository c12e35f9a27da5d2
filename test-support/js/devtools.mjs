// The DevTools client shared by the browser end-to-end scripts (tests/clients/chromium.mjs,
// tower-sse-demo/tests/browser/demo.mjs): opens a page in the Chromium that
// tower_sse_test_support::browser::Chromium launched, and drives it over the DevTools protocol
// with Node's global WebSocket (Node >= 20.10 with --experimental-websocket, >= 22.4 without).

/** Prints `FAIL: message` on stderr and exits with status 1. */
export const fail = (message) => {
  console.error(`FAIL: ${message}`);
  process.exit(1);
};

/**
 * Opens a new page on `url` in the browser whose DevTools listen on 127.0.0.1:`port`.
 * Returns `cdp(method, params)`, which resolves to the protocol's answer, `evaluate(expression)`,
 * which resolves to the expression's value (awaiting a promise) or rejects with the page's
 * exception, and `close()`.
 */
export async function openPage(port, url) {
  const response = await fetch(`http://127.0.0.1:${port}/json/new?${url}`, { method: "PUT" });
  const target = await response.json();
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
  return { cdp, evaluate, close: () => ws.close() };
}
