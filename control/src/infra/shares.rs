//! Share links (`{prefix}share:{id}` hashes, expiring with the share, and each
//! container's share ids `{prefix}shares:{cid}`, a sorted set scored by expiry), and
//! the live sessions the relays count per share (`{prefix}share_sessions:{id}`, which
//! control only reads).
//!
//! Control writes the share hashes; the relays read them at admission and on every
//! heartbeat, so deleting one ends its sessions even when a kick is lost.

use std::collections::HashMap;

use fred::prelude::*;
use vnc_shared::schema::{Keys, share_field as f};
use vnc_shared::token::{Scope, unix_now};

use super::store::StoreError;
use crate::domain::Share;
use crate::infra::queue::script::Script;

#[derive(Clone)]
pub struct ShareStore {
    client: Client,
    keys: Keys,
}

impl ShareStore {
    pub fn new(client: Client, keys: Keys) -> ShareStore {
        ShareStore { client, keys }
    }

    /// Records a share (expiring at its `expires_at`) and adds it to its container's
    /// set, unless the container already has `limit` live shares: then returns
    /// `Some(live)` and writes nothing. The count and the place in the set are one
    /// script on the set (two creates can't both pass the limit); the hash, in
    /// another hash slot on a Redis Cluster, is written after it.
    pub async fn create_within_limit(
        &self,
        share: &Share,
        limit: usize,
    ) -> Result<Option<usize>, StoreError> {
        let set = self.keys.container_shares(&share.cid);
        let args: Vec<Value> = vec![
            (limit.min(i64::MAX as usize) as i64).into(),
            share.id.as_str().into(),
            (share.expires_at.min(i64::MAX as u64) as i64).into(),
        ];
        let live = RESERVE_WITHIN_LIMIT
            .eval(&self.client, &[&set], args)
            .await?;
        if let Some(live) = live.as_i64().filter(|n| *n >= 0) {
            return Ok(usize::try_from(live).ok());
        }
        let key = self.keys.share(&share.id);
        let written = async {
            let _: () = self.client.hset(&key, fields(share)).await?;
            let at = share.expires_at.min(i64::MAX as u64) as i64;
            let _: () = self.client.expire_at(&key, at, None).await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if written.is_err() {
            // Best effort: a place left behind only counts until the share's expiry.
            let _: Result<i64, _> = self.client.zrem(&set, share.id.as_str()).await;
        }
        written.map(|()| None)
    }

    /// A live share; `None` once it expired or was revoked.
    pub async fn get(&self, id: &str) -> Result<Option<Share>, StoreError> {
        let key = self.keys.share(id);
        let m: HashMap<String, String> = self.client.hgetall(&key).await?;
        if m.is_empty() {
            return Ok(None);
        }
        let share = parse(id, &m).map_err(|why| StoreError::Record { key, why })?;
        // The hash expires at a whole second; don't trust it past then.
        Ok((share.expires_at > unix_now()).then_some(share))
    }

    /// The live shares of a container, oldest first. Ids whose hash is gone (expired
    /// or revoked) are left out and removed from the set.
    pub async fn container_shares(&self, cid: &str) -> Result<Vec<Share>, StoreError> {
        let set = self.keys.container_shares(cid);
        let ids: Vec<String> = self
            .client
            .zrange(&set, 0, -1, None, false, None, false)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.client.pipeline();
        for id in &ids {
            let _: () = pipe.hgetall(self.keys.share(id)).await?;
        }
        let values: Vec<Value> = pipe.all().await?;
        let now = unix_now();
        let mut live = Vec::with_capacity(ids.len());
        let mut stale = Vec::new();
        for (id, value) in ids.iter().zip(values) {
            let m: HashMap<String, String> = value.convert()?;
            if m.is_empty() {
                stale.push(id.as_str());
                continue;
            }
            let share = parse(id, &m).map_err(|why| StoreError::Record {
                key: self.keys.share(id),
                why,
            })?;
            // One expiring this second is left out; its id goes at the next listing.
            if share.expires_at > now {
                live.push(share);
            }
        }
        if !stale.is_empty() {
            let _: i64 = self.client.zrem(&set, stale).await?;
        }
        live.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(live)
    }

    /// The session ids the relays counted for each share, in one pipeline (the
    /// members may include sessions whose node died: check they are live).
    pub async fn session_ids(&self, ids: &[&str]) -> Result<Vec<Vec<String>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.client.pipeline();
        for id in ids {
            let _: () = pipe
                .zrange(
                    self.keys.share_sessions(id),
                    0,
                    -1,
                    None,
                    false,
                    None,
                    false,
                )
                .await?;
        }
        let values: Vec<Value> = pipe.all().await?;
        values
            .into_iter()
            .map(|v| v.convert().map_err(StoreError::from))
            .collect()
    }

