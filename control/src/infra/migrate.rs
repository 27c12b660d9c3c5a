//! The move of a deployment's Redis keys to the names where everything one script
//! touches shares a Redis Cluster hash slot (#19), so an upgrade keeps its jobs, share
//! links and (through them) its desktops. `vnc-control migrate` runs it once; the
//! daemon runs it at start, before its job workers ([`at_start`]).
//!
//! What moves (`{p}` is the prefix):
//!
//! | old | new | how |
//! |---|---|---|
//! | `{p}jobs` (stream, group `workers`) | `{p}{jobs}` | DUMP, RESTORE (type, TTL, groups and pending entries kept), DEL |
//! | `{p}job:<id>` (hash) | `{p}{jobs}:job:<id>` | the same |
//! | `{p}jobs:<rest>` (delayed, dead, lock, rate, group, ring, served) | `{p}{jobs}:<rest>` | the same |
//! | `{p}shares:<cid>` (set) | `{p}shares:{<cid>}` (sorted set by `expires_at`) | ZADD NX per live share, DEL; ids whose `{p}share:<id>` is gone are dropped |
//! | `{p}sessions:<cid>`, `{p}user_sessions:<tenant>:<sub>`, `{p}share_sessions:<id>` (sets) | none | DEL (the relays write the new sorted sets themselves) |
//!
//! DUMP/RESTORE rather than RENAME: RENAME fails across hash slots on a Cluster. When
//! the new key already exists (RESTORE says BUSYKEY: an earlier run stopped between
//! its RESTORE and its DEL, or this version wrote it first), the new key keeps what it
//! has and gets what only the old one has, where that is well defined: a stream's
//! entries it lacks (appended, so those jobs still run), a sorted set's
//! members it lacks, a list's elements it lacks (in front: they are older). Any other
//! type keeps the new key as it is. Then the old key goes. So a second run finds
//! nothing to do, and a key already in the new form is never overwritten.
//!
//! One run at a time across replicas: a run holds `{p}migrate:lock` (a PX lease it
//! refreshes while it works); another waits for it, then finds nothing left.

use std::fmt;
use std::time::Duration;

use fred::prelude::*;
use fred::types::scan::Scanner;
use fred::types::{Expiration, SetOptions};
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vnc_shared::redis::{glob_escape, scan_keys};
use vnc_shared::schema::Keys;

/// Keys asked per SCAN call (the COUNT hint: each call's work on the server).
pub const SCAN_PAGE: u32 = 500;
/// Stream entries, sorted-set members or list elements read per call while merging
/// an old key into an existing new one, and share ids per SSCAN call.
pub const COPY_PAGE: usize = 500;
/// Lease of `{p}migrate:lock`; a run refreshes it every third of this, so a run that
/// died holds the others up at most this long.
pub const LOCK_TTL: Duration = Duration::from_secs(30);
/// How often a run waiting for the lease tries again.
const LOCK_POLL: Duration = Duration::from_millis(250);
/// Runs the daemon tries at start before it starts its workers anyway (leaving the
/// rest to `vnc-control migrate`).
const START_ATTEMPTS: u32 = 5;

/// What a run did, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `{p}jobs` moved (0 or 1).
    pub stream: u64,
    /// `{p}job:<id>` hashes moved.
    pub jobs: u64,
    /// Other `{p}jobs:<rest>` keys moved.
    pub queue: u64,
    /// Of the moves above, those merged into a new key that already existed.
    pub merged: u64,
    /// `{p}shares:<cid>` sets made sorted sets.
    pub shares: u64,
    /// Share ids dropped from them because their share was gone.
    pub stale_share_ids: u64,
    /// Old session sets deleted.
    pub sessions: u64,
}

impl Report {
    /// Keys changed (0: there was nothing to migrate).
    pub fn changed(&self) -> u64 {
        self.stream + self.jobs + self.queue + self.shares + self.sessions
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "jobs stream {}, job hashes {}, queue keys {}, of these merged into existing new \
             keys {}, share sets {}, stale share ids dropped {}, old session sets deleted {}",
            self.stream,
            self.jobs,
            self.queue,
            self.merged,
            self.shares,
            self.stale_share_ids,
            self.sessions
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("the migration lease {0} was taken over (this run was too slow); run it again")]
    LeaseLost(String),
}

