//! The container lifecycle as queue jobs (`start`, `stop`), and the reconciler that
//! keeps Redis true when a container dies or vanishes behind control's back, and
//! re-adopts containers whose records Redis lost (`adopt.rs`).
//!
//! Handlers are idempotent: a redelivered `start` finds the running record (or the
//! runtime finds the labelled container) and creates nothing twice; a `stop` of a gone
//! container succeeds. A stop wins over a start of the same container running at the
//! same time: the start writes its outcome only if the record is not `stopping` or
//! `stopped` (one atomic check-and-write), and otherwise removes what it created.
//! Containers are removed only by a stop job, a failed start, or the reconciler when
//! the record says `stopped`; never because their record is missing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vnc_shared::schema::ContainerState;
use vnc_shared::swap::Swap;
use vnc_shared::token::{ClipboardPolicy, FilePolicy};

use super::engines::{engine_of, loads, takes_room};
use super::record_labels::record_labels;
use super::{START_JOB, STOP_JOB};
use crate::domain::{Container, StaticContainer};
use crate::infra::passwords::PasswordKeys;
use crate::infra::queue::{JobContext, JobError, JobHandler};
use crate::infra::runtime::{
    ContainerSpec, Engines, PooledEngine, RuntimeError, RuntimeState, wait_for_rfb,
};
use crate::infra::store::{ContainerStore, StoreError, Transition, now_ms};
use crate::metrics::{DOCKER_ERRORS, ENGINE_DESKTOPS, ENGINE_UP};

/// Runs `start` and `stop` jobs against a runtime.
pub struct Lifecycle {
    pub store: ContainerStore,
    /// The engines desktops are placed on; each desktop's calls go to its own.
    pub engines: Arc<Engines>,
    pub node_id: String,
    pub stop_grace: Duration,
    /// Time a started VNC server gets to answer with its RFB greeting.
    pub start_timeout: Duration,
    /// The secrets VNC passwords derive from (replaced on reload).
    pub passwords: Arc<Swap<PasswordKeys>>,
}

fn retry(e: StoreError) -> JobError {
    JobError::Retry(e.to_string())
}

fn record_gone() -> JobError {
    JobError::Fatal("container record is gone".into())
}

fn deleted_while_starting() -> JobError {
    JobError::Fatal("container was deleted while it started".into())
}

impl JobHandler for Lifecycle {
    fn handle<'a>(&'a self, job: JobContext<'a>) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async move {
            let cid = job
                .data
                .get("cid")
                .and_then(Value::as_str)
                .ok_or_else(|| JobError::Fatal("job data has no cid".into()))?
                .to_owned();
            match job.name {
                START_JOB => self.start(&job, &cid).await,
                STOP_JOB => self.stop(&job, &cid).await,
                other => Err(JobError::Fatal(format!("unknown job {other:?}"))),
            }
        })
    }
}

