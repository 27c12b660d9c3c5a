//! Config layering shared by both daemons: flags beat env beat the TOML file beat the
//! documented defaults. Flags and env come from clap (`env = ...` on each arg, every
//! arg an `Option`), the file from [`load_toml`]; [`layer`] picks the winner.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Reads a TOML config file into `T` (which should `deny_unknown_fields`).
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The winning value: flag-or-env (clap already ordered those two), then file, then default.
pub fn layer<T>(flag_or_env: Option<T>, file: Option<T>, default: T) -> T {
    flag_or_env.or(file).unwrap_or(default)
}

/// Parses a human duration (`30s`, `5m`, `1h 30m`, `250ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

/// Serde helper for optional human durations in config files.
pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// A value that never shows in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct File {
        listen: Option<String>,
        #[serde(default, deserialize_with = "de_opt_duration")]
        idle: Option<Duration>,
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        assert_eq!(layer(Some(1), Some(2), 3), 1);
        assert_eq!(layer(None, Some(2), 3), 2);
        assert_eq!(layer(None, None, 3), 3);
    }

    #[test]
    fn file_rejects_unknown_fields_and_parses_durations() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "listen = \"127.0.0.1:1\"\nidle = \"90s\"\n").unwrap();
        let f: File = load_toml(&good).unwrap();
        assert_eq!(f.listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(f.idle, Some(Duration::from_secs(90)));

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "listn = \"x\"\n").unwrap();
        let err = load_toml::<File>(&bad).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");

        let missing = load_toml::<File>(&dir.path().join("none.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }

    #[test]
    fn secrets_are_masked() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?} {s}"), "MASKED MASKED");
        assert_eq!(s.expose(), "hunter2");
    }
}
