//! The pub/sub feed of a relay node. Rooms: it subscribes to `{prefix}room:{cid}` (a
//! sharded channel: `SSUBSCRIBE`, served by the node of the container's slot) while
//! it holds at least one session of container `cid`, and hands every event published
//! there (by control: `container.stopping`, `container.stopped`, ...) to that room's
//! viewers: socket.io viewers get it as `vnc:event`; every session of the room ends
//! with 4004 on `container.stopped` (raw WebSocket viewers can't receive events, only
//! close codes). Kicks: it is always subscribed to `{prefix}control`, whose kicks end
//! the named local sessions with 4003; after each (re)subscribe it has the heartbeat
//! check for revocations published while it was away (see `registry.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, mpsc};
use vnc_shared::schema::{Keys, RoomMessage};

use crate::node::live::RoomChange;
use crate::node::{Node, driver};
use crate::session::end::Stop;
use crate::transport::socketio::room::room_event;

/// Runs until the relay drops its end of `changes`.
pub async fn feed(
    subscriber: SubscriberClient,
    node: Arc<Node>,
    mut changes: mpsc::UnboundedReceiver<RoomChange>,
    resync: Arc<Notify>,
) {
    let keys = node.store().keys().clone();
    let live = node.live().clone();
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let control = keys.control_channel();
    // Presence publications: at most one running per room, then a pause; a change
    // meanwhile runs one more after it (a burst of joins publishes twice, not once per
    // join).
    let (published_tx, mut published) = mpsc::unbounded_channel::<String>();
    let mut presence = PresenceQueue::default();
    vnc_shared::redis::keep_connecting(subscriber.clone());
    // Its reconnects are handled below (with the control channel and failed rooms).
    node.store()
        .keep_shard_subscriptions(subscriber.clone(), false);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Some(RoomChange::Joined(cid)) => {
                    subscribe(&subscriber, &keys, &cid).await;
                    // What was said in the room before this node listened.
                    driver::learn(&node, &cid).await;
                }
                Some(RoomChange::Presence(cid)) => {
                    if presence.wanted(&cid) {
                        publish_presence(&node, cid, &published_tx);
                    }
                }
                Some(RoomChange::Left(cid)) => {
                    if let Err(e) = subscriber.sunsubscribe(keys.room_channel(&cid)).await {
                        tracing::debug!(container.id = %cid, error = %e, "room unsubscribe failed");
                    }
                }
                None => break,
            },
            Some(cid) = published.recv() => {
                if presence.done(&cid) {
                    publish_presence(&node, cid, &published_tx);
                }
            }
            // A new connection has no subscriptions: take the control channel and
            // every room this node holds again (also those whose subscribe failed while
            // Redis was away). The first connection counts as one.
            r = reconnects.recv() => match r {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    if let Err(e) = subscriber.subscribe(control.as_str()).await {
                        tracing::warn!(error = %e, "control channel subscribe failed");
                    }
                    for cid in live.rooms() {
                        subscribe(&subscriber, &keys, &cid).await;
                    }
                    resync.notify_one();
                }
                Err(RecvError::Closed) => break,
            },
            m = messages.recv() => match m {
                Ok(m) if m.channel == control => {
                    if let Some(payload) = m.value.as_str() {
                        super::registry::kick(&live, &payload);
                    }
                }
                Ok(m) => deliver(&node, &keys, m).await,
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "room feed lagged"),
                Err(RecvError::Closed) => break,
            },
        }
    }
    let _ = subscriber.quit().await;
}

/// The rooms whose presence is being published, and those changed meanwhile.
#[derive(Default)]
struct PresenceQueue {
    running: HashSet<String>,
    again: HashSet<String>,
}

impl PresenceQueue {
    /// A change: true when a publication should start now (none is running).
    fn wanted(&mut self, cid: &str) -> bool {
        if self.running.contains(cid) {
            self.again.insert(cid.to_owned());
            return false;
        }
        self.running.insert(cid.to_owned());
        true
    }

    /// A publication ended: true when the room changed meanwhile and gets another.
    fn done(&mut self, cid: &str) -> bool {
        if self.again.remove(cid) {
            return true;
        }
        self.running.remove(cid);
        false
    }
}

/// Least time from one presence publication of a room to the next. A publication reads
/// every live session's record of the room (one command each), so without a pause a
/// room of hundreds with steady churn would keep Redis busy with its presence, and
/// every other command (admissions, kicks) waiting behind it. A viewer sees a change at
/// most this much later.
const PRESENCE_PAUSE: Duration = Duration::from_millis(100);

/// Publishes the room's presence in a task of its own; says when it is done and the
/// pause after it is over.
fn publish_presence(node: &Arc<Node>, cid: String, done: &mpsc::UnboundedSender<String>) {
    let node = node.clone();
    let done = done.clone();
    tokio::spawn(async move {
        if let Err(e) = driver::publish_presence(&node, &cid).await {
            tracing::debug!(container.id = %cid, error = %e, "presence not published");
        }
        tokio::time::sleep(PRESENCE_PAUSE).await;
        let _ = done.send(cid);
    });
}

async fn subscribe(subscriber: &SubscriberClient, keys: &Keys, cid: &str) {
    if let Err(e) = subscriber.ssubscribe(keys.room_channel(cid)).await {
        // Retried on the next reconnect.
        tracing::warn!(container.id = %cid, error = %e, "room subscribe failed");
    }
}

/// Hands one room event to the room's viewers on this node; the driver lease's and
/// presence messages go to `driver.rs`.
async fn deliver(node: &Node, keys: &Keys, m: Message) {
    let Some(cid) = keys.room_of(&m.channel) else {
        return;
    };
    let Some(text) = m.value.as_str() else {
        tracing::warn!(container.id = %cid, "ignoring a room event that isn't text");
        return;
    };
    if let Ok(message) = serde_json::from_str::<RoomMessage>(&text) {
        return driver::on_message(node, message).await;
    }
    let Some(event) = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .filter(|e| e.get("type").is_some_and(|t| t.is_string()))
    else {
        tracing::warn!(container.id = %cid, "ignoring a room event that isn't JSON with a type");
        return;
    };
    if let Some(server) = node.socketio() {
        room_event(server, cid, &event).await;
    }
    if event["type"] == "container.stopped" {
        let ended = node.live().stop_room(cid, Stop::ContainerStopped);
        tracing::info!(container.id = %cid, sessions = ended, "container stopped: ending its sessions");
    }
}

#[cfg(test)]
mod tests {
    use super::PresenceQueue;

    #[test]
    fn a_burst_of_changes_publishes_a_room_twice_and_rooms_apart() {
        let mut q = PresenceQueue::default();
        assert!(q.wanted("c1"));
        assert!(!q.wanted("c1") && !q.wanted("c1"));
        assert!(q.wanted("c2"), "another room is not held up");
        assert!(q.done("c1"), "changed meanwhile: once more");
        assert!(!q.done("c1"), "nothing since: the room is free");
        assert!(q.wanted("c1"));
        assert!(!q.done("c2"));
    }
}