impl Lifecycle {
    async fn start(&self, job: &JobContext<'_>, cid: &str) -> Result<Value, JobError> {
        let c = self
            .store
            .get(cid)
            .await
            .map_err(retry)?
            .ok_or_else(record_gone)?;
        match (c.state, &c.endpoint) {
            (ContainerState::Running, Some((host, port))) => {
                return Ok(json!({"host": host, "port": port}));
            }
            (ContainerState::Stopping | ContainerState::Stopped, _) => {
                return Err(JobError::Fatal(
                    "container was deleted before it started".into(),
                ));
            }
            _ => {}
        }
        let engine = match &c.engine {
            Some(name) => match self.engines.of(Some(name)) {
                Ok(engine) => engine,
                Err(e) => return Err(self.fail(job, &c, None, "start", e).await),
            },
            None => self.place(job, &c).await?,
        };
        job.progress(10).await;
        tracing::debug!(container.id = %cid, image = %c.image, engine = %engine.name, "starting container");
        let password = self.password(cid).await?;
        let spec = ContainerSpec {
            cid: c.id.clone(),
            owner: c.owner.clone(),
            tenant: c.tenant.clone(),
            image: c.image.clone(),
            cpus: c.cpus,
            memory_mb: c.memory_mb,
            env: c.env.clone(),
            labels: record_labels(&c, password.as_ref().map(|(key, _)| key.as_str())),
            vnc_password: password.map(|(_, password)| password),
        };
        let endpoint = match engine.runtime.start(&spec).await {
            Ok(e) => e,
            Err(e) => return Err(self.fail(job, &c, Some(engine), "start", e).await),
        };
        job.progress(50).await;
        tracing::debug!(container.id = %cid, %endpoint, "container started; waiting for its VNC server");
        if let Err(e) = wait_for_rfb(&endpoint, self.start_timeout).await {
            return Err(self.fail(job, &c, Some(engine), "probe", e).await);
        }
        let written = self
            .store
            .set_running(cid, &endpoint.host, endpoint.port, &self.node_id)
            .await
            .map_err(retry)?;
        match written {
            Transition::Done => {}
            Transition::Deleted => {
                // Deleted while it started: the stop won; remove what this start made.
                tracing::info!(container.id = %cid, "container deleted while it started; removing it");
                if let Err(e) = engine.runtime.stop(cid, self.stop_grace).await {
                    metrics::counter!(DOCKER_ERRORS, "op" => "stop").increment(1);
                    return Err(JobError::Retry(e.to_string()));
                }
                return Err(deleted_while_starting());
            }
            // Redis lost the record: the reconciler re-adopts the container.
            Transition::Missing => return Err(record_gone()),
        }
        job.progress(100).await;
        let _ = self.store.publish("container.started", &c).await;
        Ok(json!({"host": endpoint.host, "port": endpoint.port}))
    }

    /// Places a desktop not placed yet on an engine by the placement rule (see
    /// [`crate::infra::runtime::place`]) and records the engine before anything is
    /// created on it, so a redelivered start goes to the same engine. No engine with
    /// room that answers is retried like an unavailable engine, then fails the start.
    /// Two starts placing at once (on any replicas) may both count the same free room:
    /// an engine can so take a few desktops past its capacity, never more than the
    /// starts running at once.
    async fn place(&self, job: &JobContext<'_>, c: &Container) -> Result<&PooledEngine, JobError> {
        let (records, answering) = tokio::join!(self.store.all(), self.engines.answering());
        let loads = loads(&self.engines, &records.map_err(retry)?);
        let Some(engine) = self.engines.place(c.cpus, c.memory_mb, &loads, &answering) else {
            let e = RuntimeError::Unavailable(format!(
                "no engine that answers has room for {} CPUs and {} MiB",
                c.cpus, c.memory_mb
            ));
            return Err(self.fail(job, c, None, "place", e).await);
        };
        match self
            .store
            .set_engine(&c.id, &engine.name)
            .await
            .map_err(retry)?
        {
            Transition::Done => {}
            Transition::Deleted => return Err(deleted_while_starting()),
            Transition::Missing => return Err(record_gone()),
        }
        tracing::info!(container.id = %c.id, engine = %engine.name, "placed");
        Ok(engine)
    }

    /// The container's VNC password and the id of its secret, recorded for the relay
    /// before the container exists: a redelivered start keeps the secret it began
    /// with; a first start takes the current one. None without secrets (static).
    async fn password(&self, cid: &str) -> Result<Option<(String, String)>, JobError> {
        let keys = self.passwords.get();
        let kept = self.store.password_key(cid).await.map_err(retry)?;
        let derived = kept
            .and_then(|key| keys.derive(&key, cid).map(|password| (key, password)))
            .or_else(|| keys.current(cid));
        if let Some((key, password)) = &derived {
            match self
                .store
                .set_password(cid, key, password)
                .await
                .map_err(retry)?
            {
                Transition::Done => {}
                Transition::Deleted => return Err(deleted_while_starting()),
                Transition::Missing => return Err(record_gone()),
            }
        }
        Ok(derived)
    }

