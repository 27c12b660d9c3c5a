//! This node's live sessions: their records and stop signals, grouped by container
//! (room), so the relay can end all of them (drain), one room's (container stopped) or
//! those a kick names (session, token, user), so the room feed knows which room
//! channels to subscribe to, and so the heartbeat can rewrite the registry in Redis.
//! It knows each room's driver (as the room channel says) and keeps its sessions'
//! input gates following it, and the room's last presence list.
//! It also holds the revocations the node learned: a session whose token is revoked
//! ends when it registers, so a revocation that arrives between a session's admission
//! and its registration still ends it.
//!
//! The lock is taken when a session starts or ends, when a room event, kick or drain
//! arrives and once per heartbeat, never per relayed message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use vnc_shared::schema::Viewer;
use vnc_shared::token::Scope;

use super::revoked::Revocations;
use crate::config::InputMode;
use crate::session::end::{Stop, StopSignal};
use crate::session::gate::InputGate;
use crate::session::record::SessionRecord;

/// A room gained its first session here, or lost its last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomChange {
    Joined(String),
    Left(String),
    /// A session of the room started or ended here: its presence list is published
    /// anew (by the room feed, off the session's path, bursts coalesced).
    Presence(String),
}

struct Member {
    record: Arc<SessionRecord>,
    signal: Arc<StopSignal>,
    gate: Arc<InputGate>,
}

/// One container's sessions on this node, and what the node knows of its room.
#[derive(Default)]
struct Room {
    sessions: usize,
    /// The session holding the driver lease, as the room channel last said.
    driver: Option<String>,
    /// The order of the last lease change applied (see `RoomMessage::Driver`).
    seq: u64,
    /// The last heartbeat found the lease gone while another node's session held it.
    lease_missing: bool,
    /// The room's presence list as last published, and how many it left off.
    presence: Option<(Vec<Viewer>, usize)>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<u64, Member>,
    rooms: HashMap<String, Room>,
    /// Set once the relay stops: sessions that register later stop at once.
    stopped: Option<Stop>,
}

impl Inner {
    /// Opens the gate of the room's sessions that may send input now, closes the
    /// others'.
    fn set_gates(&self, cid: &str, mode: InputMode) {
        let driver = self.rooms.get(cid).and_then(|r| r.driver.as_deref());
        for m in self.sessions.values().filter(|m| m.record.cid == cid) {
            m.gate.set(may_input(&m.record, driver, mode));
        }
    }
}

/// Whether a session may send input while `driver` holds the room's lease.
fn may_input(r: &SessionRecord, driver: Option<&str>, mode: InputMode) -> bool {
    r.scope == Scope::Control
        && match mode {
            InputMode::Shared => true,
            InputMode::Lease => driver == Some(r.sid.as_str()),
        }
}

pub struct Live {
    mode: InputMode,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// Room changes, in the order they happened, for the room feed. Unbounded, but
    /// at most two messages per session, and the feed drains it continuously.
    changes: mpsc::UnboundedSender<RoomChange>,
    /// Revoked tokens (bounded, see [`crate::node::revoked::MAX_REVOCATIONS`]).
    pub revoked: Revocations,
}

/// Keeps a session registered while it lives.
pub struct LiveGuard {
    live: Arc<Live>,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let Ok(mut inner) = self.live.inner.lock() else {
            return;
        };
        let Some(member) = inner.sessions.remove(&self.id) else {
            return;
        };
        let cid = &member.record.cid;
        if let Some(room) = inner.rooms.get_mut(cid) {
            room.sessions -= 1;
            if room.sessions == 0 {
                inner.rooms.remove(cid);
                let _ = self.live.changes.send(RoomChange::Left(cid.clone()));
            }
        }
    }
}

impl Live {
    pub fn new(mode: InputMode) -> (Arc<Live>, mpsc::UnboundedReceiver<RoomChange>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let live = Live {
            mode,
            inner: Mutex::default(),
            next_id: AtomicU64::new(0),
            changes,
            revoked: Revocations::default(),
        };
        (Arc::new(live), rx)
    }

