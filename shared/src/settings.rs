//! [`settings!`](crate::settings): declares a daemon's settings struct, read from flags,
//! env (clap) and the TOML file (serde) at once, with one line per setting instead of a
//! clap and a serde attribute stack. Every field becomes an `Option` that is `None`
//! when unset, as [`overlay`](crate::config::overlay) expects; the daemon's `DEFAULT_*`
//! constants fill what none of the three set.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::path::PathBuf;
//! use std::time::Duration;
//!
//! vnc_shared::settings! {
//!     /// Every setting of a daemon.
//!     #[derive(Clone, Debug, Default)]
//!     pub struct Settings {
//!         /// TOML config file: a flag and env only.
//!         flag config: PathBuf = "DEMO_CONFIG",
//!         // A section: what the daemon listens on.
//!         /// `--listen`, `DEMO_LISTEN`, `listen` in the file.
//!         listen: SocketAddr = "DEMO_LISTEN",
//!         /// A human duration (`30s`) in all three places.
//!         idle: Duration = "DEMO_IDLE",
//!         /// Anything after the env name goes into `#[arg(...)]` as it is.
//!         images: Vec<String> = "DEMO_IMAGES" (long = "image", value_delimiter = ','),
//!         /// The file only.
//!         file hosts: Vec<String>,
//!     }
//! }
//!
//! let s = Settings::default();
//! assert!(s.listen.is_none() && s.idle.is_none() && s.hosts.is_none());
//! ```
//!
//! What each form declares:
//!
//! | form | clap | serde |
//! |---|---|---|
//! | `name: T = "ENV"` | `--name`, `ENV` | `name`, skipped when unset |
//! | `name: Duration = "ENV"` | the same, parsed by [`parse_duration`](crate::config::parse_duration) | a human duration string ([`opt_duration`](crate::config::opt_duration)) |
//! | `name: T = "ENV" (ARGS)` | `ARGS` added to `#[arg(long, env = "ENV", ...)]` | as above |
//! | `flag name: T = "ENV"` | `--name`, `ENV` | not in the file |
//! | `file name: T` | not a flag | `name` |
//!
//! The struct gets `clap::Args`, `serde::Serialize`, `serde::Deserialize` and
//! `deny_unknown_fields`; the calling crate depends on clap (features `derive`, `env`)
//! and serde.

/// Declares a settings struct; see [the module](crate::settings) for the forms.
#[macro_export]
macro_rules! settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($body:tt)* }
    ) => {
        $crate::settings!(@field [[$(#[$meta])*] [$vis struct $name]] [] $($body)*);
    };

    // Every field is in: the struct.
    (@field [[$($meta:tt)*] [$($decl:tt)*]] [$($done:tt)*] $(,)?) => {
        $($meta)*
        #[derive(clap::Args, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $($decl)* {
            $($done)*
        }
    };

    // `flag name: T = "ENV"`: a flag and env only.
    (@field $head:tt [$($done:tt)*]
        $(#[doc = $doc:expr])* flag $field:ident: $ty:ty = $env:literal $(($($arg:tt)*))?
        $(, $($rest:tt)*)?
    ) => {
        $crate::settings!(@field $head [$($done)*
            $(#[doc = $doc])*
            #[arg(long, env = $env $(, $($arg)*)?)]
            #[serde(skip)]
            pub $field: Option<$ty>,
        ] $($($rest)*)?);
    };

    // `file name: T`: the file only.
    (@field $head:tt [$($done:tt)*]
        $(#[doc = $doc:expr])* file $field:ident: $ty:ty
        $(, $($rest:tt)*)?
    ) => {
        $crate::settings!(@field $head [$($done)*
            $(#[doc = $doc])*
            #[arg(skip)]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $field: Option<$ty>,
        ] $($($rest)*)?);
    };

    // `name: Duration = "ENV"`: a human duration everywhere.
    (@field $head:tt [$($done:tt)*]
        $(#[doc = $doc:expr])* $field:ident: Duration = $env:literal $(($($arg:tt)*))?
        $(, $($rest:tt)*)?
    ) => {
        $crate::settings!(@field $head [$($done)*
            $(#[doc = $doc])*
            #[arg(long, env = $env, value_parser = $crate::config::parse_duration $(, $($arg)*)?)]
            #[serde(
                default,
                with = "vnc_shared::config::opt_duration",
                skip_serializing_if = "Option::is_none"
            )]
            pub $field: Option<Duration>,
        ] $($($rest)*)?);
    };

    // `name: T = "ENV" (ARGS)`: flag, env and file.
    (@field $head:tt [$($done:tt)*]
        $(#[doc = $doc:expr])* $field:ident: $ty:ty = $env:literal $(($($arg:tt)*))?
        $(, $($rest:tt)*)?
    ) => {
        $crate::settings!(@field $head [$($done)*
            $(#[doc = $doc])*
            #[arg(long, env = $env $(, $($arg)*)?)]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $field: Option<$ty>,
        ] $($($rest)*)?);
    };
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::Parser;

    use crate::config::{load_toml, overlay};

    crate::settings! {
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct Demo {
            flag config: PathBuf = "VNC_SETTINGS_TEST_CONFIG",
            /// Where to listen.
            listen: String = "VNC_SETTINGS_TEST_LISTEN",
            idle: Duration = "VNC_SETTINGS_TEST_IDLE",
            images: Vec<String> = "VNC_SETTINGS_TEST_IMAGES" (long = "image", value_delimiter = ','),
            file hosts: Vec<String>,
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Demo,
    }

    #[test]
    fn each_form_reads_where_it_says() {
        let cli = Cli::try_parse_from([
            "demo", "--config", "/c.toml", "--listen", "a:1", "--idle", "90s", "--image", "x,y",
        ])
        .unwrap();
        assert_eq!(
            cli.settings,
            Demo {
                config: Some("/c.toml".into()),
                listen: Some("a:1".into()),
                idle: Some(Duration::from_secs(90)),
                images: Some(vec!["x".into(), "y".into()]),
                hosts: None,
            }
        );
        // A file-only setting is no flag; `long = "image"` replaced `--images`.
        assert!(Cli::try_parse_from(["demo", "--hosts", "h"]).is_err());
        assert!(Cli::try_parse_from(["demo", "--images", "x"]).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.toml");
        std::fs::write(
            &path,
            "listen = \"b:2\"\nidle = \"5m\"\nhosts = [\"h\"]\nimages = [\"z\"]\n",
        )
        .unwrap();
        let file: Demo = load_toml(&path).unwrap();
        assert_eq!(file.idle, Some(Duration::from_secs(300)));
        assert_eq!(file.hosts.as_deref(), Some(&["h".to_owned()][..]));
        let merged = overlay(&cli.settings, &file).unwrap();
        assert_eq!(merged.listen.as_deref(), Some("a:1"));
        assert_eq!(merged.hosts, file.hosts);
        // Only the command line and env name the config file.
        assert_eq!(merged.config, None);
        std::fs::write(&path, "config = \"/other.toml\"\n").unwrap();
        assert!(load_toml::<Demo>(&path).is_err());
    }
}
