//! Config layering shared by both daemons: flags beat env beat the TOML file beat the
//! documented defaults. Flags and env come from clap (`env = ...` on each arg, every
//! arg an `Option`), the file from [`load_toml`]; [`overlay`] lays one over the other and
//! the daemon's own `DEFAULT_*` constants fill what neither set.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// Lays the values set in `top` (flags and env) over `bottom` (the file). Both are the
/// same settings struct with every field an `Option` that is skipped when `None`, so
/// one struct serves clap and serde and no field is merged by hand.
pub fn overlay<T: Serialize + DeserializeOwned>(top: &T, bottom: &T) -> Result<T, ConfigError> {
    let as_map = |v: &T| match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(ConfigError::Invalid("settings must be a struct".into())),
        Err(e) => Err(ConfigError::Invalid(e.to_string())),
    };
    let mut merged = as_map(bottom)?;
    merged.extend(as_map(top)?);
    serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// Parses a human duration (`30s`, `5m`, `1h 30m`, `250ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

/// Serde `with` module for optional human durations (`"30s"`) in config files.
pub mod opt_duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
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

    #[derive(Deserialize, Serialize, Debug, Default, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listen: Option<String>,
        #[serde(
            default,
            with = "opt_duration",
            skip_serializing_if = "Option::is_none"
        )]
        idle: Option<Duration>,
    }

    #[test]
    fn overlay_keeps_file_values_the_top_leaves_unset() {
        let top = File {
            listen: Some("flag".into()),
            idle: None,
        };
        let file = File {
            listen: Some("file".into()),
            idle: Some(Duration::from_secs(5)),
        };
        let merged = overlay(&top, &file).unwrap();
        assert_eq!(merged.listen.as_deref(), Some("flag"));
        assert_eq!(merged.idle, Some(Duration::from_secs(5)));
        assert_eq!(
            overlay(&File::default(), &File::default()).unwrap(),
            File::default()
        );
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