/// `vnc-control migrate`: connects to `url` and runs [`migrate`] once.
pub async fn once(url: &str, prefix: &str) -> Result<Report, MigrateError> {
    let client = Builder::from_config(Config::from_url(url)?).build()?;
    client.init().await?;
    let report = migrate(&client, prefix).await;
    let _ = client.quit().await;
    report
}

/// At the daemon's start, before its job workers: waits for Redis, then migrates,
/// trying again a few times on errors; returns early on shutdown. Gives up with an
/// error logged rather than keep the workers from ever starting (the keys left in the
/// old form move on a later start or with `vnc-control migrate`).
pub async fn at_start(client: &Client, prefix: &str, shutdown: &CancellationToken) {
    let connected = tokio::select! {
        _ = shutdown.cancelled() => return,
        c = client.wait_for_connect() => c,
    };
    if let Err(e) = connected {
        tracing::warn!(error = %e, "redis: key migration not run");
        return;
    }
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=START_ATTEMPTS {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = migrate(client, prefix) => r,
        };
        match result {
            Ok(_) => return,
            Err(e) if attempt < START_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "key migration failed; trying again");
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "key migration failed; starting the job workers with keys left in the old \
                     form: run `vnc-control migrate`"
                );
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff *= 2;
    }
}

/// Moves every key of the old schema under `prefix` (see the module doc), holding the
/// lease; waits for a run elsewhere to finish first.
pub async fn migrate(client: &Client, prefix: &str) -> Result<Report, MigrateError> {
    let mut lease = Lease::acquire(client, format!("{prefix}migrate:lock")).await?;
    let result = Run {
        client,
        prefix,
        lease: &mut lease,
        report: Report::default(),
    }
    .all()
    .await;
    lease.release(client).await;
    let report = result?;
    if report.changed() > 0 {
        tracing::info!(
            stream = report.stream,
            jobs = report.jobs,
            queue = report.queue,
            merged = report.merged,
            shares = report.shares,
            stale_share_ids = report.stale_share_ids,
            sessions = report.sessions,
            "redis keys migrated"
        );
    } else {
        tracing::debug!("redis keys: nothing to migrate");
    }
    Ok(report)
}

struct Run<'a> {
    client: &'a Client,
    prefix: &'a str,
    lease: &'a mut Lease,
    report: Report,
}

/// How one key moved.
enum Moved {
    /// It was gone by the time it was read (expired).
    Gone,
    Restored,
    /// The new key existed: merged into it.
    Merged,
}

