//! Container records in Redis (`{prefix}container:{cid}` hashes and the per-tenant
//! sets) and the domain events control publishes (`{prefix}events`, and
//! `container.stopping` also on the container's room channel for the relays).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fred::prelude::*;
use futures_util::future::try_join_all;
use vnc_shared::schema::{ContainerState, Keys, container_field as f};
use vnc_shared::token::unix_now;

use crate::domain::Container;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    #[error("container record {cid} is corrupt: {why}")]
    Corrupt { cid: String, why: String },
    #[error("record {key} is corrupt: {why}")]
    Record { key: String, why: String },
}

impl From<fred::error::Error> for StoreError {
    fn from(e: fred::error::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Fields of the record beyond the shared schema (control's own).
mod extra {
    pub const CPUS: &str = "cpus";
    pub const MEMORY_MB: &str = "memory_mb";
    pub const LABELS: &str = "labels";
    pub const ENV: &str = "env";
    pub const ERROR: &str = "error";
    /// Id of the secret the VNC password was derived from.
    pub const PASSWORD_KEY: &str = "vnc_password_key";
    /// The file policy (`none`, `upload`, `download`, `both`); a record without it
    /// (written before it existed) allows no file transfer.
    pub const FILES: &str = "files";
    /// The clipboard policy (`both`, `to_desktop`, `from_desktop`, `none`); a record
    /// without it allows both ways, as every session did before it existed.
    pub const CLIPBOARD: &str = "clipboard";
    /// The name of the engine the container was placed on (written by its start job
    /// before the container is created, or by re-adoption); a record without it
    /// belongs to the pool's first engine.
    pub const ENGINE: &str = "engine";
}

/// What a guarded write of a start's outcome did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Done,
    /// The record is `stopping` or `stopped`: the container was deleted meanwhile.
    Deleted,
    /// There is no record (Redis lost it).
    Missing,
}

/// KEYS: the record. ARGV: a field to delete ('' for none), then field/value pairs.
/// Writes only if the record exists and was not deleted: 'ok', 'missing' or the state.
const UNLESS_DELETED: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'stopping' or state == 'stopped' then return state end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if ARGV[1] ~= '' then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 'ok'
";

/// KEYS: the record. ARGV: the state expected, the new state, the error ('' clears it),
/// then field/value pairs to set with it. Moves the record only if it is in the state
/// expected: 1 if moved.
const MOVE_STATE: &str = r"
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'error')
else
  redis.call('HSET', KEYS[1], 'error', ARGV[3])
end
return 1
";

/// KEYS: the record. ARGV: field/value pairs. Writes the record only if there is none:
/// 1 if written.
const ADOPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
";

/// Deletes a lock only if it still holds `ARGV[1]`.
const UNLOCK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// How long a tenant's quota lock holds: a create that stalls longer may let one more
/// create pass the quota (the race the design accepts).
const QUOTA_LOCK_TTL: Duration = Duration::from_secs(5);
/// How long a create waits for its tenant's quota lock before it fails (503).
const QUOTA_LOCK_WAIT: Duration = Duration::from_secs(3);
/// Container records read at once when counting a tenant's live containers.
const STATE_READS: usize = 500;

pub use vnc_shared::schema::now_ms;

#[derive(Clone)]
pub struct ContainerStore {
    client: Client,
    keys: Keys,
}

impl ContainerStore {
    pub fn new(client: Client, keys: Keys) -> ContainerStore {
        ContainerStore { client, keys }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Writes a new record and adds it to its tenant's set (the set first: an id
    /// without a record is skipped and dropped, a record is never missing from its
    /// set). The VNC password is written by the start job
    /// ([`ContainerStore::set_password`]).
    pub async fn create(&self, c: &Container) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .sadd(self.keys.tenant_containers(&c.tenant), c.id.as_str())
            .await?;
        let _: () = self
            .client
            .hset(self.keys.container(&c.id), fields(c))
            .await?;
        Ok(())
    }

