//! The socket.io endpoint: namespace `/vnc` on the public listener beside the raw
//! WebSocket routes, socket.io v5 over Engine.IO v4, websocket transport only.
//!
//! A socket is admitted by the same checks as a raw WebSocket (token from the
//! handshake's `auth.token` or `?token=`, `containerId` from the query, revocation,
//! container record, upstream connect); a refusal reaches the client as `connect_error`
//! with the reason. An admitted socket joins room `container:{cid}`; the Redis adapter
//! makes room broadcasts reach viewers on every relay node.
//!
//! Events: `vnc:data` both ways (one binary attachment of raw RFB bytes, at most
//! [`MAX_DATA_EVENT`]), `vnc:input` and `vnc:resize` from the client (acknowledged),
//! `vnc:resized` to the client with the server's answer to each `vnc:resize` (see
//! `resize.rs`), `vnc:event` room events to the client, `vnc:end {code, reason}` before
//! the relay disconnects.

mod control;
mod pumps;
mod resize;
pub mod room;
mod written;

pub use pumps::{Input, Upward};
pub use room::{Adapter, Layer, NAMESPACE, SocketIoServer, room};
pub use written::{Signaled, WriteSignal};

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::handler::message::FromMessage;
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide::{ParserConfig, SocketIo, TransportType};
use socketioxide_core::Value;
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::admission::reject::Reject;
use crate::admission::{self, Admitted, auth, client};
use crate::node::Node;
use crate::node::store::COMMAND_TIMEOUT;
use crate::session::gate::InputGate;
use crate::session::rfb::Barred;
use crate::session::{self, end::Stop, end::StopSignal};
use crate::wire::signal::Signal;
use pumps::SocketIoTransport;

/// Largest `vnc:data` payload either way; bigger reads are split, bigger events from a
/// browser close its connection.
pub const MAX_DATA_EVENT: usize = 64 * 1024;
/// `vnc:data` events queued per socket before the relay stops reading from the VNC
/// server (at most this many events of [`MAX_DATA_EVENT`] in memory).
const SOCKET_BUFFER: usize = 16;
/// Room in each socket's queue beyond its `vnc:data` events, for Engine.IO's pings
/// (a ping that finds the queue full closes the socket), acknowledgements, room events,
/// `vnc:resized` and `vnc:end`: all small.
const OTHER_PACKETS: usize = 64;
/// `vnc:data` events from the browser queued for the VNC server; more means the
/// browser outruns the server and the session ends.
const INPUT_QUEUE: usize = 16;
/// Pause before retrying to start socket.io when Redis doesn't answer.
const START_RETRY: Duration = Duration::from_secs(1);

/// A socket.io request for a transport other than websocket gets a 400 that says what
/// to do (Engine.IO's own answer is a bare "Bad request").
pub fn refuse_transport<B>(req: &http::Request<B>) -> Option<http::Response<Full<Bytes>>> {
    if !is_socketio(req) {
        return None;
    }
    let transport = auth::query_param(req.uri().query(), "transport");
    (transport.as_deref() != Some("websocket")).then(|| {
        Reject::BadRequest(
            "this relay accepts the socket.io websocket transport only: connect with transports: [\"websocket\"]",
        )
        .into_response()
    })
}

/// Whether a request is for socketioxide (Engine.IO's path).
pub fn is_socketio<B>(req: &http::Request<B>) -> bool {
    req.uri().path().starts_with("/socket.io/")
}

/// Starts socket.io once Redis answers (the adapter subscribes at start), retrying
/// until it does. Until then `/socket.io/` answers 503.
pub async fn start(node: Arc<Node>) {
    loop {
        match build(&node).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "socket.io not started yet; retrying");
                tokio::time::sleep(START_RETRY).await;
            }
        }
    }
}