    /// Counts the failure; on the last attempt (or one not worth retrying) marks the
    /// container failed, removes what the runtime left, and tells listeners.
    async fn fail(
        &self,
        job: &JobContext<'_>,
        c: &Container,
        engine: Option<&PooledEngine>,
        op: &'static str,
        e: RuntimeError,
    ) -> JobError {
        metrics::counter!(DOCKER_ERRORS, "op" => op).increment(1);
        let message = e.to_string();
        if e.retryable() && job.attempt < job.max_attempts {
            return JobError::Retry(message);
        }
        tracing::warn!(container.id = %c.id, error = %message, "container failed to start");
        if let Some(engine) = engine {
            let _ = engine.runtime.stop(&c.id, Duration::ZERO).await;
        }
        match self.store.set_failed(&c.id, &message).await {
            Ok(Transition::Done) => {
                let _ = self.store.publish("container.failed", c).await;
            }
            // Deleted meanwhile: it stays `stopped` (the stop won) and is not retried.
            Ok(Transition::Deleted) => return deleted_while_starting(),
            Ok(Transition::Missing) | Err(_) => {}
        }
        if e.retryable() {
            JobError::Retry(message)
        } else {
            JobError::Fatal(message)
        }
    }

    /// Stops and removes the container on its engine, then records it stopped. An
    /// engine that does not answer is retried like any unavailable engine; after the
    /// last attempt the record is `stopped` all the same (the desktop is gone for its
    /// users), and the reconciler removes the container when its engine answers again.
    async fn stop(&self, job: &JobContext<'_>, cid: &str) -> Result<Value, JobError> {
        let Some(c) = self.store.get(cid).await.map_err(retry)? else {
            return Ok(json!({"stopped": false}));
        };
        let stopped = match self.engines.of(c.engine.as_deref()) {
            Ok(engine) => engine.runtime.stop(cid, self.stop_grace).await,
            Err(e) => Err(e),
        };
        if let Err(e) = stopped {
            metrics::counter!(DOCKER_ERRORS, "op" => "stop").increment(1);
            if !e.retryable() {
                return Err(JobError::Fatal(e.to_string()));
            }
            if job.attempt < job.max_attempts {
                return Err(JobError::Retry(e.to_string()));
            }
            tracing::warn!(container.id = %cid, engine = ?c.engine, error = %e, "the desktop's engine does not answer: recorded stopped; its container is removed when the engine answers again");
        }
        self.store
            .set_state(cid, ContainerState::Stopped, None)
            .await
            .map_err(retry)?;
        let _ = self.store.publish("container.stopped", &c).await;
        Ok(json!({"stopped": true}))
    }
}

/// Records the containers of the static runtime as running (they are not started by
/// control; their VNC servers already answer), with the clipboard policy `clipboard`
/// and no file transfer (the static runtime has no folders to move files to).
pub async fn register_static(
    store: &ContainerStore,
    declared: &[StaticContainer],
    node: &str,
    clipboard: ClipboardPolicy,
) {
    for d in declared {
        let exists = matches!(store.get(&d.cid).await, Ok(Some(_)));
        let c = Container {
            id: d.cid.clone(),
            owner: d.owner.clone(),
            tenant: d.tenant.clone(),
            state: ContainerState::Running,
            image: "static".into(),
            cpus: 0.0,
            memory_mb: 0,
            labels: Default::default(),
            env: Default::default(),
            endpoint: None,
            node: None,
            engine: None,
            error: None,
            created_at: now_ms(),
            record: false,
            files: FilePolicy::None,
            clipboard,
        };
        let written = if exists {
            Ok(())
        } else {
            store.create(&c).await
        };
        if let Err(e) = written.and(Ok(())) {
            tracing::warn!(container.id = %d.cid, error = %e, "could not register a static container");
            continue;
        }
        if let Err(e) = store.set_running(&d.cid, &d.host, d.port, node).await {
            tracing::warn!(container.id = %d.cid, error = %e, "could not register a static container");
        }
    }
}

