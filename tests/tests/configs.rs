//! `vnc-relay check` and `vnc-control check` against the shipped example configs and
//! broken ones.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;

use vnc_tests::keys::TestKeys;
use vnc_tests::process::bin_path;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/relay.toml")
}

fn check(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(bin_path("vnc-relay"))
        .args(args)
        .arg("check")
        .env_remove("RUST_LOG")
        .output()
        .expect("run vnc-relay check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_example_config_passes_check_with_real_keys() {
    let keys = TestKeys::new();
    let (ok, text) = check(&[
        "--config".as_ref(),
        example().as_os_str(),
        "--jwt-public-key".as_ref(),
        keys.public.as_os_str(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("configuration ok: 1 key(s), listen 0.0.0.0:6080"),
        "{text}"
    );
}

#[test]
fn check_names_what_is_wrong() {
    // The example's key path does not exist on a test machine.
    let (ok, text) = check(&["--config".as_ref(), example().as_os_str()]);
    assert!(!ok);
    assert!(text.contains("2026-11.pub.pem"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "listen = \"127.0.0.1:1\"\nidle_timout = \"5s\"\n").unwrap();
    let (ok, text) = check(&["--config".as_ref(), typo.as_os_str()]);
    assert!(!ok);
    assert!(text.contains("idle_timout"), "{text}");

    let (ok, text) = check(&[]);
    assert!(!ok);
    assert!(text.contains("no token keys"), "{text}");
}

#[test]
fn the_example_control_config_passes_check_with_real_keys() {
    let keys = TestKeys::new();
    let identity = vnc_tests::control::Identity::new();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/control.toml");
    let out = Command::new(bin_path("vnc-control"))
        .arg("--config")
        .arg(&config)
        .arg("--jwt-private-key")
        .arg(&keys.private)
        .arg("--auth-public-key")
        .arg(&identity.public)
        .arg("check")
        .output()
        .expect("run vnc-control check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("configuration ok: signing kid k1, listen 0.0.0.0:8080"),
        "{text}"
    );
    // The example's own key paths don't exist here: check says which.
    let out = Command::new(bin_path("vnc-control"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2026-11.key.pem"));
}
