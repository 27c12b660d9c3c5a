//! Handing control over on socket.io (`input = "lease"`): a socket asks, grants,
//! releases or takes the desktop's driver lease (`node/driver.rs`) and is answered in
//! the acknowledgement, `{ok: true}` or `{ok: false, error}`. On connect the socket is
//! told who it is (`vnc:self`); lease changes and presence reach it as room events.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::json;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use vnc_shared::token::Scope;

use super::room::Adapter;
use crate::config::InputMode;
use crate::node::Node;
use crate::node::driver::{self, Change, Outcome};
use crate::session::record::SessionRecord;

/// Control requests one socket may make per [`WINDOW`]; more are refused (each costs
/// a Redis script and may publish to the room).
const REQUESTS_PER_WINDOW: u32 = 8;
const WINDOW: Duration = Duration::from_secs(1);
/// Longest session id a grant may name (ids are UUIDs).
const MAX_SESSION_ID: usize = 64;

/// A socket's request budget.
struct Budget(Mutex<(Instant, u32)>);

impl Budget {
    fn spend(&self) -> bool {
        let Ok(mut b) = self.0.lock() else {
            return false;
        };
        if b.0.elapsed() >= WINDOW {
            *b = (Instant::now(), 0);
        }
        b.1 += 1;
        b.1 <= REQUESTS_PER_WINDOW
    }
}

/// What a socket asks of the lease.
#[derive(Clone, Copy)]
enum Ask {
    Request,
    Grant,
    Release,
    Take,
}

/// Installs the control handlers on an admitted socket.
pub fn install(socket: &SocketRef<Adapter>, node: Weak<Node>, record: Arc<SessionRecord>) {
    let budget = Arc::new(Budget(Mutex::new((Instant::now(), 0))));
    for (event, ask) in [
        ("vnc:control:request", Ask::Request),
        ("vnc:control:grant", Ask::Grant),
        ("vnc:control:release", Ask::Release),
        ("vnc:control:take", Ask::Take),
    ] {
        let (node, record, budget) = (node.clone(), record.clone(), budget.clone());
        socket.on(
            event,
            async move |ack: AckSender<Adapter>, TryData(data): TryData<serde_json::Value>| {
                let answer = match (node.upgrade(), budget.spend()) {
                    (None, _) => Err("relay is stopping"),
                    (_, false) => Err("too many requests"),
                    (Some(node), true) => handle(&node, &record, ask, data.ok()).await,
                };
                let body = match answer {
                    Ok(asked) => json!({ "ok": true, "asked": asked }),
                    Err(error) => json!({ "ok": false, "error": error }),
                };
                let _ = ack.send(&body);
            },
        );
    }
}

/// Tells a socket who it is in the room, and whether one driver holds input (`input`
/// `lease`) or every `control` session types (`shared`): a page can't tell a free lease
/// from shared input otherwise.
pub fn introduce(socket: &SocketRef<Adapter>, record: &SessionRecord, input: InputMode) {
    let body = json!({
        "session_id": record.sid,
        "name": record.name,
        "scope": record.scope.as_str(),
        "privileged": record.privileged,
        "input": input,
    });
    let _ = socket.emit("vnc:self", &body);
}

/// Runs one request; `Ok(true)` when it went to the room as a request rather than
/// moving the lease.
async fn handle(
    node: &Node,
    record: &SessionRecord,
    ask: Ask,
    data: Option<serde_json::Value>,
) -> Result<bool, &'static str> {
    if node.live().mode() == InputMode::Shared {
        return Err("input is shared");
    }
    let change = match ask {
        Ask::Request if record.scope == Scope::View => {
            return Err("view-only sessions can't take control");
        }
        Ask::Request => Change::Request(&record.name),
        Ask::Take if !record.privileged => {
            return Err("only the owner or an admin can take control");
        }
        Ask::Take => Change::Take,
        Ask::Release => Change::Release,
        Ask::Grant => {
            let driving = node.live().driver(&record.cid).as_deref() == Some(record.sid.as_str());
            if !driving && !record.privileged {
                return Err("only the driver or the owner can grant");
            }
            let target = data
                .as_ref()
                .and_then(|d| d.get("session_id")?.as_str())
                .filter(|t| !t.is_empty() && t.len() <= MAX_SESSION_ID)
                .ok_or("session_id missing")?;
            Change::Grant {
                target,
                privileged: record.privileged,
            }
        }
    };
    match driver::change(node, record, change).await {
        Ok(outcome) => answer(outcome),
        Err(e) => {
            tracing::warn!(error = %e, "control request failed");
            Err("redis unreachable")
        }
    }
}

fn answer(outcome: Outcome) -> Result<bool, &'static str> {
    match outcome {
        Outcome::Moved(_) | Outcome::Kept => Ok(false),
        Outcome::Asked => Ok(true),
        Outcome::Refused(why) => Err(why),
    }
}
