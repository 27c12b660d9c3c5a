//! The Docker runtime: desktop containers on a Docker engine through bollard.
//!
//! Every call finds the container by its labels (`vnc.managed=true`, `vnc.cid={cid}`),
//! so a redelivered start job finds the container the first delivery created. The
//! engine's API version is negotiated on first use, so engines older than bollard's
//! default API version work; until the engine answers, every call is `Unavailable`.
//! Desktops are confined as [`Isolation`] says, on their own network
//! (`docker_network.rs`) unless host networking is configured.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::future::{BoxFuture, FutureExt as _};
use futures_util::stream::{BoxStream, StreamExt as _};

use super::docker_engine::{API_TIMEOUT, Engine, bounded, raw};
use super::docker_model::{
    Isolation, NetworkMode, container_name, create_body, endpoint_from_inspect, map_error,
    pick_existing, status, summary_is_running, validate,
};
use super::docker_network::twin_network;
use super::files::{DesktopFile, FileIn, FileOut};
use super::{
    CONTAINER_VNC_PORT, ContainerSpec, Endpoint, Inspected, LABEL_CID, PING_TIMEOUT, Runtime,
    RuntimeError, RuntimeState, valid_cid,
};

/// Engine address when none is configured.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How long a freshly started container must stay up before `start` returns: a
/// container that dies within this window (bad config, missing binary, port taken) is
/// reported as `Failed` with its logs instead of as a running container.
pub const DEFAULT_START_SETTLE: Duration = Duration::from_millis(300);

/// How long a start that lost the name race waits for the winner's container to show.
const NAME_CONFLICT_WAIT: Duration = Duration::from_secs(5);

/// Poll interval of that wait.
const NAME_CONFLICT_POLL: Duration = Duration::from_millis(25);

/// Log lines quoted in a `Failed` error.
const LOG_TAIL_LINES: usize = 20;

/// Bytes of log quoted in a `Failed` error at most.
const LOG_TAIL_BYTES: usize = 2048;

/// Docker engine runtime. Cheap to clone; clones share the engine client.
#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Engine>,
    start_settle: Duration,
}

impl DockerRuntime {
    /// A runtime for the engine at `docker_host` (default [`DEFAULT_DOCKER_HOST`]).
    /// Does not contact the engine: an unreachable engine shows up as `Unavailable` on
    /// the first call. Fails only on a malformed address or network mode.
    pub fn connect(
        docker_host: Option<&str>,
        network: NetworkMode,
        isolation: Isolation,
        plane: &str,
    ) -> Result<Self, RuntimeError> {
        let host = docker_host.unwrap_or(DEFAULT_DOCKER_HOST).to_owned();
        let scheme_ok = ["unix://", "tcp://", "http://"]
            .iter()
            .any(|scheme| host.starts_with(scheme) && host.len() > scheme.len());
        if !scheme_ok {
            return Err(RuntimeError::Failed(format!(
                "docker host {host:?}: expected unix:///path, tcp://host:port or http://host:port"
            )));
        }
        if let NetworkMode::Host { port_range, .. } = &network
            && (port_range.0 == 0 || port_range.0 > port_range.1)
        {
            return Err(RuntimeError::Failed(format!(
                "host network port range {}-{} is empty or includes port 0",
                port_range.0, port_range.1
            )));
        }
        Ok(DockerRuntime {
            inner: Arc::new(Engine::new(host, network, isolation, plane)),
            start_settle: DEFAULT_START_SETTLE,
        })
    }

    /// Changes how long a started container must stay up before `start` returns
    /// (default [`DEFAULT_START_SETTLE`]).
    pub fn with_start_settle(self, start_settle: Duration) -> Self {
        DockerRuntime {
            start_settle,
            ..self
        }
    }

    pub fn network(&self) -> &NetworkMode {
        &self.inner.network
    }
}

impl Engine {
    async fn start(
        &self,
        spec: &ContainerSpec,
        settle: Duration,
    ) -> Result<Endpoint, RuntimeError> {
        validate(spec)?;
        let docker = self.client().await?;
        let existing = self.list(Some(&spec.cid)).await?;
        let id = match pick_existing(&existing) {
            Some(ContainerSummary {
                id: Some(id),
                state,
                ..
            }) => match state {
                Some(state) if summary_is_running(*state) => {
                    tracing::debug!(container.id = %spec.cid, "already running");
                    return self.endpoint_of(id).await;
                }
                // Cannot be started again: replace it.
                Some(ContainerSummaryStateEnum::DEAD | ContainerSummaryStateEnum::REMOVING) => {
                    remove(docker, id).await?;
                    self.create(docker, spec).await?
                }
                // Created or exited (a redelivered job, or a crash): start it again.
                _ => id.clone(),
            },
            _ => self.create(docker, spec).await?,
        };
        self.start_created(docker, &spec.cid, &id, settle).await?;
        self.endpoint_of(&id).await
    }

