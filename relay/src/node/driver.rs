//! One driver per desktop, across nodes (`input = "lease"`; see "Sharing and control"
//! in docs/architecture.md): the lease `{prefix}driver:{cid}` names the one session of
//! a container whose input reaches its VNC server. Every change is one Lua script that
//! compares, sets and publishes `{type:"driver", …}` on the room channel at once, so
//! every node sees the changes in the order Redis made them; the room feed applies
//! them to the node's sessions' input gates (`Live::set_driver`) and tells the room's
//! socket.io viewers (`vnc:control`, `vnc:presence`). The node that made a change also
//! applies it at once, in case its room subscription isn't in place yet. The heartbeat
//! reads the leases of the rooms the node holds, keeps those its sessions hold alive,
//! writes them back after Redis lost them, and gives a free lease to a privileged
//! session.
//!
//! Presence: when a session starts or ends, the node reads the room's sessions from
//! the registry and publishes `{type:"presence", …}` on the room channel.
//!
//! The lease and the room channel share the container's hash slot (Redis Cluster), so
//! a change's script publishes on it (`SPUBLISH`); everything else one step reads lies
//! in other slots and is read beside the script, never inside it.

use std::collections::HashMap;
use std::sync::Arc;

use fred::prelude::*;
use futures_util::future::try_join_all;
use serde_json::json;
use vnc_shared::schema::{MAX_PRESENCE, RoomMessage, Viewer};
use vnc_shared::token::Scope;

use super::Node;
use super::store::StoreError;
use crate::config::InputMode;
use crate::metrics::DRIVER_CHANGES;
use crate::session::record::SessionRecord;
use crate::transport::socketio::room::emit_local;

/// One change of the lease. KEYS: the lease. ARGV: op, caller, target (or the
/// caller's name for `request`), ttl ms, cid, channel (the room's, in the lease's hash
/// slot: `SPUBLISH`). A `grant`'s target was checked before (a session of this
/// container with the control scope). Answers `{outcome, seq}`; `seq` is Redis's
/// clock in microseconds, also in the published message.
const CHANGE: &str = r#"
local op, caller, target, ttl, cid, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local current = redis.call('GET', KEYS[1])
local t = redis.call('TIME')
-- Sixteen digits: written with %d, as cjson and tostring would round them.
local seq = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
local function move(driver, by)
  if driver then redis.call('SET', KEYS[1], driver, 'PX', ttl) else redis.call('DEL', KEYS[1]) end
  local message = cjson.encode({type = 'driver', cid = cid,
    driver = driver or cjson.null, by = by or cjson.null,
    at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)})
  redis.call('SPUBLISH', channel, string.sub(message, 1, -2) .. ',"seq":' .. seq .. '}')
  return {'ok', seq}
end
if op == 'free' then
  if current then return {'held', '0'} end
  return move(caller, caller)
elseif op == 'request' then
  if current == caller then return {'driving', '0'} end
  if not current then return move(caller, caller) end
  redis.call('SPUBLISH', channel, cjson.encode({type = 'control.request', cid = cid,
    session_id = caller, name = target}))
  return {'asked', '0'}
elseif op == 'grant' or op == 'grant_any' then
  if op == 'grant' and current ~= caller then return {'moved', '0'} end
  return move(target, caller)
elseif op == 'take' then
  return move(caller, caller)
elseif op == 'release' or op == 'ended' then
  if current ~= caller then return {'not_driver', '0'} end
  if op == 'release' then return move(nil, caller) end
  return move(nil, nil)
elseif op == 'keep' then
  if current == caller then
    redis.call('PEXPIRE', KEYS[1], ttl)
    return {'kept', '0'}
  end
  if current then return {'moved', '0'} end
  return move(caller, caller)
end
return {'bad op', '0'}
"#;

/// The lease named by KEYS[1] as Redis has it now, after the order number of this
/// moment on the lease's own server (Redis's clock in microseconds, as the changes'
/// `seq`): a change applied after the snapshot was taken is not undone by it.
const SNAPSHOT: &str = r#"
local t = redis.call('TIME')
return {string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])),
  redis.call('GET', KEYS[1])}
"#;

