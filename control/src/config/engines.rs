//! The Docker engines of the configuration: `docker_engines` as written (a table or a
//! `key=value,…` line, [`DockerEngine`]), checked into the pool's [`EngineConfig`]s;
//! `docker_host` alone is a pool of one unbounded engine named [`DEFAULT_ENGINE_NAME`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::infra::runtime::Capacity;
pub use crate::infra::runtime::DEFAULT_ENGINE_NAME;
/// Most engines in `docker_engines`: every placement pings them all, and every
/// reconcile lists each.
pub const MAX_DOCKER_ENGINES: usize = 256;
/// Longest engine name.
pub const MAX_ENGINE_NAME_LEN: usize = 64;

/// One entry of `docker_engines` as configured: a table in the file, or
/// `name=N,docker_host=ADDR,publish_ip=IP,cpus=C,memory_mb=M` on the command line, in
/// the environment and as a string in the file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DockerEngine {
    /// Recorded in the container records of its desktops.
    pub name: String,
    /// The engine's address (`unix:///…`, `tcp://host:port`).
    pub docker_host: String,
    /// The address its desktops' ports are published on (host networking: listen
    /// on), which the relays reach; default the top-level `publish_ip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_ip: Option<IpAddr>,
    /// CPU cores the desktops placed on it may take in all.
    pub cpus: f64,
    /// Memory (MiB) the desktops placed on it may take in all.
    pub memory_mb: u64,
}

/// A table of `docker_engines` in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DockerEngineTable {
    name: String,
    docker_host: String,
    #[serde(default)]
    publish_ip: Option<IpAddr>,
    cpus: f64,
    memory_mb: u64,
}

impl<'de> Deserialize<'de> for DockerEngine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Line(String),
            Table(DockerEngineTable),
        }
        match Form::deserialize(d)? {
            Form::Line(line) => line.parse().map_err(serde::de::Error::custom),
            Form::Table(t) => Ok(DockerEngine {
                name: t.name,
                docker_host: t.docker_host,
                publish_ip: t.publish_ip,
                cpus: t.cpus,
                memory_mb: t.memory_mb,
            }),
        }
    }
}

impl std::str::FromStr for DockerEngine {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, String> {
        let mut fields = std::collections::BTreeMap::new();
        for pair in line.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("docker engine {line:?}: {pair:?} is not key=value"))?;
            if fields.insert(key.trim(), value.trim()).is_some() {
                return Err(format!("docker engine {line:?}: {key} is given twice"));
            }
        }
        let mut take = |key: &str| {
            fields
                .remove(key)
                .ok_or_else(|| format!("docker engine {line:?}: no {key}"))
        };
        let bad = |key: &str, value: &str| format!("docker engine {line:?}: bad {key} {value:?}");
        let name = take("name")?.to_owned();
        let docker_host = take("docker_host")?.to_owned();
        let cpus = take("cpus")?;
        let cpus = cpus.parse().map_err(|_| bad("cpus", cpus))?;
        let memory_mb = take("memory_mb")?;
        let memory_mb = memory_mb.parse().map_err(|_| bad("memory_mb", memory_mb))?;
        let publish_ip = match fields.remove("publish_ip") {
            Some(ip) => Some(ip.parse().map_err(|_| bad("publish_ip", ip))?),
            None => None,
        };
        if let Some(unknown) = fields.keys().next() {
            return Err(format!("docker engine {line:?}: unknown field {unknown}"));
        }
        Ok(DockerEngine {
            name,
            docker_host,
            publish_ip,
            cpus,
            memory_mb,
        })
    }
}

/// One engine of the validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    pub name: String,
    /// None: [`crate::infra::runtime::DEFAULT_DOCKER_HOST`].
    pub docker_host: Option<String>,
    /// Where its desktops' ports are published (host networking: listen).
    pub publish_ip: IpAddr,
    /// None: unbounded (the engine of `docker_host`).
    pub capacity: Option<Capacity>,
}

/// The engines of the pool: `docker_engines` as given, or one engine named
/// [`DEFAULT_ENGINE_NAME`] at `docker_host` without a capacity bound; problems pushed.
pub(super) fn engines(
    docker_host: Option<String>,
    docker_engines: Vec<DockerEngine>,
    publish_ip: IpAddr,
    problems: &mut Vec<String>,
) -> Vec<EngineConfig> {
    if docker_engines.is_empty() {
        return vec![EngineConfig {
            name: DEFAULT_ENGINE_NAME.to_owned(),
            docker_host,
            publish_ip,
            capacity: None,
        }];
    }
    if docker_host.is_some() {
        problems.push(
            "set docker_host or docker_engines, not both (docker_host is a pool of one)".into(),
        );
    }
    if docker_engines.len() > MAX_DOCKER_ENGINES {
        problems.push(format!(
            "docker_engines lists {} engines, at most {MAX_DOCKER_ENGINES}",
            docker_engines.len()
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for e in &docker_engines {
        if !engine_name_ok(&e.name) {
            problems.push(format!(
                "docker_engines: name {:?} must be 1-{MAX_ENGINE_NAME_LEN} of [A-Za-z0-9_.-]",
                e.name
            ));
        }
        if !names.insert(e.name.as_str()) {
            problems.push(format!("docker_engines: name {:?} is given twice", e.name));
        }
        if !(e.cpus.is_finite() && e.cpus > 0.0) || e.memory_mb == 0 {
            problems.push(format!(
                "docker_engines: engine {:?} needs positive cpus and memory_mb",
                e.name
            ));
        }
    }
    docker_engines
        .into_iter()
        .map(|e| EngineConfig {
            name: e.name,
            docker_host: Some(e.docker_host),
            publish_ip: e.publish_ip.unwrap_or(publish_ip),
            capacity: Some(Capacity {
                cpus: e.cpus,
                memory_mb: e.memory_mb,
            }),
        })
        .collect()
}

/// Whether `name` can name an engine (in records, labels of metrics and the API).
fn engine_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ENGINE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
