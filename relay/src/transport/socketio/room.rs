//! socket.io's rooms: the types of the server and its Redis adapter, the room of a
//! container's viewers, and the room events the relay tells them.

use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Emitter;
use socketioxide::layer::SocketIoLayer;
use socketioxide_redis::FredAdapter;

use crate::session::record::SessionRecord;

pub type Adapter = FredAdapter<Emitter>;
pub type SocketIoServer = SocketIo<Adapter>;
pub type Layer = SocketIoLayer<Adapter>;

pub const NAMESPACE: &str = "/vnc";

/// The socket.io room of a container's viewers.
pub fn room(cid: &str) -> String {
    format!("container:{cid}")
}

/// Tells the room's viewers on every node that a viewer came or went (`vnc:event`).
pub fn announce(server: Option<&SocketIoServer>, session: &SessionRecord, kind: &'static str) {
    let Some(ns) = server.and_then(|s| s.of(NAMESPACE)) else {
        return;
    };
    let event = json!({
        "type": kind,
        "cid": session.cid,
        "sub": session.sub,
        "scope": session.scope.as_str(),
        "transport": session.transport,
        "at": vnc_shared::schema::now_ms(),
    });
    let room = room(&session.cid);
    tokio::spawn(async move {
        if let Err(e) = ns.to(room).emit("vnc:event", &event).await {
            tracing::debug!(error = %e, "room announcement failed");
        }
    });
}

/// Hands a room event (from the room channel) to the room's socket.io viewers on this
/// node; each node delivers to its own viewers.
pub async fn room_event(server: &SocketIoServer, cid: &str, event: &serde_json::Value) {
    emit_local(server, cid, "vnc:event", event).await;
}

/// Emits `event` to the room's socket.io viewers on this node only (what reaches every
/// node through the room channel is emitted by each node to its own viewers).
pub async fn emit_local(
    server: &SocketIoServer,
    cid: &str,
    event: &'static str,
    body: &serde_json::Value,
) {
    if let Some(ns) = server.of(NAMESPACE)
        && let Err(e) = ns.local().to(room(cid)).emit(event, body).await
    {
        tracing::debug!(container.id = %cid, error = %e, event, "room event not delivered");
    }
}
