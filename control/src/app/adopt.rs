//! Re-adoption: a managed container whose record is missing (Redis lost its data) gets
//! its record back from its labels and live state, instead of being removed. Redis is
//! coordination; what runs is the runtime's to say.
//!
//! Every container is created with its record in labels
//! ([`record_labels`](super::record_labels::record_labels)); its VNC password is derived
//! from its id ([`crate::infra::passwords`]), so the rebuilt record carries the password
//! the container already requires and relays log in as before.

use super::jobs::Lifecycle;
use super::record_labels::adopted;
use crate::domain::Container;
use crate::infra::runtime::{LABEL_PASSWORD_KEY, PooledEngine};
use crate::metrics::CONTAINERS_ADOPTED;

impl Lifecycle {
    /// Rebuilds the missing record of managed container `cid` of `engine`, with its VNC
    /// password and the engine's name;
    /// a no-op if a record appeared meanwhile (another replica adopted it). A container
    /// that can't be adopted (labels missing: not created by this version) is left
    /// alone and logged.
    pub(super) async fn adopt(&self, engine: &PooledEngine, cid: &str) -> Result<(), String> {
        let Some(found) = engine
            .runtime
            .inspect(cid)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let c = match adopted(cid, &found, &self.node_id) {
            Ok(c) => Container {
                engine: Some(engine.name.clone()),
                ..c
            },
            Err(why) => {
                tracing::warn!(container.id = %cid, reason = %why, "a managed container has no record and cannot be re-adopted; left alone");
                return Ok(());
            }
        };
        let key = found.labels.get(LABEL_PASSWORD_KEY);
        let password = key.and_then(|k| self.passwords.get().derive(k, cid));
        if password.is_none() {
            tracing::warn!(container.id = %cid, password_key = ?key, "re-adopting a container whose VNC password secret is not in the secrets file: relays cannot log in to it");
        }
        let written = self
            .store
            .adopt(&c, key.map(String::as_str).zip(password.as_deref()))
            .await
            .map_err(|e| e.to_string())?;
        if written {
            tracing::info!(container.id = %cid, tenant = %c.tenant, state = c.state.as_str(), "re-adopted a container whose record was lost");
            metrics::counter!(CONTAINERS_ADOPTED, "state" => c.state.as_str()).increment(1);
            let _ = self.store.publish("container.adopted", &c).await;
        }
        Ok(())
    }
}