    /// Deletes a share and takes it off its container's set. True when this call
    /// deleted it (false: it was already gone).
    pub async fn delete(&self, share: &Share) -> Result<bool, StoreError> {
        // The hash first: once it is gone the share opens nothing, whatever the set says.
        let deleted: i64 = self.client.del(self.keys.share(&share.id)).await?;
        let _: i64 = self
            .client
            .zrem(self.keys.container_shares(&share.cid), share.id.as_str())
            .await?;
        Ok(deleted > 0)
    }
}

/// A share's place in its container's set, within the limit. KEYS: the container's
/// share set (scored by expiry, Unix seconds). ARGV: limit, share id, expires_at.
/// Expired ids leave the set on the way. Returns -1 when added, else the live count.
const RESERVE_WITHIN_LIMIT: Script = Script::new(&[r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', redis.call('TIME')[1])
local live = redis.call('ZCARD', KEYS[1])
if live >= tonumber(ARGV[1]) then return live end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('EXPIREAT', KEYS[1], redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
return -1
"#]);

fn fields(s: &Share) -> Vec<(&'static str, String)> {
    vec![
        (f::CID, s.cid.clone()),
        (f::TENANT, s.tenant.clone()),
        (f::SCOPE, s.scope.as_str().to_owned()),
        (f::NAME, s.name.clone()),
        (f::MAX_SESSIONS, s.max_sessions.to_string()),
        (f::CREATED_BY, s.created_by.clone()),
        (f::CREATED_AT, s.created_at.to_string()),
        (f::EXPIRES_AT, s.expires_at.to_string()),
    ]
}

fn parse(id: &str, m: &HashMap<String, String>) -> Result<Share, String> {
    let get = |k: &str| m.get(k).cloned().ok_or_else(|| format!("no {k}"));
    let number =
        |k: &str| -> Result<u64, String> { get(k)?.parse().map_err(|e| format!("{k}: {e}")) };
    let scope: Scope = get(f::SCOPE)?.parse()?;
    Ok(Share {
        id: id.to_owned(),
        cid: get(f::CID)?,
        tenant: get(f::TENANT)?,
        scope,
        name: m.get(f::NAME).cloned().unwrap_or_default(),
        max_sessions: u32::try_from(number(f::MAX_SESSIONS)?)
            .map_err(|e| format!("max_sessions: {e}"))?,
        created_by: get(f::CREATED_BY)?,
        created_at: number(f::CREATED_AT)?,
        expires_at: number(f::EXPIRES_AT)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_need_their_fields() {
        let share = Share {
            id: "h1".into(),
            cid: "c1".into(),
            tenant: "t1".into(),
            scope: Scope::Control,
            name: "Demo".into(),
            max_sessions: 7,
            created_by: "alice".into(),
            created_at: 1_700_000_000_000,
            expires_at: 1_700_003_600,
        };
        let m: HashMap<String, String> = fields(&share)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(parse("h1", &m).unwrap(), share);
        for missing in [
            "cid",
            "tenant",
            "scope",
            "max_sessions",
            "created_by",
            "expires_at",
        ] {
            let mut partial = m.clone();
            partial.remove(missing);
            assert!(parse("h1", &partial).unwrap_err().contains(missing));
        }
        let mut no_name = m.clone();
        no_name.remove("name");
        assert_eq!(parse("h1", &no_name).unwrap().name, "");
        let mut bad = m;
        bad.insert("scope".into(), "admin".into());
        assert!(parse("h1", &bad).is_err());
    }
}
