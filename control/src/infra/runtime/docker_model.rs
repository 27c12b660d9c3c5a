//! Translation between the runtime's types and Docker's API models: the create
//! request of a desktop (with how the relay reaches it: [`NetworkMode`], and how it is
//! confined: [`Isolation`]), its endpoint and state from inspect, and engine errors.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
    ContainerSummary, ContainerSummaryStateEnum, HostConfig, HostConfigLogConfig, PortBinding,
};

use super::{
    CONTAINER_VNC_PORT, ContainerSpec, Endpoint, LABEL_CID, LABEL_MANAGED, LABEL_OWNER,
    LABEL_PLANE, LABEL_PORT, LABEL_TENANT, RuntimeError, RuntimeState, valid_cid,
};

/// Port key of the VNC server in Docker's port maps.
const VNC_PORT_KEY: &str = "5900/tcp";

/// Bridge network desktops join when none is configured.
pub const DEFAULT_DESKTOP_NETWORK: &str = "vnc-desktops";
/// Processes (threads included) one desktop may run at once: room for an X server, a
/// window manager and a browser, not for a fork bomb.
pub const DEFAULT_PIDS_LIMIT: u32 = 1024;
/// Size at which a desktop's log file is rotated (Docker's `json-file` `max-size`).
pub const DEFAULT_LOG_MAX_SIZE: &str = "10m";
/// Log files kept per desktop, the current one included (`json-file` `max-file`).
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;

/// How the relay reaches the container's VNC server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Default bridge network; the relay connects to the container's bridge IP, port
    /// 5900. Only works where the relay can route to the bridge (same host).
    Bridge,
    /// Bridge network with container port 5900 published on `host_ip` at an ephemeral
    /// host port, read back after start. The endpoint host is `host_ip` (loopback if
    /// `host_ip` is unspecified).
    Published { host_ip: IpAddr },
    /// Host networking: a free port in `port_range` (inclusive) is picked and passed as
    /// `VNC_PORT` (and `host_ip` as `VNC_LISTEN_HOST`, unless unspecified). The port is
    /// probed by binding it from this process, so the control plane must share the
    /// host's network namespace.
    Host {
        host_ip: IpAddr,
        port_range: (u16, u16),
    },
}

/// Security option every desktop runs with: no process in it gains privileges through
/// setuid binaries or file capabilities.
const NO_NEW_PRIVILEGES: &str = "no-new-privileges:true";

/// How a desktop container is confined beyond its CPU and memory limits (which come
/// with the request). Every desktop drops all capabilities, runs with
/// `no-new-privileges`, gets no swap (memory+swap = memory) and logs to `json-file`
/// with rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    /// Bridge network desktops join in the published and bridge modes, created with
    /// inter-container traffic disabled (see `docker_network.rs`).
    pub network: String,
    /// Most processes of one desktop; 0 for no limit.
    pub pids_limit: u32,
    /// Capabilities given back after all are dropped; the desktop image contract needs
    /// none.
    pub cap_add: Vec<String>,
    /// `json-file` `max-size` (`10m`, `512k`).
    pub log_max_size: String,
    /// `json-file` `max-file`.
    pub log_max_files: u32,
}

/// The `DEFAULT_*` confinement.
impl Default for Isolation {
    fn default() -> Self {
        Isolation {
            network: DEFAULT_DESKTOP_NETWORK.into(),
            pids_limit: DEFAULT_PIDS_LIMIT,
            cap_add: Vec::new(),
            log_max_size: DEFAULT_LOG_MAX_SIZE.into(),
            log_max_files: DEFAULT_LOG_MAX_FILES,
        }
    }
}

/// The HTTP status of an engine answer, if the error is one.
pub(super) fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// 404 → NotFound; transport trouble → Unavailable (retryable); the rest → Failed with
/// the engine's message.
pub(super) fn map_error(e: DockerError) -> RuntimeError {
    match e {
        DockerError::DockerResponseServerError {
            status_code: 404, ..
        } => RuntimeError::NotFound,
        DockerError::DockerResponseServerError {
            status_code: 503, ..
        }
        | DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::RequestTimeoutError
        | DockerError::SocketNotFoundError(_) => RuntimeError::Unavailable(e.to_string()),
        other => RuntimeError::Failed(other.to_string()),
    }
}