/// Follows every engine's events and, every `interval`, compares Redis with what each
/// engine runs (see [`Lifecycle::reconcile`]).
pub async fn reconcile_loop(
    lifecycle: Arc<Lifecycle>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    // The event feed runs in a task of its own: a stream left unpolled while a
    // reconcile awaits the same runtime could hold up what that reconcile waits for.
    let feed = {
        let lifecycle = Arc::clone(&lifecycle);
        let mut events =
            futures_util::stream::select_all(lifecycle.engines.all().iter().map(|e| {
                let name = e.name.clone();
                e.runtime
                    .events()
                    .map(move |(cid, state)| (name.clone(), cid, state))
                    .boxed()
            }));
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.next() => match event {
                        Some((engine, cid, state)) => {
                            let Ok(Some(c)) = lifecycle.store.get(&cid).await else {
                                continue;
                            };
                            // Only the engine the record names speaks for it.
                            if engine_of(&lifecycle.engines, &c) == Some(engine.as_str()) {
                                observe(&lifecycle.store, &c, state).await;
                            }
                        }
                        None => return,
                    },
                }
            }
        })
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if let Err(e) = lifecycle.reconcile().await {
                    tracing::warn!(error = %e, "reconcile failed");
                }
            }
        }
    }
    feed.abort();
}

/// Applies what its engine says about a running container to its record: one that
/// died becomes `failed` (with the exit code) or `stopped`, one that vanished `stopped`.
async fn observe(store: &ContainerStore, c: &Container, state: RuntimeState) {
    if c.state != ContainerState::Running {
        return;
    }
    let (next, error, event) = match state {
        RuntimeState::Running => return,
        RuntimeState::Exited { code: 0 } | RuntimeState::Missing => {
            (ContainerState::Stopped, None, "container.stopped")
        }
        RuntimeState::Exited { code } => (
            ContainerState::Failed,
            Some(format!("container exited with code {code}")),
            "container.failed",
        ),
    };
    tracing::info!(container.id = %c.id, ?state, "container changed behind control's back");
    if let Ok(true) = store
        .move_state(&c.id, ContainerState::Running, next, error.as_deref())
        .await
    {
        let _ = store.publish(event, c).await;
    }
}

impl Lifecycle {
    /// One pass over every engine. An engine that answers: a running record whose
    /// container died or vanished becomes stopped (or failed, with the exit code); an
    /// `unavailable` record gets its container's real state back; a managed container
    /// with no record is re-adopted; the container of a `stopped` record (left by a
    /// start that lost to a stop, or a stop while its engine was down) is removed. An
    /// engine that does not answer (or is no longer configured): its running desktops
    /// become `unavailable`, neither removed nor started elsewhere.
    async fn reconcile(&self) -> Result<(), String> {
        // Records before the listing: a record `running` in this snapshot had its
        // container before the engine was listed, so one missing from the listing is
        // really gone.
        let records = self.store.all().await;
        // Listed all at once: an engine that hangs holds up no other's reconcile.
        let listed = futures_util::future::join_all(
            self.engines.all().iter().map(|e| e.runtime.list_managed()),
        )
        .await;
        // Whether each engine answers is known even while Redis is not.
        for (engine, listed) in self.engines.all().iter().zip(&listed) {
            let up = if listed.is_ok() { 1.0 } else { 0.0 };
            metrics::gauge!(ENGINE_UP, "engine" => engine.name.clone()).set(up);
        }
        let records = records.map_err(|e| e.to_string())?;
        let by_id: HashMap<&str, &Container> = records.iter().map(|c| (c.id.as_str(), c)).collect();
        let mut mine: HashMap<&str, Vec<&Container>> = HashMap::new();
        for c in &records {
            if let Some(engine) = engine_of(&self.engines, c) {
                mine.entry(engine).or_default().push(c);
            }
        }
        for (engine, listed) in self.engines.all().iter().zip(listed) {
            let on_it = mine.remove(engine.name.as_str()).unwrap_or_default();
            let live = on_it.iter().filter(|c| takes_room(c)).count();
            metrics::gauge!(ENGINE_DESKTOPS, "engine" => engine.name.clone()).set(live as f64);
            match listed {
                Ok(managed) => {
                    self.reconcile_engine(engine, &by_id, &on_it, managed).await;
                }
                Err(e) => {
                    let why = format!("its engine {} does not answer: {e}", engine.name);
                    self.mark_unavailable(&on_it, &why).await;
                }
            }
        }
        // Records of engines no longer configured.
        for (engine, on_it) in mine {
            let why = format!("its engine {engine} is not in the configuration");
            self.mark_unavailable(&on_it, &why).await;
        }
        Ok(())
    }

