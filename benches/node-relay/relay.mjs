// A minimal Node socket.io VNC relay: the baseline vnc-relay's socket.io path is
// measured against in benches/socketio.sh. It is written the way a NestJS gateway
// typically does it (`@WebSocketGateway({ namespace: "/vnc" })` with
// `handleConnection` / `@SubscribeMessage("vnc:data")` / `handleDisconnect`): a
// socket.io 4 server, one `net.connect` per socket, bytes forwarded both ways as
// `vnc:data` events, socket.io defaults otherwise (no backpressure, no auth: any token
// is accepted, as a benchmark baseline needs no more).
//
//   node relay.mjs --listen 127.0.0.1:0 --upstream src=127.0.0.1:5901 --upstream echo=127.0.0.1:5902
//
// Each `--upstream NAME=HOST:PORT` serves sockets whose handshake query has
// `containerId=NAME` (a gateway would look the container up; a map is enough here); a
// bare `--upstream HOST:PORT` serves every container. Prints `LISTENING HOST:PORT` once
// it accepts connections.

import { createServer } from "node:http";
import net from "node:net";
import { parseArgs } from "node:util";
import { Server } from "socket.io";

const { values } = parseArgs({
    options: {
        listen: { type: "string", default: process.env.NODE_RELAY_LISTEN ?? "127.0.0.1:0" },
        upstream: { type: "string", multiple: true, default: [] },
    },
});

function splitHostPort(s) {
    const at = s.lastIndexOf(":");
    if (at < 0) {
        throw new Error(`expected HOST:PORT, got ${s}`);
    }
    return [s.slice(0, at), Number(s.slice(at + 1))];
}

const upstreams = new Map();
let fallback = null;
for (const spec of values.upstream.length ? values.upstream : (process.env.NODE_RELAY_UPSTREAM ?? "").split(",").filter(Boolean)) {
    const eq = spec.indexOf("=");
    if (eq < 0) {
        fallback = splitHostPort(spec);
    } else {
        upstreams.set(spec.slice(0, eq), splitHostPort(spec.slice(eq + 1)));
    }
}
if (!fallback && upstreams.size === 0) {
    console.error("relay.mjs: at least one --upstream [NAME=]HOST:PORT is required");
    process.exit(2);
}

const httpServer = createServer();
const io = new Server(httpServer, { cors: { origin: "*" } });

io.of("/vnc").on("connection", (socket) => {
    const target = upstreams.get(socket.handshake.query.containerId) ?? fallback;
    if (!target) {
        socket.emit("vnc:end", { code: 1008, reason: "unknown container" });
        socket.disconnect(true);
        return;
    }
    const [host, port] = target;
    const tcp = net.connect(port, host);

    tcp.on("data", (data) => socket.emit("vnc:data", data));
    tcp.on("close", () => {
        if (socket.connected) {
            socket.emit("vnc:end", { code: 1000, reason: "upstream closed" });
            socket.disconnect(true);
        }
    });
    tcp.on("error", () => {
        if (socket.connected) {
            socket.emit("vnc:end", { code: 1011, reason: "upstream error" });
            socket.disconnect(true);
        }
    });

    socket.on("vnc:data", (data) => tcp.write(data));
    socket.on("disconnect", () => tcp.destroy());
});

const [listenHost, listenPort] = splitHostPort(values.listen);
httpServer.listen(listenPort, listenHost, () => {
    const { address, port } = httpServer.address();
    console.log(`LISTENING ${address}:${port}`);
});

for (const sig of ["SIGINT", "SIGTERM"]) {
    process.on(sig, () => {
        io.close();
        process.exit(0);
    });
}
