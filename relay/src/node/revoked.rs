//! The revocations this node has learned (kicks with reason `revoked` on the control
//! channel, and revocation flags seen in Redis), kept in memory until each token's
//! `exp` plus the verification leeway: the relay refuses those tokens even after Redis
//! lost its data, and the registry heartbeat writes them back to Redis.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use vnc_shared::schema::now_ms;
use vnc_shared::token::{MAX_LEEWAY, MAX_TTL};

/// Most revocations one node remembers. Past it the one that expires soonest is
/// forgotten (Redis still has it unless Redis lost its data too). 100,000 entries of a
/// UUID jti take about 20 MiB.
pub const MAX_REVOCATIONS: usize = 100_000;

/// Unix seconds until which a revoked token must stay refused: its `exp` plus the
/// leeway the relays allow. A kick without `exp` (an older control) is kept for the
/// longest a token can live, and no `exp` holds it longer than that.
fn refused_until(exp: Option<u64>, now: u64) -> u64 {
    let longest = now + (MAX_TTL + MAX_LEEWAY).as_secs();
    exp.map_or(longest, |exp| exp.saturating_add(MAX_LEEWAY.as_secs()))
        .min(longest)
}

#[derive(Default)]
struct Inner {
    /// jti → Unix seconds until which it is refused.
    until: HashMap<String, u64>,
    /// The same entries ordered by expiry, to prune and evict the soonest first.
    by_expiry: BTreeSet<(u64, String)>,
}

/// Revoked jtis until their expiry, at most [`MAX_REVOCATIONS`] of them.
#[derive(Default)]
pub struct Revocations {
    inner: Mutex<Inner>,
}

/// Unix seconds now.
fn now_s() -> u64 {
    now_ms() / 1000
}

impl Revocations {
    /// Remembers `jti` as revoked until the token's `exp` (Unix seconds) plus the
    /// leeway; without `exp`, for the longest a token lives.
    pub fn insert(&self, jti: &str, exp: Option<u64>) {
        let now = now_s();
        self.insert_at(jti, refused_until(exp, now), now);
    }

    fn insert_at(&self, jti: &str, until: u64, now: u64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let inner = &mut *inner;
        prune(inner, now);
        if until <= now {
            return;
        }
        match inner.until.get(jti) {
            Some(&old) if old >= until => return,
            Some(&old) => {
                inner.by_expiry.remove(&(old, jti.to_owned()));
            }
            None => {}
        }
        inner.until.insert(jti.to_owned(), until);
        inner.by_expiry.insert((until, jti.to_owned()));
        while inner.until.len() > MAX_REVOCATIONS {
            let Some((_, soonest)) = inner.by_expiry.pop_first() else {
                break;
            };
            inner.until.remove(&soonest);
        }
    }

    /// Whether `jti` is revoked (and not yet expired).
    pub fn contains(&self, jti: &str) -> bool {
        let now = now_s();
        self.inner
            .lock()
            .is_ok_and(|inner| inner.until.get(jti).is_some_and(|&until| until > now))
    }

    /// Every unexpired revocation with its expiry, to write back to Redis.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        prune(&mut inner, now_s());
        inner.until.iter().map(|(j, &u)| (j.clone(), u)).collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.until.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Forgets what has expired.
fn prune(inner: &mut Inner, now: u64) {
    while let Some((until, _)) = inner.by_expiry.first()
        && *until <= now
    {
        if let Some((_, jti)) = inner.by_expiry.pop_first() {
            inner.until.remove(&jti);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_and_keeps_the_later_expiry() {
        let r = Revocations::default();
        let now = now_s();
        r.insert_at("a", now + 60, now);
        r.insert_at("a", now + 30, now);
        r.insert_at("gone", now - 1, now);
        assert!(r.contains("a") && !r.contains("gone") && !r.contains("b"));
        assert_eq!(r.entries(), vec![("a".to_owned(), now + 60)]);
        // Expired entries are pruned on the next insert.
        r.insert_at("b", now + 100, now + 61);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_full_set_forgets_the_soonest_expiring() {
        let r = Revocations::default();
        let now = now_s();
        for i in 0..MAX_REVOCATIONS as u64 {
            r.insert_at(&format!("j{i}"), now + 1000 + i, now);
        }
        r.insert_at("late", now + 10_000_000, now);
        assert_eq!(r.len(), MAX_REVOCATIONS);
        assert!(!r.contains("j0") && r.contains("j1") && r.contains("late"));
        // One that would expire before all the others is the one dropped.
        r.insert_at("early", now + 1, now);
        assert!(!r.contains("early") && r.contains("j1"));
    }

    #[test]
    fn no_exp_or_a_far_exp_is_held_for_the_longest_token_life() {
        let now = 1_000;
        let longest = now + (MAX_TTL + MAX_LEEWAY).as_secs();
        assert_eq!(refused_until(None, now), longest);
        assert_eq!(refused_until(Some(u64::MAX), now), longest);
        assert_eq!(
            refused_until(Some(2_000), now),
            2_000 + MAX_LEEWAY.as_secs()
        );
    }
}
