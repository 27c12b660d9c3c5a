// vnc-socketio.js: a noVNC channel over the relay's socket.io endpoint.
//
//   import { connect } from "/static/vnc-socketio.js";
//   const channel = await connect("https://relay.example.com", token, containerId, { name });
//   const rfb = new RFB(document.getElementById("screen"), channel);
//
// connect() resolves once the relay admitted the socket (namespace /vnc), and rejects
// with the relay's reason (connect_error) otherwise. The channel has what noVNC 1.7
// asks of a raw channel (send, close, binaryType, protocol, readyState, onopen,
// onmessage, onclose, onerror). The relay's `vnc:end {code, reason}` and any
// disconnect become onclose({code, reason, wasClean}). `name` (optional) is the display
// name of a share session, sent as the handshake's `auth.name`.
//
// The relay's other events (vnc:self, vnc:presence, vnc:control, vnc:control:requested,
// vnc:event, vnc:resized) reach `channel.onnamedevent(name, payload)`; those that come
// before the page sets it wait for it. `channel.emit(name, payload)` sends an event with
// an acknowledgement and resolves with the relay's answer (`{ok, ...}`), e.g.
// `await channel.emit("vnc:control:request")`.
//
// This speaks socket.io v5 over Engine.IO v4 on a WebSocket, the only transport the
// relay accepts, so the page needs no socket.io client library: a handful of packet
// types on one namespace is all the protocol this channel uses.

const NAMESPACE = "/vnc";
// Engine.IO packet types (first character of a text frame).
const EIO_OPEN = "0";
const EIO_CLOSE = "1";
const EIO_PING = "2";
const EIO_PONG = "3";
const EIO_MESSAGE = "4";
// socket.io packet types (second character).
const SIO_CONNECT = "0";
const SIO_DISCONNECT = "1";
const SIO_EVENT = "2";
const SIO_ACK = "3";
const SIO_CONNECT_ERROR = "4";
const SIO_BINARY_EVENT = "5";
const DATA_HEADER = `${EIO_MESSAGE}${SIO_BINARY_EVENT}1-${NAMESPACE},["vnc:data",{"_placeholder":true,"num":0}]`;
// Largest vnc:data payload the relay takes.
const MAX_DATA_EVENT = 64 * 1024;
// Named events kept until the page sets onnamedevent (it does right after connect());
// past this the oldest go.
const MAX_EARLY_EVENTS = 64;
// Acknowledged events waiting for their answer; more are refused at once (the relay
// itself answers 8 control requests a second per socket).
const MAX_PENDING_ACKS = 16;

function socketUrl(url, containerId) {
    const u = new URL(url, globalThis.location ? globalThis.location.href : undefined);
    u.protocol = u.protocol === "https:" || u.protocol === "wss:" ? "wss:" : "ws:";
    u.pathname = "/socket.io/";
    u.search = "";
    u.searchParams.set("EIO", "4");
    u.searchParams.set("transport", "websocket");
    u.searchParams.set("containerId", containerId);
    return u.toString();
}

// Splits "<type><rest>" of a socket.io packet on our namespace into [type, rest],
// where rest is the text after "/vnc," (or after the attachment count for binary).
function parsePacket(text) {
    const type = text[0];
    let rest = text.slice(1);
    if (type === SIO_BINARY_EVENT) {
        const dash = rest.indexOf("-");
        rest = rest.slice(dash + 1);
    }
    if (!rest.startsWith(NAMESPACE)) {
        return [type, null];
    }
    rest = rest.slice(NAMESPACE.length);
    if (rest.startsWith(",")) {
        rest = rest.slice(1);
    }
    return [type, rest];
}

class SocketIoChannel {
    constructor(ws) {
        this.binaryType = "arraybuffer";
        this.protocol = "";
        this.readyState = "connecting";
        this.onopen = null;
        this.onerror = null;
        this.onclose = null;
        this._ws = ws;
        this._onmessage = null;
        // Bytes that arrived before noVNC attached its handler, in order.
        this._pending = [];
        this._flushing = false;
        this._expectBinary = null;
        this._end = null;
        this._onEvent = null;
        this._onNamed = null;
        this._early = [];
        this._acks = new Map();
        this._nextAck = 0;
    }

    get onmessage() {
        return this._onmessage;
    }

    set onmessage(handler) {
        this._onmessage = handler;
        // noVNC attaches, then finishes its own set-up: deliver what's queued after that.
        if (handler && this._pending.length && !this._flushing) {
            this._flushing = true;
            setTimeout(() => this._flush(), 0);
        }
    }

    send(data) {
        if (this.readyState !== "open") {
            return;
        }
        // noVNC reuses its send buffer, so copy before the bytes leave this call.
        let bytes;
        if (data instanceof ArrayBuffer) {
            bytes = new Uint8Array(data.slice(0));
        } else if (ArrayBuffer.isView(data)) {
            bytes = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
        } else {
            bytes = new TextEncoder().encode(String(data));
        }
        for (let at = 0; at < bytes.length; at += MAX_DATA_EVENT) {
            this._ws.send(DATA_HEADER);
            this._ws.send(bytes.subarray(at, at + MAX_DATA_EVENT));
        }
    }

    close() {
        if (this.readyState === "closed" || this.readyState === "closing") {
            return;
        }
        this.readyState = "closing";
        try {
            this._ws.send(`${EIO_MESSAGE}${SIO_DISCONNECT}${NAMESPACE},`);
        } catch (e) {
            // The socket is already gone; onclose follows.
        }
        this._ws.close(1000);
    }

