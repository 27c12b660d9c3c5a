//! Files through the viewer page, end to end: headless chromium on the page the relay
//! serves, control (Docker runtime) with the page's origin on its `viewer_origins`, and
//! a desktop container that follows the image contract (the RFB fixture image with the
//! desktop user's `Uploads` and `Downloads`, uid 1000). A file dropped on the page
//! arrives with its bytes and the desktop user as owner, the page seeing upload
//! progress; a file the desktop wrote downloads through the page with its bytes; what
//! a token may not do is greyed out with the reason; the static runtime's 409 is shown
//! in its words.

use std::time::Duration;

use serde_json::{Value, json};
use vnc_tests::browser::{Browser, browser_required, start_relay};
use vnc_tests::control::{ControlProcess, DockerStack, docker_args, docker_stack};
use vnc_tests::docker::{
    ContainerGuard, DESKTOP_DOWNLOADS, DESKTOP_GID, DESKTOP_UID, DESKTOP_UPLOADS, docker,
    files_fixture_image,
};
use vnc_tests::files::{hex, in_container, write_pattern};
use vnc_tests::relay::RelayProcess;

/// Bound on a start job of the fixture image.
const START_WITHIN: Duration = Duration::from_secs(60);

/// Bound on the page's 50 MB upload through a debug build of control.
const UPLOAD_WAIT_MS: u64 = 180_000;

/// Control on the Docker runtime with the relay's origin (where the page comes from)
/// on `viewer_origins`, the relay serving the page, and alice's running desktop.
/// One test of this file at a time: a container's start adds network interfaces, and
/// Chromium aborts a page's loads when the interfaces change (`ERR_NETWORK_CHANGED`),
/// so no test's desktop may start during another test's page load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct FilesStack {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    _stack: DockerStack,
    relay: RelayProcess,
    control: ControlProcess,
    cid: String,
    owner: String,
    _guard: ContainerGuard,
}

impl FilesStack {
    /// Starts it; `extra` are more flags of control (`--files-max-bytes`, ...).
    async fn start(extra: &[&str]) -> Option<FilesStack> {
        if !browser_required() {
            return None;
        }
        let turn = ONE_AT_A_TIME.lock().await;
        let stack = docker_stack().await?;
        let relay = start_relay(&stack.redis, &stack.keys, "relay-a", &[]).await;
        let image = files_fixture_image();
        let origin = format!("http://{}", relay.public);
        let relay_url = format!("ws://{}", relay.public);
        let mut args = docker_args(
            &image,
            &["--relay-url", &relay_url, "--viewer-origin", &origin],
        );
        args.extend_from_slice(extra);
        let control =
            ControlProcess::start(&stack.redis.url(), &stack.keys, &stack.identity, &args)
                .await
                .expect("start control");
        let owner = stack.identity.token("alice", "t1", false);
        let body = json!({"image": image, "resources": {"cpus": 0.5, "memory_mb": 128}});
        let (cid, guard) = control.start_desktop(&owner, &body, START_WITHIN).await;
        Some(FilesStack {
            _turn: turn,
            _stack: stack,
            relay,
            control,
            cid,
            owner,
            _guard: guard,
        })
    }

