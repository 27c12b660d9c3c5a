//! Docker for tests: whether an engine answers, and the RFB fixture image.
//!
//! The image `vnc-rfb-fixture:test` is the statically linked `rfb-fixture` binary alone
//! in a scratch image, made with `docker import` (nothing is pulled). The static binary
//! is built by the test command beforehand (see [`STATIC_BUILD`]).

use std::fs::File;
use std::hash::{DefaultHasher, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Tag of the fixture image.
pub const FIXTURE_IMAGE: &str = "vnc-rfb-fixture:test";

/// Label on the image holding a digest of the binary inside, so a rebuilt fixture gets
/// a fresh image.
const DIGEST_LABEL: &str = "vnc.fixture.digest";

/// Target triple of the static build (its own folder under `target/`, so the static
/// build does not invalidate the normal one).
const STATIC_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The command that builds the static fixture (`scripts/test` runs it).
pub const STATIC_BUILD: &str = "RUSTFLAGS='-C target-feature=+crt-static' cargo build -p vnc-tests --bin rfb-fixture --release --target x86_64-unknown-linux-gnu";

/// Bound on `docker info`: an engine that takes longer is not usable for tests.
const ENGINE_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on building the image.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// True if a Docker engine answers. If none does: under `CI=true` this panics (tests that
/// need Docker must fail in CI), otherwise it prints a loud `SKIPPED` line and returns
/// false so the test can return early.
pub fn docker_required() -> bool {
    static ANSWERS: OnceLock<Result<(), String>> = OnceLock::new();
    let answer = ANSWERS.get_or_init(|| {
        let mut cmd = Command::new("docker");
        cmd.args(["info", "--format", "{{.ServerVersion}}"]);
        run(cmd, ENGINE_PROBE_TIMEOUT).map(drop)
    });
    match answer {
        Ok(()) => true,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but no Docker engine answers (`docker info`: {why}); start dockerd")
        }
        Err(why) => {
            // Straight to the stderr handle, not `eprintln!`, which the test harness
            // captures: a skip must be visible in a normal run.
            let _ = writeln!(
                std::io::stderr(),
                "\n\
                 ************************************************************\n\
                 SKIPPED: no Docker engine (`docker info`: {why})\n\
                 ************************************************************\n"
            );
            false
        }
    }
}

/// The fixture image's tag, building the image if it is missing or holds an older
/// binary. Built once per process; a file lock keeps parallel test processes from
/// importing at the same time.
pub fn fixture_image() -> String {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| ensure_image(FIXTURE_IMAGE, &["/rfb-fixture"]));
    FIXTURE_IMAGE.to_owned()
}

/// An image of the same binary whose entrypoint exits at once with status 2 and a
/// usage error on stderr (`--listen` gets a value that is not an address): a desktop
/// that dies right after start.
pub fn exiting_fixture_image() -> String {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        ensure_image(
            EXITING_FIXTURE_IMAGE,
            &["/rfb-fixture", "--listen", "exit-at-once"],
        )
    });
    EXITING_FIXTURE_IMAGE.to_owned()
}

/// An image of the same binary whose VNC server starts listening 5 s after the
/// container starts: a start job that stays active that long.
pub fn slow_fixture_image() -> String {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        ensure_image(
            SLOW_FIXTURE_IMAGE,
            &["/rfb-fixture", "--start-delay-ms", "5000"],
        )
    });
    SLOW_FIXTURE_IMAGE.to_owned()
}

/// An image of the same binary with a desktop user's home (`HOME=/home/desktop`) and
/// the upload and download folders of the desktop image contract, owned by
/// [`DESKTOP_UID`]:[`DESKTOP_GID`]: a desktop to move files in and out of.
pub fn files_fixture_image() -> String {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| ensure_image_with(FILES_FIXTURE_IMAGE, &["/rfb-fixture"], true));
    FILES_FIXTURE_IMAGE.to_owned()
}

/// Tag of [`files_fixture_image`].
pub const FILES_FIXTURE_IMAGE: &str = "vnc-rfb-fixture:files";
/// Owner of the home and folders of [`files_fixture_image`].
pub const DESKTOP_UID: u32 = 1000;
pub const DESKTOP_GID: u32 = 1000;
/// The folders of [`files_fixture_image`].
pub const DESKTOP_UPLOADS: &str = "/home/desktop/Uploads";
pub const DESKTOP_DOWNLOADS: &str = "/home/desktop/Downloads";

/// Tag of [`slow_fixture_image`].
pub const SLOW_FIXTURE_IMAGE: &str = "vnc-rfb-fixture:slow";

/// Tag of [`exiting_fixture_image`].
pub const EXITING_FIXTURE_IMAGE: &str = "vnc-rfb-fixture:exits";

/// Imports `tag` unless it already holds the current binary with this entrypoint.
fn ensure_image(tag: &str, entrypoint: &[&str]) {
    ensure_image_with(tag, entrypoint, false)
}

