//! This node's live sessions: their stop signals, grouped by container (room), so the
//! relay can end all of them (drain) or one room's (container stopped), and so the room
//! feed knows which room channels to subscribe to.
//!
//! The lock is taken when a session starts or ends and when a room event or a drain
//! arrives, never per relayed message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::session::Stop;
use crate::signal::Signal;

/// A room gained its first session here, or lost its last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomChange {
    Joined(String),
    Left(String),
}

struct Member {
    cid: Arc<str>,
    signal: Arc<Signal>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<u64, Member>,
    /// Sessions per container.
    rooms: HashMap<Arc<str>, usize>,
    /// Set once the relay stops: sessions that register later stop at once.
    stopped: Option<Stop>,
}

pub struct Live {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// Room changes, in the order they happened, for the room feed. Unbounded, but
    /// at most two messages per session, and the feed drains it continuously.
    changes: mpsc::UnboundedSender<RoomChange>,
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
        if let Some(count) = inner.rooms.get_mut(&member.cid) {
            *count -= 1;
            if *count == 0 {
                inner.rooms.remove(&member.cid);
                let _ = self
                    .live
                    .changes
                    .send(RoomChange::Left(member.cid.to_string()));
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
        };
        (Arc::new(live), rx)
    }

    /// Registers a session of container `cid`; `signal` is set right away if the relay
    /// has stopped.
    pub fn register(self: &Arc<Self>, cid: &str, signal: Arc<Signal>) -> LiveGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(why) = inner.stopped {
                signal.set(why as u8);
            }
            let cid: Arc<str> = match inner.rooms.get_key_value(cid) {
                Some((k, _)) => k.clone(),
                None => Arc::from(cid),
            };
            let count = inner.rooms.entry(cid.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                let _ = self.changes.send(RoomChange::Joined(cid.to_string()));
            }
            inner.sessions.insert(id, Member { cid, signal });
        }
        LiveGuard {
            live: self.clone(),
            id,
        }
    }

    /// Ends every live session with `why`, and any that registers afterwards.
    pub fn stop_all(&self, why: Stop) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.stopped.get_or_insert(why);
            for member in inner.sessions.values() {
                member.signal.set(why as u8);
            }
        }
    }

    /// Ends the sessions of one container; returns how many.
    pub fn stop_room(&self, cid: &str, why: Stop) -> usize {
        let Ok(inner) = self.inner.lock() else {
            return 0;
        };
        let mut n = 0;
        for member in inner.sessions.values().filter(|m| &*m.cid == cid) {
            member.signal.set(why as u8);
            n += 1;
        }
        n
    }

    /// Containers with at least one session here.
    pub fn rooms(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|inner| inner.rooms.keys().map(|k| k.to_string()).collect())
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

    #[test]
    fn rooms_change_on_first_join_and_last_leave_only() {
        let (live, mut rx) = Live::new();
        let a = live.register("c1", Arc::default());
        let b = live.register("c1", Arc::default());
        let c = live.register("c2", Arc::default());
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
    fn a_room_stop_reaches_that_room_only() {
        let (live, _rx) = Live::new();
        let (s1, s2) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
        let _g1 = live.register("c1", s1.clone());
        let _g2 = live.register("c2", s2.clone());
        assert_eq!(live.stop_room("c1", Stop::ContainerStopped), 1);
        assert_eq!(s1.get(), Some(Stop::ContainerStopped as u8));
        assert_eq!(s2.get(), None);
    }

    #[test]
    fn sessions_registering_after_a_stop_stop_at_once() {
        let (live, _rx) = Live::new();
        live.stop_all(Stop::Draining);
        let late = Arc::new(Signal::default());
        let _g = live.register("c1", late.clone());
        assert_eq!(late.get(), Some(Stop::Draining as u8));
    }
}
