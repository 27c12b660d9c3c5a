//! The desktops' own bridge network: looked up before every create, created with
//! inter-container traffic disabled when it is missing, and refused when it exists
//! without that (a network someone else made, or Docker's default `bridge`). On it,
//! one tenant's desktop cannot open a connection to another's VNC port; the host (the
//! relay, control's start probe) still reaches every desktop.
//!
//! Engines before API 1.44 create a second network of a name that exists (with only a
//! warning), so two replicas (or planes) creating it at the same moment can make two,
//! and a name that matches two networks cannot be used. Desktops therefore join the
//! network by id, and every creator lists the networks of that name afterwards, keeps
//! the oldest (a twin made later is always newer, so every replica keeps the same one)
//! and removes the others.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{Network, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;

use super::docker_engine::{API_TIMEOUT, Engine, bounded, raw};
use super::docker_model::{map_error, status};
use super::{LABEL_MANAGED, RuntimeError};

/// Driver option of a bridge network that allows (`true`, Docker's default) or drops
/// (`false`) traffic between its containers.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

impl Engine {
    /// Makes sure the desktop network exists, once, with inter-container traffic
    /// disabled; returns its id. Checked on every create (creates are rate-limited), so
    /// a network removed by hand is made again instead of failing every later start.
    pub(super) async fn ensure_network(&self, docker: &Docker) -> Result<String, RuntimeError> {
        // One check-or-create at a time in this process.
        let _one = self.network_lock.lock().await;
        let name = &self.isolation.network;
        let mut found = self.networks_named(docker).await?;
        if found.is_empty() {
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                options: Some(HashMap::from([(ICC_OPTION.into(), "false".into())])),
                labels: Some(HashMap::from([(LABEL_MANAGED.into(), "true".into())])),
                ..Default::default()
            };
            match raw(API_TIMEOUT, docker.create_network(request)).await? {
                Ok(created) => {
                    tracing::info!(network = %name, docker.id = %created.id, "created the desktop network (inter-container traffic disabled)");
                }
                // API 1.44 and later: another creator was first.
                Err(e) if status(&e) == Some(409) => {}
                Err(e) => return Err(map_error(e)),
            }
            found = self.networks_named(docker).await?;
        }
        found.sort_by_key(age);
        let Some((kept, extra)) = found.split_first() else {
            return Err(RuntimeError::Failed(format!(
                "docker network {name:?} is gone right after its creation"
            )));
        };
        for twin in extra {
            let Some(id) = twin.id.as_deref() else {
                continue;
            };
            // Every creator removes the same ones; a twin already gone (404) or in
            // use (it will be when its creator raced ahead) stays as it is.
            match bounded(API_TIMEOUT, docker.remove_network(id)).await {
                Ok(()) => {
                    tracing::info!(network = %name, docker.id = %id, "removed a duplicate desktop network")
                }
                Err(e) => {
                    tracing::debug!(network = %name, docker.id = %id, error = %e, "duplicate desktop network not removed")
                }
            }
        }
        isolated(name, kept)?;
        kept.id
            .clone()
            .ok_or_else(|| RuntimeError::Failed(format!("docker network {name:?} has no id")))
    }

    /// The networks named exactly like the desktop network (the engine's name filter
    /// matches substrings).
    async fn networks_named(&self, docker: &Docker) -> Result<Vec<Network>, RuntimeError> {
        let name = &self.isolation.network;
        let filters = HashMap::from([("name", vec![name.as_str()])]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let all = bounded(API_TIMEOUT, docker.list_networks(Some(options))).await?;
        Ok(all
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect())
    }
}

/// Whether an engine error says a network name matches two networks (the engine
/// resolves a container's networks by name when it starts it).
pub(super) fn twin_network(e: &bollard::errors::Error) -> bool {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 400,
            message,
        } => message.contains("is ambiguous"),
        _ => false,
    }
}

/// Sort key of a network by creation time (RFC 3339 with up to nine fraction digits,
/// which do not sort as text), then id: every creator picks the same oldest one.
fn age(n: &Network) -> (String, String, String) {
    let created = n.created.clone().unwrap_or_default();
    let created = created.trim_end_matches('Z');
    let (whole, fraction) = created.split_once('.').unwrap_or((created, ""));
    (
        whole.to_owned(),
        format!("{fraction:0<9}"),
        n.id.clone().unwrap_or_default(),
    )
}

/// Whether an existing network keeps its containers apart; a clear refusal if not.
fn isolated(name: &str, found: &Network) -> Result<(), RuntimeError> {
    let driver = found.driver.as_deref().unwrap_or_default();
    let icc = found
        .options
        .as_ref()
        .and_then(|o| o.get(ICC_OPTION))
        .map(String::as_str);
    if driver == "bridge" && icc == Some("false") {
        return Ok(());
    }
    Err(RuntimeError::Failed(format!(
        "docker network {name:?} exists but is not a bridge network with {ICC_OPTION}=false \
         (driver {driver:?}, {ICC_OPTION}={}): desktops on it could reach each other; \
         remove it (control creates it as needed) or set desktop_network to another name",
        icc.unwrap_or("unset")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(driver: &str, icc: Option<&str>) -> Network {
        Network {
            driver: Some(driver.into()),
            options: icc.map(|v| HashMap::from([(ICC_OPTION.to_owned(), v.to_owned())])),
            ..Default::default()
        }
    }

    #[test]
    fn only_bridges_without_inter_container_traffic_are_used() {
        assert!(isolated("n", &network("bridge", Some("false"))).is_ok());
        for bad in [
            network("bridge", Some("true")),
            network("bridge", None),
            network("overlay", Some("false")),
        ] {
            let err = isolated("n", &bad).expect_err("refused").to_string();
            assert!(
                err.contains(ICC_OPTION) && err.contains("desktop_network"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_oldest_twin_is_kept() {
        let at = |created: &str, id: &str| Network {
            created: Some(created.into()),
            id: Some(id.into()),
            ..Default::default()
        };
        // As text, ".12Z" sorts before ".1Z"; as times it is later.
        let mut twins = [
            at("2026-01-01T00:00:01.12Z", "a"),
            at("2026-01-01T00:00:01.1Z", "b"),
            at("2026-01-01T00:00:01Z", "d"),
            at("2026-01-01T00:00:01Z", "c"),
        ];
        twins.sort_by_key(age);
        let ids: Vec<_> = twins.iter().filter_map(|n| n.id.as_deref()).collect();
        assert_eq!(ids, ["c", "d", "b", "a"]);
    }
}
