//! This node in the cross-node session registry: the heartbeat that keeps its
//! sessions, single-use claims and node record alive in Redis (and rewrites them after
//! Redis lost its data), and the kicks other parts publish on `{prefix}control`.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use vnc_shared::schema::{ControlMessage, Kick};

use crate::live::{Live, SessionRecord};
use crate::server::Relay;
use crate::session::Stop;
use crate::store::NodeRecord;

/// Refreshes the registry every third of the session TTL, for as long as the relay
/// runs; a write that fails (Redis away) is retried at the next beat.
pub async fn heartbeat(relay: Arc<Relay>, node: NodeRecord) {
    let ttl = relay.config().session_ttl;
    let mut beat = tokio::time::interval(ttl / 3);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        let sessions = relay.live.sessions();
        let written = match relay.store.record_node(&node, sessions.len(), ttl).await {
            Ok(()) => {
                relay
                    .store
                    .record_sessions(&node.node_id, &sessions, ttl)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "registry heartbeat failed; retrying at the next beat");
        }
    }
}

/// Whether `r` is a session `kick` selects: every selector given must match.
fn matches(kick: &Kick, r: &SessionRecord) -> bool {
    let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    is(&kick.sid, &r.sid) && is(&kick.jti, &r.jti) && is(&kick.cid, &r.cid) && is(&kick.sub, &r.sub)
}

/// Ends the sessions a control message names (4003); returns how many.
pub fn kick(live: &Live, payload: &str) -> usize {
    let kick = match serde_json::from_str::<ControlMessage>(payload) {
        Ok(ControlMessage::Kick(k)) if k.names_someone() => k,
        _ => {
            tracing::warn!(
                payload,
                "ignoring a control message that isn't a kick naming a session"
            );
            return 0;
        }
    };
    let why = if kick.is_revocation() {
        Stop::Revoked
    } else {
        Stop::Kicked
    };
    let ended = live.stop_matching(|r| matches(&kick, r), why);
    tracing::info!(?kick.sid, ?kick.jti, ?kick.cid, ?kick.sub, reason = %kick.reason, sessions = ended, "kick");
    ended
}

#[cfg(test)]
mod tests {
    use vnc_shared::token::Scope;

    use super::*;
    use crate::signal::Signal;

    fn record(sid: &str, jti: &str, sub: &str) -> Arc<SessionRecord> {
        Arc::new(SessionRecord {
            sid: sid.into(),
            cid: "c1".into(),
            sub: sub.into(),
            tenant: "t1".into(),
            scope: Scope::Control,
            jti: jti.into(),
            started_at: 0,
            transport: "websocket",
            single_use: true,
        })
    }

    #[test]
    fn kicks_end_the_sessions_they_name_with_the_right_reason() {
        let (live, _rx) = Live::new();
        let signals: Vec<Arc<Signal>> = (0..3).map(|_| Arc::default()).collect();
        let _a = live.register(record("s1", "j1", "alice"), signals[0].clone());
        let _b = live.register(record("s2", "j2", "alice"), signals[1].clone());
        let _c = live.register(record("s3", "j3", "bob"), signals[2].clone());

        assert_eq!(
            kick(&live, r#"{"type":"kick","sid":"s1","reason":"kicked"}"#),
            1
        );
        assert_eq!(signals[0].get(), Some(Stop::Kicked as u8));
        assert_eq!(
            kick(&live, r#"{"type":"kick","jti":"j2","reason":"revoked"}"#),
            1
        );
        assert_eq!(signals[1].get(), Some(Stop::Revoked as u8));
        assert_eq!(signals[2].get(), None);
        // Selectors combine; a kick naming nobody, or not a kick, ends nothing.
        assert_eq!(kick(&live, r#"{"type":"kick","sub":"bob","sid":"s1"}"#), 0);
        assert_eq!(kick(&live, r#"{"type":"kick","reason":"all"}"#), 0);
        assert_eq!(kick(&live, r#"{"type":"hello","sub":"bob"}"#), 0);
        assert_eq!(kick(&live, "not json"), 0);
        assert_eq!(signals[2].get(), None);
        assert_eq!(kick(&live, r#"{"type":"kick","sub":"bob"}"#), 1);
    }
}
