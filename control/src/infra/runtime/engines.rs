//! The pool of container engines control places desktops on ([`Engines`]): each
//! engine's name, runtime and capacity, and the placement rule ([`place`]), which is
//! pure so it is tested without any engine.
//!
//! # Placement rule
//!
//! A new desktop goes to the engine, among those that answer a ping and whose free
//! capacity fits the desktop's resources (CPUs and memory), with the most free memory;
//! ties by the most free CPUs, then by name (the smallest). An engine's free capacity
//! is its configured capacity minus the resources of the desktops control placed on it
//! whose records are not `stopped` or `failed` (their containers are removed); an
//! engine without a configured capacity (the single `docker_host` of older configs,
//! the static runtime) always fits and counts as having unbounded room.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::join_all;

use super::{Runtime, RuntimeError};

/// What one engine may run at once: the sum of its desktops' limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Capacity {
    /// CPU cores.
    pub cpus: f64,
    /// Memory in MiB.
    pub memory_mb: u64,
}

/// One engine of the pool.
pub struct PooledEngine {
    /// The engine's name, recorded in the container records of its desktops.
    pub name: String,
    pub runtime: Arc<dyn Runtime>,
    /// None: unbounded (the engine is not told apart by room).
    pub capacity: Option<Capacity>,
}

/// What the desktops placed on one engine take (records not `stopped` or `failed`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EngineLoad {
    pub cpus: f64,
    pub memory_mb: u64,
    /// Desktops counted.
    pub desktops: usize,
}

/// Name of the one engine of a configuration with `docker_host` (or neither
/// `docker_host` nor `docker_engines`), and so the engine of records written before
/// records named theirs.
pub const DEFAULT_ENGINE_NAME: &str = "default";

/// The engines control manages, by name, in the order the configuration lists them.
pub struct Engines {
    engines: Vec<PooledEngine>,
}

impl Engines {
    /// A pool of `engines` (at least one, names unique: the configuration checked).
    pub fn new(engines: Vec<PooledEngine>) -> Engines {
        assert!(!engines.is_empty(), "a pool of engines needs an engine");
        Engines { engines }
    }

    /// A pool of one unbounded engine named `name`.
    pub fn single(name: &str, runtime: Arc<dyn Runtime>) -> Engines {
        Engines::new(vec![PooledEngine {
            name: name.to_owned(),
            runtime,
            capacity: None,
        }])
    }

    pub fn all(&self) -> &[PooledEngine] {
        &self.engines
    }

    /// The engine of records written before records named theirs: the one named
    /// [`DEFAULT_ENGINE_NAME`] (what `docker_host` alone is called), else the pool's
    /// first.
    pub fn legacy(&self) -> &PooledEngine {
        self.engines
            .iter()
            .find(|e| e.name == DEFAULT_ENGINE_NAME)
            .unwrap_or(&self.engines[0])
    }

    /// The engine of a record: the one named, or for a record without an engine
    /// [`Engines::legacy`].
    pub fn of(&self, engine: Option<&str>) -> Result<&PooledEngine, RuntimeError> {
        match engine {
            None => Ok(self.legacy()),
            Some(name) => self.engines.iter().find(|e| e.name == name).ok_or_else(|| {
                RuntimeError::Unavailable(format!("engine {name:?} is not in the configuration"))
            }),
        }
    }

    /// Whether each engine answers a ping now, in pool order (pinged at once, each
    /// bounded by [`super::PING_TIMEOUT`]).
    pub async fn answering(&self) -> Vec<bool> {
        join_all(self.engines.iter().map(|e| e.runtime.ping()))
            .await
            .into_iter()
            .map(|answer| answer.is_ok())
            .collect()
    }

    /// The engine for a new desktop of `cpus` and `memory_mb` by the placement rule,
    /// given each engine's load and whether it answers; None when no engine fits.
    pub fn place(
        &self,
        cpus: f64,
        memory_mb: u64,
        loads: &HashMap<String, EngineLoad>,
        answering: &[bool],
    ) -> Option<&PooledEngine> {
        let candidates: Vec<Candidate<'_>> = self
            .engines
            .iter()
            .zip(answering)
            .map(|(e, up)| Candidate {
                name: &e.name,
                capacity: e.capacity,
                load: loads.get(&e.name).copied().unwrap_or_default(),
                up: *up,
            })
            .collect();
        let name = place(&candidates, cpus, memory_mb)?;
        self.engines.iter().find(|e| e.name == name)
    }
}