async fn build(node: &Arc<Node>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let subscriber = node.store().subscriber(true)?;
    let config = RedisAdapterConfig::new()
        .with_prefix(format!("{}socket.io", node.config().registry.redis_prefix))
        .with_request_timeout(COMMAND_TIMEOUT);
    let adapter = RedisAdapterCtr::new_with_fred_config(subscriber.clone(), config).await?;
    // The adapter subscribes to its channels once, as its namespace starts; only once
    // it is built (a failed build retries with a new client). fred's own
    // `manage_subscriptions` took back one of the adapter's three channels after a
    // failover (`tests/tests/redis_sentinel.rs`).
    node.store().keep_shard_subscriptions(subscriber, true);
    let config = node.config();
    let limits = &config.limits;
    // Room for the Engine.IO and socket.io framing around one full `vnc:data` event.
    let max_message = MAX_DATA_EVENT + 1024;
    let (layer, io) = SocketIo::builder()
        .transports([TransportType::Websocket])
        .ping_interval(limits.ping_interval)
        .ping_timeout(limits.ping_interval * limits.max_missed_pongs)
        .connect_timeout(limits.handshake_timeout)
        .max_buffer_size(SOCKET_BUFFER + OTHER_PACKETS)
        .max_payload(max_message as u64)
        .ws_max_message_size(max_message)
        .ws_max_frame_size(max_message)
        .with_parser(
            ParserConfig::common()
                .max_incoming_binaries(1)
                .max_incoming_binary_buf_size(MAX_DATA_EVENT),
        )
        .with_adapter::<Adapter>(adapter)
        .build_layer();
    let weak = Arc::downgrade(node);
    let admit = {
        let weak = weak.clone();
        async move |socket: SocketRef<Adapter>, TryData(auth): TryData<serde_json::Value>| {
            let node = weak.upgrade().ok_or(Reject::Draining)?;
            authorize(&node, &socket, auth.ok()).await.inspect_err(|e| {
                e.count();
                tracing::debug!(reason = %e, "socket.io connect refused");
            })
        }
    };
    let connected = async move |socket: SocketRef<Adapter>| on_connect(weak, socket);
    io.ns(NAMESPACE, connected.with(admit)).await?;
    node.socketio_started(io, layer);
    tracing::info!("socket.io ready");
    Ok(())
}

/// What an admitted socket carries from the middleware to the connect handler.
struct Connecting {
    admitted: Admitted,
    written: WriteSignal,
    stop: Arc<StopSignal>,
    /// Set once the socket is gone (the stop signal keeps the session's first cause).
    gone: Arc<Signal>,
    input: mpsc::Receiver<Upward>,
}

/// Socket extension: the admitted session until the connect handler takes it.
#[derive(Clone)]
struct ConnectingSlot(Arc<Mutex<Option<Connecting>>>);

/// Socket extension: where the browser's `vnc:data` and structured input go, and the
/// session's stop signal.
#[derive(Clone)]
struct Uplink {
    input: mpsc::Sender<Upward>,
    stop: Arc<StopSignal>,
    view_only: bool,
    /// The token lets clipboard text reach the desktop.
    clipboard_in: bool,
    gate: Arc<InputGate>,
}

impl Uplink {
    /// Queues for the VNC server, in arrival order; a full queue ends the session.
    fn push(&self, up: Upward) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.input.try_send(up) {
            self.stop.set(Stop::InputOverflow);
        }
    }
}

