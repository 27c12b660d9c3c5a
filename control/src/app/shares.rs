//! Share links, the presence list and the driver lease: creating, listing and
//! revoking a container's share links, reading who is in a container's desktop, and
//! giving its input to one session.

use std::time::Duration;

use vnc_shared::schema::{ContainerState, MAX_PRESENCE, Viewer};
use vnc_shared::token::{Minted, TokenRequest};

use crate::domain::files::token_policies;
use crate::domain::share::MAX_SHARES_PER_CONTAINER;
use crate::domain::{Caller, Container, IssuedToken, Kick, Share, ShareRequest};
use crate::infra::store::now_ms;

use super::{App, AppError};

/// How long a lease control sets lasts unless the holder's node refreshes it: the
/// node refreshes the lease its session holds at its next heartbeat, and a lease
/// given to a session whose node died frees itself this soon.
pub const DRIVER_LEASE: Duration = Duration::from_secs(60);

/// A share and the live sessions opened with it.
pub struct ShareListing {
    pub share: Share,
    pub sessions: usize,
}

/// Who is in a container's desktop.
pub struct Presence {
    /// The session holding the driver lease, if any.
    pub driver: Option<String>,
    /// At most [`MAX_PRESENCE`], oldest first.
    pub viewers: Vec<Viewer>,
    /// Live sessions left off `viewers`.
    pub more: usize,
}

impl App {
    /// A container the caller manages (owner or admin): another tenant's is "not
    /// found", one the caller only sees is forbidden with `why`.
    async fn managed_container(
        &self,
        caller: &Caller,
        cid: &str,
        why: &str,
    ) -> Result<Container, AppError> {
        let c = self.container(caller, cid).await?;
        if !c.managed_by(caller) {
            return Err(AppError::Forbidden(why.to_owned()));
        }
        Ok(c)
    }