    /// Creates the container; returns its Docker id. If a concurrent start created it
    /// first (name conflict), returns that one.
    async fn create(&self, docker: &Docker, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        match bounded(API_TIMEOUT, docker.inspect_image(&spec.image)).await {
            Ok(_) => {}
            Err(RuntimeError::NotFound) => {
                return Err(RuntimeError::ImageMissing(spec.image.clone()));
            }
            Err(e) => return Err(e),
        }
        // Held until the container exists with its port label, then released.
        let mut port_guard = None;
        let mut joins = None;
        let vnc_port = match &self.network {
            NetworkMode::Host {
                host_ip,
                port_range,
            } => {
                let guard = self.reserve_host_port(*host_ip, *port_range).await?;
                let port = guard.port;
                port_guard = Some(guard);
                port
            }
            NetworkMode::Bridge | NetworkMode::Published { .. } => {
                joins = Some(self.ensure_network(docker).await?);
                CONTAINER_VNC_PORT
            }
        };
        let body = create_body(
            spec,
            &self.network,
            joins,
            &self.isolation,
            vnc_port,
            &self.plane,
        )?;
        let name = container_name(&spec.cid);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = raw(API_TIMEOUT, docker.create_container(Some(options), body)).await?;
        drop(port_guard);
        match created {
            Ok(created) => {
                for warning in &created.warnings {
                    tracing::warn!(container.id = %spec.cid, warning = %warning, "docker create");
                }
                tracing::info!(container.id = %spec.cid, docker.id = %created.id, image = %spec.image, "created");
                Ok(created.id)
            }
            Err(e) if status(&e) == Some(404) => {
                Err(RuntimeError::ImageMissing(spec.image.clone()))
            }
            Err(e) if status(&e) == Some(409) => {
                // The name is taken: most likely a concurrent start of the same cid won
                // the race. The engine reserves the name before the container is
                // visible, so wait for it briefly, and use it if it carries our label.
                let deadline = tokio::time::Instant::now() + NAME_CONFLICT_WAIT;
                loop {
                    if let Some(found) = self.inspect(&name).await? {
                        let labels = found.config.as_ref().and_then(|c| c.labels.as_ref());
                        return match (found.id, labels.and_then(|l| l.get(LABEL_CID))) {
                            (Some(id), Some(cid)) if *cid == spec.cid => Ok(id),
                            _ => Err(map_error(e)),
                        };
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(map_error(e));
                    }
                    tokio::time::sleep(NAME_CONFLICT_POLL).await;
                }
            }
            Err(e) => Err(map_error(e)),
        }
    }

    /// Starts a created (or exited) container and checks it stays up for the settle
    /// window; if it dies, removes it and fails with its exit code and last log lines.
    async fn start_created(
        &self,
        docker: &Docker,
        cid: &str,
        id: &str,
        settle: Duration,
    ) -> Result<(), RuntimeError> {
        // 304 (already started by a concurrent start) counts as success in bollard.
        match raw(API_TIMEOUT, docker.start_container(id, None)).await? {
            Ok(()) => {}
            // The engine attaches the network by name: a replica made a twin of the
            // desktop network at this moment (see `docker_network.rs`). Removing the
            // newer twin makes the name unique again.
            Err(e) if twin_network(&e) => {
                tracing::info!(container.id = %cid, error = %e, "desktop network has a twin; removing it and starting again");
                self.ensure_network(docker).await?;
                bounded(API_TIMEOUT, docker.start_container(id, None)).await?;
            }
            Err(e) => return Err(map_error(e)),
        }
        tokio::time::sleep(settle).await;
        let code = match self.state_of(id).await? {
            RuntimeState::Running => {
                tracing::info!(container.id = %cid, "started");
                return Ok(());
            }
            RuntimeState::Exited { code } => Some(code),
            RuntimeState::Missing => None,
        };
        let logs = self.log_tail(docker, id).await;
        // A retried start begins clean (and may pick another host port).
        if let Err(e) = remove(docker, id).await {
            tracing::warn!(container.id = %cid, error = %e, "removing a failed container");
        }
        let code = code.map_or_else(|| "gone".to_owned(), |c| format!("exit code {c}"));
        Err(RuntimeError::Failed(format!(
            "container vnc-{cid} exited right after start ({code}); last log lines: {logs}"
        )))
    }

    /// The last log lines of a container, bounded, for error messages.
    async fn log_tail(&self, docker: &Docker, id: &str) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&LOG_TAIL_LINES.to_string())
            .build();
        let collect = docker
            .logs(id, Some(options))
            .take(LOG_TAIL_LINES * 4)
            .collect::<Vec<_>>();
        let Ok(chunks) = tokio::time::timeout(API_TIMEOUT, collect).await else {
            return "(logs unavailable: timed out)".to_owned();
        };
        let mut text = String::new();
        for chunk in chunks {
            match chunk {
                Ok(
                    LogOutput::StdOut { message }
                    | LogOutput::StdErr { message }
                    | LogOutput::Console { message },
                ) => {
                    text.push_str(&String::from_utf8_lossy(&message));
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    text.push_str(&format!("(logs unavailable: {e})"));
                    break;
                }
            }
        }
        // One line, so the reason reads well in a log line or a JSON error.
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            return "(none)".to_owned();
        }
        let text = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join(" | ");
        // Keep the end: the reason a process died is usually its last words.
        let start = text.len().saturating_sub(LOG_TAIL_BYTES);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[start..].to_owned()
    }

    /// Where the relay reaches a running container, from inspect.
    async fn endpoint_of(&self, id: &str) -> Result<Endpoint, RuntimeError> {
        let found = self.inspect(id).await?.ok_or(RuntimeError::NotFound)?;
        endpoint_from_inspect(&found, &self.network, &self.isolation.network)
    }
}