/// The connect middleware: every check a raw WebSocket passes, in the same order.
async fn authorize(
    node: &Arc<Node>,
    socket: &SocketRef<Adapter>,
    auth: Option<serde_json::Value>,
) -> Result<(), Reject> {
    if node.is_draining() {
        return Err(Reject::Draining);
    }
    let req = socket.req_parts();
    let written = req
        .extensions
        .get::<WriteSignal>()
        .cloned()
        .ok_or(Reject::BadRequest(
            "the socket.io WebSocket must be the first request on its connection",
        ))?;
    let allowed = &node.config().node.allowed_origins;
    auth::check_origin(allowed, &req.headers)?;
    let query = req.uri.query();
    let token = match auth.as_ref().and_then(|a| a.get("token")?.as_str()) {
        Some(token) => token.to_owned(),
        None => auth::request_token(allowed, query, &req.headers)?,
    };
    let cid = auth::query_param(query, "containerId")
        .ok_or(Reject::BadRequest("containerId missing from the query"))?;
    let client = client::of_request(&req.extensions, &req.headers, &node.config().node)?;
    let name = auth.as_ref().and_then(|a| a.get("name")?.as_str());
    let admitted = admission::admit(node, &token, Some(&cid), "socketio", client, name).await?;
    // Handlers go in before socketioxide acknowledges the connect (it runs the connect
    // handler only afterwards, in a task of its own): the client may send at once.
    let stop = Arc::new(StopSignal::default());
    let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
    socket.extensions.insert(Uplink {
        input,
        stop: stop.clone(),
        view_only: admitted.policy.view_only,
        clipboard_in: admitted.policy.clipboard_in,
        gate: admitted.gate.clone(),
    });
    control::install(socket, Arc::downgrade(node), admitted.record.clone());
    // The work happens in the extractors, which socketioxide runs in arrival order;
    // handlers themselves run as separate tasks, in no particular order. The handlers
    // only answer acknowledgements.
    socket.on("vnc:data", async |_: DataEvent| {});
    socket.on("vnc:input", acknowledge::<InputMessage>);
    socket.on("vnc:resize", acknowledge::<ResizeMessage>);
    let gone = Arc::new(Signal::default());
    socket.on_disconnect({
        let stop = stop.clone();
        let gone = gone.clone();
        async move |reason: DisconnectReason| {
            let why = match reason {
                DisconnectReason::HeartbeatTimeout => Stop::PingTimeout,
                _ => Stop::ClientGone,
            };
            stop.set(why);
            gone.set(1);
        }
    });
    let connecting = Connecting {
        admitted,
        written,
        stop,
        gone,
        input: input_rx,
    };
    socket
        .extensions
        .insert(ConnectingSlot(Arc::new(Mutex::new(Some(connecting)))));
    Ok(())
}

fn on_connect(node: Weak<Node>, socket: SocketRef<Adapter>) {
    let connecting = socket
        .extensions
        .remove::<ConnectingSlot>()
        .and_then(|slot| slot.0.lock().ok()?.take());
    let (Some(node), Some(connecting)) = (node.upgrade(), connecting) else {
        let _ = socket.disconnect();
        return;
    };
    let Connecting {
        admitted,
        written,
        stop,
        gone,
        input,
    } = connecting;
    socket.join(room(&admitted.claims.cid));
    control::introduce(&socket, &admitted.record, node.live().mode());
    let span = session::span(&admitted, "socketio");
    let transport = SocketIoTransport::new(socket, written, input, gone);
    let tracker = node.tracker().clone();
    tracker.spawn(session::drive(node, admitted, stop, transport).instrument(span));
}

/// Extractor of `vnc:data` that queues the bytes for the VNC server as it runs, in
/// arrival order. Anything but exactly one binary attachment ends the session (1008):
/// RFB bytes as JSON arrays of numbers are refused, not guessed at.
struct DataEvent;

#[derive(Debug, thiserror::Error)]
#[error("vnc:data on a socket without a session")]
struct NoSession;

impl FromMessage<Adapter> for DataEvent {
    type Error = NoSession;

    fn from_message(
        socket: Arc<Socket<Adapter>>,
        v: Value,
        _ack: Option<i64>,
    ) -> Result<Self, Self::Error> {
        let uplink = socket.extensions.get::<Uplink>().ok_or(NoSession)?;
        match v {
            Value::Str(_, Some(mut bins)) if bins.len() == 1 => {
                uplink.push(Upward::Data(bins.pop_front().unwrap_or_default()));
            }
            _ => uplink.stop.set(Stop::BadData),
        }
        Ok(DataEvent)
    }
}

/// Longest `vnc:input` clipboard text, in bytes (it travels in one event).
pub const MAX_CLIPBOARD_TEXT: usize = MAX_DATA_EVENT;
/// Largest `vnc:resize` side, in pixels.
pub const MAX_DESKTOP_SIDE: u16 = 16384;

/// `vnc:input` as the browser sends it.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum InputMessage {
    Key { down: bool, keysym: u32 },
    Pointer { x: u16, y: u16, buttons: u8 },
    Clipboard { text: String },
}

/// `vnc:resize` as the browser sends it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeMessage {
    width: u16,
    height: u16,
}