    /// A VNC token of `scope` from control's API, as the owner.
    async fn token(&self, scope: &str) -> Value {
        let (status, minted) = self
            .control
            .call(
                "POST",
                &format!("/v1/containers/{}/vnc-tokens", self.cid),
                Some(&self.owner),
                Some(&json!({"scope": scope, "ttl_seconds": 120})),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{minted}");
        minted
    }

    /// The page for `token`, with control's address in the fragment.
    fn page(&self, token: &str, extra: &str) -> String {
        format!(
            "http://{}/#token={token}&containerId={}&control=http://{}{extra}",
            self.relay.public, self.cid, self.control.api
        )
    }

    fn container(&self) -> String {
        format!("vnc-{}", self.cid)
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

/// `[disabled, title, reason text]` of the upload button.
async fn upload_control(browser: &mut Browser) -> Value {
    browser
        .eval("[document.getElementById('upload-button').disabled, document.getElementById('upload-button').title, document.getElementById('upload-reason').textContent]")
        .await
}

/// A 50 MB file dropped on the page arrives in ~/Uploads with the same SHA-256, owned
/// by the desktop user, with upload progress seen by the page; a file the desktop wrote
/// in ~/Downloads is listed by the page and downloads through it with the same SHA-256.
#[tokio::test]
async fn a_dropped_file_arrives_and_a_desktop_file_downloads_through_the_page() {
    let Some(s) = FilesStack::start(&[]).await else {
        return;
    };
    let minted = s.token("control").await;
    assert_eq!(minted["files"], "both", "{minted}");
    let mut browser = Browser::start().await;
    browser
        .open(&s.page(minted["token"].as_str().unwrap(), ""))
        .await;
    // The page listed the (empty) download folder: control answered it across origins.
    let state = browser
        .wait_for("window.vncViewer.files.listed === true")
        .await;
    assert_eq!(state["files"]["list"], json!([]), "{state}");
    assert_eq!(upload_control(&mut browser).await[0], false);

    let size: u64 = 50 * 1024 * 1024;
    let sent = browser.drop_file("dropped report.bin", size, 7).await;
    let state = browser
        .call(json!({"cmd": "waitFor", "timeoutMs": UPLOAD_WAIT_MS,
                     "expr": "window.vncViewer.files.lastUpload?.state === 'done' || window.vncViewer.files.lastUpload?.state === 'failed'"}))
        .await["state"]
        .clone();
    let last = &state["files"]["lastUpload"];
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(last["status"], 201, "{last}");
    assert_eq!(last["size"], size, "{last}");
    assert!(
        state["files"]["progressEvents"].as_u64().unwrap_or(0) >= 2,
        "the page saw no upload progress: {}",
        state["files"]
    );
    let (owner, got_size, got) = in_container(
        &s.container(),
        &format!("{DESKTOP_UPLOADS}/dropped report.bin"),
    );
    assert_eq!(got_size, size);
    assert_eq!(got, sent, "the dropped bytes changed on the way");
    assert_eq!(owner, format!("{DESKTOP_UID}/{DESKTOP_GID}"));

    // Out: a file the desktop wrote, listed and downloaded through the page.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("notes v2.bin");
    let out_size = 20 * 1024 * 1024 + 77;
    let want = write_pattern(&local, 11, out_size);
    docker(&[
        "cp",
        local.to_str().unwrap(),
        &format!("{}:{DESKTOP_DOWNLOADS}/notes v2.bin", s.container()),
    ])
    .unwrap();
    browser.press("#files-toggle").await;
    browser.press("#files-refresh").await;
    browser
        .wait_text("#files-list button.download", "notes v2.bin")
        .await;
    let saved = dir.path().join("saved.bin");
    let name = browser
        .download("#files-list button[data-name=\"notes v2.bin\"]", &saved)
        .await;
    assert_eq!(name, "notes v2.bin");
    let bytes = std::fs::read(&saved).unwrap();
    assert_eq!(bytes.len() as u64, out_size);
    assert_eq!(
        sha256_of(&bytes),
        want,
        "the downloaded bytes are not the desktop's"
    );
    let state = browser.state().await;
    assert_eq!(state["files"]["lastDownload"]["status"], 200, "{state}");
    browser.close().await;
}

/// Control's refusals of an upload reach the page in words: a file over
/// `files_max_bytes` (413) says it is too large, with control's message, and nothing
/// of it lands in ~/Uploads.
#[tokio::test]
async fn an_upload_control_refuses_is_shown_in_words() {
    let Some(s) = FilesStack::start(&["--files-max-bytes", "4096"]).await else {
        return;
    };
    let minted = s.token("control").await;
    let mut browser = Browser::start().await;
    browser
        .open(&s.page(minted["token"].as_str().unwrap(), ""))
        .await;
    browser
        .wait_for("window.vncViewer.files.listed === true")
        .await;
    browser.drop_file("big.bin", 4097, 5).await;
    let state = browser
        .wait_for("window.vncViewer.files.lastUpload?.state === 'failed'")
        .await;
    let last = &state["files"]["lastUpload"];
    assert_eq!(last["status"], 413, "{last}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("the file is too large for control: ")),
        "{last}"
    );
    browser
        .wait_text("#upload-result", "upload failed: the file is too large")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let copied = docker(&[
        "cp",
        &format!("{}:{DESKTOP_UPLOADS}/big.bin", s.container()),
        dir.path().to_str().unwrap(),
    ]);
    assert!(copied.is_err(), "a refused upload left a file: {copied:?}");
    browser.close().await;
}

/// A view token's page and a share link without files show the upload greyed out with
/// the reason in words; a file dropped on the view page is not sent, and says why.
#[tokio::test]
async fn uploads_a_token_may_not_make_are_greyed_out_with_the_reason() {
    let Some(s) = FilesStack::start(&[]).await else {
        return;
    };
    let view = s.token("view").await;
    assert_eq!(view["files"], "download", "{view}");
    let mut browser = Browser::start().await;
    browser
        .open(&s.page(view["token"].as_str().unwrap(), ""))
        .await;
    browser
        .wait_for("window.vncViewer.files.listed === true")
        .await;
    let up = upload_control(&mut browser).await;
    assert_eq!(up[0], true, "{up}");
    assert!(
        up[1]
            .as_str()
            .unwrap()
            .contains("view-only link can't upload"),
        "{up}"
    );
    browser.press("#files-toggle").await;
    browser
        .wait_text("#upload-reason", "view-only link can't upload")
        .await;
    // Downloads stay open to a view token.
    let refresh = browser
        .eval("document.getElementById('files-refresh').disabled")
        .await;
    assert_eq!(refresh, false);
    browser.drop_file("nope.bin", 1000, 3).await;
    browser.wait_text("#upload-result", "Can't upload").await;
    let state = browser.state().await;
    assert_eq!(state["files"]["drops"], 1, "{state}");
    assert_eq!(state["files"]["uploads"], json!([]), "{state}");
    assert!(state["files"]["lastUpload"].is_null(), "{state}");
    browser.close().await;

    // A control share that asked for no files: the share's own URL, with control's.
    let (status, share) = s
        .control
        .call(
            "POST",
            &format!("/v1/containers/{}/shares", s.cid),
            Some(&s.owner),
            Some(&json!({"scope": "control", "ttl_seconds": 120, "files": "none"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{share}");
    assert_eq!(share["files"], "none", "{share}");
    let url = format!(
        "{}&control=http://{}",
        share["url"].as_str().unwrap(),
        s.control.api
    );
    let mut browser = Browser::start().await;
    browser.open(&url).await;
    browser.press("#files-toggle").await;
    browser
        .wait_text("#upload-reason", "allows no file transfer")
        .await;
    browser
        .wait_text("#download-reason", "allows no file transfer")
        .await;
    let up = upload_control(&mut browser).await;
    assert_eq!(up[0], true, "{up}");
    browser.close().await;
}

/// A desktop of the static runtime: control answers the page's file calls 409, and
/// the page greys out uploads and downloads with control's words (not only the token's
/// `files: none`, which says less).
#[tokio::test]
async fn the_static_runtime_refusal_is_shown_in_controls_words() {
    if !browser_required() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let redis = vnc_tests::redis::RedisServer::start().await.expect("redis");
    let keys = vnc_tests::keys::TestKeys::new();
    let identity = vnc_tests::control::Identity::new();
    let relay = start_relay(&redis, &keys, "relay-a", &[]).await;
    let origin = format!("http://{}", relay.public);
    let control = ControlProcess::start_static_with(
        &redis.url(),
        &keys,
        &identity,
        &[("desk-1", "alice", "t1", 5900)],
        &["--viewer-origin", &origin],
    )
    .await
    .expect("start control");
    let owner = identity.token("alice", "t1", false);
    let (status, minted) = control
        .call(
            "POST",
            "/v1/containers/desk-1/vnc-tokens",
            Some(&owner),
            Some(&json!({"scope": "control", "ttl_seconds": 60})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{minted}");
    // Control gives a static desktop's tokens no file policy; the page still asks, and
    // control's 409 (checked before the policy) says more than the claim.
    assert_eq!(minted["files"], "none", "{minted}");
    let url = format!(
        "http://{}/#token={}&containerId=desk-1&control=http://{}",
        relay.public,
        minted["token"].as_str().unwrap(),
        control.api
    );
    let mut browser = Browser::start().await;
    browser.open(&url).await;
    let state = browser
        .wait_for("window.vncViewer.files.refusal !== ''")
        .await;
    let refusal = state["files"]["refusal"].as_str().unwrap().to_owned();
    assert!(refusal.contains("static runtime"), "{refusal}");
    browser.press("#files-toggle").await;
    browser.wait_text("#upload-reason", "static runtime").await;
    let up = upload_control(&mut browser).await;
    assert_eq!(up[0], true, "{up}");
    assert_eq!(up[1].as_str(), Some(refusal.as_str()), "{up}");
    browser.close().await;
}