impl Run<'_> {
    async fn all(mut self) -> Result<Report, MigrateError> {
        let p = self.prefix;
        let glob = glob_escape(p);
        let keys = Keys::new(p);
        let new_queue = keys.queue();

        let moved = self.move_key(&format!("{p}jobs"), &new_queue).await?;
        self.report.stream += self.count(&moved);

        for old in scan_keys(self.client, &format!("{glob}job:*"), SCAN_PAGE, None).await? {
            let id = &old[p.len() + "job:".len()..];
            let moved = self.move_key(&old, &keys.job(id)).await?;
            self.report.jobs += self.count(&moved);
        }

        for old in scan_keys(self.client, &format!("{glob}jobs:*"), SCAN_PAGE, None).await? {
            let rest = &old[p.len() + "jobs:".len()..];
            let moved = self.move_key(&old, &format!("{new_queue}:{rest}")).await?;
            self.report.queue += self.count(&moved);
        }

        let shares = format!("{p}shares:");
        for old in scan_keys(self.client, &format!("{glob}shares:*"), SCAN_PAGE, None).await? {
            let cid = &old[shares.len()..];
            if !cid.starts_with('{') {
                self.shares(&old, &keys.container_shares(cid)).await?;
            }
        }

        for name in ["sessions:", "user_sessions:", "share_sessions:"] {
            let pattern = format!("{glob}{name}*");
            let head = format!("{p}{name}");
            for old in scan_keys(self.client, &pattern, SCAN_PAGE, None).await? {
                if !old[head.len()..].starts_with('{') {
                    self.lease.keep(self.client).await?;
                    let deleted: i64 = self.client.del(&old).await?;
                    self.report.sessions += deleted as u64;
                }
            }
        }
        Ok(self.report)
    }

    fn count(&mut self, moved: &Moved) -> u64 {
        match moved {
            Moved::Gone => 0,
            Moved::Restored => 1,
            Moved::Merged => {
                self.report.merged += 1;
                1
            }
        }
    }

    /// DUMP `old`, RESTORE it as `new` with its TTL (or merge it into an existing
    /// `new`), then DEL `old`.
    async fn move_key(&mut self, old: &str, new: &str) -> Result<Moved, MigrateError> {
        self.lease.keep(self.client).await?;
        let c = self.client;
        let dump: Value = c.dump(old).await?;
        if dump.is_null() {
            return Ok(Moved::Gone);
        }
        let ttl = match c.pttl::<i64, _>(old).await? {
            // Gone since the DUMP.
            -2 => return Ok(Moved::Gone),
            // No TTL: RESTORE's 0.
            -1 => 0,
            // Under a millisecond left: still 1 ms, as 0 would make it persistent.
            ms => ms.max(1),
        };
        let moved = match c
            .restore::<Value, _>(new, ttl, dump, false, false, None, None)
            .await
        {
            Ok(_) => Moved::Restored,
            Err(e) if e.details().contains("BUSYKEY") => {
                self.merge(old, new).await?;
                Moved::Merged
            }
            Err(e) => return Err(e.into()),
        };
        let _: i64 = c.del(old).await?;
        Ok(moved)
    }

    /// Gives the existing `new` what only `old` has (see the module doc).
    async fn merge(&mut self, old: &str, new: &str) -> Result<(), MigrateError> {
        let c = self.client;
        let (old_type, new_type): (String, String) = (c.r#type(old).await?, c.r#type(new).await?);
        if old_type != new_type {
            tracing::warn!(
                old,
                new,
                old_type,
                new_type,
                "kept the new key; the old one differs in type"
            );
            return Ok(());
        }
        match old_type.as_str() {
            "stream" => self.merge_stream(old, new).await,
            "zset" => self.merge_zset(old, new).await,
            "list" => self.merge_list(old, new).await,
            _ => {
                tracing::debug!(old, new, "kept the new key");
                Ok(())
            }
        }
    }

    /// Appends the entries of `old` that `new` lacks (their pending state stays
    /// behind: a job listed again is delivered again, which the queue tolerates), and
    /// deletes each from `old` once appended, so a run that stops half-way appends
    /// none twice.
    async fn merge_stream(&mut self, old: &str, new: &str) -> Result<(), MigrateError> {
        let c = self.client;
        loop {
            self.lease.keep(c).await?;
            let entries: Vec<(String, Vec<String>)> =
                c.xrange(old, "-", "+", Some(COPY_PAGE as u64)).await?;
            if entries.is_empty() {
                return Ok(());
            }
            for (id, fields) in entries {
                // The same entry: a RESTORE copied it (ids alone may meet by chance:
                // each stream numbers its own).
                let present: Vec<(String, Vec<String>)> =
                    c.xrange(new, id.as_str(), id.as_str(), Some(1)).await?;
                let copied = present.first().is_some_and(|(_, f)| *f == fields);
                if !copied && fields.len() >= 2 {
                    let pairs: Vec<(String, String)> = fields
                        .chunks_exact(2)
                        .map(|kv| (kv[0].clone(), kv[1].clone()))
                        .collect();
                    let _: Value = c.xadd(new, false, None::<()>, "*", pairs).await?;
                }
                let _: i64 = c.xdel(old, id).await?;
            }
        }
    }

    /// Adds the members of `old` that `new` lacks, with their scores.
    async fn merge_zset(&mut self, old: &str, new: &str) -> Result<(), MigrateError> {
        let c = self.client;
        let mut start = 0i64;
        loop {
            self.lease.keep(c).await?;
            let stop = start + COPY_PAGE as i64 - 1;
            let page: Vec<(String, f64)> =
                c.zrange(old, start, stop, None, false, None, true).await?;
            if page.is_empty() {
                return Ok(());
            }
            let values: Vec<(f64, String)> = page.into_iter().map(|(m, s)| (s, m)).collect();
            let _: i64 = c
                .zadd(new, Some(SetOptions::NX), None, false, false, values)
                .await?;
            start = stop + 1;
        }
    }

    /// Puts the elements of `old` that `new` lacks in front of `new`, in their order.
    async fn merge_list(&mut self, old: &str, new: &str) -> Result<(), MigrateError> {
        let c = self.client;
        let mut end: i64 = c.llen(old).await?;
        // From the tail, so each LPUSH puts an older element before the ones pushed.
        while end > 0 {
            self.lease.keep(c).await?;
            let start = (end - COPY_PAGE as i64).max(0);
            let page: Vec<String> = c.lrange(old, start, end - 1).await?;
            for element in page.iter().rev() {
                let at: Option<i64> = c.lpos(new, element.as_str(), None, None, None).await?;
                if at.is_none() {
                    let _: i64 = c.lpush(new, element.as_str()).await?;
                }
            }
            end = start;
        }
        Ok(())
    }

    /// `{p}shares:<cid>` (set) to `{p}shares:{<cid>}` (sorted set scored by each
    /// share's `expires_at`), dropping ids whose share is gone.
    async fn shares(&mut self, old: &str, new: &str) -> Result<(), MigrateError> {
        let c = self.client;
        let kind: String = c.r#type(old).await?;
        if kind != "set" {
            tracing::warn!(key = old, kind, "not a set of share ids; left alone");
            return Ok(());
        }
        let mut ids = Vec::new();
        {
            let mut pages = std::pin::pin!(c.sscan(old, "*", Some(COPY_PAGE as u32)));
            while let Some(page) = pages.next().await {
                // Dropping a page asks for the next one.
                let mut page = page?;
                if let Some(found) = page.take_results() {
                    ids.extend(found.into_iter().filter_map(|v| v.into_string()));
                }
            }
        }
        // SSCAN may return a member twice. A container holds at most
        // MAX_SHARES_PER_CONTAINER live shares, plus expired ids not yet dropped.
        ids.sort();
        ids.dedup();
        let mut live = Vec::new();
        for id in ids {
            self.lease.keep(c).await?;
            let expires_at: Option<String> = c
                .hget(
                    Keys::new(self.prefix).share(&id),
                    vnc_shared::schema::share_field::EXPIRES_AT,
                )
                .await?;
            match expires_at.and_then(|s| s.parse::<u64>().ok()) {
                Some(at) => live.push((at as f64, id)),
                None => self.report.stale_share_ids += 1,
            }
        }
        for chunk in live.chunks(COPY_PAGE) {
            let _: i64 = c
                .zadd(
                    new,
                    Some(SetOptions::NX),
                    None,
                    false,
                    false,
                    chunk.to_vec(),
                )
                .await?;
        }
        let _: i64 = c.del(old).await?;
        self.report.shares += 1;
        Ok(())
    }
}

