//! Share links (`{prefix}share:{id}` hashes, expiring with the share, and each
//! container's set of share ids `{prefix}shares:{cid}`), and the live sessions the
//! relays count per share (`{prefix}share_sessions:{id}`, which control only reads).
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
    /// `Some(live)` and writes nothing. One script, so two creates can't both pass
    /// the limit.
    pub async fn create_within_limit(
        &self,
        share: &Share,
        limit: usize,
    ) -> Result<Option<usize>, StoreError> {
        let mut args: Vec<Value> = vec![
            (limit.min(i64::MAX as usize) as i64).into(),
            self.keys.share("").into(),
            share.id.as_str().into(),
            (share.expires_at.min(i64::MAX as u64) as i64).into(),
        ];
        for (k, v) in fields(share) {
            args.push(k.into());
            args.push(v.into());
        }
        let live = CREATE_WITHIN_LIMIT
            .eval(
                &self.client,
                &[
                    &self.keys.share(&share.id),
                    &self.keys.container_shares(&share.cid),
                ],
                args,
            )
            .await?;
        Ok(live.as_i64().and_then(|n| usize::try_from(n).ok()))
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
        let ids: Vec<String> = self.client.smembers(&set).await?;
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
            let _: i64 = self.client.srem(&set, stale).await?;
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
            let _: () = pipe.smembers(self.keys.share_sessions(id)).await?;
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
        let tx = self.client.multi();
        let _: () = tx.del(self.keys.share(&share.id)).await?;
        let _: () = tx
            .srem(self.keys.container_shares(&share.cid), share.id.as_str())
            .await?;
        let (deleted, _): (i64, i64) = tx.exec(true).await?;
        Ok(deleted > 0)
    }
}

/// Records a share within its container's limit. KEYS: share hash, container's share
/// set. ARGV: limit, share key prefix, share id, expires_at (Unix seconds), then the
/// hash's field/value pairs. Ids whose hash is gone are dropped from the set on the
/// way. Returns -1 when written, else the live count.
const CREATE_WITHIN_LIMIT: Script = Script::new(&[r#"
local live = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[2] .. id) == 1 then
    live = live + 1
  else
    redis.call('SREM', KEYS[2], id)
  end
end
if live >= tonumber(ARGV[1]) then return live end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIREAT', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[3])
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
