//! The relays' session registry and node heartbeats as control reads them
//! (`{prefix}session:{sid}`, `{prefix}sessions:{cid}`, `{prefix}node:{id}`), and the
//! kicks control publishes on `{prefix}control` for whichever node holds a session.
//!
//! The relays write all of these; control only reads them. It also reads and sets a
//! container's driver lease
//! (`{prefix}driver:{cid}`) and publishes the change on the container's room
//! channel, as a relay does.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::scan::ScanType;
use vnc_shared::schema::{Keys, RoomMessage, node_field as n, now_ms, session_field as f};

use super::store::StoreError;
use crate::domain::{Kick, Node, Session};

/// Keys asked for per SCAN page when listing nodes.
const SCAN_PAGE: u32 = 500;

/// The `by` of a driver change control made.
pub const DRIVER_BY_CONTROL: &str = "control";

#[derive(Clone)]
pub struct SessionStore {
    client: Client,
    keys: Keys,
}

impl SessionStore {
    pub fn new(client: Client, keys: Keys) -> SessionStore {
        SessionStore { client, keys }
    }

    /// One live session; `None` once its node stopped refreshing it.
    pub async fn session(&self, sid: &str) -> Result<Option<Session>, StoreError> {
        let map: HashMap<String, String> = self.client.hgetall(self.keys.session(sid)).await?;
        Ok(parse_session(sid, &map))
    }

    /// The live sessions of a container, oldest first. Members of its set whose hash
    /// is gone (or not yet written: a relay reserves a session's place before it
    /// writes its record) are left out; expired ones leave the set by their score.
    pub async fn container_sessions(&self, cid: &str) -> Result<Vec<Session>, StoreError> {
        let set = self.keys.container_sessions(cid);
        let sids: Vec<String> = self
            .client
            .zrange(&set, 0, -1, None, false, None, false)
            .await?;
        let maps = self
            .hashes(sids.iter().map(|s| self.keys.session(s)))
            .await?;
        let mut live: Vec<Session> = sids
            .iter()
            .zip(&maps)
            .filter_map(|(sid, map)| parse_session(sid, map))
            .collect();
        live.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(live)
    }

