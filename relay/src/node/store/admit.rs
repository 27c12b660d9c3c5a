//! Admission to the registry: a session's single-use claim and its places in the
//! counting sets, each in its own key (its own hash slot on a Redis Cluster), sent
//! together and undone when one refuses.

use std::time::Duration;

use fred::interfaces::LuaInterface;
use fred::prelude::*;
use futures_util::future::try_join_all;

use super::{PLACE, RELEASE_CLAIM, Store, StoreError, session_fields};
use crate::config::SessionLimits;
use crate::session::record::SessionRecord;

/// What [`Store::admit_session`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    ContainerFull,
    UserFull,
    TokenInUse,
    ShareFull,
}

impl Store {
    /// Admits session `r` into the registry: its single-use claim, and a reservation in
    /// each of its counting sets (container, user, and share with `share_limit`) against
    /// the limits (0: none) over the live sessions of every node, all with `ttl`, sent
    /// together; then its record. Each step is atomic in its own key (its own hash
    /// slot on a Redis Cluster); when one refuses, the steps that passed are undone.
    /// Between the two, a concurrent admission may count this one and be refused too:
    /// over-refusal under contention, never over-admission.
    pub async fn admit_session(
        &self,
        r: &SessionRecord,
        node_id: &str,
        limits: SessionLimits,
        share_limit: u32,
        ttl: Duration,
    ) -> Result<Admission, StoreError> {
        if r.share.is_some() && share_limit == 0 {
            // A share allowing no session (the limit 0 of a set means none).
            return Ok(Admission::ShareFull);
        }
        let ms = ttl.as_millis() as u64;
        // In the order their refusals are reported.
        let mut sets = Vec::with_capacity(3);
        if let Some(share) = &r.share {
            sets.push((
                self.keys.share_sessions(share),
                share_limit as usize,
                Admission::ShareFull,
            ));
        }
        sets.push((
            self.keys.container_sessions(&r.cid),
            limits.per_container,
            Admission::ContainerFull,
        ));
        sets.push((
            self.keys.user_sessions(&r.tenant, &r.sub),
            limits.per_user,
            Admission::UserFull,
        ));
        // Sent together: the client pipelines concurrent commands on its connections.
        let reservations = try_join_all(
            sets.iter()
                .map(|(set, limit, _)| self.reserve(set, &r.sid, ms, *limit)),
        );
        let claim = async {
            if !r.single_use {
                return Ok(true);
            }
            let expiry = Some(Expiration::PX(ms as i64));
            let set: Option<String> = self
                .client
                .set(
                    self.keys.token_session(&r.jti),
                    r.sid.as_str(),
                    expiry,
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            Ok::<_, StoreError>(set.is_some())
        };
        let (reserved, claimed) = tokio::try_join!(reservations, claim)?;
        let refusal = sets
            .iter()
            .zip(&reserved)
            .find(|(_, ok)| !**ok)
            .map(|((_, _, why), _)| *why)
            .or((!claimed).then_some(Admission::TokenInUse));
        let Some(refusal) = refusal else {
            self.write_session(r, node_id, ttl).await?;
            return Ok(Admission::Admitted);
        };
        let undo = self.client.pipeline();
        for ((set, _, _), ok) in sets.iter().zip(&reserved) {
            if *ok {
                let _: () = undo.zrem(set.as_str(), r.sid.as_str()).await?;
            }
        }
        let _: Vec<Value> = undo.all().await?;
        if r.single_use && claimed {
            self.release_claim(r).await?;
        }
        Ok(refusal)
    }

    /// [`PLACE`]: one session in one counting set; false when `limit` refused it.
    pub(super) async fn reserve(
        &self,
        set: &str,
        sid: &str,
        ttl_ms: u64,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let args = vec![ttl_ms.to_string(), limit.to_string(), sid.to_owned()];
        let reserved: i64 = self.client.eval(PLACE, vec![set], args).await?;
        Ok(reserved == 1)
    }

    /// Releases the session's single-use claim if it still holds it.
    pub(super) async fn release_claim(&self, r: &SessionRecord) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .eval(
                RELEASE_CLAIM,
                vec![self.keys.token_session(&r.jti)],
                vec![r.sid.as_str()],
            )
            .await?;
        Ok(())
    }

    /// Writes the record of an admitted session (`session:{sid}`, with `ttl`).
    async fn write_session(
        &self,
        r: &SessionRecord,
        node_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.session(&r.sid);
        let pipe = self.client.pipeline();
        let _: () = pipe.hset(&key, session_fields(r, node_id)).await?;
        let _: () = pipe.pexpire(&key, ttl.as_millis() as i64, None).await?;
        let _: Vec<Value> = pipe.all().await?;
        Ok(())
    }
}
