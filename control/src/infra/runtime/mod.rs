//! Container runtimes: where a desktop container runs and where the relay reaches its
//! VNC server. The app layer holds a pool of them ([`Engines`]): Docker engines through
//! bollard ([`DockerRuntime`], one per engine), or endpoints declared in config
//! ([`StaticRuntime`], a pool of one), and the rule that places a new desktop
//! ([`place`]).
//!
//! # Desktop image contract
//!
//! An image the Docker runtime starts must:
//!
//! - run its VNC (RFB 3.x) server on `0.0.0.0:$VNC_PORT`; `VNC_PORT` defaults to 5900 in
//!   the image and is always set by the runtime (5900, or a host port in host networking);
//! - bind `$VNC_LISTEN_HOST` instead of `0.0.0.0` when that is set (host networking sets
//!   it to the configured host IP so the server is not exposed on every host interface;
//!   an image that ignores it still works, but listens more widely than it should);
//! - require VNC Authentication (security type 2) with `$VNC_PASSWORD` when that is set,
//!   and offer security type None otherwise (the relay authenticates to the container
//!   with the password and offers the browser None);
//! - stop on SIGTERM within the stop grace period (as PID 1, it must handle it);
//! - run without any Linux capability and without gaining privileges (setuid binaries,
//!   file capabilities): the runtime drops `ALL` capabilities and sets
//!   `no-new-privileges`. A process running as root inside keeps owning what root owns
//!   (`/tmp`, `/run`), which is all an X server, a window manager and a VNC server need;
//!   an image whose entrypoint does need some (`CHOWN`, `SETUID`, `SETGID` to switch to
//!   an unprivileged user) gets them back through the `desktop_cap_add` setting;
//! - live within [`Isolation`]'s process limit, with no swap, and expect its own
//!   network: it cannot reach other desktops (inter-container traffic is dropped);
//! - for file transfer, have an upload folder `$HOME/Uploads` and a download folder
//!   `$HOME/Downloads` (`HOME` from the image's or the container's environment,
//!   `/root` when unset), both owned by the desktop's user. Uploads are written into
//!   the upload folder with that folder's owner and mode 0644, through the engine's
//!   archive API (no process runs in the container for it); downloads are the regular
//!   files directly in the download folder (links and subfolders are not served). An
//!   image without the folders still runs: its file calls answer 409.
//!
//! The runtime never pulls: the image must already be on the engine. The test image
//! `vnc-rfb-fixture:test` (the `rfb-fixture` binary in a scratch image) follows this
//! contract. Note that an environment variable is visible to anyone who can
//! `docker inspect` the container; that is the engine operator, who can read the
//! container's memory anyway.
//!
//! # Labels
//!
//! Every container the Docker runtime creates carries [`LABEL_MANAGED`]`=true`,
//! [`LABEL_CID`], [`LABEL_OWNER`], [`LABEL_TENANT`] (and [`LABEL_PORT`] in host
//! networking), which win over caller labels of the same name; its name is `vnc-{cid}`.
//! The app layer adds the rest of the record ([`LABEL_IMAGE`], [`LABEL_CREATED_AT`],
//! [`LABEL_RECORD`], [`LABEL_CPUS`], [`LABEL_MEMORY_MB`], [`LABEL_ENV_NAMES`],
//! [`LABEL_LABEL_NAMES`], [`LABEL_PASSWORD_KEY`], [`LABEL_FILES`], [`LABEL_CLIPBOARD`]) so a
//! container whose record was lost can be re-adopted.

mod docker;
mod docker_adopt;
mod docker_engine;
mod docker_events;
mod docker_files;
mod docker_model;
mod docker_network;
mod docker_ports;
mod engines;
pub mod files;
mod probe;
mod static_hosts;
mod tar;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

pub use docker::{DEFAULT_DOCKER_HOST, DEFAULT_START_SETTLE, DockerRuntime};
pub use docker_model::{
    DEFAULT_DESKTOP_NETWORK, DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE, DEFAULT_PIDS_LIMIT,
    Isolation, NetworkMode,
};
pub use engines::{
    Candidate, Capacity, DEFAULT_ENGINE_NAME, EngineLoad, Engines, PooledEngine, place,
};
pub use probe::wait_for_rfb;
pub use static_hosts::StaticRuntime;

/// Label marking containers this control plane manages (value `true`).
pub const LABEL_MANAGED: &str = "vnc.managed";
/// Label holding the id of the control plane that manages the container; planes sharing
/// an engine leave each other's containers alone.
pub const LABEL_PLANE: &str = "vnc.plane";
/// Label holding the container id of the control plane (not Docker's id).
pub const LABEL_CID: &str = "vnc.cid";
/// Label holding the owning user id.
pub const LABEL_OWNER: &str = "vnc.owner";
/// Label holding the tenant id.
pub const LABEL_TENANT: &str = "vnc.tenant";
/// Label holding the host port picked in host networking.
pub const LABEL_PORT: &str = "vnc.port";

