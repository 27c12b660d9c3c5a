//! The queue's Lua scripts and how they are called.
//!
//! Every state transition that touches more than one key runs as one script, so a
//! replica that dies half-way never leaves a job in two places (on the stream and in
//! the delayed set) or in none. Scripts take time from the Redis server (`TIME`), so
//! timestamps, delays and rate windows agree across replicas whatever their clocks.
//!
//! Scripts are sent with `EVAL` (the workspace's fred feature set has no script
//! interface; Redis caches the compiled script by its hash anyway). On Redis Cluster
//! every key a script touches must live in one slot: give the queue a hash-tagged
//! prefix (`{vnc}:`) there.

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

/// Shared head of every script: `now` in Unix ms from the server clock, and `ms()`
/// to print an integer without Lua's float formatting.
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function ms(x) return string.format('%d', x) end
"#;

/// Lock check shared by the finishing scripts: go on if the lock (`KEYS[3]`) is ours
/// (`ARGV[1]`) or gone (it expired, nobody else took it), refuse if another run holds
/// it. Ends by acking and deleting the stream entry (`ARGV[2]` group, `ARGV[3]` entry,
/// empty when the job is not on the stream) and dropping the lock.
const OWNER_CHECK: &str = r#"
local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[1] then return 0 end
local function settle()
  if ARGV[3] ~= '' then
    redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
    redis.call('XDEL', KEYS[2], ARGV[3])
  end
  if owner then redis.call('DEL', KEYS[3]) end
end
"#;

/// A script: its body, which is prefixed with [`PRELUDE`] when sent.
pub(super) struct Script {
    body: &'static [&'static str],
}

impl Script {
    /// Runs the script with `keys` and `args`; returns its raw reply.
    pub(super) async fn eval(
        &self,
        client: &Client,
        keys: &[&str],
        args: Vec<Value>,
    ) -> Result<Value, fred::error::Error> {
        let mut src = String::from(PRELUDE);
        for part in self.body {
            src.push_str(part);
        }
        let mut all: Vec<Value> = Vec::with_capacity(2 + keys.len() + args.len());
        all.push(src.into());
        all.push((keys.len() as i64).into());
        all.extend(keys.iter().map(|k| Value::from(*k)));
        all.extend(args);
        // Route by the first key (argument 2), not by the script text.
        let cmd = CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false);
        client.custom(cmd, all).await
    }
}

/// Creates a job. KEYS: job hash, stream, delayed set. ARGV: id, name, data (JSON),
/// max_attempts, delay in ms (0 = run now).
pub(super) const ENQUEUE: Script = Script {
    body: &[r#"
local delay = tonumber(ARGV[5])
local state = 'waiting'
if delay > 0 then state = 'delayed' end
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'data', ARGV[3], 'state', state,
  'progress', '0', 'attempts', '0', 'max_attempts', ARGV[4],
  'created_at', ms(now), 'updated_at', ms(now))
if delay > 0 then
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
else
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
end
return 1
"#],
};

/// Starts a run. KEYS: job hash. Returns the attempt number of this run.
pub(super) const ACTIVATE: Script = Script {
    body: &[r#"
redis.call('HSET', KEYS[1], 'state', 'active', 'updated_at', ms(now))
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"#],
};

/// Records progress of an active job. KEYS: job hash. ARGV: percent.
pub(super) const PROGRESS: Script = Script {
    body: &[r#"
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1], 'updated_at', ms(now))
return 1
"#],
};

/// Success. KEYS: job hash, stream, lock. ARGV: lock token, group, entry id, result
/// (JSON), retention in ms. Returns 1, or 0 if another run holds the lock.
pub(super) const COMPLETE: Script = Script {
    body: &[
        OWNER_CHECK,
        r#"
redis.call('HSET', KEYS[1], 'state', 'completed', 'result', ARGV[4], 'progress', '100',
  'updated_at', ms(now), 'finished_at', ms(now))
redis.call('HDEL', KEYS[1], 'error')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
settle()
return 1
"#,
    ],
};