    pub fn mode(&self) -> InputMode {
        self.mode
    }

    /// The room's presence changed here (a session started or ended).
    pub fn presence_changed(&self, cid: &str) {
        let _ = self.changes.send(RoomChange::Presence(cid.to_owned()));
    }

    /// Registers a session; `signal` is set right away if the relay has stopped or its
    /// token is revoked. A revocation is recorded before the sessions it names are
    /// looked up (see [`Live::revoke`]) and a session is listed before its token is
    /// looked up here, so one of the two sees the other. `gate` is set from what the
    /// node knows of the room's driver, and follows it from then on.
    pub fn register(
        self: &Arc<Self>,
        record: Arc<SessionRecord>,
        signal: Arc<StopSignal>,
        gate: Arc<InputGate>,
    ) -> LiveGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let jti = record.jti.clone();
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(why) = inner.stopped {
                signal.set(why);
            }
            let room = inner.rooms.entry(record.cid.clone()).or_default();
            room.sessions += 1;
            if room.sessions == 1 {
                let _ = self.changes.send(RoomChange::Joined(record.cid.clone()));
            }
            gate.set(may_input(&record, room.driver.as_deref(), self.mode));
            let signal = signal.clone();
            inner.sessions.insert(
                id,
                Member {
                    record,
                    signal,
                    gate,
                },
            );
        }
        if self.revoked.contains(&jti) {
            signal.set(Stop::Revoked);
        }
        LiveGuard {
            live: self.clone(),
            id,
        }
    }

    /// Remembers a revocation (until the token's `exp`), then ends the sessions of
    /// that token with 4003; returns how many.
    pub fn revoke(&self, jti: &str, exp: Option<u64>) -> usize {
        self.revoked.insert(jti, exp);
        self.stop_matching(|r| r.jti == jti, Stop::Revoked)
    }

    /// Ends every live session with `why`, and any that registers afterwards.
    pub fn stop_all(&self, why: Stop) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.stopped.get_or_insert(why);
            for member in inner.sessions.values() {
                member.signal.set(why);
            }
        }
    }

    /// Ends the sessions whose record `matches`; returns how many.
    pub fn stop_matching(&self, matches: impl Fn(&SessionRecord) -> bool, why: Stop) -> usize {
        let Ok(inner) = self.inner.lock() else {
            return 0;
        };
        let mut n = 0;
        for member in inner.sessions.values().filter(|m| matches(&m.record)) {
            member.signal.set(why);
            n += 1;
        }
        n
    }

    /// Ends the sessions of one container; returns how many.
    pub fn stop_room(&self, cid: &str, why: Stop) -> usize {
        self.stop_matching(|r| r.cid == cid, why)
    }

    /// The records of every live session, for the registry heartbeat.
    pub fn sessions(&self) -> Vec<Arc<SessionRecord>> {
        self.inner
            .lock()
            .map(|inner| inner.sessions.values().map(|m| m.record.clone()).collect())
            .unwrap_or_default()
    }

    /// Containers with at least one session here.
    pub fn rooms(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|inner| inner.rooms.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The room's driver as this node knows it.
    pub fn driver(&self, cid: &str) -> Option<String> {
        let inner = self.inner.lock().ok()?;
        inner.rooms.get(cid)?.driver.clone()
    }

    /// The room's driver is now `driver`: the gates of its sessions here follow. A
    /// change ordered before the last one applied (`seq`, 0: unordered) is ignored.
    /// Returns whether that changed anything (false for a room this node doesn't
    /// hold).
    pub fn set_driver(&self, cid: &str, driver: Option<String>, seq: u64) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        let Some(room) = inner.rooms.get_mut(cid) else {
            return false;
        };
        if seq != 0 {
            if seq <= room.seq {
                return false;
            }
            room.seq = seq;
        }
        if room.driver == driver {
            return false;
        }
        room.driver = driver;
        inner.set_gates(cid, self.mode);
        true
    }

    /// Records whether the heartbeat found the room's lease missing (see
    /// `driver::beat`); returns what the previous beat found.
    pub fn mark_missing(&self, cid: &str, missing: bool) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        let Some(room) = inner.rooms.get_mut(cid) else {
            return false;
        };
        std::mem::replace(&mut room.lease_missing, missing)
    }

    /// Keeps the room's last presence list.
    pub fn set_presence(&self, cid: &str, viewers: Vec<Viewer>, more: usize) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(room) = inner.rooms.get_mut(cid)
        {
            room.presence = Some((viewers, more));
        }
    }

    /// The room's last presence list with the driver flags as this node knows them,
    /// and how many it left off.
    pub fn presence(&self, cid: &str) -> Option<(Vec<Viewer>, usize)> {
        let inner = self.inner.lock().ok()?;
        let room = inner.rooms.get(cid)?;
        let (mut viewers, more) = room.presence.clone()?;
        for v in &mut viewers {
            v.driver = room.driver.as_deref() == Some(v.session_id.as_str());
        }
        Some((viewers, more))
    }

    /// The room's oldest live privileged `control` session here, which takes a free
    /// lease.
    pub fn first_privileged(&self, cid: &str) -> Option<Arc<SessionRecord>> {
        let inner = self.inner.lock().ok()?;
        inner
            .sessions
            .values()
            .filter(|m| m.record.cid == cid && m.record.privileged && m.signal.get().is_none())
            .min_by_key(|m| m.record.started_at)
            .map(|m| m.record.clone())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.sessions.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn record(sid: &str, cid: &str) -> Arc<SessionRecord> {
        Arc::new(SessionRecord {
            cid: cid.into(),
            ..SessionRecord::for_tests(sid)
        })
    }

    #[test]
    fn rooms_change_on_first_join_and_last_leave_only() {
        let (live, mut rx) = Live::new(InputMode::Lease);
        let a = live.register(record("a", "c1"), Arc::default(), Arc::default());
        let b = live.register(record("b", "c1"), Arc::default(), Arc::default());
        let c = live.register(record("c", "c2"), Arc::default(), Arc::default());
        assert_eq!(rx.try_recv().unwrap(), RoomChange::Joined("c1".into()));
        assert_eq!(rx.try_recv().unwrap(), RoomChange::Joined("c2".into()));
        assert!(rx.try_recv().is_err());
        drop(a);
        assert!(rx.try_recv().is_err());
        drop(b);
        assert_eq!(rx.try_recv().unwrap(), RoomChange::Left("c1".into()));
        assert_eq!(live.rooms(), vec!["c2".to_owned()]);
        drop(c);
        assert_eq!(rx.try_recv().unwrap(), RoomChange::Left("c2".into()));
        assert!(live.is_empty());
    }

    #[test]
    fn a_stop_reaches_the_sessions_it_names_only() {
        let (live, _rx) = Live::new(InputMode::Lease);
        let (s1, s2) = (
            Arc::new(StopSignal::default()),
            Arc::new(StopSignal::default()),
        );
        let _g1 = live.register(record("a", "c1"), s1.clone(), Arc::default());
        let _g2 = live.register(record("b", "c2"), s2.clone(), Arc::default());
        assert_eq!(live.stop_room("c1", Stop::ContainerStopped), 1);
        assert_eq!(s1.get(), Some(Stop::ContainerStopped));
        assert_eq!(s2.get(), None);
        assert_eq!(live.stop_matching(|r| r.jti == "jti-b", Stop::Kicked), 1);
        assert_eq!(s2.get(), Some(Stop::Kicked));
        assert_eq!(live.sessions().len(), 2);
    }

    #[test]
    fn a_revocation_ends_sessions_registered_before_or_after_it() {
        let (live, _rx) = Live::new(InputMode::Lease);
        let (before, after) = (
            Arc::new(StopSignal::default()),
            Arc::new(StopSignal::default()),
        );
        let _g1 = live.register(record("a", "c1"), before.clone(), Arc::default());
        let exp = vnc_shared::schema::now_ms() / 1000 + 60;
        assert_eq!(live.revoke("jti-a", Some(exp)), 1);
        assert_eq!(before.get(), Some(Stop::Revoked));
        // Admitted before the revocation, registered after it: ends at once.
        let _g2 = live.register(record("a", "c1"), after.clone(), Arc::default());
        assert_eq!(after.get(), Some(Stop::Revoked));
        let other = Arc::new(StopSignal::default());
        let _g3 = live.register(record("b", "c1"), other.clone(), Arc::default());
        assert_eq!(other.get(), None);
    }

    #[test]
    fn gates_follow_the_driver_in_order() {
        let (live, _rx) = Live::new(InputMode::Lease);
        let gates: Vec<Arc<InputGate>> = (0..4).map(|_| Arc::default()).collect();
        let view = Arc::new(SessionRecord {
            scope: Scope::View,
            ..SessionRecord::for_tests("v")
        });
        let _a = live.register(record("a", "c1"), Arc::default(), gates[0].clone());
        let _b = live.register(record("b", "c1"), Arc::default(), gates[1].clone());
        let _v = live.register(view, Arc::default(), gates[2].clone());
        let open = || gates.iter().map(|g| g.is_open()).collect::<Vec<_>>();
        assert_eq!(open(), [false; 4]);
        assert!(live.set_driver("c1", Some("a".into()), 10));
        assert_eq!(open(), [true, false, false, false]);
        // A change made before the last one applied is ignored.
        assert!(!live.set_driver("c1", Some("b".into()), 5));
        assert_eq!(live.driver("c1").as_deref(), Some("a"));
        assert!(live.set_driver("c1", Some("b".into()), 11));
        assert_eq!(open(), [false, true, false, false]);
        // A view session never sends input, even when named.
        assert!(live.set_driver("c1", Some("v".into()), 0));
        assert_eq!(open(), [false; 4]);
        // A session that registers later finds the driver the node knows.
        assert!(live.set_driver("c1", Some("c".into()), 0));
        let _c = live.register(record("c", "c1"), Arc::default(), gates[3].clone());
        assert_eq!(open(), [false, false, false, true]);
        // A room the node doesn't hold is not remembered.
        assert!(!live.set_driver("c9", Some("a".into()), 0));
        assert_eq!(live.driver("c9"), None);
    }

    #[test]
    fn shared_input_opens_every_control_session() {
        let (live, _rx) = Live::new(InputMode::Shared);
        let (control, view) = (Arc::<InputGate>::default(), Arc::<InputGate>::default());
        let v = Arc::new(SessionRecord {
            scope: Scope::View,
            ..SessionRecord::for_tests("v")
        });
        let _a = live.register(record("a", "c1"), Arc::default(), control.clone());
        let _v = live.register(v, Arc::default(), view.clone());
        assert!(control.is_open() && !view.is_open());
    }

    #[test]
    fn the_oldest_live_privileged_session_inherits_a_free_lease() {
        let (live, _rx) = Live::new(InputMode::Lease);
        let at = |sid: &str, started_at, privileged| {
            Arc::new(SessionRecord {
                started_at,
                privileged,
                ..SessionRecord::for_tests(sid)
            })
        };
        let stopped = Arc::new(StopSignal::default());
        let _old = live.register(at("old", 1, true), stopped.clone(), Arc::default());
        let _guest = live.register(at("guest", 2, false), Arc::default(), Arc::default());
        let _next = live.register(at("next", 3, true), Arc::default(), Arc::default());
        assert_eq!(live.first_privileged("c1").unwrap().sid, "old");
        // An ending session doesn't inherit.
        stopped.set(Stop::Kicked);
        assert_eq!(live.first_privileged("c1").unwrap().sid, "next");
        assert!(live.first_privileged("c2").is_none());
    }

    #[test]
    fn sessions_registering_after_a_stop_stop_at_once() {
        let (live, _rx) = Live::new(InputMode::Lease);
        live.stop_all(Stop::Draining);
        let late = Arc::new(StopSignal::default());
        let _g = live.register(record("a", "c1"), late.clone(), Arc::default());
        assert_eq!(late.get(), Some(Stop::Draining));
    }
}