/// [`ensure_image`], with the desktop user's home and folders when `home`.
fn ensure_image_with(tag: &str, entrypoint: &[&str], home: bool) {
    let binary = static_fixture_path();
    let entrypoint = serde_json::to_string(entrypoint).expect("entrypoint json");
    let digest = format!("{}-{:016x}", file_digest(&binary), {
        let mut hasher = DefaultHasher::new();
        hasher.write(entrypoint.as_bytes());
        if home {
            hasher.write(b"home");
        }
        hasher.finish()
    });
    let lock_path = std::env::temp_dir().join("vnc-rfb-fixture-image.lock");
    let lock =
        File::create(&lock_path).unwrap_or_else(|e| panic!("create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
    if image_digest(tag).as_deref() != Some(digest.as_str()) {
        let stale = docker(&["image", "inspect", "--format", "{{.Id}}", tag]).ok();
        import_image(&binary, tag, &entrypoint, &digest, home);
        // The old image lost its tag; drop it unless a container still uses it.
        if let Some(stale) = stale {
            let _ = docker(&["image", "rm", stale.trim()]);
        }
    }
    // The lock is released when `lock` drops here.
}

/// Path of the static fixture binary; panics with the build command if it is missing
/// or not statically linked.
pub fn static_fixture_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target
        .join(STATIC_TRIPLE)
        .join("release")
        .join("rfb-fixture");
    assert!(
        path.exists(),
        "{} is missing: build the static RFB fixture first:\n    {STATIC_BUILD}",
        path.display()
    );
    assert!(
        !has_interpreter(&path),
        "{} is dynamically linked and cannot run in a scratch image; rebuild it with:\n    {STATIC_BUILD}",
        path.display()
    );
    path
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only (the static build's target).
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(phentsize);
        u32_at(at) == Some(PT_INTERP)
    })
}

fn file_digest(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut hasher = DefaultHasher::new();
    hasher.write(&bytes);
    format!("{:016x}-{}", hasher.finish(), bytes.len())
}

/// The digest label of image `tag`, if the image exists.
fn image_digest(tag: &str) -> Option<String> {
    let mut cmd = Command::new("docker");
    cmd.args([
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{DIGEST_LABEL}\"}}}}"),
        tag,
    ]);
    run(cmd, ENGINE_PROBE_TIMEOUT)
        .ok()
        .map(|out| out.trim().to_owned())
}

/// `docker import` of a tarball holding only `/rfb-fixture` (and, with `home`, the
/// desktop user's home and folders), as `tag`.
fn import_image(binary: &Path, tag: &str, entrypoint_json: &str, digest: &str, home: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir root");
    let inside = root.join("rfb-fixture");
    std::fs::copy(binary, &inside).expect("copy the fixture binary");
    let tarball = dir.path().join("rootfs.tar");

    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&root)
        .args(["--owner=0", "--group=0", "--mode=0755", "-cf"])
        .arg(&tarball)
        .arg("rfb-fixture");
    run(tar, IMPORT_TIMEOUT).unwrap_or_else(|e| panic!("tar the fixture rootfs: {e}"));
    if home {
        for folder in [DESKTOP_UPLOADS, DESKTOP_DOWNLOADS] {
            std::fs::create_dir_all(root.join(&folder[1..])).expect("mkdir a desktop folder");
        }
        let mut tar = Command::new("tar");
        tar.arg("-C")
            .arg(&root)
            .arg(format!("--owner={DESKTOP_UID}"))
            .arg(format!("--group={DESKTOP_GID}"))
            .args(["--mode=0755", "-rf"])
            .arg(&tarball)
            .arg("home");
        run(tar, IMPORT_TIMEOUT).unwrap_or_else(|e| panic!("tar the desktop's home: {e}"));
    }

    let mut import = Command::new("docker");
    import
        .arg("import")
        .args(["--change", &format!("ENTRYPOINT {entrypoint_json}")])
        .args(["--change", "ENV VNC_PORT=5900"])
        .args(["--change", "EXPOSE 5900/tcp"])
        .args(["--change", &format!("LABEL {DIGEST_LABEL}={digest}")]);
    if home {
        import.args(["--change", "ENV HOME=/home/desktop"]);
    }
    import.arg(&tarball).arg(tag);
    run(import, IMPORT_TIMEOUT).unwrap_or_else(|e| panic!("docker import {tag}: {e}"));
}

/// Runs `cmd` to completion within `limit`; its stdout on success, else why not.
pub fn run(mut cmd: Command, limit: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + limit;
    // Output is small (a version, a label, an image id), so it fits the pipe buffers
    // while we poll; no reader threads needed.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {limit:?}"));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("output: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A container of a test, removed (`docker rm -f`) when dropped, even on panic.
pub struct ContainerGuard {
    pub name: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let mut cmd = Command::new("docker");
        cmd.args(["rm", "-f", &self.name]);
        let _ = run(cmd, IMPORT_TIMEOUT);
    }
}

/// A Docker network of a test, removed (`docker network rm`) when dropped. Declare it
/// before the guards of the containers on it, so they go first.
pub struct NetworkGuard {
    pub name: String,
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// `docker inspect` of one object (container or network) as JSON.
pub fn inspect(kind: &str, name: &str) -> Result<serde_json::Value, String> {
    let out = docker(&[kind, "inspect", name])?;
    let mut all: Vec<serde_json::Value> =
        serde_json::from_str(&out).map_err(|e| format!("docker {kind} inspect {name}: {e}"))?;
    all.pop()
        .ok_or_else(|| format!("docker {kind} inspect {name}: nothing"))
}

/// Runs `docker args…` (bounded); stdout on success.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run(cmd, IMPORT_TIMEOUT)
}