pub(super) fn validate(spec: &ContainerSpec) -> Result<(), RuntimeError> {
    if !valid_cid(&spec.cid) {
        return Err(RuntimeError::Failed(format!(
            "container id {:?} must be 1-{} of [A-Za-z0-9_.-], starting alphanumeric",
            spec.cid,
            super::MAX_CID_LEN
        )));
    }
    if spec.image.is_empty() {
        return Err(RuntimeError::Failed("empty image".to_owned()));
    }
    if !spec.cpus.is_finite() || spec.cpus < 0.0 {
        return Err(RuntimeError::Failed(format!(
            "cpus {} is not a CPU count",
            spec.cpus
        )));
    }
    Ok(())
}

pub(super) fn container_name(cid: &str) -> String {
    format!("vnc-{cid}")
}

/// Of the containers labelled with one cid (normally one), the running one, else any.
pub(super) fn pick_existing(found: &[ContainerSummary]) -> Option<&ContainerSummary> {
    found
        .iter()
        .find(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
        .or_else(|| found.first())
}

pub(super) fn summary_is_running(state: ContainerSummaryStateEnum) -> bool {
    matches!(
        state,
        ContainerSummaryStateEnum::RUNNING
            | ContainerSummaryStateEnum::PAUSED
            | ContainerSummaryStateEnum::RESTARTING
    )
}

/// Running, paused and restarting count as running: the process exists.
pub(super) fn state_from_inspect(state: Option<&ContainerState>) -> RuntimeState {
    let Some(state) = state else {
        return RuntimeState::Missing;
    };
    match state.status {
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING,
        ) => RuntimeState::Running,
        _ if state.running == Some(true) => RuntimeState::Running,
        _ => RuntimeState::Exited {
            code: state.exit_code.unwrap_or(0),
        },
    }
}

