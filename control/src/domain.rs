//! The control plane's rules, without I/O: what a container is, who may see and use
//! it, and what a create request may ask for; [`session`] does the same for relay
//! sessions, relay nodes, issued tokens and kicks, [`share`] for share links, the
//! presence list and the driver lease, [`files`] for file transfer and the clipboard
//! policy.

pub mod files;
pub mod session;
pub mod share;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vnc_shared::schema::ContainerState;
use vnc_shared::token::{ClipboardPolicy, FilePolicy, Scope};

pub use session::{IssuedToken, Kick, Node, Session, kick_kind};
pub use share::{Share, ShareRequest};

/// An authenticated API caller (from the operator's identity provider).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    pub tenant: String,
    pub admin: bool,
}

#[cfg(test)]
impl Caller {
    /// The unit tests' caller.
    pub fn of(sub: &str, tenant: &str, admin: bool) -> Caller {
        Caller {
            sub: sub.into(),
            tenant: tenant.into(),
            admin,
        }
    }
}

/// A container of the static runtime: a host that already runs a VNC server, declared
/// in the config file with its owner and tenant; control records it as running and
/// manages no lifecycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticContainer {
    pub cid: String,
    pub owner: String,
    pub tenant: String,
    pub host: String,
    pub port: u16,
}

/// A desktop container as the control plane records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub id: String,
    pub owner: String,
    pub tenant: String,
    pub state: ContainerState,
    pub image: String,
    pub cpus: f64,
    pub memory_mb: u64,
    pub labels: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// Where the relay connects, once running.
    pub endpoint: Option<(String, u16)>,
    pub node: Option<String>,
    /// The engine it runs on, named when its start placed it; None before that (and on
    /// records written before records named their engine: the pool's first engine).
    pub engine: Option<String>,
    pub error: Option<String>,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Relays with a recording directory record every session of this container.
    pub record: bool,
    /// Which way files may move (its tokens carry it, narrowed for their scope).
    pub files: FilePolicy,
    /// Which way the clipboard may move (likewise).
    pub clipboard: ClipboardPolicy,
}

impl Container {
    /// Tenants never see each other's containers (the API answers 404, not 403).
    pub fn visible_to(&self, caller: &Caller) -> bool {
        self.tenant == caller.tenant
    }

    /// Owner and admins manage a container (delete it, take control of it).
    pub fn managed_by(&self, caller: &Caller) -> bool {
        self.visible_to(caller) && (self.owner == caller.sub || caller.admin)
    }

    /// Who may get a VNC token of `scope`: viewing is open to the container's tenant
    /// (shared desktops), control only to its owner or an admin.
    pub fn may_open(&self, caller: &Caller, scope: Scope) -> bool {
        match scope {
            Scope::View => self.visible_to(caller),
            Scope::Control => self.managed_by(caller),
        }
    }
}

/// What `POST /v1/containers` asks for.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    /// One of the images the operator allows (`images`).
    pub image: String,
    pub resources: Resources,
    /// The desktop's environment; the names control sets itself (`VNC_PASSWORD`,
    /// `VNC_PORT`) are refused.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Labels of the container, each named `user.<name>`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Record every session of the container (relays with a recording directory).
    #[serde(default)]
    pub record: bool,
    /// Which way files may move between its sessions' browsers and the desktop
    /// (default: the operator's `files_default`). View and share tokens get less.
    #[serde(default)]
    pub files: Option<FilePolicy>,
    /// Which way the clipboard may move (default: the operator's
    /// `clipboard_default`). View tokens never get `to_desktop`.
    #[serde(default)]
    pub clipboard: Option<ClipboardPolicy>,
}

/// What a container may use.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs: more than 0, at most the operator's `max_cpus`.
    pub cpus: f64,
    /// Memory in MiB, within the operator's `min_memory_mb` and `max_memory_mb`.
    pub memory_mb: u64,
}

/// Bounds a create request must stay within.
#[derive(Clone, Debug)]
pub struct CreateLimits {
    /// Images callers may run; empty allows none.
    pub images: Vec<String>,
    pub max_cpus: f64,
    pub max_memory_mb: u64,
    pub min_memory_mb: u64,
    /// Most env and label entries each.
    pub max_entries: usize,
}

/// Env names the control plane sets itself; a caller may not override them.
pub const RESERVED_ENV: [&str; 2] = ["VNC_PASSWORD", "VNC_PORT"];

/// The one namespace of caller labels (`user.team`, `user.project`): labels outside it
/// could steer whatever else reads the engine's labels (a reverse proxy's
/// `traefik.*`, a log shipper's, control's own `vnc.*`).
pub const LABEL_NAMESPACE: &str = "user.";