/// Back to the delayed set: a retry after backoff, a rate-limit deferral, or a run
/// given up at shutdown (delay 0). KEYS: job hash, stream, lock, delayed set. ARGV:
/// lock token, group, entry id, job id, delay in ms, error ('' keeps the old one),
/// '1' to take back the attempt this run counted (a run cut short by shutdown).
/// Returns 1, or 0 if another run holds the lock.
pub(super) const SCHEDULE: Script = Script {
    body: &[
        OWNER_CHECK,
        r#"
redis.call('HSET', KEYS[1], 'state', 'delayed', 'updated_at', ms(now))
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[6]) end
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), ARGV[4])
settle()
return 1
"#,
    ],
};

/// Final failure: dead-letter it. KEYS: job hash, stream, lock, dead-letter stream.
/// ARGV: lock token, group, entry id, job id, error, retention in ms. The dead-letter
/// stream is trimmed to the same retention (its entry ids are Unix ms).
/// Returns 1, or 0 if another run holds the lock.
pub(super) const FAIL: Script = Script {
    body: &[
        OWNER_CHECK,
        r#"
redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[5],
  'updated_at', ms(now), 'finished_at', ms(now))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local name = redis.call('HGET', KEYS[1], 'name') or ''
local attempts = redis.call('HGET', KEYS[1], 'attempts') or '0'
redis.call('XADD', KEYS[4], 'MINID', ms(math.max(0, now - tonumber(ARGV[6]))), '*',
  'id', ARGV[4], 'name', name, 'error', ARGV[5], 'attempts', attempts)
settle()
return 1
"#,
    ],
};

/// Keeps a run's lock and its stream entry: extends the lock and claims the entry back
/// (resetting its idle time) so no other replica's XAUTOCLAIM takes a job that is
/// still running. KEYS: lock, stream. ARGV: token, ttl ms, group, consumer, entry id.
/// Returns 1, or 0 if the lock is no longer ours.
pub(super) const HEARTBEAT: Script = Script {
    body: &[r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('XCLAIM', KEYS[2], ARGV[3], ARGV[4], 0, ARGV[5], 'JUSTID')
return 1
"#],
};

/// Drops a lock if it is ours. KEYS: lock. ARGV: token.
pub(super) const RELEASE: Script = Script {
    body: &[r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#],
};

/// Moves due delayed jobs onto the stream. KEYS: delayed set, stream. ARGV: job key
/// prefix, batch size. ZREM happens inside the script, so when several replicas run
/// it each job moves once. A member whose job is no longer `delayed` (expired, or
/// finished by a stale run) is just dropped. Returns {due, moved, ms until the next
/// due job or -1}.
pub(super) const PROMOTE: Script = Script {
    body: &[r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[1] .. id
  if redis.call('HGET', job, 'state') == 'delayed' then
    redis.call('HSET', job, 'state', 'waiting', 'updated_at', ms(now))
    redis.call('XADD', KEYS[2], '*', 'id', id)
    moved = moved + 1
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then wait = math.max(0, tonumber(nxt[2]) - now) end
return {#due, moved, wait}
"#],
};

/// Sliding-window rate limit: admits a start if fewer than `max` were admitted in the
/// last `window` ms. KEYS: the name's log (sorted set of admissions, at most `max`
/// members). ARGV: max, window ms, a unique member. Returns 0 when admitted, else the
/// ms until a slot frees.
pub(super) const RATE: Script = Script {
    body: &[r#"
local max = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < max then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now + 1)
"#],
};

/// An integer reply, or an error naming the script's unexpected answer.
pub(super) fn int(v: &Value) -> Result<i64, fred::error::Error> {
    v.as_i64().ok_or_else(|| {
        fred::error::Error::new(
            fred::error::ErrorKind::Parse,
            format!("expected an integer script reply, got {v:?}"),
        )
    })
}