impl Runtime for DockerRuntime {
    fn start<'a>(
        &'a self,
        spec: &'a ContainerSpec,
    ) -> BoxFuture<'a, Result<Endpoint, RuntimeError>> {
        self.inner.start(spec, self.start_settle).boxed()
    }

    fn stop<'a>(
        &'a self,
        cid: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            if !valid_cid(cid) {
                return Ok(()); // could never have been created
            }
            let docker = self.inner.client().await?;
            for container in self.inner.list(Some(cid)).await? {
                let Some(id) = container.id else { continue };
                // Docker takes whole seconds; round up so the grace is never shortened.
                let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
                let options = StopContainerOptionsBuilder::new()
                    .t(i32::try_from(secs).unwrap_or(i32::MAX))
                    .build();
                match bounded(
                    API_TIMEOUT + grace,
                    docker.stop_container(&id, Some(options)),
                )
                .await
                {
                    Ok(()) | Err(RuntimeError::NotFound) => {}
                    Err(e) => return Err(e),
                }
                remove(docker, &id).await?;
                tracing::info!(container.id = %cid, "stopped and removed");
            }
            Ok(())
        }
        .boxed()
    }

    fn state<'a>(&'a self, cid: &'a str) -> BoxFuture<'a, Result<RuntimeState, RuntimeError>> {
        async move {
            if !valid_cid(cid) {
                return Ok(RuntimeState::Missing);
            }
            let existing = self.inner.list(Some(cid)).await?;
            match pick_existing(&existing).and_then(|c| c.id.as_deref()) {
                Some(id) => self.inner.state_of(id).await,
                None => Ok(RuntimeState::Missing),
            }
        }
        .boxed()
    }

    fn inspect<'a>(
        &'a self,
        cid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Inspected>, RuntimeError>> {
        self.inner.inspect_cid(cid).boxed()
    }

    fn list_managed(&self) -> BoxFuture<'_, Result<Vec<(String, RuntimeState)>, RuntimeError>> {
        async move {
            let mut all = Vec::new();
            for container in self.inner.list(None).await? {
                let Some(cid) = container.labels.as_ref().and_then(|l| l.get(LABEL_CID)) else {
                    continue;
                };
                let state = match (&container.state, &container.id) {
                    (Some(s), _) if summary_is_running(*s) => RuntimeState::Running,
                    // The summary has no exit code: ask (stopped managed containers are few).
                    (_, Some(id)) => self.inner.state_of(id).await?,
                    (_, None) => continue,
                };
                if state != RuntimeState::Missing {
                    all.push((cid.clone(), state));
                }
            }
            Ok(all)
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        async move {
            let docker = tokio::time::timeout(PING_TIMEOUT, self.inner.client())
                .await
                .map_err(|_| {
                    RuntimeError::Unavailable("the engine did not answer a ping in time".into())
                })??;
            bounded(PING_TIMEOUT, docker.ping()).await.map(drop)
        }
        .boxed()
    }

    fn events(&self) -> BoxStream<'static, (String, RuntimeState)> {
        super::docker_events::stream(Arc::clone(&self.inner))
    }

    fn upload<'a>(
        &'a self,
        cid: &'a str,
        name: &'a str,
        size: u64,
        body: FileIn,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.inner.upload(cid, name, size, body).boxed()
    }

    fn list_files<'a>(
        &'a self,
        cid: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<(Vec<DesktopFile>, bool), RuntimeError>> {
        self.inner.list_files(cid, max).boxed()
    }

    fn download<'a>(
        &'a self,
        cid: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<FileOut, RuntimeError>> {
        self.inner.download(cid, name).boxed()
    }
}

/// Stops nothing; removes by force, tolerating a container already gone or going.
async fn remove(docker: &Docker, id: &str) -> Result<(), RuntimeError> {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match raw(API_TIMEOUT, docker.remove_container(id, Some(options))).await? {
        Ok(()) => Ok(()),
        // 404: gone; 409: "removal of container … is already in progress".
        Err(e) if matches!(status(&e), Some(404 | 409)) => Ok(()),
        Err(e) => Err(map_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_rejects_bad_addresses_and_ranges() {
        let connect =
            |host, network| DockerRuntime::connect(host, network, Isolation::default(), "p");
        assert!(connect(Some("ftp://x"), NetworkMode::Bridge).is_err());
        assert!(connect(Some("unix://"), NetworkMode::Bridge).is_err());
        let empty = NetworkMode::Host {
            host_ip: "127.0.0.1".parse().expect("ip"),
            port_range: (6000, 5999),
        };
        assert!(connect(None, empty).is_err());
        assert!(connect(Some("tcp://127.0.0.1:2375"), NetworkMode::Bridge).is_ok());
    }
}
