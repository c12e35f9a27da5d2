// Node's fetch (undici) for tests/e2e_compression.rs: reads event stream ID asking for
// ACCEPT_ENCODING, decodes the body as it arrives, checks each event's number, and
// acknowledges it (`/ack`: the server sends the next one only then). Prints
// `DONE <count> events, content-encoding <coding>`.
//
//   node tests/clients/fetch.mjs BASE_URL ID ACCEPT_ENCODING COUNT
const [base, id, acceptEncoding, count] = process.argv.slice(2);
const fail = (message) => {
  console.error(`FAIL: ${message}`);
  process.exit(1);
};
setTimeout(() => fail("timed out after 50 s"), 50_000).unref();

const controller = new AbortController();
const response = await fetch(`${base}/events?id=${id}&n=${count}`, {
  headers: { accept: "text/event-stream", "accept-encoding": acceptEncoding },
  signal: controller.signal,
});
const coding = response.headers.get("content-encoding");
if (response.status !== 200) fail(`status ${response.status}`);

const decoder = new TextDecoder();
let text = "";
let received = 0;
for await (const chunk of response.body) {
  text += decoder.decode(chunk, { stream: true });
  let end;
  while ((end = text.indexOf("\n\n")) !== -1) {
    const block = text.slice(0, end);
    text = text.slice(end + 2);
    const data = block.split("\n").find((line) => line.startsWith("data: "));
    if (!data) fail(`an event without data: ${JSON.stringify(block)}`);
    const event = JSON.parse(data.slice(6));
    if (event.n !== received) fail(`event ${event.n} arrived as number ${received}`);
    received += 1;
    await fetch(`${base}/ack?id=${id}&n=${received}`);
  }
  if (received === Number(count)) break;
}
if (received !== Number(count)) fail(`the stream ended after ${received} events`);
controller.abort();
console.log(`DONE ${received} events, content-encoding ${coding}`);
process.exit(0);
