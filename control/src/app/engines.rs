//! The pool of engines as the control plane weighs it: what the desktops placed on each
//! take ([`loads`], from the container records), and the view `GET /v1/engines` gives
//! admins.

use std::collections::HashMap;

use vnc_shared::schema::ContainerState;

use super::{App, AppError};
use crate::domain::{Caller, Container};
use crate::infra::runtime::{Capacity, EngineLoad, Engines};

/// One engine as the API shows it.
pub struct EngineView {
    pub name: String,
    /// It answered a ping just now.
    pub up: bool,
    /// None: unbounded.
    pub capacity: Option<Capacity>,
    pub load: EngineLoad,
}

/// Whether a record's desktop takes room on its engine: every state but `stopped` and
/// `failed` (whose containers are removed), once placed.
pub fn takes_room(c: &Container) -> bool {
    !matches!(c.state, ContainerState::Stopped | ContainerState::Failed)
}

/// The engine a record counts on: the one it names, or for a record without one that
/// is past `creating` (written before records named their engine)
/// [`Engines::legacy`]; None for a desktop not placed yet.
pub fn engine_of<'a>(engines: &'a Engines, c: &'a Container) -> Option<&'a str> {
    match &c.engine {
        Some(name) => Some(name),
        None if c.state == ContainerState::Creating => None,
        None => Some(&engines.legacy().name),
    }
}

/// What the desktops of `records` take on each engine (by name, engines with none
/// absent).
pub fn loads(engines: &Engines, records: &[Container]) -> HashMap<String, EngineLoad> {
    let mut loads: HashMap<String, EngineLoad> = HashMap::new();
    for c in records.iter().filter(|c| takes_room(c)) {
        let Some(name) = engine_of(engines, c) else {
            continue;
        };
        let load = loads.entry(name.to_owned()).or_default();
        load.cpus += c.cpus;
        load.memory_mb = load.memory_mb.saturating_add(c.memory_mb);
        load.desktops += 1;
    }
    loads
}

impl App {
    /// Every engine with its state and load; admins only (engines serve all tenants).
    pub async fn engines(&self, caller: &Caller) -> Result<Vec<EngineView>, AppError> {
        if !caller.admin {
            return Err(AppError::Forbidden("only an admin may list engines".into()));
        }
        let (records, answering) = tokio::join!(self.store.all(), self.engines.answering());
        let loads = loads(&self.engines, &records?);
        Ok(self
            .engines
            .all()
            .iter()
            .zip(answering)
            .map(|(e, up)| EngineView {
                name: e.name.clone(),
                up,
                capacity: e.capacity,
                load: loads.get(&e.name).copied().unwrap_or_default(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use vnc_shared::token::{ClipboardPolicy, FilePolicy};

    use super::*;
    use crate::infra::runtime::{PooledEngine, StaticRuntime};

    fn desktop(id: &str, state: ContainerState, engine: Option<&str>) -> Container {
        Container {
            id: id.into(),
            owner: "alice".into(),
            tenant: "t1".into(),
            state,
            image: "desk".into(),
            cpus: 0.5,
            memory_mb: 128,
            labels: BTreeMap::new(),
            env: BTreeMap::new(),
            endpoint: None,
            node: None,
            engine: engine.map(str::to_owned),
            error: None,
            created_at: 0,
            record: false,
            files: FilePolicy::Both,
            clipboard: ClipboardPolicy::Both,
        }
    }

    fn pool_of(names: &[&str]) -> Engines {
        let engine = |name: &&str| PooledEngine {
            name: (*name).into(),
            runtime: Arc::new(StaticRuntime::new(Default::default())),
            capacity: None,
        };
        Engines::new(names.iter().map(engine).collect())
    }

    fn pool() -> Engines {
        pool_of(&["first", "second"])
    }

    /// A deployment moving from `docker_host` to `docker_engines` keeps its desktops on
    /// the old engine if it keeps that engine's name, wherever it lists it.
    #[test]
    fn records_without_an_engine_belong_to_the_default_engine_wherever_it_is_listed() {
        let old = desktop("h", ContainerState::Running, None);
        let moved = pool_of(&["new", crate::infra::runtime::DEFAULT_ENGINE_NAME]);
        assert_eq!(engine_of(&moved, &old), Some("default"));
        assert_eq!(
            moved.of(None).map(|e| e.name.as_str()).ok(),
            Some("default")
        );
        assert_eq!(engine_of(&pool(), &old), Some("first"));
    }

    #[test]
    fn loads_count_placed_desktops_not_removed() {
        use ContainerState::*;
        let records = [
            desktop("a", Running, Some("second")),
            desktop("b", Unavailable, Some("second")),
            desktop("c", Stopping, Some("second")),
            desktop("d", Stopped, Some("second")),
            desktop("e", Failed, Some("second")),
            // Not placed yet: counts nowhere.
            desktop("f", Creating, None),
            // Placed, its start still running.
            desktop("g", Creating, Some("first")),
            // Written before records named their engine: the first engine's.
            desktop("h", Running, None),
        ];
        let loads = loads(&pool(), &records);
        let second = loads["second"];
        assert_eq!((second.desktops, second.memory_mb), (3, 384));
        assert!((second.cpus - 1.5).abs() < 1e-9);
        assert_eq!(loads["first"].desktops, 2);
        assert_eq!(loads.len(), 2);
    }
}