/// The lease of each of `rooms` now, with the order number of its moment; one script
/// per lease (each in its own hash slot on a Redis Cluster), sent together.
async fn snapshot(node: &Node, rooms: &[String]) -> Result<Vec<Lease>, StoreError> {
    let store = node.store();
    try_join_all(rooms.iter().map(|cid| async move {
        let (seq, holder): (String, Option<String>) = store
            .client()
            .eval(
                SNAPSHOT,
                vec![store.keys().driver(cid)],
                Vec::<String>::new(),
            )
            .await?;
        Ok::<_, StoreError>(Lease {
            seq: seq.parse().unwrap_or(0),
            holder,
        })
    }))
    .await
}

/// A lease as a snapshot read it.
struct Lease {
    /// The order number of the moment it was read.
    seq: u64,
    holder: Option<String>,
}

/// What a lease change answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done, in Redis's order `seq`.
    Moved(u64),
    /// `request` while someone drives: the request went to the room.
    Asked,
    /// `keep`: the session still holds it.
    Kept,
    /// Not done, and why (the acknowledgement's words).
    Refused(&'static str),
}

/// A change asked of the lease.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// Take it if free.
    Free,
    /// Take it if free, else ask the room (with the caller's name).
    Request(&'a str),
    /// Give it to a session; only while holding it, unless `privileged`.
    Grant { target: &'a str, privileged: bool },
    /// Take it from whoever holds it.
    Take,
    /// Give it up.
    Release,
    /// The caller's session ended.
    Ended,
    /// Keep holding it (the heartbeat), or take it back after Redis lost it.
    Keep,
}

impl Change<'_> {
    fn op(&self) -> &'static str {
        match self {
            Change::Free => "free",
            Change::Request(_) => "request",
            Change::Grant {
                privileged: false, ..
            } => "grant",
            Change::Grant {
                privileged: true, ..
            } => "grant_any",
            Change::Take => "take",
            Change::Release => "release",
            Change::Ended => "ended",
            Change::Keep => "keep",
        }
    }
}

/// Runs one change for `caller`, a session of this node, and applies it here at once.
pub async fn change(
    node: &Node,
    caller: &SessionRecord,
    change: Change<'_>,
) -> Result<Outcome, StoreError> {
    let store = node.store();
    let keys = store.keys();
    let cid = caller.cid.as_str();
    let target = match change {
        Change::Grant { target, .. } => {
            if let Some(refused) = grantable(node, cid, target).await? {
                return Ok(refused);
            }
            target.to_owned()
        }
        Change::Request(name) => name.to_owned(),
        _ => String::new(),
    };
    let ttl = node.config().registry.session_ttl.as_millis().to_string();
    let args = vec![
        change.op().to_owned(),
        caller.sid.clone(),
        target.clone(),
        ttl,
        cid.to_owned(),
        keys.room_channel(cid),
    ];
    let (answer, seq): (String, String) = store
        .client()
        .eval(CHANGE, vec![keys.driver(cid)], args)
        .await?;
    let seq = seq.parse().unwrap_or(0);
    let outcome = match answer.as_str() {
        "ok" => Outcome::Moved(seq),
        "asked" => return Ok(Outcome::Asked),
        "kept" => return Ok(Outcome::Kept),
        "driving" => Outcome::Refused("already in control"),
        "held" => Outcome::Refused("someone else is in control"),
        "moved" => Outcome::Refused("control moved meanwhile"),
        "not_driver" => Outcome::Refused("not in control"),
        _ => Outcome::Refused("lease change failed"),
    };
    if let Outcome::Moved(seq) = outcome {
        let (driver, by) = match change {
            Change::Grant { target, .. } => (Some(target.to_owned()), Some(caller.sid.clone())),
            Change::Release => (None, Some(caller.sid.clone())),
            Change::Ended => (None, None),
            _ => (Some(caller.sid.clone()), Some(caller.sid.clone())),
        };
        metrics::counter!(DRIVER_CHANGES, "how" => change.op()).increment(1);
        applied(node, cid, driver, by, seq).await;
    }
    Ok(outcome)
}

/// Whether `target` may be given the lease of `cid`: a live session of that container
/// with the control scope (read before the change, in the session's own hash slot; a
/// session that ends in between leaves a lease its node never keeps alive, which the
/// heartbeats then free). `Some(refusal)` when not.
async fn grantable(node: &Node, cid: &str, target: &str) -> Result<Option<Outcome>, StoreError> {
    use vnc_shared::schema::session_field::{CID, SCOPE};
    let store = node.store();
    let fields: Vec<Option<String>> = store
        .client()
        .hmget(store.keys().session(target), vec![CID, SCOPE])
        .await?;
    Ok(match fields.as_slice() {
        [Some(of), _] if of != cid => Some(Outcome::Refused("no such session in this desktop")),
        [Some(_), Some(scope)] if scope == "control" => None,
        [Some(_), _] => Some(Outcome::Refused("that session is view-only")),
        _ => Some(Outcome::Refused("no such session in this desktop")),
    })
}

