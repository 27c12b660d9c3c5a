//! This node's live sessions: their records and stop signals, grouped by container
//! (room), so the relay can end all of them (drain), one room's (container stopped) or
//! those a kick names (session, token, user), so the room feed knows which room
//! channels to subscribe to, and so the heartbeat can rewrite the registry in Redis.
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

use super::revoked::Revocations;
use crate::session::end::{Stop, StopSignal};
use crate::session::record::SessionRecord;

/// A room gained its first session here, or lost its last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomChange {
    Joined(String),
    Left(String),
}

struct Member {
    record: Arc<SessionRecord>,
    signal: Arc<StopSignal>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<u64, Member>,
    /// Sessions per container.
    rooms: HashMap<String, usize>,
    /// Set once the relay stops: sessions that register later stop at once.
    stopped: Option<Stop>,
}

pub struct Live {
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
        if let Some(count) = inner.rooms.get_mut(cid) {
            *count -= 1;
            if *count == 0 {
                inner.rooms.remove(cid);
                let _ = self.live.changes.send(RoomChange::Left(cid.clone()));
            }
        }
    }
}

impl Live {
    pub fn new() -> (Arc<Live>, mpsc::UnboundedReceiver<RoomChange>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let live = Live {
            inner: Mutex::default(),
            next_id: AtomicU64::new(0),
            changes,
            revoked: Revocations::default(),
        };
        (Arc::new(live), rx)
    }

    /// Registers a session; `signal` is set right away if the relay has stopped or its
    /// token is revoked. A revocation is recorded before the sessions it names are
    /// looked up (see [`Live::revoke`]) and a session is listed before its token is
    /// looked up here, so one of the two sees the other.
    pub fn register(
        self: &Arc<Self>,
        record: Arc<SessionRecord>,
        signal: Arc<StopSignal>,
    ) -> LiveGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let jti = record.jti.clone();
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(why) = inner.stopped {
                signal.set(why);
            }
            let count = inner.rooms.entry(record.cid.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                let _ = self.changes.send(RoomChange::Joined(record.cid.clone()));
            }
            let signal = signal.clone();
            inner.sessions.insert(id, Member { record, signal });
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
        let (live, mut rx) = Live::new();
        let a = live.register(record("a", "c1"), Arc::default());
        let b = live.register(record("b", "c1"), Arc::default());
        let c = live.register(record("c", "c2"), Arc::default());
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
        let (live, _rx) = Live::new();
        let (s1, s2) = (
            Arc::new(StopSignal::default()),
            Arc::new(StopSignal::default()),
        );
        let _g1 = live.register(record("a", "c1"), s1.clone());
        let _g2 = live.register(record("b", "c2"), s2.clone());
        assert_eq!(live.stop_room("c1", Stop::ContainerStopped), 1);
        assert_eq!(s1.get(), Some(Stop::ContainerStopped));
        assert_eq!(s2.get(), None);
        assert_eq!(live.stop_matching(|r| r.jti == "jti-b", Stop::Kicked), 1);
        assert_eq!(s2.get(), Some(Stop::Kicked));
        assert_eq!(live.sessions().len(), 2);
    }

    #[test]
    fn a_revocation_ends_sessions_registered_before_or_after_it() {
        let (live, _rx) = Live::new();
        let (before, after) = (
            Arc::new(StopSignal::default()),
            Arc::new(StopSignal::default()),
        );
        let _g1 = live.register(record("a", "c1"), before.clone());
        let exp = vnc_shared::schema::now_ms() / 1000 + 60;
        assert_eq!(live.revoke("jti-a", Some(exp)), 1);
        assert_eq!(before.get(), Some(Stop::Revoked));
        // Admitted before the revocation, registered after it: ends at once.
        let _g2 = live.register(record("a", "c1"), after.clone());
        assert_eq!(after.get(), Some(Stop::Revoked));
        let other = Arc::new(StopSignal::default());
        let _g3 = live.register(record("b", "c1"), other.clone());
        assert_eq!(other.get(), None);
    }

    #[test]
    fn sessions_registering_after_a_stop_stop_at_once() {
        let (live, _rx) = Live::new();
        live.stop_all(Stop::Draining);
        let late = Arc::new(StopSignal::default());
        let _g = live.register(record("a", "c1"), late.clone());
        assert_eq!(late.get(), Some(Stop::Draining));
    }
}
