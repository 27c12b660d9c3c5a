//! The Docker engine as every part of the Docker runtime reaches it: the shared
//! handle ([`Engine`]: the lazily connected client and what all calls need to know), the
//! calls the other parts build on (list, inspect, state), and the bound every engine
//! call runs under. `docker.rs` (the lifecycle), `docker_network.rs`,
//! `docker_ports.rs`, `docker_adopt.rs` and `docker_events.rs` each add to it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::ListContainersOptionsBuilder;
use tokio::sync::OnceCell;

use super::docker_model::{Isolation, NetworkMode, map_error, state_from_inspect};
use super::{LABEL_CID, LABEL_MANAGED, LABEL_PLANE, RuntimeError, RuntimeState};

/// Bound on one engine call (stop adds its grace period): past it the engine counts as
/// unavailable.
pub(super) const API_TIMEOUT: Duration = Duration::from_secs(30);

/// bollard's own per-request bound, in seconds. Looser than ours: our timeouts decide,
/// and a stop with a long grace period must not be cut short by it.
const CLIENT_TIMEOUT_SECS: u64 = 3600;

/// The engine handle the parts of the Docker runtime share.
pub(super) struct Engine {
    /// Engine address (`unix://…`, `tcp://…` or `http://…`).
    host: String,
    /// The engine client, created and version-negotiated on first successful use.
    client: OnceCell<Docker>,
    pub(super) network: NetworkMode,
    /// How desktops are confined, and the network they join.
    pub(super) isolation: Isolation,
    /// Held while the desktop network is checked or created (`docker_network.rs`).
    pub(super) network_lock: tokio::sync::Mutex<()>,
    /// This control plane's id (label `vnc.plane`): containers of other planes sharing
    /// the engine are never listed, reconciled or removed.
    pub(super) plane: String,
    /// Host ports picked by starts in flight and not yet visible as a label on a created
    /// container, so two concurrent starts do not pick the same port.
    pub(super) reserved_ports: Mutex<BTreeSet<u16>>,
}

impl Engine {
    /// A handle on the engine at `host`; nothing is contacted until the first call.
    pub(super) fn new(
        host: String,
        network: NetworkMode,
        isolation: Isolation,
        plane: &str,
    ) -> Engine {
        Engine {
            host,
            client: OnceCell::new(),
            network,
            isolation,
            network_lock: tokio::sync::Mutex::new(()),
            plane: plane.to_owned(),
            reserved_ports: Mutex::new(BTreeSet::new()),
        }
    }

    /// The engine client; the first successful call creates it and negotiates the API
    /// version. Failures are not cached, so a later call tries again.
    pub(super) async fn client(&self) -> Result<&Docker, RuntimeError> {
        self.client
            .get_or_try_init(|| async {
                let docker = if self.host.starts_with("unix://") {
                    Docker::connect_with_unix(
                        &self.host,
                        CLIENT_TIMEOUT_SECS,
                        bollard::API_DEFAULT_VERSION,
                    )
                } else {
                    Docker::connect_with_http(
                        &self.host,
                        CLIENT_TIMEOUT_SECS,
                        bollard::API_DEFAULT_VERSION,
                    )
                }
                .map_err(|e| self.unavailable(e))?;
                match tokio::time::timeout(API_TIMEOUT, docker.negotiate_version()).await {
                    Ok(Ok(docker)) => Ok(docker),
                    Ok(Err(e)) => Err(self.unavailable(e)),
                    Err(_) => Err(RuntimeError::Unavailable(format!(
                        "{} did not answer within {API_TIMEOUT:?}",
                        self.host
                    ))),
                }
            })
            .await
    }

    fn unavailable(&self, e: DockerError) -> RuntimeError {
        RuntimeError::Unavailable(format!("{}: {e}", self.host))
    }

    /// Managed containers, optionally only those of one cid (all states).
    pub(super) async fn list(
        &self,
        cid: Option<&str>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let docker = self.client().await?;
        let mut labels = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_PLANE}={}", self.plane),
        ];
        if let Some(cid) = cid {
            labels.push(format!("{LABEL_CID}={cid}"));
        }
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        bounded(API_TIMEOUT, docker.list_containers(Some(options))).await
    }

    /// Inspects a container; `Ok(None)` if it is gone.
    pub(super) async fn inspect(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        let docker = self.client().await?;
        match bounded(API_TIMEOUT, docker.inspect_container(id, None)).await {
            Ok(found) => Ok(Some(found)),
            Err(RuntimeError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The state of one container by Docker id or name, from inspect (exact exit code).
    pub(super) async fn state_of(&self, id: &str) -> Result<RuntimeState, RuntimeError> {
        Ok(match self.inspect(id).await? {
            Some(found) => state_from_inspect(found.state.as_ref()),
            None => RuntimeState::Missing,
        })
    }
}

/// Runs one engine call under `limit`, mapping errors to the runtime's.
pub(super) async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, DockerError>>,
) -> Result<T, RuntimeError> {
    raw(limit, call).await?.map_err(map_error)
}

/// Runs one engine call under `limit`; the outer error is the timeout, the inner one the
/// engine's, for callers that treat some statuses specially.
pub(super) async fn raw<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, DockerError>>,
) -> Result<Result<T, DockerError>, RuntimeError> {
    tokio::time::timeout(limit, call).await.map_err(|_| {
        RuntimeError::Unavailable(format!(
            "the engine did not answer within {}",
            humantime::format_duration(limit)
        ))
    })
}