/// A lease change reached this node (room channel, its own change, the heartbeat):
/// the room's gates follow, its socket.io viewers are told, and a lease freed because
/// its driver's session ended goes to a privileged session here if there is one.
pub async fn applied(node: &Node, cid: &str, driver: Option<String>, by: Option<String>, seq: u64) {
    if !node.live().set_driver(cid, driver.clone(), seq) {
        return;
    }
    if let Some(server) = node.socketio() {
        emit_local(
            server,
            cid,
            "vnc:control",
            &json!({ "driver": driver, "by": by }),
        )
        .await;
        emit_presence(node, cid).await;
    }
    if driver.is_none() && by.is_none() {
        hand_free_lease(node, cid).await;
    }
}

/// A free lease goes to the room's oldest privileged session here (the first node to
/// ask gets it).
async fn hand_free_lease(node: &Node, cid: &str) {
    if node.live().mode() != InputMode::Lease {
        return;
    }
    // Boxed: a change applies itself, which may hand a freed lease on.
    if let Some(heir) = node.live().first_privileged(cid)
        && let Err(e) = Box::pin(change(node, &heir, Change::Free)).await
    {
        tracing::debug!(container.id = %cid, error = %e, "taking the free lease failed");
    }
}

/// Emits the room's presence list, with the driver as this node knows it, to the
/// room's socket.io viewers here.
pub async fn emit_presence(node: &Node, cid: &str) {
    let (Some(server), Some((viewers, more))) = (node.socketio(), node.live().presence(cid)) else {
        return;
    };
    let driver = node.live().driver(cid);
    let body = json!({ "viewers": viewers, "more": more, "driver": driver });
    emit_local(server, cid, "vnc:presence", &body).await;
}

/// A room message a relay acts on (the room feed hands it over).
pub async fn on_message(node: &Node, message: RoomMessage) {
    match message {
        RoomMessage::Driver {
            cid,
            driver,
            by,
            seq,
            ..
        } => applied(node, &cid, driver, by, seq).await,
        RoomMessage::Presence { cid, viewers, more } => {
            node.live().set_presence(&cid, viewers, more);
            emit_presence(node, &cid).await;
        }
        RoomMessage::ControlRequest {
            cid,
            session_id,
            name,
        } => {
            if let Some(server) = node.socketio() {
                let body = json!({ "session_id": session_id, "name": name });
                emit_local(server, &cid, "vnc:control:requested", &body).await;
            }
        }
    }
}

/// The node now listens to a room: what it may have missed before, the lease as Redis
/// has it and the room's presence (published anew for every node).
pub async fn learn(node: &Node, cid: &str) {
    if node.live().mode() == InputMode::Lease {
        match snapshot(node, &[cid.to_owned()]).await {
            Ok(mut leases) => {
                if let Some(lease) = leases.pop() {
                    applied(node, cid, lease.holder, None, lease.seq).await;
                }
            }
            Err(e) => tracing::debug!(container.id = %cid, error = %e, "lease not read"),
        }
    }
    if let Err(e) = publish_presence(node, cid).await {
        tracing::debug!(error = %e, "presence not published");
    }
}

/// Publishes the room's presence list (after a session started or ended here): the
/// container's live sessions (its counting set, then each session's record, which
/// lives in the session's own hash slot), oldest first, at most [`MAX_PRESENCE`]
/// named, with the lease holder marked.
pub async fn publish_presence(node: &Node, cid: &str) -> Result<(), StoreError> {
    let store = node.store();
    let keys = store.keys();
    let sids: Vec<String> = store
        .client()
        .zrange(
            keys.container_sessions(cid),
            0,
            -1,
            None,
            false,
            None,
            false,
        )
        .await?;
    let driver: Option<String> = store.client().get(keys.driver(cid)).await?;
    let records = try_join_all(sids.iter().map(|sid| async move {
        let record: HashMap<String, String> = store.client().hgetall(keys.session(sid)).await?;
        Ok::<_, StoreError>(record)
    }))
    .await?;
    let mut rows: Vec<(u64, Viewer)> = sids
        .iter()
        .zip(records)
        .filter_map(|(sid, record)| viewer(cid, sid, &record, driver.as_deref()))
        .collect();
    rows.sort_by_key(|(started_at, _)| *started_at);
    let more = rows.len().saturating_sub(MAX_PRESENCE);
    let viewers = rows
        .into_iter()
        .take(MAX_PRESENCE)
        .map(|(_, v)| v)
        .collect();
    let message = RoomMessage::Presence {
        cid: cid.to_owned(),
        viewers,
        more,
    };
    let json = serde_json::to_string(&message)
        .map_err(|e| StoreError::Corrupt(format!("presence: {e}")))?;
    let _: i64 = store
        .client()
        .spublish(keys.room_channel(cid), json)
        .await?;
    Ok(())
}

