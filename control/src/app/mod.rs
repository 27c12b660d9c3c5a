//! Commands and queries of the control plane: what the API asks for, checked against
//! the domain rules, recorded in Redis and handed to the job queue.

pub mod adopt;
pub mod engines;
pub mod files;
pub mod jobs;
pub mod record_labels;
pub mod sessions;
pub mod shares;

use std::sync::Arc;
use std::time::Duration;

use vnc_shared::schema::ContainerState;
use vnc_shared::swap::Swap;
use vnc_shared::token::{
    ClipboardPolicy, FilePolicy, KeySet, Minted, Scope, SignError, Signer, TokenRequest,
};

use crate::domain::files::token_policies;
use crate::domain::{Caller, Container, CreateContainer, CreateLimits, IssuedToken};
use crate::infra::queue::{JobRecord, Queue, QueueError};
use crate::infra::runtime::{Engines, RuntimeError};
use crate::infra::sessions::SessionStore;
use crate::infra::shares::ShareStore;
use crate::infra::store::{ContainerStore, StoreError, now_ms};
use crate::infra::tokens::TokenStore;

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// Over a quota: the caller must free something first (429).
    #[error("{0}")]
    OverQuota(String),
    /// Redis failed under a container record, a session, a node or a token.
    #[error("the store failed")]
    Store(#[from] StoreError),
    /// The job queue failed.
    #[error("the job queue failed")]
    Queue(#[from] QueueError),
    /// Signing a VNC token failed.
    #[error("signing failed")]
    Signing(#[source] SignError),
    /// A file larger than the operator allows (413).
    #[error("{0}")]
    TooLarge(String),
    /// The desktop's engine failed under a file transfer.
    #[error("the desktop failed: {0}")]
    Desktop(#[source] RuntimeError),
}

/// Job names.
pub const START_JOB: &str = "start";
pub const STOP_JOB: &str = "stop";

pub struct App {
    pub store: ContainerStore,
    pub queue: Queue,
    /// The relays' sessions and nodes, and the channel that kicks sessions.
    pub registry: SessionStore,
    /// Tokens issued through the API, and revocations.
    pub tokens: TokenStore,
    /// Share links of containers.
    pub shares: ShareStore,
    /// What SIGHUP may change; each request works with the set it started with.
    pub tunables: Swap<Tunables>,
    /// Where desktops run: the file routes move files through a desktop's engine, and
    /// `GET /v1/engines` shows them.
    pub engines: Arc<Engines>,
    /// File transfers in flight on this replica, at most [`files::MAX_TRANSFERS`].
    pub transfers: Arc<tokio::sync::Semaphore>,
}

/// The settings of [`App`] that a reload replaces as a whole.
pub struct Tunables {
    pub signer: Signer,
    /// The signer's own key, to verify the VNC tokens the viewer page calls the file
    /// routes with.
    pub own_keys: KeySet,
    pub limits: CreateLimits,
    /// Live (not stopped or failed) containers one tenant may have.
    pub max_containers_per_tenant: usize,
    /// Longest VNC token TTL a caller may ask for.
    pub token_max_ttl: Duration,
    /// Longest share link a caller may ask for.
    pub share_max_ttl: Duration,
    /// Public base URL of the relays (`wss://vnc.example.com`), for `ws_url`.
    pub relay_url: String,
    /// Public base URL of this API, for share links' `control=` (none: left out).
    pub public_url: Option<String>,
    /// Policies of containers whose create request names none.
    pub files_default: FilePolicy,
    pub clipboard_default: ClipboardPolicy,
    /// Largest file moved either way.
    pub files_max_bytes: u64,
    /// Origins whose pages may call the file routes (CORS).
    pub viewer_origins: Vec<String>,
}

/// A page of a listing.
pub struct Page {
    pub items: Vec<Container>,
    pub total: usize,
}

impl App {
    /// Records a new container (state `creating`) if its tenant is below its quota,
    /// and queues its start in the tenant's turn.
    pub async fn create_container(
        &self,
        caller: &Caller,
        req: CreateContainer,
    ) -> Result<(Container, String), AppError> {
        let tunables = self.tunables.get();
        let problems = req.problems(&tunables.limits);
        if !problems.is_empty() {
            return Err(AppError::Invalid(problems));
        }
        let container = Container {
            id: uuid::Uuid::new_v4().to_string(),
            owner: caller.sub.clone(),
            tenant: caller.tenant.clone(),
            state: ContainerState::Creating,
            image: req.image,
            cpus: req.resources.cpus,
            memory_mb: req.resources.memory_mb,
            labels: req.labels,
            env: req.env,
            endpoint: None,
            node: None,
            engine: None,
            error: None,
            created_at: now_ms(),
            record: req.record,
            files: req.files.unwrap_or(tunables.files_default),
            clipboard: req.clipboard.unwrap_or(tunables.clipboard_default),
        };
        let quota = tunables.max_containers_per_tenant;
        if let Some(live) = self.store.create_within_quota(&container, quota).await? {
            return Err(AppError::OverQuota(format!(
                "tenant {} has {live} containers, the limit is {quota}: stop one first",
                container.tenant
            )));
        }
        self.store.publish("container.created", &container).await?;
        let job = self
            .queue
            .enqueue_in(
                &container.tenant,
                START_JOB,
                serde_json::json!({ "cid": container.id }),
                None,
            )
            .await?;
        Ok((container, job))
    }

    /// A container the caller can see (another tenant's is "not found").
    pub async fn container(&self, caller: &Caller, id: &str) -> Result<Container, AppError> {
        match self.store.get(id).await? {
            Some(c) if c.visible_to(caller) => Ok(c),
            _ => Err(AppError::NotFound("container")),
        }
    }

    /// The caller's containers (an admin sees the tenant's), oldest first.
    pub async fn list(
        &self,
        caller: &Caller,
        page: usize,
        per_page: usize,
    ) -> Result<Page, AppError> {
        let all: Vec<Container> = self
            .store
            .list_tenant(&caller.tenant)
            .await?
            .into_iter()
            .filter(|c| caller.admin || c.owner == caller.sub)
            .collect();
        let total = all.len();
        let items = all
            .into_iter()
            .skip(page.saturating_sub(1).saturating_mul(per_page))
            .take(per_page)
            .collect();
        Ok(Page { items, total })
    }

    /// Marks the container stopping, tells its viewers, and queues the stop.
    pub async fn delete_container(&self, caller: &Caller, id: &str) -> Result<String, AppError> {
        let c = self.container(caller, id).await?;
        if !c.managed_by(caller) {
            return Err(AppError::Forbidden(
                "only the owner or an admin may delete a container".into(),
            ));
        }
        if c.state == ContainerState::Stopped {
            return Err(AppError::Conflict("container is already stopped".into()));
        }
        self.store
            .set_state(id, ContainerState::Stopping, None)
            .await?;
        self.store.publish("container.stopping", &c).await?;
        Ok(self
            .queue
            .enqueue(STOP_JOB, serde_json::json!({ "cid": id }), None)
            .await?)
    }

    /// A job about a container the caller can see.
    pub async fn job(&self, caller: &Caller, id: &str) -> Result<JobRecord, AppError> {
        let job = self.queue.get(id).await?.ok_or(AppError::NotFound("job"))?;
        let cid = job
            .data
            .get("cid")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        self.container(caller, cid)
            .await
            .map_err(|_| AppError::NotFound("job"))?;
        Ok(job)
    }

    /// Mints a VNC token for a running container the caller may open with `scope`,
    /// and records it so it can be revoked later.
    pub async fn vnc_token(
        &self,
        caller: &Caller,
        id: &str,
        scope: Scope,
        ttl: Duration,
    ) -> Result<Minted, AppError> {
        let tunables = self.tunables.get();
        if ttl.is_zero() || ttl > tunables.token_max_ttl {
            return Err(AppError::Invalid(vec![format!(
                "ttl_seconds must be between 1 and {}",
                tunables.token_max_ttl.as_secs()
            )]));
        }
        let c = self.container(caller, id).await?;
        if !c.may_open(caller, scope) {
            return Err(AppError::Forbidden(format!(
                "a {} token is only for the container's owner or an admin",
                scope.as_str()
            )));
        }
        if c.state != ContainerState::Running {
            return Err(AppError::Conflict(format!(
                "container is not running (state: {})",
                c.state.as_str()
            )));
        }
        let (files, clipboard) = token_policies(&c, scope);
        let minted = tunables
            .signer
            .mint(&TokenRequest {
                sub: &caller.sub,
                tenant: &c.tenant,
                cid: &c.id,
                scope,
                ttl,
                share: None,
                admin: caller.admin,
                files,
                clipboard,
            })
            .map_err(AppError::Signing)?;
        // No token leaves without its record: one that can't be revoked is not issued.
        self.tokens
            .record(&IssuedToken::from_claims(&minted.claims))
            .await?;
        Ok(minted)
    }
}