/// The create request: labels, env, limits, confinement and networking of one desktop.
/// In the bridge and published modes it `joins` that network (an id: see
/// `docker_network.rs`), else the desktop network by name.
pub(super) fn create_body(
    spec: &ContainerSpec,
    network: &NetworkMode,
    joins: Option<String>,
    isolation: &Isolation,
    vnc_port: u16,
    plane: &str,
) -> Result<ContainerCreateBody, RuntimeError> {
    // Ours are inserted last, so a caller cannot relabel or re-port a container.
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_PLANE.into(), plane.into());
    labels.insert(LABEL_CID.into(), spec.cid.clone());
    labels.insert(LABEL_OWNER.into(), spec.owner.clone());
    labels.insert(LABEL_TENANT.into(), spec.tenant.clone());

    let mut env: BTreeMap<String, String> = spec.env.clone();
    env.remove("VNC_PASSWORD");
    env.remove("VNC_LISTEN_HOST");
    if let Some(password) = &spec.vnc_password {
        env.insert("VNC_PASSWORD".into(), password.clone());
    }
    env.insert("VNC_PORT".into(), vnc_port.to_string());

    let memory = match spec.memory_mb {
        0 => None,
        mb => Some(
            i64::try_from(mb.saturating_mul(1024 * 1024))
                .map_err(|_| RuntimeError::Failed(format!("memory {mb} MiB is too large")))?,
        ),
    };
    let mut host_config = HostConfig {
        nano_cpus: (spec.cpus > 0.0).then(|| (spec.cpus * 1e9).round() as i64),
        memory,
        // Memory plus swap equal to memory: no swap, so the limit is the limit.
        memory_swap: memory,
        pids_limit: (isolation.pids_limit > 0).then(|| i64::from(isolation.pids_limit)),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: (!isolation.cap_add.is_empty()).then(|| isolation.cap_add.clone()),
        security_opt: Some(vec![NO_NEW_PRIVILEGES.into()]),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".into(), isolation.log_max_size.clone()),
                ("max-file".into(), isolation.log_max_files.to_string()),
            ])),
        }),
        ..Default::default()
    };
    let mut exposed_ports = None;
    let desktop_network = joins.unwrap_or_else(|| isolation.network.clone());
    match network {
        NetworkMode::Bridge => host_config.network_mode = Some(desktop_network),
        NetworkMode::Published { host_ip } => {
            host_config.network_mode = Some(desktop_network);
            exposed_ports = Some(vec![VNC_PORT_KEY.to_owned()]);
            host_config.port_bindings = Some(HashMap::from([(
                VNC_PORT_KEY.to_owned(),
                Some(vec![PortBinding {
                    host_ip: Some(host_ip.to_string()),
                    // Empty: the engine picks an ephemeral port, read back after start.
                    host_port: Some(String::new()),
                }]),
            )]));
        }
        NetworkMode::Host { host_ip, .. } => {
            host_config.network_mode = Some("host".into());
            labels.insert(LABEL_PORT.into(), vnc_port.to_string());
            if !host_ip.is_unspecified() {
                env.insert("VNC_LISTEN_HOST".into(), host_ip.to_string());
            }
        }
    }
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        exposed_ports,
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// The relay's endpoint for a started container under `network`; in bridge mode its
/// address on `desktop_network`.
pub(super) fn endpoint_from_inspect(
    found: &ContainerInspectResponse,
    network: &NetworkMode,
    desktop_network: &str,
) -> Result<Endpoint, RuntimeError> {
    let settings = found.network_settings.as_ref();
    match network {
        NetworkMode::Bridge => {
            let networks = settings.and_then(|s| s.networks.as_ref());
            let ip = networks
                // A container created before the desktop network existed is on another.
                .and_then(|n| n.get(desktop_network).or_else(|| n.values().next()))
                .and_then(|n| n.ip_address.clone())
                .filter(|ip| !ip.is_empty())
                .ok_or_else(|| RuntimeError::Failed("container has no bridge IP address".into()))?;
            Ok(Endpoint {
                host: ip,
                port: CONTAINER_VNC_PORT,
            })
        }
        NetworkMode::Published { host_ip } => {
            let port = settings
                .and_then(|s| s.ports.as_ref())
                .and_then(|ports| ports.get(VNC_PORT_KEY))
                .and_then(|bindings| bindings.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())
                .find(|&p| p != 0)
                .ok_or_else(|| {
                    RuntimeError::Failed(format!("port {VNC_PORT_KEY} is not published"))
                })?;
            Ok(Endpoint {
                host: reachable(*host_ip).to_string(),
                port,
            })
        }
        NetworkMode::Host { host_ip, .. } => {
            let port = found
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(LABEL_PORT))
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| {
                    RuntimeError::Failed(format!("container has no {LABEL_PORT} label"))
                })?;
            Ok(Endpoint {
                host: reachable(*host_ip).to_string(),
                port,
            })
        }
    }
}