    /// Creates a share link of a running container and mints its token: many
    /// sessions (up to its `max_sessions`) may use the token until it expires or the
    /// share is revoked.
    pub async fn create_share(
        &self,
        caller: &Caller,
        cid: &str,
        req: ShareRequest,
    ) -> Result<(Share, Minted), AppError> {
        let tunables = self.tunables.get();
        let problems = req.problems(tunables.share_max_ttl);
        if !problems.is_empty() {
            return Err(AppError::Invalid(problems));
        }
        let c = self
            .managed_container(
                caller,
                cid,
                "only the owner or an admin may share a container",
            )
            .await?;
        if c.state != ContainerState::Running {
            return Err(AppError::Conflict(format!(
                "container is not running (state: {})",
                c.state.as_str()
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let (files, clipboard) = req.policies(token_policies(&c, req.scope));
        let minted = tunables
            .signer
            .mint(&TokenRequest {
                sub: &format!("share:{id}"),
                tenant: &c.tenant,
                cid: &c.id,
                scope: req.scope,
                ttl: req.ttl,
                share: Some(&id),
                admin: false,
                files,
                clipboard,
            })
            .map_err(AppError::Signing)?;
        let share = Share {
            id,
            cid: c.id.clone(),
            tenant: c.tenant.clone(),
            scope: req.scope,
            max_sessions: req.max_sessions(),
            name: req.name.unwrap_or_default(),
            created_by: caller.sub.clone(),
            created_at: now_ms(),
            // The share lives exactly as long as its token.
            expires_at: minted.claims.exp,
        };
        if let Some(live) = self
            .shares
            .create_within_limit(&share, MAX_SHARES_PER_CONTAINER)
            .await?
        {
            return Err(AppError::OverQuota(format!(
                "container {} has {live} live share links, the limit is \
                 {MAX_SHARES_PER_CONTAINER}: revoke one first",
                c.id
            )));
        }
        // Recorded like every token control issues, so an admin can revoke it by its
        // jti too.
        self.tokens
            .record(&IssuedToken::from_claims(&minted.claims))
            .await?;
        tracing::info!(
            share.id = %share.id,
            container.id = %share.cid,
            caller.sub = %caller.sub,
            scope = share.scope.as_str(),
            max_sessions = share.max_sessions,
            "share link created"
        );
        Ok((share, minted))
    }

    /// The live share links of a container, each with its live sessions; owner or
    /// admin.
    pub async fn container_shares(
        &self,
        caller: &Caller,
        cid: &str,
    ) -> Result<Vec<ShareListing>, AppError> {
        let c = self
            .managed_container(
                caller,
                cid,
                "only the owner or an admin may list a container's share links",
            )
            .await?;
        let shares: Vec<Share> = self
            .shares
            .container_shares(&c.id)
            .await?
            .into_iter()
            .filter(|s| s.tenant == c.tenant)
            .collect();
        let ids: Vec<&str> = shares.iter().map(|s| s.id.as_str()).collect();
        let members = self.shares.session_ids(&ids).await?;
        // A dead node's sessions stay in a share's set until the share expires: only
        // those whose record is live count. One pipeline for every share.
        let all: Vec<&str> = members.iter().flatten().map(String::as_str).collect();
        let mut live = self.registry.live(&all).await?.into_iter();
        Ok(shares
            .into_iter()
            .zip(members)
            .map(|(share, sids)| ShareListing {
                share,
                sessions: live.by_ref().take(sids.len()).filter(|&l| l).count(),
            })
            .collect())
    }

    /// Revokes a share link: deleted (the relays refuse it from now on) and its
    /// sessions kicked. Its creator, the container's owner or an admin; a second
    /// revocation finds nothing.
    pub async fn revoke_share(&self, caller: &Caller, id: &str) -> Result<Share, AppError> {
        let share = self
            .shares
            .get(id)
            .await?
            .filter(|s| s.visible_to(caller))
            .ok_or(AppError::NotFound("share"))?;
        let owner = self
            .store
            .get(&share.cid)
            .await?
            .filter(|c| c.visible_to(caller))
            .map(|c| c.owner);
        if !share.revocable_by(caller, owner.as_deref()) {
            return Err(AppError::Forbidden(
                "only the share's creator, the container's owner or an admin may revoke it".into(),
            ));
        }
        // Deleted first, kicked second: a kicked guest that reconnects at once is
        // refused. Two revocations at once: only the one that deleted it kicks.
        if !self.shares.delete(&share).await? {
            return Err(AppError::NotFound("share"));
        }
        self.publish_kick(caller, &Kick::share_revoked(&share.id))
            .await?;
        Ok(share)
    }

    /// Who is in a container's desktop: its live sessions and the driver; owner or
    /// admin.
    pub async fn presence(&self, caller: &Caller, cid: &str) -> Result<Presence, AppError> {
        let c = self
            .managed_container(
                caller,
                cid,
                "only the owner or an admin may see who is in a desktop",
            )
            .await?;
        let driver = self.registry.driver(&c.id).await?;
        let sessions: Vec<_> = self
            .registry
            .container_sessions(&c.id)
            .await?
            .into_iter()
            .filter(|s| s.cid == c.id && s.tenant == c.tenant)
            .collect();
        let more = sessions.len().saturating_sub(MAX_PRESENCE);
        let viewers = sessions
            .iter()
            .take(MAX_PRESENCE)
            .map(|s| s.viewer(driver.as_deref()))
            .collect();
        Ok(Presence {
            driver,
            viewers,
            more,
        })
    }

    /// Gives a container's input to one of its live `control` sessions, or frees it
    /// (`None`); the relays holding the room hear it on the room channel. Owner or
    /// admin.
    pub async fn set_driver(
        &self,
        caller: &Caller,
        cid: &str,
        sid: Option<&str>,
    ) -> Result<Option<String>, AppError> {
        let c = self
            .managed_container(
                caller,
                cid,
                "only the owner or an admin may give control of a desktop",
            )
            .await?;
        if let Some(sid) = sid {
            let s = self
                .registry
                .session(sid)
                .await?
                .filter(|s| s.cid == c.id && s.tenant == c.tenant)
                .ok_or(AppError::NotFound("session"))?;
            if !s.may_drive() {
                return Err(AppError::Conflict(format!(
                    "session {sid} is {}: only a control session may drive",
                    s.scope
                )));
            }
        }
        let nodes = self.registry.set_driver(&c.id, sid, DRIVER_LEASE).await?;
        tracing::info!(
            container.id = %c.id,
            driver = sid.unwrap_or("none"),
            caller.sub = %caller.sub,
            relay.nodes = nodes,
            "driver set"
        );
        Ok(sid.map(str::to_owned))
    }
}
