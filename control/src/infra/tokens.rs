//! The VNC tokens control issued through its API (`{prefix}token:{jti}` hashes) and
//! their revocations (`{prefix}revoked:{jti}`, which the relays check at connect).
//! Both expire when the relays would refuse the token anyway.

use std::collections::HashMap;

use fred::prelude::*;
use vnc_shared::schema::Keys;
use vnc_shared::token::{Scope, unix_now};

use super::store::StoreError;
use crate::domain::IssuedToken;

/// Fields of the `token:{jti}` hash (control is its only writer and reader).
mod field {
    pub const CID: &str = "cid";
    /// The user the token was minted for (its `sub`).
    pub const OWNER: &str = "owner";
    pub const TENANT: &str = "tenant";
    pub const SCOPE: &str = "scope";
    /// Unix seconds.
    pub const EXP: &str = "exp";
}

#[derive(Clone)]
pub struct TokenStore {
    client: Client,
    keys: Keys,
}

impl TokenStore {
    pub fn new(client: Client, keys: Keys) -> TokenStore {
        TokenStore { client, keys }
    }

    /// Records an issued token until the relays stop accepting it.
    pub async fn record(&self, t: &IssuedToken) -> Result<(), StoreError> {
        let key = self.keys.token(&t.jti);
        let fields: Vec<(&str, String)> = vec![
            (field::CID, t.cid.clone()),
            (field::OWNER, t.owner.clone()),
            (field::TENANT, t.tenant.clone()),
            (field::SCOPE, t.scope.as_str().to_owned()),
            (field::EXP, t.exp.to_string()),
        ];
        let tx = self.client.multi();
        let _: () = tx.hset(&key, fields).await?;
        let _: () = tx.expire_at(&key, t.accepted_until() as i64, None).await?;
        let _: () = tx.exec(true).await?;
        Ok(())
    }

    /// A token control issued that the relays still accept; `None` otherwise.
    pub async fn get(&self, jti: &str) -> Result<Option<IssuedToken>, StoreError> {
        let key = self.keys.token(jti);
        let m: HashMap<String, String> = self.client.hgetall(&key).await?;
        if m.is_empty() {
            return Ok(None);
        }
        let t = parse(jti, &m).map_err(|why| StoreError::Record { key, why })?;
        // The hash expires at a whole second; don't trust it past then.
        Ok((t.accepted_until() > unix_now()).then_some(t))
    }

    /// Whether token `jti` is revoked.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let n: i64 = self.client.exists(self.keys.revoked(jti)).await?;
        Ok(n > 0)
    }

    /// Marks the token revoked until the relays would refuse it anyway (idempotent:
    /// the expiry is absolute, so a repeat changes nothing).
    pub async fn revoke(&self, t: &IssuedToken) -> Result<(), StoreError> {
        let _: () = self
            .client
            .set(
                self.keys.revoked(&t.jti),
                "1",
                Some(Expiration::EXAT(t.accepted_until() as i64)),
                None,
                false,
            )
            .await?;
        Ok(())
    }
}

fn parse(jti: &str, m: &HashMap<String, String>) -> Result<IssuedToken, String> {
    let get = |k: &str| m.get(k).cloned().ok_or_else(|| format!("no {k}"));
    let scope: Scope = get(field::SCOPE)?.parse()?;
    let exp = get(field::EXP)?.parse().map_err(|e| format!("exp: {e}"))?;
    Ok(IssuedToken {
        jti: jti.to_owned(),
        cid: get(field::CID)?,
        owner: get(field::OWNER)?,
        tenant: get(field::TENANT)?,
        scope,
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_need_every_field() {
        let full: HashMap<String, String> = [
            ("cid", "c1"),
            ("owner", "alice"),
            ("tenant", "t1"),
            ("scope", "view"),
            ("exp", "99"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let t = parse("j1", &full).unwrap();
        assert_eq!(
            (t.scope, t.exp, t.owner.as_str()),
            (Scope::View, 99, "alice")
        );
        for missing in ["cid", "owner", "tenant", "scope", "exp"] {
            let mut m = full.clone();
            m.remove(missing);
            assert!(parse("j1", &m).unwrap_err().contains(missing));
        }
        let mut bad = full;
        bad.insert("exp".into(), "soon".into());
        assert!(parse("j1", &bad).is_err());
    }
}