    /// [`ContainerStore::create`] only if the tenant has fewer than `quota` live (not
    /// stopped or failed) containers. The records lie in many hash slots (Redis
    /// Cluster), so creates of one tenant take turns under the tenant's lock
    /// (`{p}containers_lock:{tenant}`, [`QUOTA_LOCK_TTL`]) to count and write: parallel
    /// creates on any number of replicas never pass the quota while the lock holds.
    /// `Ok(Some(live))`: refused, the tenant has `live`.
    pub async fn create_within_quota(
        &self,
        c: &Container,
        quota: usize,
    ) -> Result<Option<usize>, StoreError> {
        let lock = self.keys.tenant_lock(&c.tenant);
        let holder = uuid::Uuid::new_v4().to_string();
        self.take_lock(&lock, &holder).await?;
        let created = async {
            let live = self.live_containers(&c.tenant).await?;
            if live >= quota {
                return Ok(Some(live));
            }
            self.create(c).await?;
            Ok(None)
        }
        .await;
        let _: i64 = self.client.eval(UNLOCK, vec![lock], vec![holder]).await?;
        created
    }

    /// Takes `lock` for `holder`, retrying while another create holds it, for at most
    /// [`QUOTA_LOCK_WAIT`].
    async fn take_lock(&self, lock: &str, holder: &str) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + QUOTA_LOCK_WAIT;
        let ttl = Some(Expiration::PX(QUOTA_LOCK_TTL.as_millis() as i64));
        loop {
            let taken: Option<String> = self
                .client
                .set(lock, holder, ttl.clone(), Some(SetOptions::NX), false)
                .await?;
            if taken.is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!("{lock} stays taken")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many of the tenant's containers are live (not stopped or failed); ids
    /// whose record is gone are dropped from the tenant's set on the way.
    async fn live_containers(&self, tenant: &str) -> Result<usize, StoreError> {
        let set = self.keys.tenant_containers(tenant);
        let ids: Vec<String> = self.client.smembers(&set).await?;
        let mut live = 0;
        let mut stale = Vec::new();
        for batch in ids.chunks(STATE_READS) {
            let states = try_join_all(batch.iter().map(|id| async move {
                let state: Option<String> =
                    self.client.hget(self.keys.container(id), f::STATE).await?;
                Ok::<_, StoreError>(state)
            }))
            .await?;
            for (id, state) in batch.iter().zip(states) {
                match state.as_deref() {
                    None => stale.push(id.as_str()),
                    Some("stopped" | "failed") => {}
                    Some(_) => live += 1,
                }
            }
        }
        if !stale.is_empty() {
            let _: i64 = self.client.srem(&set, stale).await?;
        }
        Ok(live)
    }

    /// Writes the record of a container found running without one (its record was
    /// lost), with its endpoint and VNC password, unless a record appeared meanwhile,
    /// and adds it to its tenant's set. True when this call wrote the record.
    pub async fn adopt(
        &self,
        c: &Container,
        password: Option<(&str, &str)>,
    ) -> Result<bool, StoreError> {
        let mut fields = fields(c);
        if let Some((host, port)) = &c.endpoint {
            fields.push((f::HOST, host.clone()));
            fields.push((f::PORT, port.to_string()));
        }
        if let Some(node) = &c.node {
            fields.push((f::NODE, node.clone()));
        }
        if let Some(engine) = &c.engine {
            fields.push((extra::ENGINE, engine.clone()));
        }
        if let Some(error) = &c.error {
            fields.push((extra::ERROR, error.clone()));
        }
        if let Some((key, password)) = password {
            fields.push((extra::PASSWORD_KEY, key.to_owned()));
            fields.push((f::VNC_PASSWORD, password.to_owned()));
        }
        let mut args = Vec::with_capacity(fields.len() * 2);
        for (field, value) in fields {
            args.push(field.to_owned());
            args.push(value);
        }
        let written: i64 = self
            .client
            .eval(ADOPT, vec![self.keys.container(&c.id)], args)
            .await?;
        // Whether or not this call wrote the record: its set membership, after it.
        let _: i64 = self
            .client
            .sadd(self.keys.tenant_containers(&c.tenant), c.id.as_str())
            .await?;
        Ok(written == 1)
    }

    pub async fn get(&self, cid: &str) -> Result<Option<Container>, StoreError> {
        let map: HashMap<String, String> = self.client.hgetall(self.keys.container(cid)).await?;
        if map.is_empty() {
            return Ok(None);
        }
        parse(cid, &map).map(Some)
    }

    /// The id of the secret the container's VNC password was derived from, if the
    /// start job got that far.
    pub async fn password_key(&self, cid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .client
            .hget(self.keys.container(cid), extra::PASSWORD_KEY)
            .await?)
    }

