//! Queries and commands about what the relays run: a container's live sessions,
//! ending one (a kick), revoking an issued token, and the relay nodes.

use crate::domain::session::may_list_nodes;
use crate::domain::{Caller, IssuedToken, Kick, Node, Session, kick_kind};
use crate::metrics::KICKS;

use super::{App, AppError};

impl App {
    /// The live sessions of a container its owner or an admin may see (another
    /// tenant's container is "not found").
    pub async fn container_sessions(
        &self,
        caller: &Caller,
        cid: &str,
    ) -> Result<Vec<Session>, AppError> {
        let c = self.container(caller, cid).await?;
        if !c.managed_by(caller) {
            return Err(AppError::Forbidden(
                "only the owner or an admin may list a container's sessions".into(),
            ));
        }
        Ok(self
            .registry
            .container_sessions(&c.id)
            .await?
            .into_iter()
            .filter(|s| s.cid == c.id && s.tenant == c.tenant)
            .collect())
    }

    /// Asks whichever relay node holds session `sid` to end it.
    pub async fn kick_session(&self, caller: &Caller, sid: &str) -> Result<(), AppError> {
        let s = self
            .registry
            .session(sid)
            .await?
            .filter(|s| s.visible_to(caller))
            .ok_or(AppError::NotFound("session"))?;
        let owner = self
            .store
            .get(&s.cid)
            .await?
            .filter(|c| c.visible_to(caller))
            .map(|c| c.owner);
        if !s.kickable_by(caller, owner.as_deref()) {
            return Err(AppError::Forbidden(
                "only the container's owner or an admin may end a session".into(),
            ));
        }
        self.publish_kick(caller, &Kick::session(sid)).await
    }

    /// Revokes a token control issued: the relays refuse it from now on and end the
    /// sessions opened with it. Idempotent.
    pub async fn revoke_token(&self, caller: &Caller, jti: &str) -> Result<IssuedToken, AppError> {
        let t = self
            .tokens
            .get(jti)
            .await?
            .filter(|t| t.visible_to(caller))
            .ok_or(AppError::NotFound("token"))?;
        if !t.revocable_by(caller) {
            return Err(AppError::Forbidden(
                "only the token's user or an admin may revoke it".into(),
            ));
        }
        // Revoked first, kicked second: a kicked browser that reconnects at once with
        // the same token is refused.
        self.tokens.revoke(&t).await?;
        // With the token's exp, so the relays remember the revocation until then even
        // if Redis loses it.
        let kick = Kick {
            exp: Some(t.exp),
            ..Kick::revoked(jti)
        };
        self.publish_kick(caller, &kick).await?;
        Ok(t)
    }

    /// Every relay node with a live heartbeat (admins only: nodes serve all tenants).
    pub async fn nodes(&self, caller: &Caller) -> Result<Vec<Node>, AppError> {
        if !may_list_nodes(caller) {
            return Err(AppError::Forbidden(
                "only admins may list relay nodes".into(),
            ));
        }
        Ok(self.registry.nodes().await?)
    }

    pub(super) async fn publish_kick(&self, caller: &Caller, kick: &Kick) -> Result<(), AppError> {
        let nodes = self.registry.kick(kick).await?;
        metrics::counter!(KICKS, "kind" => kick_kind(kick)).increment(1);
        tracing::info!(
            kick = %kick.to_message(),
            caller.sub = %caller.sub,
            caller.tenant = %caller.tenant,
            relay.nodes = nodes,
            "kick published"
        );
        Ok(())
    }
}
