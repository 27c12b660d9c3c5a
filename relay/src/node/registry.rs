//! This node in the cross-node session registry: the heartbeat that keeps its
//! sessions, single-use claims and node record alive in Redis (and rewrites them, and
//! the revocations this node knows, after Redis lost its data), and the kicks other
//! parts publish on `{prefix}control`.
//!
//! Kicks are pub/sub, so a node whose subscriber was disconnected misses them: every
//! beat, and at once after every (re)subscribe, the node also asks Redis which of its
//! live sessions' tokens are revoked, in one round trip, and ends those with 4003.

use std::sync::Arc;

use fred::interfaces::KeysInterface;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use vnc_shared::schema::{ControlMessage, Kick};

use super::Node;
use crate::node::live::Live;
use crate::node::store::{NodeRecord, StoreError};
use crate::session::end::Stop;
use crate::session::record::SessionRecord;

/// Refreshes the registry every third of the session TTL, and whenever `resync` is
/// notified (the subscriber (re)subscribed), for as long as the relay runs; a write that
/// fails (Redis away) is retried at the next beat.
pub async fn heartbeat(relay: Arc<Node>, node: NodeRecord, resync: Arc<Notify>) {
    let ttl = relay.config().registry.session_ttl;
    let mut beat = tokio::time::interval(ttl / 3);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            _ = resync.notified() => {}
        }
        if let Err(e) = beat_once(&relay, &node).await {
            tracing::debug!(error = %e, "registry heartbeat failed; retrying at the next beat");
        }
    }
}

/// One beat: ends the sessions whose token Redis says is revoked or whose share link
/// is gone, then rewrites this node's records and the revocations it knows, and
/// follows the driver leases of its rooms.
async fn beat_once(relay: &Node, node: &NodeRecord) -> Result<(), StoreError> {
    let ttl = relay.config().registry.session_ttl;
    let sessions = relay.live().sessions();
    end_unshared(relay, &sessions).await?;
    let jtis: Vec<&str> = sessions.iter().map(|r| r.jti.as_str()).collect();
    let revoked = relay.store().revoked_among(&jtis).await?;
    for r in sessions.iter().filter(|r| revoked.contains(&r.jti)) {
        let ended = relay.live().revoke(&r.jti, Some(r.exp));
        if ended > 0 {
            tracing::info!(session.id = %r.sid, "token found revoked in redis: session ended");
        }
    }
    relay.store().record_node(node, sessions.len(), ttl).await?;
    relay
        .store
        .record_sessions(&node.node_id, &sessions, ttl)
        .await?;
    relay
        .store
        .record_revocations(&relay.live().revoked.entries())
        .await?;
    super::driver::beat(relay, &sessions).await
}

/// Ends (4003 `share revoked`) the share sessions whose share link Redis no longer
/// has: a revocation whose kick this node missed, or a Redis that lost its data (a
/// share can't be verified then; the owner makes a new link). One `EXISTS` each, in
/// one pipeline.
async fn end_unshared(relay: &Node, sessions: &[Arc<SessionRecord>]) -> Result<(), StoreError> {
    let mut shares: Vec<String> = sessions.iter().filter_map(|r| r.share.clone()).collect();
    shares.sort();
    shares.dedup();
    if shares.is_empty() {
        return Ok(());
    }
    let store = relay.store();
    let pipe = store.client().pipeline();
    for share in &shares {
        let _: () = pipe.exists(store.keys().share(share)).await?;
    }
    let found: Vec<i64> = pipe.all().await?;
    for (share, _) in shares.iter().zip(found).filter(|(_, n)| *n == 0) {
        let ended = relay
            .live()
            .stop_matching(|r| r.share.as_ref() == Some(share), Stop::ShareRevoked);
        tracing::info!(
            share,
            sessions = ended,
            "share link gone from redis: its sessions ended"
        );
    }
    Ok(())
}