impl CreateContainer {
    /// Every problem with the request, each named; empty when it is acceptable.
    pub fn problems(&self, limits: &CreateLimits) -> Vec<String> {
        let mut out = Vec::new();
        if !limits.images.iter().any(|i| i == &self.image) {
            out.push(format!(
                "image {:?} is not allowed (allowed: {})",
                self.image,
                limits.images.join(", ")
            ));
        }
        let cpus = self.resources.cpus;
        if !(cpus.is_finite() && cpus > 0.0 && cpus <= limits.max_cpus) {
            out.push(format!(
                "resources.cpus must be > 0 and <= {}, got {cpus}",
                limits.max_cpus
            ));
        }
        let mem = self.resources.memory_mb;
        if mem < limits.min_memory_mb || mem > limits.max_memory_mb {
            out.push(format!(
                "resources.memory_mb must be between {} and {}, got {mem}",
                limits.min_memory_mb, limits.max_memory_mb
            ));
        }
        for (what, map) in [("env", &self.env), ("labels", &self.labels)] {
            if map.len() > limits.max_entries {
                out.push(format!(
                    "{what} has more than {} entries",
                    limits.max_entries
                ));
            }
        }
        for name in self.env.keys() {
            if RESERVED_ENV.contains(&name.as_str()) {
                out.push(format!("env {name} is set by the control plane"));
            }
        }
        for key in self.labels.keys() {
            if key.len() <= LABEL_NAMESPACE.len() || !key.starts_with(LABEL_NAMESPACE) {
                out.push(format!(
                    "label {key:?} is outside the {LABEL_NAMESPACE}* namespace: caller labels must be named {LABEL_NAMESPACE}<name>"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn container() -> Container {
        Container {
            id: "c1".into(),
            owner: "alice".into(),
            tenant: "t1".into(),
            state: ContainerState::Running,
            image: "desk".into(),
            cpus: 1.0,
            memory_mb: 512,
            labels: BTreeMap::new(),
            env: BTreeMap::new(),
            endpoint: None,
            node: None,
            engine: None,
            error: None,
            created_at: 0,
            record: false,
            files: FilePolicy::Both,
            clipboard: ClipboardPolicy::Both,
        }
    }

    #[test]
    fn ownership_rules() {
        let c = container();
        let owner = Caller::of("alice", "t1", false);
        let colleague = Caller::of("bob", "t1", false);
        let admin = Caller::of("root", "t1", true);
        let stranger_admin = Caller::of("eve", "t2", true);
        assert!(c.may_open(&owner, Scope::Control) && c.may_open(&owner, Scope::View));
        assert!(c.may_open(&colleague, Scope::View) && !c.may_open(&colleague, Scope::Control));
        assert!(c.may_open(&admin, Scope::Control) && c.managed_by(&admin));
        assert!(!c.visible_to(&stranger_admin) && !c.may_open(&stranger_admin, Scope::View));
    }

    #[test]
    fn create_requests_name_every_problem() {
        let limits = CreateLimits {
            images: vec!["desk".into()],
            max_cpus: 4.0,
            max_memory_mb: 8192,
            min_memory_mb: 64,
            max_entries: 2,
        };
        let ok = CreateContainer {
            image: "desk".into(),
            resources: Resources {
                cpus: 1.0,
                memory_mb: 512,
            },
            env: BTreeMap::new(),
            labels: [("user.team".to_owned(), "x".to_owned())].into(),
            record: false,
            files: None,
            clipboard: None,
        };
        assert!(ok.problems(&limits).is_empty());
        let bad = CreateContainer {
            image: "evil".into(),
            resources: Resources {
                cpus: 64.0,
                memory_mb: 1,
            },
            env: [("VNC_PASSWORD".to_owned(), "x".to_owned())].into(),
            labels: [("vnc.cid".to_owned(), "x".to_owned())].into(),
            record: true,
            files: None,
            clipboard: None,
        };
        let p = bad.problems(&limits);
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p[0].contains("evil") && p[1].contains("cpus") && p[2].contains("memory_mb"));
        assert!(
            p[4].contains("\"vnc.cid\" is outside the user.* namespace"),
            "{p:?}"
        );
        for key in [
            "traefik.enable",
            "user.",
            "user",
            "com.docker.compose.project",
        ] {
            let labeled = CreateContainer {
                labels: [(key.to_owned(), "true".to_owned())].into(),
                ..ok.clone()
            };
            assert_eq!(labeled.problems(&limits).len(), 1, "{key}");
        }
    }
}