/// `{p}migrate:lock`: one run at a time across replicas.
struct Lease {
    key: String,
    token: String,
    refreshed: Instant,
}

/// Extends the lease if it is still ours. KEYS: lock; ARGV: token, PX.
const KEEP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Frees the lease if it is still ours. KEYS: lock; ARGV: token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

impl Lease {
    /// Waits until the lease is free and takes it.
    async fn acquire(client: &Client, key: String) -> Result<Lease, MigrateError> {
        let token = uuid::Uuid::new_v4().to_string();
        let mut waited = false;
        loop {
            let taken: Option<String> = client
                .set(
                    &key,
                    token.as_str(),
                    Some(Expiration::PX(LOCK_TTL.as_millis() as i64)),
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            if taken.is_some() {
                return Ok(Lease {
                    key,
                    token,
                    refreshed: Instant::now(),
                });
            }
            if !waited {
                tracing::info!(lease = %key, "another replica is migrating keys; waiting for it");
                waited = true;
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// Extends the lease when a third of it has passed; an error if it was lost.
    async fn keep(&mut self, client: &Client) -> Result<(), MigrateError> {
        if self.refreshed.elapsed() < LOCK_TTL / 3 {
            return Ok(());
        }
        let kept: i64 = client
            .eval(
                KEEP,
                vec![self.key.clone()],
                vec![self.token.clone(), LOCK_TTL.as_millis().to_string()],
            )
            .await?;
        if kept == 0 {
            return Err(MigrateError::LeaseLost(self.key.clone()));
        }
        self.refreshed = Instant::now();
        Ok(())
    }

    async fn release(self, client: &Client) {
        let freed: Result<i64, _> = client
            .eval(RELEASE, vec![self.key.clone()], vec![self.token])
            .await;
        if let Err(e) = freed {
            tracing::warn!(error = %e, lease = %self.key, "migration lease not freed; it expires");
        }
    }
}
