//! The container lifecycle as queue jobs (`start`, `stop`), and the reconciler that
//! keeps Redis true when a container dies or vanishes behind control's back.
//!
//! Handlers are idempotent: a redelivered `start` finds the running record (or the
//! runtime finds the labelled container) and creates nothing twice; a `stop` of a gone
//! container succeeds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vnc_shared::schema::ContainerState;

use super::{START_JOB, STOP_JOB};
use crate::config::StaticContainer;
use crate::domain::Container;
use crate::infra::queue::{JobContext, JobError, JobHandler};
use crate::infra::runtime::{ContainerSpec, Runtime, RuntimeError, RuntimeState, wait_for_rfb};
use crate::infra::store::{ContainerStore, StoreError, now_ms};
use crate::metrics::DOCKER_ERRORS;

/// Runs `start` and `stop` jobs against a runtime.
pub struct Lifecycle {
    pub store: ContainerStore,
    pub runtime: Arc<dyn Runtime>,
    pub node_id: String,
    pub stop_grace: Duration,
    /// Time a started VNC server gets to answer with its RFB greeting.
    pub start_timeout: Duration,
}

fn retry(e: StoreError) -> JobError {
    JobError::Retry(e.to_string())
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
            .ok_or_else(|| JobError::Fatal("container record is gone".into()))?;
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
        let spec = ContainerSpec {
            cid: c.id.clone(),
            owner: c.owner.clone(),
            tenant: c.tenant.clone(),
            image: c.image.clone(),
            cpus: c.cpus,
            memory_mb: c.memory_mb,
            env: c.env.clone(),
            labels: c.labels.clone(),
            vnc_password: self.store.vnc_password(cid).await.map_err(retry)?,
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
        self.store
            .set_running(cid, &endpoint.host, endpoint.port, &self.node_id)
            .await
            .map_err(retry)?;
        job.progress(100).await;
        let _ = self.store.publish("container.started", &c).await;
        Ok(json!({"host": endpoint.host, "port": endpoint.port}))
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
        if self
            .store
            .set_state(&c.id, ContainerState::Failed, Some(&message))
            .await
            .is_ok()
        {
            let _ = self.store.publish("container.failed", c).await;
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
/// control; their VNC servers already answer).
pub async fn register_static(store: &ContainerStore, declared: &[StaticContainer], node: &str) {
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
        };
        let written = if exists {
            Ok(())
        } else {
            store.create(&c, "").await
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
/// (or failed, with the exit code); a labelled container with no live record is an
/// orphan and is removed.
pub async fn reconcile_loop(
    store: ContainerStore,
    runtime: Arc<dyn Runtime>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    // The event feed runs in a task of its own: a stream left unpolled while a
    // reconcile awaits the same runtime could hold up what that reconcile waits for.
    let feed = {
        let store = store.clone();
        let mut events = runtime.events();
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
                if let Err(e) = reconcile(&store, runtime.as_ref()).await {
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

async fn reconcile(store: &ContainerStore, runtime: &dyn Runtime) -> Result<(), String> {
    let managed: HashMap<String, RuntimeState> = runtime
        .list_managed()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    for (cid, state) in &managed {
        match store.get(cid).await.map_err(|e| e.to_string())? {
            Some(c)
                if matches!(
                    c.state,
                    ContainerState::Running | ContainerState::Creating | ContainerState::Stopping
                ) =>
            {
                observe(store, cid, *state).await
            }
            _ => {
                tracing::info!(container.id = %cid, "removing an orphan container");
                let _ = runtime.stop(cid, Duration::ZERO).await;
            }
        }
    }
    for cid in store.all_ids().await.map_err(|e| e.to_string())? {
        if !managed.contains_key(&cid) {
            observe(store, &cid, RuntimeState::Missing).await;
        }
    }
    Ok(())
}
