//! What re-adoption reads of a Docker container: its labels, its environment, its
//! state and, when it runs, the relay's endpoint (from one inspect).

use std::collections::BTreeMap;

use super::docker_engine::Engine;
use super::docker_model::{endpoint_from_inspect, pick_existing, state_from_inspect};
use super::{Inspected, RuntimeError, RuntimeState, valid_cid};

impl Engine {
    /// The container labelled `vnc.cid=cid` on this plane, if any.
    pub(super) async fn inspect_cid(&self, cid: &str) -> Result<Option<Inspected>, RuntimeError> {
        if !valid_cid(cid) {
            return Ok(None);
        }
        let existing = self.list(Some(cid)).await?;
        let Some(id) = pick_existing(&existing).and_then(|c| c.id.as_deref()) else {
            return Ok(None);
        };
        let Some(found) = self.inspect(id).await? else {
            return Ok(None);
        };
        let state = state_from_inspect(found.state.as_ref());
        // A running container the relay cannot reach has no endpoint (not an error:
        // the caller decides what such a container is).
        let endpoint = match state {
            RuntimeState::Running => {
                endpoint_from_inspect(&found, &self.network, &self.isolation.network).ok()
            }
            _ => None,
        };
        let config = found.config.unwrap_or_default();
        let env = config
            .env
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect::<BTreeMap<_, _>>();
        Ok(Some(Inspected {
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            env,
            state,
            endpoint,
        }))
    }
}
