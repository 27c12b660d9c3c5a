// Drives the relay's /static/vnc-socketio.js the way noVNC does, for the end-to-end
// tests (tests/tests/relay_socketio.rs): attaches handlers after connect() resolves,
// sends from one reused buffer (as noVNC's send queue does), and reports what the
// channel delivered as one JSON line, with the relay's vnc:self as the page sees it and
// the acknowledgement of a vnc:control:release sent through the channel.
//
//   node --experimental-websocket channel.mjs '{"module":"/tmp/vnc-socketio.js",
//        "url":"http://127.0.0.1:6080","token":"...","containerId":"c1"}'
const opts = JSON.parse(process.argv[2]);
const { connect } = await import(opts.module);
const report = (obj) => {
    process.stdout.write(JSON.stringify(obj) + "\n");
    process.exit(0);
};

let channel;
try {
    channel = await connect(opts.url, opts.token, opts.containerId);
} catch (e) {
    report({ refused: e.message });
}

const missing = ["send", "close", "binaryType", "onerror", "onmessage", "onopen", "protocol", "readyState"]
    .filter((p) => !Object.keys(channel).includes(p)
        && !Object.getOwnPropertyNames(Object.getPrototypeOf(channel)).includes(p));

// Received bytes, and a reader that waits for n of them.
let received = new Uint8Array(0);
let wake = null;
// Attach late, as noVNC does after its own set-up: nothing may be lost meanwhile.
await new Promise((r) => setTimeout(r, 200));
// The relay's named events that came meanwhile (vnc:self first) wait for the page too.
const named = [];
channel.onnamedevent = (name, payload) => named.push({ name, payload });
// An acknowledged event: the relay's answer to a release.
const release = await channel.emit("vnc:control:release");
channel.binaryType = "arraybuffer";
channel.onmessage = (e) => {
    const chunk = new Uint8Array(e.data);
    const next = new Uint8Array(received.length + chunk.length);
    next.set(received);
    next.set(chunk, received.length);
    received = next;
    if (wake) {
        wake();
    }
};
const closed = new Promise((resolve) => {
    channel.onclose = (e) => resolve({ code: e.code, reason: e.reason });
});
async function read(n) {
    while (received.length < n) {
        await new Promise((r) => { wake = r; });
    }
    const out = received.slice(0, n);
    received = received.slice(n);
    return out;
}
// One send buffer, reused and overwritten right after each send.
const sendBuffer = new Uint8Array(64);
function send(bytes) {
    sendBuffer.set(bytes);
    channel.send(new Uint8Array(sendBuffer.buffer, 0, bytes.length));
    sendBuffer.fill(0xff);
}

const version = new TextDecoder().decode(await read(12));
send(new TextEncoder().encode("RFB 003.008\n"));
const count = (await read(1))[0];
await read(count);
send([1]);
await read(4);
send([1]);
const init = await read(24);
const width = (init[0] << 8) | init[1];
const height = (init[2] << 8) | init[3];
const nameLength = new DataView(init.buffer, init.byteOffset + 20, 4).getUint32(0);
await read(nameLength);
send([3, 0, 0, 0, 0, 0, width >> 8, width & 255, height >> 8, height & 255]);
await read(4 + 12);
const pixel = await read(4);
report({
    missing,
    readyState: channel.readyState,
    version,
    width,
    height,
    pixel: [pixel[2], pixel[1], pixel[0]],
    self: named.find((e) => e.name === "vnc:self")?.payload ?? null,
    release,
    close: opts.waitClose ? await closed : null,
});