/// Label holding the image the caller asked for.
pub const LABEL_IMAGE: &str = "vnc.image";
/// Label holding the record's creation time (Unix milliseconds).
pub const LABEL_CREATED_AT: &str = "vnc.created-at";
/// Label `true` when every session of the container is recorded.
pub const LABEL_RECORD: &str = "vnc.record";
/// Label holding the CPU limit asked for (cores).
pub const LABEL_CPUS: &str = "vnc.cpus";
/// Label holding the memory limit asked for (MiB).
pub const LABEL_MEMORY_MB: &str = "vnc.memory-mb";
/// Label holding the names of the caller's environment variables (a JSON list), so
/// the image's own variables are not taken for the caller's.
pub const LABEL_ENV_NAMES: &str = "vnc.env-names";
/// Label holding the names of the caller's labels (a JSON list), so the image's own
/// labels are not taken for the caller's.
pub const LABEL_LABEL_NAMES: &str = "vnc.label-names";
/// Label holding the id of the secret the container's VNC password is derived from.
pub const LABEL_PASSWORD_KEY: &str = "vnc.password-key";
/// Label holding the container's file policy (`none`, `upload`, `download`, `both`).
pub const LABEL_FILES: &str = "vnc.files";
/// Label holding the container's clipboard policy.
pub const LABEL_CLIPBOARD: &str = "vnc.clipboard";

/// Port the VNC server listens on inside its container (bridge and published modes).
pub const CONTAINER_VNC_PORT: u16 = 5900;

/// Bound on one engine's answer to a ping (placement, `GET /v1/engines`): an engine
/// slower than this counts as down for that decision.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest container id accepted: it becomes part of a Docker name and a label filter.
pub const MAX_CID_LEN: usize = 64;

/// What to run for one desktop.
#[derive(Clone, PartialEq)]
pub struct ContainerSpec {
    /// Control plane container id; the Docker name is `vnc-{cid}`. `[A-Za-z0-9_.-]`,
    /// at most [`MAX_CID_LEN`] bytes.
    pub cid: String,
    /// Owning user id (label `vnc.owner`).
    pub owner: String,
    /// Tenant id (label `vnc.tenant`).
    pub tenant: String,
    /// Image reference; must already be present on the engine.
    pub image: String,
    /// CPU limit in cores; 0 means no limit.
    pub cpus: f64,
    /// Memory limit in MiB; 0 means no limit.
    pub memory_mb: u64,
    /// Extra environment; the contract variables (`VNC_PORT`, `VNC_PASSWORD`,
    /// `VNC_LISTEN_HOST`) are set by the runtime and win.
    pub env: BTreeMap<String, String>,
    /// Extra labels; the `vnc.*` labels of the runtime win.
    pub labels: BTreeMap<String, String>,
    /// VNC password the image must require; None for no VNC authentication.
    pub vnc_password: Option<String>,
}

// Hand-written so the VNC password never reaches a log.
impl fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("cid", &self.cid)
            .field("owner", &self.owner)
            .field("tenant", &self.tenant)
            .field("image", &self.image)
            .field("cpus", &self.cpus)
            .field("memory_mb", &self.memory_mb)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("labels", &self.labels)
            .field(
                "vnc_password",
                &self.vnc_password.as_ref().map(|_| "MASKED"),
            )
            .finish()
    }
}

/// Where the relay connects to reach a container's VNC server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // IPv6 literals need brackets to be read back as host:port.
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What the runtime can tell of one container: enough to rebuild its record.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspected {
    /// Every label of the container (ours and the caller's).
    pub labels: BTreeMap<String, String>,
    /// Its environment, as the engine reports it (the image's variables included).
    pub env: BTreeMap<String, String>,
    pub state: RuntimeState,
    /// Where the relay reaches it, when it runs.
    pub endpoint: Option<Endpoint>,
}

/// A container's state as the runtime sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeState {
    /// Running (also paused or restarting: the process exists).
    Running,
    /// Created but not running, exited or dead; `code` is the last exit code (0 if it
    /// never ran).
    Exited { code: i64 },
    /// No such container.
    Missing,
}

/// Errors of the runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container not found")]
    NotFound,
    #[error("image {0} is not present on the engine (images are never pulled)")]
    ImageMissing(String),
    /// The engine is unreachable or did not answer in time: worth retrying.
    #[error("container engine unavailable: {0}")]
    Unavailable(String),
    /// The engine answered but the operation failed (e.g. the container exited right
    /// after start, or the spec is invalid).
    #[error("container runtime failed: {0}")]
    Failed(String),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The desktop image has no upload or download folder (the image contract).
    #[error("the desktop has no folder {0} (see the desktop image contract)")]
    MissingFolder(String),
    /// No such regular file in the desktop's download folder.
    #[error("no such file")]
    NoSuchFile,
}