/// The first argument of an event as JSON.
fn first_arg<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    let Value::Str(text, _) = v else {
        return Err("expected a JSON object".into());
    };
    // `["vnc:input", {...}]`: the event name, then its arguments.
    let args: serde_json::Value =
        serde_json::from_str(text.as_str()).map_err(|e| format!("not JSON: {e}"))?;
    let arg = args
        .as_array()
        .and_then(|a| a.get(1))
        .cloned()
        .ok_or("expected one argument")?;
    serde_json::from_value(arg).map_err(|e| e.to_string())
}

/// Validates structured input and queues it in arrival order, unless the session is
/// view-only; the handler acknowledges with the outcome.
fn queue_input(socket: &Socket<Adapter>, parsed: Result<Input, String>) -> Result<(), String> {
    let uplink = socket.extensions.get::<Uplink>().ok_or("no session")?;
    let input = parsed?;
    let clipboard = matches!(input, Input::Clipboard(_)) && !uplink.clipboard_in;
    let barred = Barred::check(uplink.view_only, &uplink.gate)
        .or_else(|| clipboard.then_some(Barred::Clipboard));
    if let Some(why) = barred {
        why.count("vnc_input");
        return Err(match why {
            Barred::View => "view-only session: input is not allowed".into(),
            Barred::NotDriver => "not in control: ask for control first".into(),
            Barred::Clipboard => "this session may not send clipboard text to the desktop".into(),
        });
    }
    uplink.push(Upward::Input(input));
    Ok(())
}

/// Answers a structured event's acknowledgement with `{ok}` or `{ok: false, error}`.
async fn acknowledge<M: Structured>(ack: AckSender<Adapter>, event: StructuredEvent<M>) {
    let body = match event.0 {
        Ok(()) => json!({ "ok": true }),
        Err(error) => json!({ "ok": false, "error": error }),
    };
    let _ = ack.send(&body);
}

/// A structured event's payload: validated into the [`Input`] it asks for.
trait Structured: serde::de::DeserializeOwned {
    fn into_input(self) -> Result<Input, String>;
}

/// `vnc:input`: `{type:"key",down,keysym}`, `{type:"pointer",x,y,buttons}` (buttons
/// 0..=127) or `{type:"clipboard",text}` (at most [`MAX_CLIPBOARD_TEXT`]).
impl Structured for InputMessage {
    fn into_input(self) -> Result<Input, String> {
        match self {
            InputMessage::Key { down, keysym } => Ok(Input::Key { down, keysym }),
            InputMessage::Pointer { buttons, .. } if buttons > 0x7f => {
                Err("buttons must be 0..=127".into())
            }
            InputMessage::Pointer { x, y, buttons } => Ok(Input::Pointer { x, y, buttons }),
            InputMessage::Clipboard { text } if text.len() > MAX_CLIPBOARD_TEXT => {
                Err(format!("clipboard text over {MAX_CLIPBOARD_TEXT} bytes"))
            }
            InputMessage::Clipboard { text } => Ok(Input::Clipboard(text)),
        }
    }
}

/// `vnc:resize` `{width,height}` (1..=[`MAX_DESKTOP_SIDE`]): one SetDesktopSize with
/// one screen.
impl Structured for ResizeMessage {
    fn into_input(self) -> Result<Input, String> {
        let side = 1..=MAX_DESKTOP_SIDE;
        if side.contains(&self.width) && side.contains(&self.height) {
            Ok(Input::Resize {
                width: self.width,
                height: self.height,
            })
        } else {
            Err(format!("width and height must be 1..={MAX_DESKTOP_SIDE}"))
        }
    }
}

/// Extractor of a structured event: validates it and queues it in arrival order; holds
/// the outcome for the handler's acknowledgement.
struct StructuredEvent<M>(Result<(), String>, PhantomData<M>);

impl<M: Structured> FromMessage<Adapter> for StructuredEvent<M> {
    type Error = NoSession;

    fn from_message(
        socket: Arc<Socket<Adapter>>,
        v: Value,
        _ack: Option<i64>,
    ) -> Result<Self, Self::Error> {
        let parsed = first_arg::<M>(&v).and_then(M::into_input);
        Ok(StructuredEvent(queue_input(&socket, parsed), PhantomData))
    }
}
