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

/// Puts job `id` (named `name`, in `group`) at the end of its group's list, and the
/// group at the end of the ring if its list was empty (a group is in the ring exactly
/// while its list is not empty). `base` is `{p}{jobs}:`.
const ENTER_GROUP: &str = r#"
local function enter_group(base, name, group, id)
  if redis.call('RPUSH', base .. 'group:' .. name .. ':' .. group, id) == 1 then
    redis.call('RPUSH', base .. 'ring:' .. name, group)
  end
end
"#;

/// A script: its body, which is prefixed with [`PRELUDE`] when sent.
pub(crate) struct Script {
    body: &'static [&'static str],
}

impl Script {
    /// A script of these parts, for other stores that need one atomic step.
    pub(crate) const fn new(body: &'static [&'static str]) -> Script {
        Script { body }
    }

    /// Runs the script with `keys` and `args`; returns its raw reply.
    pub(crate) async fn eval(
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
/// max_attempts, delay in ms (0 = run now), '1' if the name is rate-limited (the job
/// then records its group and waits in the group's list), group, `{p}{jobs}:`.
pub(super) const ENQUEUE: Script = Script {
    body: &[
        ENTER_GROUP,
        r#"
local delay = tonumber(ARGV[5])
local state = 'waiting'
if delay > 0 then state = 'delayed' end
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'data', ARGV[3], 'state', state,
  'progress', '0', 'attempts', '0', 'max_attempts', ARGV[4],
  'created_at', ms(now), 'updated_at', ms(now))
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'group', ARGV[7]) end
if delay > 0 then
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
elseif ARGV[6] == '1' then
  enter_group(ARGV[8], ARGV[2], ARGV[7], ARGV[1])
else
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
end
return 1
"#,
    ],
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

/// Moves due delayed jobs onto the stream, or a job with a group (rate-limited) to
/// the end of its group's list. KEYS: delayed set, stream. ARGV: job key prefix, batch
/// size, `{p}{jobs}:`, then the rate-limited names (a job whose name lost its limit goes
/// to the stream). ZREM happens inside the script, so when several replicas run it
/// each job moves once. A member whose job is no longer `delayed` (expired, or
/// finished by a stale run) is just dropped. Returns {due, moved, ms until the next
/// due job or -1}.
pub(super) const PROMOTE: Script = Script {
    body: &[
        ENTER_GROUP,
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local limited = {}
for i = 4, #ARGV do limited[ARGV[i]] = true end
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[1] .. id
  if redis.call('HGET', job, 'state') == 'delayed' then
    redis.call('HSET', job, 'state', 'waiting', 'updated_at', ms(now))
    local group = redis.call('HGET', job, 'group')
    local name = redis.call('HGET', job, 'name') or ''
    if group and limited[name] then
      enter_group(ARGV[3], name, group, id)
    else
      redis.call('XADD', KEYS[2], '*', 'id', id)
    end
    moved = moved + 1
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then wait = math.max(0, tonumber(nxt[2]) - now) end
return {#due, moved, wait}
"#,
    ],
};

/// Gives free slots of one rate-limited name to its groups in turn and moves each
/// chosen job onto the stream. KEYS: ring, served marker, the name's rate log, stream.
/// ARGV: `{p}{jobs}:group:{name}:`, job key prefix, max, window ms, batch size.
///
/// The ring's head is the group served last when the marker names it: it is rotated
/// to the end first, so a group that just joined (at the end) is served before the
/// one served last, and a group never gets two slots in a row while another waits.
/// A group whose list empties leaves the ring (and the marker goes). An id whose job
/// is no longer `waiting` (expired) is dropped without taking a slot. Returns {moved,
/// ms until the next slot, or -1 when no group waits, or 0 when the batch ran out}.
pub(super) const DISPATCH: Script = Script {
    body: &[r#"
local max = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
local moved = 0
for i = 1, tonumber(ARGV[5]) do
  local group = redis.call('LINDEX', KEYS[1], 0)
  if not group then
    redis.call('DEL', KEYS[2])
    return {moved, -1}
  end
  if redis.call('ZCARD', KEYS[3]) >= max then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {moved, math.max(1, tonumber(oldest[2]) + window - now + 1)}
  end
  if redis.call('GET', KEYS[2]) == group and redis.call('LLEN', KEYS[1]) > 1 then
    redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
    group = redis.call('LINDEX', KEYS[1], 0)
  end
  local list = ARGV[1] .. group
  local id = redis.call('LPOP', list)
  if redis.call('LLEN', list) == 0 then
    redis.call('LPOP', KEYS[1])
    redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], group)
  end
  if id and redis.call('HGET', ARGV[2] .. id, 'state') == 'waiting' then
    -- Unique per admission: a retry of the job is admitted again later.
    redis.call('ZADD', KEYS[3], now, id .. '/' .. ms(now))
    redis.call('PEXPIRE', KEYS[3], window)
    redis.call('HSET', ARGV[2] .. id, 'updated_at', ms(now))
    redis.call('XADD', KEYS[4], '*', 'id', id)
    moved = moved + 1
  end
end
return {moved, 0}
"#],
};

/// Jobs waiting in the groups of one name. KEYS: ring. ARGV: `{p}{jobs}:group:{name}:`.
pub(super) const GROUPED: Script = Script {
    body: &[r#"
local n = 0
for _, group in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('LLEN', ARGV[1] .. group)
end
return n
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
