//! The job hash (`{prefix}job:{id}`): its field names, its states, and decoding it
//! into a [`JobRecord`]. Writes happen in the Lua scripts of `script.rs`, which use
//! the same field names.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Field names of the job hash.
pub mod field {
    pub const NAME: &str = "name";
    /// The handler's input, JSON.
    pub const DATA: &str = "data";
    pub const STATE: &str = "state";
    /// 0-100, written by the handler through `JobContext::progress`.
    pub const PROGRESS: &str = "progress";
    /// Runs started so far (each run counts, including one a crashed worker lost).
    pub const ATTEMPTS: &str = "attempts";
    pub const MAX_ATTEMPTS: &str = "max_attempts";
    /// Message of the last failed run; cleared on success.
    pub const ERROR: &str = "error";
    /// The handler's output, JSON; only once completed.
    pub const RESULT: &str = "result";
    /// Unix milliseconds (Redis server clock).
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";
    pub const FINISHED_AT: &str = "finished_at";
    /// The job's group (tenant), only on jobs of a rate-limited name: they wait for a
    /// slot in their group's list.
    pub const GROUP: &str = "group";
}

/// Where a job is in its life.
///
/// `waiting` (on the stream, or, rate-limited, in its group's list) → `active` (a worker holds its lock) → `completed`, or
/// `delayed` (in the delayed set: a delayed enqueue, a retry's backoff, or a
/// rate-limit deferral) → `waiting` again, or `failed` (dead-lettered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Waiting,
    Active,
    Delayed,
    Completed,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Active => "active",
            JobState::Delayed => "delayed",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    /// Completed and failed jobs never run again; a redelivery of one is just acked.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "waiting" => JobState::Waiting,
            "active" => JobState::Active,
            "delayed" => JobState::Delayed,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            other => return Err(format!("unknown job state {other:?}")),
        })
    }
}

/// One job as stored in Redis, for the API (`GET /v1/jobs/{id}`) and the workers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub data: serde_json::Value,
    pub state: JobState,
    /// 0-100.
    pub progress: u8,
    pub attempts: u32,
    pub max_attempts: u32,
    /// Why the last run failed, if it did (kept on a failed job).
    pub error: Option<String>,
    /// The handler's output, once completed.
    pub result: Option<serde_json::Value>,
    /// Unix milliseconds.
    pub created_at: u64,
    pub updated_at: u64,
    pub finished_at: Option<u64>,
    /// The group whose turn it waits for, on jobs of a rate-limited name (internal:
    /// not shown by the API).
    #[serde(skip)]
    pub group: Option<String>,
}

impl JobRecord {
    /// Decodes the fields of a job hash. An empty map (no such key) is `Ok(None)`;
    /// a hash that lacks a required field or holds garbage is an error naming it.
    pub fn decode(id: &str, mut h: HashMap<String, String>) -> Result<Option<JobRecord>, String> {
        if h.is_empty() {
            return Ok(None);
        }
        let mut take = |f: &'static str| h.remove(f).ok_or_else(|| format!("missing {f}"));
        let name = take(field::NAME)?;
        let data = serde_json::from_str(&take(field::DATA)?).map_err(|e| format!("data: {e}"))?;
        let state = take(field::STATE)?.parse()?;
        let progress = num::<u8>(field::PROGRESS, take(field::PROGRESS).ok())?.unwrap_or(0);
        let attempts = num::<u32>(field::ATTEMPTS, take(field::ATTEMPTS).ok())?.unwrap_or(0);
        let max_attempts =
            num::<u32>(field::MAX_ATTEMPTS, take(field::MAX_ATTEMPTS).ok())?.unwrap_or(1);
        let created_at = num::<u64>(field::CREATED_AT, take(field::CREATED_AT).ok())?.unwrap_or(0);
        let updated_at =
            num::<u64>(field::UPDATED_AT, take(field::UPDATED_AT).ok())?.unwrap_or(created_at);
        let finished_at = num::<u64>(field::FINISHED_AT, take(field::FINISHED_AT).ok())?;
        let error = take(field::ERROR).ok();
        let group = take(field::GROUP).ok();
        let result = match take(field::RESULT).ok() {
            Some(r) => Some(serde_json::from_str(&r).map_err(|e| format!("result: {e}"))?),
            None => None,
        };
        Ok(Some(JobRecord {
            id: id.to_owned(),
            name,
            data,
            state,
            progress: progress.min(100),
            attempts,
            max_attempts,
            error,
            result,
            created_at,
            updated_at,
            finished_at,
            group,
        }))
    }
}

fn num<T: std::str::FromStr>(f: &str, v: Option<String>) -> Result<Option<T>, String> {
    v.map(|v| v.parse().map_err(|_| format!("{f}: not a number: {v:?}")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn states_round_trip() {
        for s in ["waiting", "active", "delayed", "completed", "failed"] {
            assert_eq!(s.parse::<JobState>().unwrap().as_str(), s);
        }
        assert!("done".parse::<JobState>().is_err());
        assert!(JobState::Completed.is_final() && JobState::Failed.is_final());
        assert!(!JobState::Delayed.is_final());
    }

    #[test]
    fn decodes_a_full_record() {
        let rec = JobRecord::decode(
            "j1",
            hash(&[
                ("name", "start"),
                ("data", r#"{"cid":"c1"}"#),
                ("state", "completed"),
                ("progress", "100"),
                ("attempts", "2"),
                ("max_attempts", "3"),
                ("result", r#"{"ok":true}"#),
                ("created_at", "1000"),
                ("updated_at", "2000"),
                ("finished_at", "2000"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(rec.id, "j1");
        assert_eq!(rec.data["cid"], "c1");
        assert_eq!(rec.state, JobState::Completed);
        assert_eq!((rec.progress, rec.attempts, rec.max_attempts), (100, 2, 3));
        assert_eq!(rec.result, Some(serde_json::json!({"ok": true})));
        assert_eq!(rec.error, None);
        assert_eq!(rec.finished_at, Some(2000));
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["state"], "completed");
    }

    #[test]
    fn missing_key_is_none_and_garbage_is_named() {
        assert_eq!(JobRecord::decode("j", HashMap::new()), Ok(None));
        let e = JobRecord::decode("j", hash(&[("name", "x"), ("state", "waiting")])).unwrap_err();
        assert!(e.contains("data"), "{e}");
        let e = JobRecord::decode(
            "j",
            hash(&[
                ("name", "x"),
                ("data", "null"),
                ("state", "waiting"),
                ("attempts", "many"),
            ]),
        )
        .unwrap_err();
        assert!(e.contains("attempts"), "{e}");
    }
}