    /// Records the container's VNC password (which only the relay reads) and the id of
    /// the secret it was derived from, unless the container was deleted meanwhile.
    pub async fn set_password(
        &self,
        cid: &str,
        key: &str,
        password: &str,
    ) -> Result<Transition, StoreError> {
        let fields = vec![
            (extra::PASSWORD_KEY, key.to_owned()),
            (f::VNC_PASSWORD, password.to_owned()),
        ];
        self.unless_deleted(cid, fields, None).await
    }

    /// All containers of a tenant, oldest first.
    pub async fn list_tenant(&self, tenant: &str) -> Result<Vec<Container>, StoreError> {
        let ids: Vec<String> = self
            .client
            .smembers(self.keys.tenant_containers(tenant))
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(c) = self.get(&id).await? {
                out.push(c);
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Sets the state (and clears or sets the error).
    pub async fn set_state(
        &self,
        cid: &str,
        state: ContainerState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = self.keys.container(cid);
        let _: () = self.client.hset(&key, (f::STATE, state.as_str())).await?;
        match error {
            Some(e) => {
                self.client
                    .hset::<(), _, _>(&key, (extra::ERROR, e))
                    .await?
            }
            None => self.client.hdel::<(), _, _>(&key, extra::ERROR).await?,
        }
        Ok(())
    }

    /// Records where the running container's VNC server answers, unless the
    /// container was deleted meanwhile (a stop requested during a start wins).
    pub async fn set_running(
        &self,
        cid: &str,
        host: &str,
        port: u16,
        node: &str,
    ) -> Result<Transition, StoreError> {
        let fields = vec![
            (f::STATE, ContainerState::Running.as_str().to_owned()),
            (f::HOST, host.to_owned()),
            (f::PORT, port.to_string()),
            (f::NODE, node.to_owned()),
        ];
        self.unless_deleted(cid, fields, Some(extra::ERROR)).await
    }

    /// Records the engine a start placed the container on, unless the container was
    /// deleted meanwhile.
    pub async fn set_engine(&self, cid: &str, engine: &str) -> Result<Transition, StoreError> {
        self.unless_deleted(cid, vec![(extra::ENGINE, engine.to_owned())], None)
            .await
    }

    /// Moves the record from state `from` to `to` (setting or clearing the error) in
    /// one step; false when the record was not in `from` (someone moved it first).
    pub async fn move_state(
        &self,
        cid: &str,
        from: ContainerState,
        to: ContainerState,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.move_state_with(cid, from, to, error, None).await
    }

    /// [`ContainerStore::move_state`], also recording the endpoint `(host, port)` where
    /// the relays reach the container when given.
    pub async fn move_state_with(
        &self,
        cid: &str,
        from: ContainerState,
        to: ContainerState,
        error: Option<&str>,
        endpoint: Option<(&str, u16)>,
    ) -> Result<bool, StoreError> {
        let mut args = vec![
            from.as_str().to_owned(),
            to.as_str().to_owned(),
            error.unwrap_or_default().to_owned(),
        ];
        if let Some((host, port)) = endpoint {
            args.extend([f::HOST.to_owned(), host.to_owned()]);
            args.extend([f::PORT.to_owned(), port.to_string()]);
        }
        let moved: i64 = self
            .client
            .eval(MOVE_STATE, vec![self.keys.container(cid)], args)
            .await?;
        Ok(moved == 1)
    }

    /// Every container record (all tenants), by scanning the key space in bounded
    /// pages (for the reconciler and placement, not for requests); corrupt records are
    /// logged and left out.
    pub async fn all(&self) -> Result<Vec<Container>, StoreError> {
        let mut out = Vec::new();
        for cid in self.all_ids().await? {
            match self.get(&cid).await {
                Ok(Some(c)) => out.push(c),
                Ok(None) => {}
                Err(e @ StoreError::Corrupt { .. }) => {
                    tracing::warn!(container.id = %cid, error = %e, "skipping a corrupt record");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Marks a start failed, unless the container was deleted meanwhile.
    pub async fn set_failed(&self, cid: &str, error: &str) -> Result<Transition, StoreError> {
        let fields = vec![
            (f::STATE, ContainerState::Failed.as_str().to_owned()),
            (extra::ERROR, error.to_owned()),
        ];
        self.unless_deleted(cid, fields, None).await
    }

    /// Sets `fields` (and deletes `clear`) in one step, only if the record exists and
    /// is neither `stopping` nor `stopped`.
    async fn unless_deleted(
        &self,
        cid: &str,
        fields: Vec<(&str, String)>,
        clear: Option<&str>,
    ) -> Result<Transition, StoreError> {
        let mut args = vec![clear.unwrap_or_default().to_owned()];
        for (field, value) in fields {
            args.push(field.to_owned());
            args.push(value);
        }
        let answer: String = self
            .client
            .eval(UNLESS_DELETED, vec![self.keys.container(cid)], args)
            .await?;
        Ok(match answer.as_str() {
            "ok" => Transition::Done,
            "missing" => Transition::Missing,
            _ => Transition::Deleted,
        })
    }

    /// Ids of every container record (all tenants), by scanning the key space in
    /// bounded pages (for the reconciler, not for requests).
    pub async fn all_ids(&self) -> Result<Vec<String>, StoreError> {
        const PAGE: u32 = 500;
        let prefix = self.keys.container("");
        let keys =
            vnc_shared::redis::scan_keys(&self.client, &format!("{prefix}*"), PAGE, None).await?;
        Ok(keys
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect())
    }

    /// Publishes a domain event on `{prefix}events`; `container.stopping` also goes to
    /// the container's room so relays can tell (and end) its viewers.
    pub async fn publish(&self, kind: &str, c: &Container) -> Result<(), StoreError> {
        let event = serde_json::json!({
            "type": kind,
            "cid": c.id,
            "tenant": c.tenant,
            "at": now_ms(),
        })
        .to_string();
        let _: () = self
            .client
            .publish(self.keys.events_channel(), event.as_str())
            .await?;
        if kind == "container.stopping" || kind == "container.stopped" {
            let _: () = self
                .client
                .spublish(self.keys.room_channel(&c.id), event.as_str())
                .await?;
        }
        Ok(())
    }
}

/// The fields of a new record (state, owner, limits, ...; no endpoint yet).
fn fields(c: &Container) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        (f::OWNER, c.owner.clone()),
        (f::TENANT, c.tenant.clone()),
        (f::STATE, c.state.as_str().to_owned()),
        (f::IMAGE, c.image.clone()),
        (f::CREATED_AT, c.created_at.to_string()),
        (extra::CPUS, c.cpus.to_string()),
        (extra::MEMORY_MB, c.memory_mb.to_string()),
        (
            extra::LABELS,
            serde_json::to_string(&c.labels).unwrap_or_default(),
        ),
        (
            extra::ENV,
            serde_json::to_string(&c.env).unwrap_or_default(),
        ),
    ];
    if c.record {
        fields.push((f::RECORD, "true".to_owned()));
    }
    fields.push((extra::FILES, c.files.as_str().to_owned()));
    fields.push((extra::CLIPBOARD, c.clipboard.as_str().to_owned()));
    fields
}

fn parse(cid: &str, m: &HashMap<String, String>) -> Result<Container, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt {
        cid: cid.to_owned(),
        why,
    };
    let get = |k: &str| m.get(k).cloned();
    let state = get(f::STATE)
        .ok_or_else(|| corrupt("no state".into()))?
        .parse()
        .map_err(corrupt)?;
    let json_map = |k: &str| -> BTreeMap<String, String> {
        get(k)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    };
    let endpoint = match (get(f::HOST), get(f::PORT).and_then(|p| p.parse().ok())) {
        (Some(h), Some(p)) => Some((h, p)),
        _ => None,
    };
    Ok(Container {
        id: cid.to_owned(),
        owner: get(f::OWNER).unwrap_or_default(),
        tenant: get(f::TENANT).unwrap_or_default(),
        state,
        image: get(f::IMAGE).unwrap_or_default(),
        cpus: get(extra::CPUS).and_then(|v| v.parse().ok()).unwrap_or(0.0),
        memory_mb: get(extra::MEMORY_MB)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        labels: json_map(extra::LABELS),
        env: json_map(extra::ENV),
        endpoint,
        node: get(f::NODE),
        engine: get(extra::ENGINE),
        error: get(extra::ERROR),
        created_at: get(f::CREATED_AT)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(unix_now),
        record: get(f::RECORD).as_deref() == Some("true"),
        files: get(extra::FILES)
            .map(|v| v.parse().map_err(corrupt))
            .transpose()?
            .unwrap_or_default(),
        clipboard: get(extra::CLIPBOARD)
            .map(|v| v.parse().map_err(corrupt))
            .transpose()?
            .unwrap_or_default(),
    })
}