/// One row of a presence list from a session's record (and when it started); `None`
/// when the record is gone or belongs to another container.
fn viewer(
    cid: &str,
    sid: &str,
    record: &HashMap<String, String>,
    driver: Option<&str>,
) -> Option<(u64, Viewer)> {
    use vnc_shared::schema::session_field as f;
    if record.get(f::CID).map(String::as_str) != Some(cid) {
        return None;
    }
    let get = |k: &str| record.get(k).cloned();
    let scope = get(f::SCOPE)
        .and_then(|s| s.parse().ok())
        .unwrap_or(Scope::View);
    let started_at = get(f::STARTED_AT).and_then(|t| t.parse().ok()).unwrap_or(0);
    Some((
        started_at,
        Viewer {
            session_id: sid.to_owned(),
            name: get(f::NAME).or_else(|| get(f::SUB)).unwrap_or_default(),
            scope,
            driver: driver == Some(sid),
            node: get(f::NODE).unwrap_or_default(),
            guest: record.contains_key(f::SHARE),
        },
    ))
}

/// A session started here: a privileged one takes a free lease; the room learns who
/// is here.
pub async fn joined(node: &Node, record: &SessionRecord) {
    if node.live().mode() == InputMode::Lease
        && record.privileged
        && let Err(e) = change(node, record, Change::Free).await
    {
        tracing::debug!(error = %e, "taking the lease at start failed");
    }
    node.live().presence_changed(&record.cid);
}

/// A session ended here: its lease, if it held it, is free again (and goes to a
/// privileged session if one is left); the room learns who is left.
pub async fn left(node: &Node, record: &SessionRecord) {
    if node.live().mode() == InputMode::Lease
        && let Err(e) = change(node, record, Change::Ended).await
    {
        tracing::debug!(error = %e, "lease left to expire");
    }
    node.live().presence_changed(&record.cid);
}

/// The heartbeat's part: for every room this node holds, the lease as Redis has it
/// now (one snapshot script) replaces what the node knew (a missed message, a driver whose node
/// died); a lease held by a session here is kept alive, or written back when Redis
/// lost it; a free lease goes to a privileged session here.
pub async fn beat(node: &Node, sessions: &[Arc<SessionRecord>]) -> Result<(), StoreError> {
    if node.live().mode() != InputMode::Lease {
        return Ok(());
    }
    let rooms = node.live().rooms();
    if rooms.is_empty() {
        return Ok(());
    }
    let leases = snapshot(node, &rooms).await?;
    // This node's sessions by id, once per beat (not a scan per room).
    let here: HashMap<&str, &Arc<SessionRecord>> =
        sessions.iter().map(|r| (r.sid.as_str(), r)).collect();
    for (cid, Lease { seq, holder: lease }) in rooms.iter().zip(leases) {
        let known = node.live().driver(cid);
        let ours = known
            .as_deref()
            .and_then(|sid| here.get(sid))
            .map(|r| (*r).clone());
        // Gone from Redis while another node's session held it: that node writes it
        // back within a beat after Redis lost its data, so it counts as free (and a
        // session here may take it) only when it is still gone at the next beat.
        let missing = lease.is_none() && known.is_some() && ours.is_none();
        let missed_before = node.live().mark_missing(cid, missing);
        if missing && !missed_before {
            continue;
        }
        match (lease, ours) {
            // Ours in Redis too, or lost by Redis: keep it (or write it back).
            (Some(sid), Some(r)) if sid == r.sid => {
                change(node, &r, Change::Keep).await?;
            }
            (None, Some(r)) => {
                change(node, &r, Change::Keep).await?;
            }
            (lease, _) if lease != known => applied(node, cid, lease, None, seq).await,
            (None, None) => hand_free_lease(node, cid).await,
            _ => {}
        }
    }
    Ok(())
}
