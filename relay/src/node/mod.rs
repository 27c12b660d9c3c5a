//! The node's shared state ([`Node`]): the configuration and keys in force, Redis, the
//! bounds on sessions and pending connections, the live sessions, the drain, the task
//! tracker, socket.io once started and the recordings. Every connection and session
//! holds it; its fields are private and reached through narrow accessors.
//!
//! The folder also owns what runs beside the sessions: the live-session and room
//! registry (`live.rs`, `rooms.rs`, `registry.rs`), the driver lease and presence
//! (`driver.rs`), revocations (`revoked.rs`), Redis
//! access (`store.rs`), reload (`reload.rs`) and the admin listener (`admin.rs`).

pub mod admin;
pub mod driver;
pub mod live;
pub mod registry;
pub mod reload;
pub mod revoked;
pub mod rooms;
pub mod store;

use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vnc_shared::swap::Swap;
use vnc_shared::systemd::Health;
use vnc_shared::tls::ReloadableTls;
use vnc_shared::token::KeySet;

use crate::admission::pending::Pending;
use crate::config::RelayConfig;
use crate::recording::Recordings;
use crate::session::end::Stop;
use crate::transport::socketio::room::{Layer, SocketIoServer};
use live::Live;
use store::Store;

/// What every connection and session of one relay shares.
pub struct Node {
    /// The configuration in force; SIGHUP replaces it for what starts afterwards (live
    /// sessions keep the limits they started with).
    config: Swap<RelayConfig>,
    /// Token verification keys; SIGHUP swaps them (rotation) without touching sessions.
    keys: Swap<KeySet>,
    /// The public listener's certificate, when it speaks TLS; SIGHUP reloads it.
    tls: Option<ReloadableTls>,
    /// The session bound `sessions` was last sized to.
    max_sessions: Mutex<usize>,
    store: Store,
    /// Cancelled on SIGTERM: stop accepting, refuse new sessions, report unready.
    draining: CancellationToken,
    /// One permit per session, taken at admission.
    sessions: Arc<Semaphore>,
    /// Connections in their handshake, bounded apart from sessions.
    pending: Pending,
    /// This node's live sessions, by container.
    live: Arc<Live>,
    /// Every connection and session task, so shutdown can wait for them.
    tracker: TaskTracker,
    /// socket.io's server, once started (it needs Redis for its adapter); shared with
    /// the room feed, which starts first.
    socketio: Arc<OnceLock<SocketIoServer>>,
    /// socket.io's HTTP layer, once started.
    socketio_layer: OnceLock<Layer>,
    /// Where sessions are recorded; `None` records nothing.
    recordings: Option<Arc<Recordings>>,
}

impl Node {
    pub fn new(
        config: RelayConfig,
        keys: KeySet,
        tls: Option<ReloadableTls>,
        store: Store,
        live: Arc<Live>,
        socketio: Arc<OnceLock<SocketIoServer>>,
        recordings: Option<Arc<Recordings>>,
    ) -> Node {
        let max_sessions = config.node.max_sessions;
        Node {
            config: Swap::new(config),
            keys: Swap::new(keys),
            tls,
            max_sessions: Mutex::new(max_sessions),
            store,
            draining: CancellationToken::new(),
            sessions: Arc::new(Semaphore::new(max_sessions)),
            pending: Pending::default(),
            live,
            tracker: TaskTracker::new(),
            socketio,
            socketio_layer: OnceLock::new(),
            recordings,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<RelayConfig> {
        self.config.get()
    }

    /// The token keys in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.get()
    }

    /// Puts a new configuration and key set in force for the next connections; the
    /// session bound grows at once and shrinks as sessions end.
    pub fn reconfigure(&self, config: RelayConfig, keys: KeySet) {
        let max = config.node.max_sessions;
        self.keys.set(keys);
        self.config.set(config);
        let Ok(mut current) = self.max_sessions.lock() else {
            return;
        };
        if max > *current {
            self.sessions.add_permits(max - *current);
        } else if max < *current {
            let surplus = *current - max;
            let forgotten = self.sessions.forget_permits(surplus);
            if forgotten < surplus {
                let sessions = self.sessions.clone();
                // The rest are held by live sessions: retire them as those end.
                tokio::spawn(async move {
                    if let Ok(permits) = sessions
                        .acquire_many_owned((surplus - forgotten) as u32)
                        .await
                    {
                        permits.forget();
                    }
                });
            }
        }
        *current = max;
    }

    /// Ends every live session with `why` (and any that registers afterwards).
    pub fn stop_all(&self, why: Stop) {
        self.live.stop_all(why);
    }

    /// Why the relay should not get new sessions now, if it shouldn't.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining.is_cancelled() {
            Some("draining")
        } else if !self.store.is_connected() {
            Some("redis unreachable")
        } else if self.keys().is_empty() {
            Some("no token keys")
        } else if self.socketio_layer.get().is_none() {
            Some("socket.io starting")
        } else {
            None
        }
    }

    /// Readiness as `/readyz` sees it, and the live session count, for systemd.
    pub fn health(&self) -> Health {
        let sessions = match self.live.len() {
            1 => "1 live session".to_owned(),
            n => format!("{n} live sessions"),
        };
        if self.is_draining() {
            return Health {
                ready: false,
                status: format!("Draining: {sessions} left"),
            };
        }
        match self.not_ready() {
            None => Health {
                ready: true,
                status: format!("Serving: {sessions}"),
            },
            Some(why) => Health {
                ready: false,
                status: format!("Not ready ({why}): {sessions}"),
            },
        }
    }

    pub fn tls(&self) -> Option<&ReloadableTls> {
        self.tls.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub fn recordings(&self) -> Option<&Arc<Recordings>> {
        self.recordings.as_ref()
    }

    /// Resolves once draining starts.
    pub async fn drain_started(&self) {
        self.draining.cancelled().await
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Stops accepting, refuses new sessions, reports unready.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    /// A place under `max_sessions`, if one is free.
    pub fn session_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.sessions.clone().try_acquire_owned().ok()
    }

    /// socket.io's server, once started.
    pub fn socketio(&self) -> Option<&SocketIoServer> {
        self.socketio.get()
    }

    /// socket.io's HTTP layer, once started.
    pub fn socketio_layer(&self) -> Option<&Layer> {
        self.socketio_layer.get()
    }

    /// socket.io is ready: requests to `/socket.io/` go to it from now on.
    pub fn socketio_started(&self, server: SocketIoServer, layer: Layer) {
        let _ = self.socketio.set(server);
        let _ = self.socketio_layer.set(layer);
    }
}