    /// Every relay node with a live heartbeat, by id. SCANs the key space in bounded
    /// pages (never KEYS, which blocks Redis).
    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let prefix = self.keys.node("");
        let pattern = format!("{prefix}*");
        let keys =
            vnc_shared::redis::scan_keys(&self.client, &pattern, SCAN_PAGE, Some(ScanType::Hash))
                .await?;
        let maps = self.hashes(keys.iter().cloned()).await?;
        let mut nodes: Vec<Node> = keys
            .iter()
            .zip(&maps)
            .filter_map(|(key, map)| parse_node(key.strip_prefix(&prefix)?, map))
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Publishes a kick on the control channel; returns how many subscribers (relay
    /// nodes) got it from the Redis node that took it: on a Redis Cluster the message
    /// reaches every node's subscribers, the count only that node's (for the log, never
    /// for a decision).
    pub async fn kick(&self, kick: &Kick) -> Result<i64, StoreError> {
        Ok(self
            .client
            .publish(self.keys.control_channel(), kick.to_message())
            .await?)
    }

    /// The session holding a container's driver lease, if any.
    pub async fn driver(&self, cid: &str) -> Result<Option<String>, StoreError> {
        Ok(self.client.get(self.keys.driver(cid)).await?)
    }

    /// Sets the driver lease to `sid` for `ttl` (the holder's node refreshes it
    /// from then on), or frees it with `None`; then publishes the change on the
    /// container's room channel. Returns how many subscribers (relay nodes holding the
    /// room) got it.
    pub async fn set_driver(
        &self,
        cid: &str,
        sid: Option<&str>,
        ttl: Duration,
    ) -> Result<i64, StoreError> {
        let key = self.keys.driver(cid);
        match sid {
            Some(sid) => {
                let px = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                let _: () = self
                    .client
                    .set(&key, sid, Some(Expiration::PX(px)), None, false)
                    .await?;
            }
            None => {
                let _: i64 = self.client.del(&key).await?;
            }
        }
        let message = RoomMessage::Driver {
            cid: cid.to_owned(),
            driver: sid.map(str::to_owned),
            by: Some(DRIVER_BY_CONTROL.to_owned()),
            at: now_ms(),
            // Unordered: every relay applies it; their heartbeats settle a change
            // that raced it.
            seq: 0,
        };
        let json = serde_json::to_string(&message).map_err(|e| StoreError::Record {
            key: self.keys.room_channel(cid),
            why: e.to_string(),
        })?;
        Ok(self
            .client
            .spublish(self.keys.room_channel(cid), json)
            .await?)
    }

    /// Whether each of `sids` is a live session (its hash still exists), in one
    /// pipeline of EXISTS per id.
    pub async fn live(&self, sids: &[&str]) -> Result<Vec<bool>, StoreError> {
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.client.pipeline();
        for sid in sids {
            let _: () = pipe.exists(self.keys.session(sid)).await?;
        }
        let found: Vec<i64> = pipe.all().await?;
        Ok(found.into_iter().map(|n| n > 0).collect())
    }

    /// HGETALL of each key in one pipeline (an empty map for a key that is gone).
    async fn hashes(
        &self,
        keys: impl Iterator<Item = String>,
    ) -> Result<Vec<HashMap<String, String>>, StoreError> {
        let pipe = self.client.pipeline();
        for key in keys {
            let _: () = pipe.hgetall(key).await?;
        }
        let values: Vec<Value> = pipe.all().await?;
        values
            .into_iter()
            .map(|v| v.convert().map_err(StoreError::from))
            .collect()
    }
}

/// A session from its hash; `None` when the hash is gone (or lacks its container).
fn parse_session(sid: &str, m: &HashMap<String, String>) -> Option<Session> {
    let get = |k: &str| m.get(k).cloned().unwrap_or_default();
    let cid = m.get(f::CID).filter(|c| !c.is_empty())?.clone();
    Some(Session {
        id: sid.to_owned(),
        cid,
        sub: get(f::SUB),
        tenant: get(f::TENANT),
        scope: get(f::SCOPE),
        node: get(f::NODE),
        jti: get(f::JTI),
        started_at: m.get(f::STARTED_AT).and_then(|v| v.parse().ok()),
        transport: get(f::TRANSPORT),
        client_addr: get(f::CLIENT_ADDR),
        name: get(f::NAME),
        share: get(f::SHARE),
    })
}

/// A node from its heartbeat hash; `None` when the hash expired meanwhile.
fn parse_node(id: &str, m: &HashMap<String, String>) -> Option<Node> {
    if m.is_empty() {
        return None;
    }
    let get = |k: &str| m.get(k).cloned().unwrap_or_default();
    Some(Node {
        id: id.to_owned(),
        addr: get(n::ADDR),
        sessions: m.get(n::SESSIONS).and_then(|v| v.parse().ok()).unwrap_or(0),
        started_at: m.get(n::STARTED_AT).and_then(|v| v.parse().ok()),
        version: get(n::VERSION),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn gone_hashes_are_no_sessions_or_nodes() {
        assert_eq!(parse_session("s1", &HashMap::new()), None);
        assert_eq!(parse_node("n1", &HashMap::new()), None);
        let s = parse_session(
            "s1",
            &map(&[
                ("cid", "c1"),
                ("started_at", "12"),
                ("transport", "socketio"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (s.cid.as_str(), s.started_at, s.transport.as_str()),
            ("c1", Some(12), "socketio")
        );
        let n = parse_node("n1", &map(&[("sessions", "x"), ("started_at", "7")])).unwrap();
        assert_eq!((n.sessions, n.started_at), (0, Some(7)));
    }
}