/// An unspecified bind address is reached through loopback.
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            cid: "c1".into(),
            owner: "alice".into(),
            tenant: "acme".into(),
            image: "img:1".into(),
            cpus: 1.5,
            memory_mb: 512,
            env: BTreeMap::from([
                ("A".into(), "1".into()),
                ("VNC_PORT".into(), "1".into()),
                ("VNC_PASSWORD".into(), "from-env".into()),
            ]),
            labels: BTreeMap::from([
                ("team".into(), "x".into()),
                (LABEL_MANAGED.into(), "false".into()),
                (LABEL_CID.into(), "other".into()),
            ]),
            vnc_password: None,
        }
    }

    fn isolation() -> Isolation {
        Isolation {
            network: "desks".into(),
            pids_limit: 100,
            cap_add: vec![],
            log_max_size: "1m".into(),
            log_max_files: 2,
        }
    }

    #[test]
    fn create_body_sets_labels_env_and_limits() {
        let body = create_body(
            &spec(),
            &NetworkMode::Bridge,
            None,
            &isolation(),
            5900,
            "p1",
        )
        .expect("body");
        let labels = body.labels.expect("labels");
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_CID], "c1");
        assert_eq!(labels[LABEL_OWNER], "alice");
        assert_eq!(labels[LABEL_TENANT], "acme");
        assert_eq!(labels["team"], "x");
        let env = body.env.expect("env");
        assert!(env.contains(&"A=1".to_owned()));
        assert!(env.contains(&"VNC_PORT=5900".to_owned()));
        // A caller's env cannot smuggle in a password the spec does not set.
        assert!(!env.iter().any(|e| e.starts_with("VNC_PASSWORD=")));
        let host = body.host_config.expect("host config");
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(512 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.pids_limit, Some(100));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, None);
        assert_eq!(host.security_opt, Some(vec![NO_NEW_PRIVILEGES.to_owned()]));
        let log = host.log_config.expect("log config");
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        let log = log.config.expect("log options");
        assert_eq!((&*log["max-size"], &*log["max-file"]), ("1m", "2"));
        assert_eq!(host.network_mode.as_deref(), Some("desks"));
        assert!(host.port_bindings.is_none());
    }

    #[test]
    fn create_body_per_network_mode() {
        let mut s = spec();
        s.vnc_password = Some("pw".into());
        s.cpus = 0.0;
        s.memory_mb = 0;
        let published = NetworkMode::Published {
            host_ip: "127.0.0.1".parse().expect("ip"),
        };
        let mut iso = isolation();
        iso.pids_limit = 0;
        iso.cap_add = vec!["CHOWN".into()];
        let body = create_body(&s, &published, Some("n1d".into()), &iso, 5900, "p1").expect("body");
        assert_eq!(body.exposed_ports, Some(vec![VNC_PORT_KEY.to_owned()]));
        let host = body.host_config.expect("host config");
        assert_eq!((host.nano_cpus, host.memory), (None, None));
        assert_eq!((host.memory_swap, host.pids_limit), (None, None));
        assert_eq!(host.cap_add, Some(vec!["CHOWN".to_owned()]));
        assert_eq!(host.network_mode.as_deref(), Some("n1d"));
        let binding = &host.port_bindings.expect("bindings")[VNC_PORT_KEY];
        assert_eq!(
            binding.as_ref().expect("binding")[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        assert!(
            body.env
                .expect("env")
                .contains(&"VNC_PASSWORD=pw".to_owned())
        );

        let host_mode = NetworkMode::Host {
            host_ip: "127.0.0.1".parse().expect("ip"),
            port_range: (20000, 20010),
        };
        let body = create_body(&s, &host_mode, None, &iso, 20005, "p1").expect("body");
        assert_eq!(body.labels.expect("labels")[LABEL_PORT], "20005");
        let env = body.env.expect("env");
        assert!(env.contains(&"VNC_PORT=20005".to_owned()));
        assert!(env.contains(&"VNC_LISTEN_HOST=127.0.0.1".to_owned()));
        assert_eq!(
            body.host_config.expect("hc").network_mode.as_deref(),
            Some("host")
        );
    }

    #[test]
    fn states_from_inspect() {
        let exited = ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(3),
            ..Default::default()
        };
        assert_eq!(
            state_from_inspect(Some(&exited)),
            RuntimeState::Exited { code: 3 }
        );
        let running = ContainerState {
            status: Some(ContainerStateStatusEnum::RUNNING),
            ..Default::default()
        };
        assert_eq!(state_from_inspect(Some(&running)), RuntimeState::Running);
        assert_eq!(state_from_inspect(None), RuntimeState::Missing);
    }

    #[test]
    fn errors_map_to_runtime_errors() {
        let status = |status_code| DockerError::DockerResponseServerError {
            status_code,
            message: "m".into(),
        };
        assert!(matches!(map_error(status(404)), RuntimeError::NotFound));
        assert!(map_error(status(503)).retryable());
        assert!(matches!(map_error(status(500)), RuntimeError::Failed(_)));
        assert!(map_error(DockerError::RequestTimeoutError).retryable());
        assert!(map_error(DockerError::SocketNotFoundError("/x".into())).retryable());
    }

    #[test]
    fn unspecified_hosts_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0".parse().expect("ip")),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            reachable("10.0.0.1".parse().expect("ip")).to_string(),
            "10.0.0.1"
        );
    }
}