/// One engine as the placement rule sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub capacity: Option<Capacity>,
    pub load: EngineLoad,
    /// It answered a ping just now.
    pub up: bool,
}

/// The placement rule (see the module's doc): the name of the engine for a desktop of
/// `cpus` and `memory_mb`, or None when no engine that answers has room for it.
pub fn place<'a>(candidates: &[Candidate<'a>], cpus: f64, memory_mb: u64) -> Option<&'a str> {
    // Free room as (memory, cpus); unbounded engines have all the room there is.
    let free = |c: &Candidate<'_>| match c.capacity {
        None => (u64::MAX, f64::INFINITY),
        Some(cap) => (
            cap.memory_mb.saturating_sub(c.load.memory_mb),
            cap.cpus - c.load.cpus,
        ),
    };
    // A little slack so sums of fractional CPUs (0.1 + 0.2) fit where they should.
    const CPU_EPSILON: f64 = 1e-9;
    candidates
        .iter()
        .filter(|c| c.up)
        .filter(|c| {
            let (memory, cpus_free) = free(c);
            memory >= memory_mb && cpus_free + CPU_EPSILON >= cpus
        })
        .min_by(|a, b| {
            let (am, ac) = free(a);
            let (bm, bc) = free(b);
            bm.cmp(&am).then(bc.total_cmp(&ac)).then(a.name.cmp(b.name))
        })
        .map(|c| c.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(name: &str, cpus: f64, memory_mb: u64, used: (f64, u64), up: bool) -> Candidate<'_> {
        Candidate {
            name,
            capacity: Some(Capacity { cpus, memory_mb }),
            load: EngineLoad {
                cpus: used.0,
                memory_mb: used.1,
                desktops: 0,
            },
            up,
        }
    }

    #[test]
    fn the_most_free_memory_wins() {
        let pool = [
            engine("a", 8.0, 4096, (1.0, 1024), true),
            engine("b", 8.0, 4096, (1.0, 512), true),
        ];
        assert_eq!(place(&pool, 0.5, 128), Some("b"));
    }

    #[test]
    fn ties_go_to_free_cpus_then_the_name() {
        let pool = [
            engine("b", 8.0, 4096, (1.0, 0), true),
            engine("a", 8.0, 4096, (1.0, 0), true),
            engine("c", 8.0, 4096, (0.5, 0), true),
        ];
        assert_eq!(place(&pool, 0.5, 128), Some("c"));
        let pool = [
            engine("b", 8.0, 4096, (1.0, 0), true),
            engine("a", 8.0, 4096, (1.0, 0), true),
        ];
        assert_eq!(place(&pool, 0.5, 128), Some("a"));
    }

    #[test]
    fn only_engines_that_answer_and_fit() {
        let pool = [
            engine("big-but-down", 64.0, 65536, (0.0, 0), false),
            engine("no-cpu", 1.0, 8192, (1.0, 0), true),
            engine("small", 2.0, 256, (0.0, 0), true),
        ];
        assert_eq!(place(&pool, 0.5, 256), Some("small"));
        assert_eq!(place(&pool, 0.5, 257), None);
        // Fractional CPUs add up to the capacity exactly.
        let full = [engine("e", 0.3, 1024, (0.1 + 0.1, 0), true)];
        assert_eq!(place(&full, 0.1, 1), Some("e"));
        assert_eq!(place(&full, 0.2, 1), None);
    }

    #[test]
    fn an_unbounded_engine_always_fits() {
        let pool = [
            Candidate {
                name: "default",
                capacity: None,
                load: EngineLoad {
                    cpus: 100.0,
                    memory_mb: 1 << 30,
                    desktops: 9,
                },
                up: true,
            },
            engine("a", 8.0, 4096, (0.0, 0), true),
        ];
        assert_eq!(place(&pool, 4.0, 4096), Some("default"));
        assert_eq!(place(&pool[..1], 1000.0, 1 << 40), Some("default"));
    }
}
