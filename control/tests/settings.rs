//! Where a setting comes from, through the real binary's `check`: a flag beats the
//! environment, which beats the config file, which beats the default.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vnc-control");

/// `vnc-control [flags] check` with `env` added (and no other `VNC_*` settings);
/// returns the line it prints.
fn check(flags: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("VNC_")) {
        cmd.env_remove(name);
    }
    let out = cmd
        .args(flags)
        .arg("check")
        .envs(env.iter().copied())
        .output()
        .expect("run vnc-control check");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn keys(dir: &Path) -> (String, String) {
    let out = Command::new(BIN)
        .args(["keys", "generate", "--kid", "k1", "--out"])
        .arg(dir)
        .output()
        .expect("generate keys");
    assert!(out.status.success(), "{out:?}");
    let secret = dir.join("idp.secret");
    std::fs::write(&secret, "a-test-secret-of-at-least-thirty-two-bytes").unwrap();
    (
        dir.join("k1.key.pem").display().to_string(),
        secret.display().to_string(),
    )
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = keys(dir.path());
    let required = [
        "--jwt-private-key",
        key.as_str(),
        "--auth-secret-file",
        secret.as_str(),
        "--image",
        "desk",
    ];

    // Defaults.
    let text = check(&required, &[]);
    assert!(
        text.contains("listen 0.0.0.0:8080, admin 127.0.0.1:9101, runtime Docker"),
        "{text}"
    );

    // The file over the defaults.
    let file = dir.path().join("control.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1001\"\nadmin_listen = \"127.0.0.1:2001\"\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let with_file: Vec<&str> = required
        .iter()
        .copied()
        .chain(["--config", &file])
        .collect();
    let text = check(&with_file, &[]);
    assert!(
        text.contains("listen 127.0.0.1:1001, admin 127.0.0.1:2001"),
        "{text}"
    );

    // The environment over the file; what it leaves alone stays the file's.
    let env = [("VNC_CONTROL_LISTEN", "127.0.0.1:1002")];
    let text = check(&with_file, &env);
    assert!(
        text.contains("listen 127.0.0.1:1002, admin 127.0.0.1:2001"),
        "{text}"
    );

    // A flag over the environment.
    let with_flag: Vec<&str> = with_file
        .iter()
        .copied()
        .chain(["--listen", "127.0.0.1:1003"])
        .collect();
    let text = check(&with_flag, &env);
    assert!(
        text.contains("listen 127.0.0.1:1003, admin 127.0.0.1:2001"),
        "{text}"
    );

    // The config file itself can come from the environment.
    let text = check(&required, &[("VNC_CONTROL_CONFIG", file.as_str())]);
    assert!(text.contains("admin 127.0.0.1:2001"), "{text}");
}
