// A socket.io viewer for the end-to-end tests, with the official socket.io client.
//
//   node client.mjs '{"url":"http://127.0.0.1:6080","token":"...","containerId":"c1"}'
//
// Options: url, token, containerId, tokenIn ("auth" (default) or "query"),
// transports (default ["websocket"]), headers (extra request headers, e.g. Cookie),
// name (the display name a share link's viewer gives, sent as auth.name).
//
// Prints one JSON object per line for everything that happens:
//   {"ev":"connect"} {"ev":"connect_error","message":...} {"ev":"data","b64":...}
//   {"ev":"vnc:event","payload":...} {"ev":"vnc:resized","payload":...}
//   {"ev":"vnc:end","payload":...}
//   {"ev":"vnc:self"|"vnc:presence"|"vnc:control"|"vnc:control:requested","payload":...}
//   {"ev":"disconnect","reason":...}
// Reads one JSON command per line:
//   {"cmd":"send","b64":...}        vnc:data with the bytes as one binary attachment
//   {"cmd":"send_array","b64":...}  vnc:data with the bytes as an array of numbers
//   {"cmd":"emit","event":...,"payload":...}  another event, acknowledged:
//                                   prints {"ev":"ack","event":...,"payload":...}
//   {"cmd":"flood","event":...,"payload":...,"count":N}  the event N times, each
//                                   once the one before is acknowledged (acks not printed)
//   {"cmd":"pause"} / {"cmd":"resume"}  stop / start reading the TCP socket
//   {"cmd":"close"}
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const opts = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const query = {};
if (opts.containerId !== undefined) {
    query.containerId = opts.containerId;
}
const auth = {};
if (opts.name !== undefined) {
    auth.name = opts.name;
}
if (opts.token !== undefined) {
    if (opts.tokenIn === "query") {
        query.token = opts.token;
    } else {
        auth.token = opts.token;
    }
}

const socket = io(`${opts.url}/vnc`, {
    transports: opts.transports || ["websocket"],
    query,
    auth,
    extraHeaders: opts.headers || {},
    reconnection: false,
    timeout: 10000,
});

socket.on("connect", () => out({ ev: "connect" }));
socket.on("connect_error", (err) => {
    out({ ev: "connect_error", message: err.message, description: String(err.description ?? "") });
});
socket.on("vnc:data", (data) => out({ ev: "data", b64: Buffer.from(data).toString("base64") }));
socket.on("vnc:event", (payload) => out({ ev: "vnc:event", payload }));
socket.on("vnc:resized", (payload) => out({ ev: "vnc:resized", payload }));
socket.on("vnc:end", (payload) => out({ ev: "vnc:end", payload }));
socket.on("disconnect", (reason) => out({ ev: "disconnect", reason }));
for (const ev of ["vnc:self", "vnc:presence", "vnc:control", "vnc:control:requested"]) {
    socket.on(ev, (payload) => out({ ev, payload }));
}

// The ws library's net.Socket under the engine's websocket transport.
const tcp = () => socket.io.engine?.transport?.ws?._socket;

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
    const c = JSON.parse(line);
    switch (c.cmd) {
        case "send":
            socket.emit("vnc:data", Buffer.from(c.b64, "base64"));
            break;
        case "send_array":
            socket.emit("vnc:data", [...Buffer.from(c.b64, "base64")]);
            break;
        case "emit":
            // Another event (vnc:input, vnc:resize) with an acknowledgement.
            socket.emitWithAck(c.event, c.payload).then(
                (payload) => out({ ev: "ack", event: c.event, payload }),
                (err) => out({ ev: "ack", event: c.event, payload: { error: String(err) } }),
            );
            break;
        case "flood": {
            // Each event once the one before is acknowledged: a client the relay
            // keeps up with, so only the relay's own bounds can stop it.
            let left = c.count;
            const next = () => {
                if (left > 0 && socket.connected) {
                    left--;
                    socket.emit(c.event, c.payload, next);
                }
            };
            next();
            break;
        }
        case "pause":
            tcp()?.pause();
            break;
        case "resume":
            tcp()?.resume();
            break;
        case "close":
            socket.close();
            break;
    }
});
lines.on("close", () => {
    socket.close();
    process.exit(0);
});