impl RuntimeError {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn retryable(&self) -> bool {
        matches!(self, RuntimeError::Unavailable(_))
    }
}

/// A container runtime, used as `Arc<dyn Runtime>`.
pub trait Runtime: Send + Sync {
    /// Creates (if no container with label `vnc.cid=cid` exists, so a redelivered job
    /// does not create a second one) and starts the container; returns its endpoint once
    /// known. The VNC server may not answer yet: see [`wait_for_rfb`].
    fn start<'a>(
        &'a self,
        spec: &'a ContainerSpec,
    ) -> BoxFuture<'a, Result<Endpoint, RuntimeError>>;

    /// Stops with a grace period (SIGTERM, then SIGKILL) and removes; Ok if already gone.
    fn stop<'a>(&'a self, cid: &'a str, grace: Duration)
    -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// The container's current state.
    fn state<'a>(&'a self, cid: &'a str) -> BoxFuture<'a, Result<RuntimeState, RuntimeError>>;

    /// The labels, environment, state and endpoint of the container with label
    /// `vnc.cid=cid`; None if there is none (or the runtime has no such thing).
    fn inspect<'a>(
        &'a self,
        cid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Inspected>, RuntimeError>>;

    /// Every container this control plane labelled (`vnc.managed=true`): (cid, state).
    fn list_managed(&self) -> BoxFuture<'_, Result<Vec<(String, RuntimeState)>, RuntimeError>>;

    /// (cid, state) changes from the engine's event feed (start, die, stop, destroy), for
    /// reconcile. Docker's stream reconnects by itself and never ends; events may repeat,
    /// and some may be lost while the engine is unreachable, so reconcile also lists.
    /// A runtime without lifecycle (static) returns an empty stream.
    fn events(&self) -> BoxStream<'static, (String, RuntimeState)>;

    /// Whether the engine answers now (within [`PING_TIMEOUT`]); `Unavailable` if not.
    /// A runtime with no engine (static) always answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether the runtime can move files in and out of its desktops.
    fn moves_files(&self) -> bool {
        true
    }

    /// Streams `body` (exactly `size` bytes) into the running desktop's upload folder
    /// as file `name` (a name the caller checked: one path component). `Unsupported`
    /// from a runtime with no folders (static).
    fn upload<'a>(
        &'a self,
        cid: &'a str,
        name: &'a str,
        size: u64,
        body: files::FileIn,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// The regular files in the running desktop's download folder, by name, at most
    /// `max`; true when there were more.
    fn list_files<'a>(
        &'a self,
        cid: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<(Vec<files::DesktopFile>, bool), RuntimeError>>;

    /// One regular file of the running desktop's download folder, streamed.
    fn download<'a>(
        &'a self,
        cid: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<files::FileOut, RuntimeError>>;
}

/// Whether `cid` can be used in a Docker name and a label filter.
pub fn valid_cid(cid: &str) -> bool {
    !cid.is_empty()
        && cid.len() <= MAX_CID_LEN
        && cid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && cid.as_bytes()[0].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(RuntimeError::Unavailable("down".into()).retryable());
        assert!(!RuntimeError::NotFound.retryable());
        assert!(!RuntimeError::ImageMissing("x".into()).retryable());
        assert!(!RuntimeError::Failed("x".into()).retryable());
        assert!(!RuntimeError::Unsupported("x").retryable());
    }

    #[test]
    fn spec_debug_masks_the_password() {
        let spec = ContainerSpec {
            cid: "c1".into(),
            owner: "u".into(),
            tenant: "t".into(),
            image: "img".into(),
            cpus: 1.0,
            memory_mb: 256,
            env: BTreeMap::from([("SECRET_ENV".into(), "env-value".into())]),
            labels: BTreeMap::new(),
            vnc_password: Some("hunter2".into()),
        };
        let debug = format!("{spec:?}");
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains("env-value"));
        assert!(debug.contains("MASKED"));
    }

    #[test]
    fn cids() {
        assert!(valid_cid("c-1_2.x"));
        assert!(!valid_cid(""));
        assert!(!valid_cid("-c"));
        assert!(!valid_cid("a=b"));
        assert!(!valid_cid("a/b"));
        assert!(!valid_cid(&"a".repeat(MAX_CID_LEN + 1)));
    }

    #[test]
    fn endpoint_display() {
        let v4 = Endpoint {
            host: "127.0.0.1".into(),
            port: 5900,
        };
        assert_eq!(v4.to_string(), "127.0.0.1:5900");
        let v6 = Endpoint {
            host: "::1".into(),
            port: 5900,
        };
        assert_eq!(v6.to_string(), "[::1]:5900");
    }
}
