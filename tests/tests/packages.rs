//! The `.deb` of each daemon (cargo-deb, from the metadata in its Cargo.toml) unpacks
//! into a scratch root (`dpkg-deb -x`) with the binary, the systemd units, the sysusers
//! file, the example config as a conffile and the docs; the unpacked binary validates
//! the unpacked example config.
//!
//! The packages are made from the debug binaries the test command builds
//! (`--profile dev --no-build`), so the test needs no release build; the documented
//! release command is `cargo deb -p vnc-relay` / `cargo deb -p vnc-control`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vnc_tests::control::Identity;
use vnc_tests::desktop::{find_program, required};
use vnc_tests::keys::TestKeys;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// True if cargo-deb and dpkg-deb run (see `desktop::required` for CI and skips).
fn packaging_tools() -> bool {
    let cargo_deb = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut missing = Vec::new();
    if !cargo_deb {
        missing.push("cargo-deb (cargo install cargo-deb --version 3.8.0 --locked)".to_owned());
    }
    if find_program("dpkg-deb").is_none() {
        missing.push("dpkg-deb (Debian package dpkg)".to_owned());
    }
    required("Debian packaging tools", &missing)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Builds the package of `package` into `out` and unpacks it into `root`; returns the
/// package's control fields and conffiles.
fn build_and_unpack(package: &str, out: &Path, root: &Path) -> (String, String) {
    run(Command::new("cargo")
        .current_dir(workspace())
        .args([
            "deb",
            "-p",
            package,
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "-o",
        ])
        .arg(out));
    let deb = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .unwrap_or_else(|| panic!("no {package} .deb in {}", out.display()));
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root));
    let control = run(Command::new("dpkg-deb").arg("-f").arg(&deb));
    let meta = out.join(format!("{package}-control"));
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&meta));
    let conffiles = std::fs::read_to_string(meta.join("conffiles")).unwrap_or_default();
    (control, conffiles)
}

fn assert_files(root: &Path, files: &[&str]) {
    for file in files {
        let path = root.join(file);
        assert!(path.is_file(), "{file} is missing from the package");
    }
}

#[test]
fn each_deb_unpacks_with_binary_units_sysusers_config_and_docs() {
    if !packaging_tools() {
        return;
    }
    let out = tempfile::tempdir().unwrap();

    let relay_root = out.path().join("relay-root");
    let (control, conffiles) = build_and_unpack("vnc-relay", out.path(), &relay_root);
    assert_files(
        &relay_root,
        &[
            "usr/bin/vnc-relay",
            "usr/lib/systemd/system/vnc-relay.service",
            "usr/lib/systemd/system/vnc-relay.socket",
            "usr/lib/systemd/system/vnc-relay-admin.socket",
            "usr/lib/sysusers.d/vnc-relay.conf",
            "etc/vnc-relay/relay.toml",
            "usr/share/doc/vnc-relay/README.md",
            "usr/share/doc/vnc-relay/operations.md",
            "usr/share/doc/vnc-relay/recording.md",
        ],
    );
    assert!(control.contains("Package: vnc-relay"), "{control}");
    assert!(control.contains("systemd"), "depends on systemd: {control}");
    assert!(
        conffiles.contains("/etc/vnc-relay/relay.toml"),
        "the example config is a conffile: {conffiles}"
    );
    // The packaged binary accepts the packaged config (with a real key in place of the
    // example's path).
    let keys = TestKeys::new();
    let checked = run(Command::new(relay_root.join("usr/bin/vnc-relay"))
        .arg("--config")
        .arg(relay_root.join("etc/vnc-relay/relay.toml"))
        .arg("--jwt-public-key")
        .arg(&keys.public)
        .arg("check")
        .env_remove("RUST_LOG"));
    assert!(checked.contains("configuration ok"), "{checked}");

    let control_root = out.path().join("control-root");
    let (control, conffiles) = build_and_unpack("vnc-control", out.path(), &control_root);
    assert_files(
        &control_root,
        &[
            "usr/bin/vnc-control",
            "usr/lib/systemd/system/vnc-control.service",
            "usr/lib/sysusers.d/vnc-control.conf",
            "etc/vnc-control/control.toml",
            "usr/share/doc/vnc-control/README.md",
            "usr/share/doc/vnc-control/operations.md",
        ],
    );
    assert!(control.contains("Package: vnc-control"), "{control}");
    assert!(
        conffiles.contains("/etc/vnc-control/control.toml"),
        "the example config is a conffile: {conffiles}"
    );
    let identity = Identity::new();
    let checked = run(Command::new(control_root.join("usr/bin/vnc-control"))
        .arg("--config")
        .arg(control_root.join("etc/vnc-control/control.toml"))
        .arg("--jwt-private-key")
        .arg(&keys.private)
        .arg("--auth-public-key")
        .arg(&identity.public)
        .arg("check")
        .env_remove("RUST_LOG"));
    assert!(checked.contains("configuration ok"), "{checked}");
}