/// Whether `r` is a session `kick` selects: every selector given must match.
fn matches(kick: &Kick, r: &SessionRecord) -> bool {
    let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    let share = kick
        .share
        .as_deref()
        .is_none_or(|s| r.share.as_deref() == Some(s));
    is(&kick.sid, &r.sid)
        && is(&kick.jti, &r.jti)
        && is(&kick.cid, &r.cid)
        && is(&kick.sub, &r.sub)
        && share
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
    let why = match (&kick.jti, kick.is_revocation()) {
        (Some(jti), true) => {
            // Remembered first: a session registering meanwhile finds it (see Live).
            live.revoked.insert(jti, kick.exp);
            Stop::Revoked
        }
        (None, true) => Stop::Revoked,
        _ if kick.reason == Kick::SHARE_REVOKED => Stop::ShareRevoked,
        (_, false) => Stop::Kicked,
    };
    let ended = live.stop_matching(|r| matches(&kick, r), why);
    tracing::info!(?kick.sid, ?kick.jti, ?kick.cid, ?kick.sub, ?kick.share, reason = %kick.reason, sessions = ended, "kick");
    ended
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::session::end::StopSignal;

    fn record(sid: &str, jti: &str, sub: &str) -> Arc<SessionRecord> {
        Arc::new(SessionRecord {
            sub: sub.into(),
            jti: jti.into(),
            ..SessionRecord::for_tests(sid)
        })
    }

    #[test]
    fn kicks_end_the_sessions_they_name_with_the_right_reason() {
        let (live, _rx) = Live::new(crate::config::InputMode::Lease);
        let signals: Vec<Arc<StopSignal>> = (0..3).map(|_| Arc::default()).collect();
        let _a = live.register(
            record("s1", "j1", "alice"),
            signals[0].clone(),
            Arc::default(),
        );
        let _b = live.register(
            record("s2", "j2", "alice"),
            signals[1].clone(),
            Arc::default(),
        );
        let _c = live.register(
            record("s3", "j3", "bob"),
            signals[2].clone(),
            Arc::default(),
        );

        assert_eq!(
            kick(&live, r#"{"type":"kick","sid":"s1","reason":"kicked"}"#),
            1
        );
        assert_eq!(signals[0].get(), Some(Stop::Kicked));
        assert_eq!(
            kick(&live, r#"{"type":"kick","jti":"j2","reason":"revoked"}"#),
            1
        );
        assert_eq!(signals[1].get(), Some(Stop::Revoked));
        assert_eq!(signals[2].get(), None);
        // A revocation is remembered (without `exp`: for the longest token life).
        assert!(live.revoked.contains("j2") && !live.revoked.contains("j1"));
        assert_eq!(
            kick(
                &live,
                r#"{"type":"kick","jti":"j9","exp":4000000000,"reason":"revoked"}"#
            ),
            0
        );
        assert!(live.revoked.contains("j9"));
        // Selectors combine; a kick naming nobody, or not a kick, ends nothing.
        assert_eq!(kick(&live, r#"{"type":"kick","sub":"bob","sid":"s1"}"#), 0);
        assert_eq!(kick(&live, r#"{"type":"kick","reason":"all"}"#), 0);
        assert_eq!(kick(&live, r#"{"type":"hello","sub":"bob"}"#), 0);
        assert_eq!(kick(&live, "not json"), 0);
        assert_eq!(signals[2].get(), None);
        assert_eq!(kick(&live, r#"{"type":"kick","sub":"bob"}"#), 1);
    }

    #[test]
    fn a_share_kick_ends_the_shares_sessions_only() {
        let (live, _rx) = Live::new(crate::config::InputMode::Lease);
        let shared = Arc::new(SessionRecord {
            share: Some("h1".into()),
            ..SessionRecord::for_tests("s1")
        });
        let (guest, owner) = (
            Arc::new(StopSignal::default()),
            Arc::new(StopSignal::default()),
        );
        let _g = live.register(shared, guest.clone(), Arc::default());
        let _o = live.register(record("s2", "j2", "u1"), owner.clone(), Arc::default());
        let message = Kick::share_revoked("h1").to_message();
        assert_eq!(kick(&live, &message), 1);
        assert_eq!(guest.get(), Some(Stop::ShareRevoked));
        assert_eq!(Stop::ShareRevoked.end().close(), (4003, "share revoked"));
        assert_eq!(owner.get(), None);
    }
}
