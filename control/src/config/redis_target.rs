//! The few settings `vnc-control migrate` reads: Redis and logging.

use vnc_shared::config::{ConfigError, Secret, load_toml, overlay};
use vnc_shared::schema::DEFAULT_PREFIX;
use vnc_shared::telemetry::LogFormat;

use super::{ControlSettings, DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, DEFAULT_REDIS_URL};

/// What `vnc-control migrate` needs: Redis and logging.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    pub redis_url: Secret<String>,
    pub redis_prefix: String,
    pub log_level: String,
    pub log_format: LogFormat,
}

impl ControlSettings {
    /// Only Redis and logging, from flags/env over the file (if any), with the same
    /// defaults as [`ControlSettings::resolve`]: the rest of the configuration (keys,
    /// images) need not be in place to migrate keys.
    pub fn resolve_redis(&self) -> Result<RedisTarget, ConfigError> {
        let s = match &self.config {
            Some(path) => overlay(self, &load_toml::<ControlSettings>(path)?)?,
            None => self.clone(),
        };
        Ok(RedisTarget::of(&s))
    }
}

impl RedisTarget {
    /// Redis and logging of settings already overlaid, each with its default: the one
    /// place both [`ControlSettings::resolve`] and `migrate` take them from.
    pub(super) fn of(s: &ControlSettings) -> RedisTarget {
        RedisTarget {
            redis_url: Secret::new(s.redis_url.clone().unwrap_or(DEFAULT_REDIS_URL.into())),
            redis_prefix: s.redis_prefix.clone().unwrap_or(DEFAULT_PREFIX.into()),
            log_level: s.log_level.clone().unwrap_or(DEFAULT_LOG_LEVEL.into()),
            log_format: s.log_format.unwrap_or(DEFAULT_LOG_FORMAT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_from_the_file_under_the_flags_without_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.toml");
        std::fs::write(
            &path,
            "redis_url = \"redis://file:6379\"\nredis_prefix = \"file:\"\n",
        )
        .unwrap();
        let flags = ControlSettings {
            config: Some(path),
            redis_prefix: Some("flag:".into()),
            ..ControlSettings::default()
        };
        let target = flags.resolve_redis().unwrap();
        assert_eq!(target.redis_url.expose(), "redis://file:6379");
        assert_eq!(target.redis_prefix, "flag:");
        assert_eq!(target.log_level, DEFAULT_LOG_LEVEL);
        assert!(
            flags.resolve().is_err(),
            "the whole configuration needs keys"
        );
    }
}