    // Room events (vnc:event) for pages that want them.
    set onevent(handler) {
        this._onEvent = handler;
    }

    get onevent() {
        return this._onEvent;
    }

    // The relay's named events: handler(name, payload); queued ones are delivered now.
    set onnamedevent(handler) {
        this._onNamed = handler;
        const early = this._early;
        this._early = [];
        for (const [name, payload] of early) {
            this._named(name, payload);
        }
    }

    get onnamedevent() {
        return this._onNamed;
    }

    // Sends event `name` (with `payload` when given) and resolves with the relay's
    // acknowledgement; rejects when the channel is not open or closes first.
    emit(name, payload) {
        if (this.readyState !== "open") {
            return Promise.reject(new Error("not connected"));
        }
        if (this._acks.size >= MAX_PENDING_ACKS) {
            return Promise.reject(new Error("too many requests waiting for the relay"));
        }
        const id = this._nextAck++;
        const args = payload === undefined ? [name] : [name, payload];
        return new Promise((resolve, reject) => {
            this._acks.set(id, { resolve, reject });
            this._ws.send(`${EIO_MESSAGE}${SIO_EVENT}${NAMESPACE},${id}${JSON.stringify(args)}`);
        });
    }

    _named(name, payload) {
        if (this._onNamed) {
            this._onNamed(name, payload);
        } else if (this._early.push([name, payload]) > MAX_EARLY_EVENTS) {
            this._early.shift();
        }
    }

    _acked(id, args) {
        const pending = this._acks.get(id);
        if (pending) {
            this._acks.delete(id);
            pending.resolve(args[0]);
        }
    }

    _flush() {
        this._flushing = false;
        const pending = this._pending;
        this._pending = [];
        for (const data of pending) {
            this._deliver(data);
        }
    }

    _deliver(data) {
        if (this._onmessage && !this._pending.length && !this._flushing) {
            this._onmessage({ data });
        } else {
            this._pending.push(data);
        }
    }

    _finish(code, reason) {
        if (this.readyState === "closed") {
            return;
        }
        this.readyState = "closed";
        const end = this._end || { code, reason };
        for (const pending of this._acks.values()) {
            pending.reject(new Error("the connection closed"));
        }
        this._acks.clear();
        if (this.onclose) {
            this.onclose({ code: end.code, reason: end.reason, wasClean: end.code === 1000 });
        }
    }
}

/**
 * Opens a socket.io connection to the relay at `url` (http(s) or ws(s) origin of the
 * relay) for container `containerId` with VNC token `token` (and `options.name`, a
 * share session's display name); resolves to a noVNC channel, rejects with an Error
 * carrying the relay's reason.
 */
export function connect(url, token, containerId, options = {}) {
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(socketUrl(url, containerId));
        ws.binaryType = "arraybuffer";
        const channel = new SocketIoChannel(ws);
        const auth = options.name ? { token, name: options.name } : { token };
        let settled = false;
        const fail = (message) => {
            if (!settled) {
                settled = true;
                reject(new Error(message));
            }
        };

        ws.onmessage = (e) => {
            if (typeof e.data !== "string") {
                if (channel._expectBinary === "vnc:data") {
                    channel._expectBinary = null;
                    channel._deliver(e.data);
                }
                return;
            }
            const text = e.data;
            switch (text[0]) {
                case EIO_OPEN:
                    ws.send(`${EIO_MESSAGE}${SIO_CONNECT}${NAMESPACE},${JSON.stringify(auth)}`);
                    return;
                case EIO_PING:
                    ws.send(EIO_PONG);
                    return;
                case EIO_CLOSE:
                    ws.close();
                    return;
                case EIO_MESSAGE:
                    break;
                default:
                    return;
            }
            const [type, rest] = parsePacket(text.slice(1));
            if (rest === null) {
                return;
            }
            switch (type) {
                case SIO_CONNECT:
                    channel.readyState = "open";
                    settled = true;
                    resolve(channel);
                    return;
                case SIO_CONNECT_ERROR: {
                    let message = "connection refused";
                    try {
                        message = JSON.parse(rest).message || message;
                    } catch (err) {
                        // keep the generic message
                    }
                    fail(message);
                    ws.close();
                    return;
                }
                case SIO_BINARY_EVENT: {
                    const [name] = JSON.parse(rest);
                    channel._expectBinary = name;
                    return;
                }
                case SIO_EVENT: {
                    // An event the relay wants acknowledged carries an id first: none do.
                    const [name, payload] = JSON.parse(rest.replace(/^\d+/, ""));
                    if (name === "vnc:end") {
                        // The relay ends the session: hang up now instead of leaving
                        // it to wait out its grace.
                        channel._end = { code: payload.code, reason: payload.reason };
                        ws.close(1000);
                        return;
                    }
                    if (name === "vnc:event" && channel._onEvent) {
                        channel._onEvent(payload);
                    }
                    channel._named(name, payload);
                    return;
                }
                case SIO_ACK: {
                    const id = /^\d+/.exec(rest);
                    if (id) {
                        channel._acked(Number(id[0]), JSON.parse(rest.slice(id[0].length)));
                    }
                    return;
                }
                case SIO_DISCONNECT:
                    ws.close(1000);
                    return;
                default:
                    return;
            }
        };
        ws.onerror = () => {
            fail("could not reach the relay's socket.io endpoint");
            if (channel.onerror) {
                channel.onerror(new Event("error"));
            }
        };
        ws.onclose = (e) => {
            fail(`connection closed (${e.code}${e.reason ? ": " + e.reason : ""})`);
            channel._finish(e.code || 1006, e.reason || "connection lost");
        };
    });
}
