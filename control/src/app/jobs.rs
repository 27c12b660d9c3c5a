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

use super::record_labels::record_labels;
use super::{START_JOB, STOP_JOB};
use crate::domain::{Container, StaticContainer};
use crate::infra::passwords::PasswordKeys;
use crate::infra::queue::{JobContext, JobError, JobHandler};
use crate::infra::runtime::{ContainerSpec, Runtime, RuntimeError, RuntimeState, wait_for_rfb};
use crate::infra::store::{ContainerStore, StoreError, Transition, now_ms};
use crate::metrics::DOCKER_ERRORS;

/// Runs `start` and `stop` jobs against a runtime.
pub struct Lifecycle {
    pub store: ContainerStore,
    pub runtime: Arc<dyn Runtime>,
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
                STOP_JOB => self.stop(&cid).await,
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
        job.progress(10).await;
        tracing::debug!(container.id = %cid, image = %c.image, "starting container");
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
        let endpoint = match self.runtime.start(&spec).await {
            Ok(e) => e,
            Err(e) => return Err(self.fail(job, &c, "start", e).await),
        };
        job.progress(50).await;
        tracing::debug!(container.id = %cid, %endpoint, "container started; waiting for its VNC server");
        if let Err(e) = wait_for_rfb(&endpoint, self.start_timeout).await {
            return Err(self.fail(job, &c, "probe", e).await);
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
                if let Err(e) = self.runtime.stop(cid, self.stop_grace).await {
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
        op: &'static str,
        e: RuntimeError,
    ) -> JobError {
        metrics::counter!(DOCKER_ERRORS, "op" => op).increment(1);
        let message = e.to_string();
        if e.retryable() && job.attempt < job.max_attempts {
            return JobError::Retry(message);
        }
        tracing::warn!(container.id = %c.id, error = %message, "container failed to start");
        let _ = self.runtime.stop(&c.id, Duration::ZERO).await;
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

    async fn stop(&self, cid: &str) -> Result<Value, JobError> {
        let Some(c) = self.store.get(cid).await.map_err(retry)? else {
            return Ok(json!({"stopped": false}));
        };
        if let Err(e) = self.runtime.stop(cid, self.stop_grace).await {
            metrics::counter!(DOCKER_ERRORS, "op" => "stop").increment(1);
            return Err(if e.retryable() {
                JobError::Retry(e.to_string())
            } else {
                JobError::Fatal(e.to_string())
            });
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

/// Follows the runtime's events and, every `interval`, compares Redis with what the
/// runtime runs: a running record whose container died or vanished becomes stopped
/// (or failed, with the exit code); a managed container with no record is re-adopted;
/// the container of a `stopped` record (left by a start that lost to a stop) is removed.
pub async fn reconcile_loop(
    lifecycle: Arc<Lifecycle>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    // The event feed runs in a task of its own: a stream left unpolled while a
    // reconcile awaits the same runtime could hold up what that reconcile waits for.
    let feed = {
        let store = lifecycle.store.clone();
        let mut events = lifecycle.runtime.events();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.next() => match event {
                        Some((cid, state)) => observe(&store, &cid, state).await,
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

/// Applies what the runtime says about one container to its record.
async fn observe(store: &ContainerStore, cid: &str, state: RuntimeState) {
    let Ok(Some(c)) = store.get(cid).await else {
        return;
    };
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
    tracing::info!(container.id = %cid, ?state, "container changed behind control's back");
    if store.set_state(cid, next, error.as_deref()).await.is_ok() {
        let _ = store.publish(event, &c).await;
    }
}

impl Lifecycle {
    async fn reconcile(&self) -> Result<(), String> {
        let managed: HashMap<String, RuntimeState> = self
            .runtime
            .list_managed()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        for (cid, state) in &managed {
            let record = match self.store.get(cid).await {
                Ok(record) => record,
                Err(e @ StoreError::Corrupt { .. }) => {
                    tracing::warn!(container.id = %cid, error = %e, "skipping a corrupt record");
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            match record {
                None => {
                    if let Err(e) = self.adopt(cid).await {
                        tracing::warn!(container.id = %cid, error = %e, "re-adopting a container failed");
                    }
                }
                Some(c) if c.state == ContainerState::Stopped => {
                    tracing::info!(container.id = %cid, "removing the container of a stopped record");
                    let _ = self.runtime.stop(cid, Duration::ZERO).await;
                }
                Some(_) => observe(&self.store, cid, *state).await,
            }
        }
        for cid in self.store.all_ids().await.map_err(|e| e.to_string())? {
            if !managed.contains_key(&cid) {
                observe(&self.store, &cid, RuntimeState::Missing).await;
            }
        }
        Ok(())
    }
}