    /// Reconciles the records of one engine that answered with what it runs.
    async fn reconcile_engine(
        &self,
        engine: &PooledEngine,
        by_id: &HashMap<&str, &Container>,
        on_it: &[&Container],
        managed: Vec<(String, RuntimeState)>,
    ) {
        let managed: HashMap<String, RuntimeState> = managed.into_iter().collect();
        for (cid, state) in &managed {
            match by_id.get(cid.as_str()) {
                None => {
                    if let Err(e) = self.adopt(engine, cid).await {
                        tracing::warn!(container.id = %cid, engine = %engine.name, error = %e, "re-adopting a container failed");
                    }
                }
                // A twin on an engine the record does not name: not ours to judge.
                Some(c) if engine_of(&self.engines, c) != Some(engine.name.as_str()) => {}
                Some(c) if c.state == ContainerState::Stopped => {
                    tracing::info!(container.id = %cid, engine = %engine.name, "removing the container of a stopped record");
                    let _ = engine.runtime.stop(cid, Duration::ZERO).await;
                }
                Some(c) if c.state == ContainerState::Unavailable => {
                    self.restore(engine, c, *state).await;
                }
                Some(c) => observe(&self.store, c, *state).await,
            }
        }
        for c in on_it {
            if managed.contains_key(&c.id) {
                continue;
            }
            if c.state == ContainerState::Unavailable {
                self.restore(engine, c, RuntimeState::Missing).await;
            } else {
                observe(&self.store, c, RuntimeState::Missing).await;
            }
        }
    }

    /// Marks the running desktops among `records` `unavailable`, saying why.
    async fn mark_unavailable(&self, records: &[&Container], why: &str) {
        for c in records
            .iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            match self
                .store
                .move_state(
                    &c.id,
                    ContainerState::Running,
                    ContainerState::Unavailable,
                    Some(why),
                )
                .await
            {
                Ok(true) => {
                    tracing::warn!(container.id = %c.id, engine = ?c.engine, reason = %why, "desktop unavailable");
                    let _ = self.store.publish("container.unavailable", c).await;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(container.id = %c.id, error = %e, "marking a desktop unavailable")
                }
            }
        }
    }

    /// Gives an `unavailable` desktop whose engine answers again its real state:
    /// `running` (at the endpoint the engine reports now), or `stopped`/`failed` as
    /// [`observe`] would have made it.
    async fn restore(&self, engine: &PooledEngine, c: &Container, state: RuntimeState) {
        let (next, error, endpoint, event) = match state {
            RuntimeState::Running => {
                let endpoint = match engine.runtime.inspect(&c.id).await {
                    Ok(Some(found)) => found.endpoint,
                    Ok(None) => None,
                    Err(e) => {
                        tracing::debug!(container.id = %c.id, error = %e, "inspecting a desktop coming back");
                        return;
                    }
                };
                let Some(endpoint) = endpoint else {
                    return; // not reachable yet: the next pass looks again
                };
                (
                    ContainerState::Running,
                    None,
                    Some(endpoint),
                    "container.available",
                )
            }
            RuntimeState::Exited { code: 0 } | RuntimeState::Missing => {
                (ContainerState::Stopped, None, None, "container.stopped")
            }
            RuntimeState::Exited { code } => (
                ContainerState::Failed,
                Some(format!(
                    "container exited with code {code} while its engine did not answer"
                )),
                None,
                "container.failed",
            ),
        };
        match self
            .store
            .move_state_with(
                &c.id,
                ContainerState::Unavailable,
                next,
                error.as_deref(),
                endpoint.as_ref().map(|e| (e.host.as_str(), e.port)),
            )
            .await
        {
            Ok(true) => {
                tracing::info!(container.id = %c.id, engine = %engine.name, state = next.as_str(), "desktop back from an engine that answers again");
                let _ = self.store.publish(event, c).await;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(container.id = %c.id, error = %e, "restoring a desktop"),
        }
    }
}
