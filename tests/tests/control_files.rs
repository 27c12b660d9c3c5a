//! Files in and out of a desktop through control, with real Docker and a desktop
//! container that follows the image contract (the RFB fixture image with a desktop
//! user's home and its `Uploads` and `Downloads` folders, owned by uid 1000): bytes
//! arrive as sent and owned by the desktop user, downloads are the container's bytes,
//! control's memory stays flat under a 500 MB upload, and every refusal (size, name,
//! policy of the token and of the container, another tenant, the static runtime)
//! answers its status.

use std::time::Duration;

use vnc_shared::token::{ClipboardPolicy, FilePolicy, Scope, TokenRequest};
use vnc_tests::control::{ControlProcess, DockerStack, docker_args, docker_stack};
use vnc_tests::docker::{
    ContainerGuard, DESKTOP_DOWNLOADS, DESKTOP_GID, DESKTOP_UID, DESKTOP_UPLOADS, docker,
    files_fixture_image,
};
use vnc_tests::files::{
    Answer, Pattern, TRANSFER_WAIT, in_container, request, upload, write_pattern,
};

/// Bound on a start job of the fixture image.
const START_WITHIN: Duration = Duration::from_secs(60);

/// The most control's resident memory may grow while it streams a 500 MB upload: a
/// few buffers of the body and of the engine's request, far below the file.
const RSS_GROWTH_BOUND: u64 = 64 * 1024 * 1024;

/// A running desktop of the files fixture image, its owner's bearer token, and the
/// guard that removes it.
struct Desktop {
    cid: String,
    owner: String,
    _guard: ContainerGuard,
}

async fn start_control(stack: &DockerStack, extra: &[&str]) -> ControlProcess {
    let image = files_fixture_image();
    let args = docker_args(&image, extra);
    ControlProcess::start(&stack.redis.url(), &stack.keys, &stack.identity, &args)
        .await
        .unwrap()
}

/// A desktop created by alice of tenant t1 with `policy` (`{"files": …}` etc.) in the
/// create request.
async fn desktop(
    stack: &DockerStack,
    control: &ControlProcess,
    policy: serde_json::Value,
) -> Desktop {
    let owner = stack.identity.token("alice", "t1", false);
    let mut body = serde_json::json!({
        "image": files_fixture_image(),
        "resources": {"cpus": 0.5, "memory_mb": 128},
    });
    if let (Some(b), Some(p)) = (body.as_object_mut(), policy.as_object()) {
        b.extend(p.clone());
    }
    let (cid, guard) = control.start_desktop(&owner, &body, START_WITHIN).await;
    Desktop {
        cid,
        owner,
        _guard: guard,
    }
}

/// Checks a JSON answer (or a download's head) against control's OpenAPI description.
async fn described(control: &ControlProcess, method: &str, path: &str, a: &Answer) {
    let doc = control.description(None).await.unwrap();
    let body = if a.status == 200 && method == "GET" && path.matches('/').count() > 4 {
        ""
    } else {
        a.body.as_str()
    };
    if let Err(e) = doc.check(method, path, a.status, &a.head, body) {
        panic!("{method} {path}: {e}");
    }
}

/// `name` percent-encoded as one path segment.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b".-_".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Control's resident memory (`VmRSS`), in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A 50 MB upload arrives with the same SHA-256, owned by the desktop user; a file
/// written in the download folder (by `docker cp`, not through control) is listed and
/// downloads with the same SHA-256, as the owner and with the session's VNC token;
/// the metrics count both.
#[tokio::test]
async fn files_go_in_and_out_with_every_byte() {
    let Some(stack) = docker_stack().await else {
        return;
    };
    let control = start_control(&stack, &[]).await;
    let d = desktop(&stack, &control, serde_json::json!({})).await;
    let container = format!("vnc-{}", d.cid);

    // In: the owner's bearer, 50 MB.
    let size = 50 * 1024 * 1024;
    let path = format!("/v1/containers/{}/files/report%20v1.bin", d.cid);
    let (answer, sent) = upload(control.api, &path, Some(&d.owner), size, 7)
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);
    described(&control, "PUT", &path, &answer).await;
    let (owner, got_size, sha) =
        in_container(&container, &format!("{DESKTOP_UPLOADS}/report v1.bin"));
    assert_eq!(got_size, size);
    assert_eq!(sha, sent, "the uploaded bytes changed on the way");
    assert_eq!(
        owner,
        format!("{DESKTOP_UID}/{DESKTOP_GID}"),
        "owned by the desktop user"
    );

    // In again with the session's VNC token (what the viewer page sends).
    let (status, minted) = control
        .call(
            "POST",
            &format!("/v1/containers/{}/vnc-tokens", d.cid),
            Some(&d.owner),
            Some(&serde_json::json!({"scope": "control", "ttl_seconds": 60})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{minted}");
    assert_eq!(
        (minted["files"].as_str(), minted["clipboard"].as_str()),
        (Some("both"), Some("both"))
    );
    let token = minted["token"].as_str().unwrap().to_owned();
    let small = format!("/v1/containers/{}/files/small.txt", d.cid);
    let (answer, _) = upload(control.api, &small, Some(&token), 1000, 9)
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);

    // Out: a file the desktop wrote, streamed back.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("out.bin");
    let out_size = 50 * 1024 * 1024 + 123;
    write_pattern(&local, 11, out_size);
    docker(&[
        "cp",
        local.to_str().unwrap(),
        &format!("{container}:{DESKTOP_DOWNLOADS}/out.bin"),
    ])
    .unwrap();
    let list_path = format!("/v1/containers/{}/files", d.cid);
    let (status, listing) = control
        .call("GET", &list_path, Some(&token), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["files"][0]["name"], "out.bin", "{listing}");
    assert_eq!(listing["files"][0]["size"], out_size, "{listing}");
    assert_eq!(listing["more"], false);
    for bearer in [&d.owner, &token] {
        let get = format!("/v1/containers/{}/files/out.bin", d.cid);
        let a = request(control.api, "GET", &get, Some(bearer), &[])
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        described(&control, "GET", &get, &a).await;
        assert_eq!(a.header("content-length"), Some(out_size.to_string()));
        assert_eq!(a.len, out_size);
        assert_eq!(
            a.sha256,
            Pattern::sha256(11, out_size),
            "the downloaded bytes differ"
        );
    }
    // A name past ustar's 100 bytes (a PAX record each way), both ways.
    let long = format!("{}.txt", "ü".repeat(60));
    let long_path = format!("/v1/containers/{}/files/{}", d.cid, encode(&long));
    let (answer, sent) = upload(control.api, &long_path, Some(&d.owner), 3000, 5)
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);
    let (_, got, sha) = in_container(&container, &format!("{DESKTOP_UPLOADS}/{long}"));
    assert_eq!((got, sha), (3000, sent));
    docker(&[
        "cp",
        local.to_str().unwrap(),
        &format!("{container}:{DESKTOP_DOWNLOADS}/{long}"),
    ])
    .unwrap();
    let (_, listing) = control
        .call("GET", &list_path, Some(&token), None)
        .await
        .unwrap();
    assert!(
        listing["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == long.as_str()),
        "{listing}"
    );
    let a = request(control.api, "GET", &long_path, Some(&token), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.sha256, Pattern::sha256(11, out_size));

    let missing = format!("/v1/containers/{}/files/nothing.bin", d.cid);
    let a = request(control.api, "GET", &missing, Some(&d.owner), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 404, "{}", a.body);

    let ok = |dir: &str| {
        format!("vnc_control_file_transfers_total{{direction=\"{dir}\",outcome=\"ok\"}}")
    };
    assert_eq!(control.metric(&ok("upload")).await, Some(3.0));
    assert_eq!(control.metric(&ok("download")).await, Some(3.0));
    assert_eq!(
        control
            .metric("vnc_control_file_bytes_total{direction=\"upload\",outcome=\"ok\"}")
            .await,
        Some((size + 1000 + 3000) as f64)
    );
}

/// Control streams: its resident memory grows by less than [`RSS_GROWTH_BOUND`]
/// (64 MiB) while a 500 MB upload goes through it, and the file arrives whole.
#[tokio::test]
async fn a_500_mb_upload_keeps_control_small() {
    let Some(stack) = docker_stack().await else {
        return;
    };
    let control = start_control(&stack, &[]).await;
    let d = desktop(&stack, &control, serde_json::json!({})).await;
    let pid = control.proc.pid();
    let before = rss(pid);
    assert!(before > 0, "control's VmRSS is readable");
    let sampling = tokio::sync::watch::channel(false);
    let (stop, mut stopped) = sampling;
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss(pid));
            tokio::select! {
                _ = stopped.changed() => return peak.max(rss(pid)),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });
    let size = 500 * 1000 * 1000;
    let path = format!("/v1/containers/{}/files/big.bin", d.cid);
    let (answer, sent) = upload(control.api, &path, Some(&d.owner), size, 3)
        .await
        .unwrap();
    stop.send(true).unwrap();
    let peak = tokio::time::timeout(TRANSFER_WAIT, sampler)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(
        peak < before + RSS_GROWTH_BOUND,
        "control grew from {before} to {peak} bytes during a {size}-byte upload"
    );
    let (_, got, sha) = in_container(
        &format!("vnc-{}", d.cid),
        &format!("{DESKTOP_UPLOADS}/big.bin"),
    );
    assert_eq!((got, sha), (size, sent));
}

/// Every refusal: 413 over `files_max_bytes`, 411 without a length, 400 for hostile
/// names, 403 for a view token's upload, a share's, a narrowed share's, a token of
/// another container, a revoked token, a colleague's upload and a container whose
/// policy has no files; 404 for another tenant; CORS only for the viewer's origin.
#[tokio::test]
async fn file_calls_are_refused_by_bound_name_and_policy() {
    let Some(stack) = docker_stack().await else {
        return;
    };
    let control = start_control(
        &stack,
        &[
            "--files-max-bytes",
            "4096",
            "--viewer-origin",
            "https://viewer.example",
        ],
    )
    .await;
    let d = desktop(&stack, &control, serde_json::json!({})).await;
    let put = |name: &str| format!("/v1/containers/{}/files/{name}", d.cid);

    // Bounds.
    let over = request(
        control.api,
        "PUT",
        &put("big.bin"),
        Some(&d.owner),
        &["Content-Length: 4097"],
    )
    .await
    .unwrap();
    assert_eq!(over.status, 413, "{}", over.body);
    described(&control, "PUT", &put("big.bin"), &over).await;
    let chunked = request(
        control.api,
        "PUT",
        &put("c.bin"),
        Some(&d.owner),
        &["Transfer-Encoding: chunked"],
    )
    .await
    .unwrap();
    assert_eq!(chunked.status, 411, "{}", chunked.body);
    let (at_bound, _) = upload(control.api, &put("edge.bin"), Some(&d.owner), 4096, 1)
        .await
        .unwrap();
    assert_eq!(at_bound.status, 201, "{}", at_bound.body);

    // Hostile names, percent-encoded so they reach control as they are.
    let long = "a".repeat(256);
    for name in [
        "..",
        "%2E%2E",
        "a%2Fb",
        "%2E%2E%2Fetc%2Fpasswd",
        "a%00b",
        "a%5Cb",
        "%0A",
        long.as_str(),
    ] {
        let a = request(
            control.api,
            "PUT",
            &put(name),
            Some(&d.owner),
            &["Content-Length: 0"],
        )
        .await
        .unwrap();
        assert_eq!(a.status, 400, "PUT {name}: {}", a.body);
        described(&control, "PUT", &put(name), &a).await;
        let a = request(control.api, "GET", &put(name), Some(&d.owner), &[])
            .await
            .unwrap();
        assert_eq!(a.status, 400, "GET {name}: {}", a.body);
    }

    // A link in the download folder is neither listed nor served (it could point
    // anywhere in the desktop).
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("passwd-link");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    docker(&[
        "cp",
        link.to_str().unwrap(),
        &format!("vnc-{}:{DESKTOP_DOWNLOADS}/", d.cid),
    ])
    .unwrap();
    let a = request(control.api, "GET", &put("passwd-link"), Some(&d.owner), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 404, "{}", a.body);
    let (status, listing) = control
        .call(
            "GET",
            &format!("/v1/containers/{}/files", d.cid),
            Some(&d.owner),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(!listing.to_string().contains("passwd-link"), "{listing}");

    // A view token reads, never writes.
    let mint = |scope: &str| {
        let body = serde_json::json!({"scope": scope, "ttl_seconds": 60});
        let path = format!("/v1/containers/{}/vnc-tokens", d.cid);
        let bearer = d.owner.clone();
        let control = &control;
        async move {
            let (status, minted) = control
                .call("POST", &path, Some(&bearer), Some(&body))
                .await
                .unwrap();
            assert_eq!(status, 200, "{minted}");
            minted
        }
    };
    let view = mint("view").await;
    assert_eq!(
        (view["files"].as_str(), view["clipboard"].as_str()),
        (Some("download"), Some("from_desktop"))
    );
    let view = view["token"].as_str().unwrap().to_owned();
    let (a, _) = upload(control.api, &put("v.txt"), Some(&view), 5, 1)
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{}", a.body);
    described(&control, "PUT", &put("v.txt"), &a).await;
    let list = format!("/v1/containers/{}/files", d.cid);
    let a = request(control.api, "GET", &list, Some(&view), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);

    // Shares: a view share never uploads; a control share that asked for downloads
    // only doesn't either; a control share that asked for nothing less does.
    let share = |body: serde_json::Value| {
        let path = format!("/v1/containers/{}/shares", d.cid);
        let bearer = d.owner.clone();
        let control = &control;
        async move {
            let (status, created) = control
                .call("POST", &path, Some(&bearer), Some(&body))
                .await
                .unwrap();
            assert_eq!(status, 201, "{created}");
            created
        }
    };
    let view_share =
        share(serde_json::json!({"scope": "view", "ttl_seconds": 60, "files": "both"})).await;
    assert_eq!(
        view_share["files"], "download",
        "a share never gets more than its scope"
    );
    let narrowed = share(serde_json::json!({"scope": "control", "ttl_seconds": 60, "files": "download", "clipboard": "none"})).await;
    assert_eq!(
        (narrowed["files"].as_str(), narrowed["clipboard"].as_str()),
        (Some("download"), Some("none"))
    );
    let full = share(serde_json::json!({"scope": "control", "ttl_seconds": 60})).await;
    for (created, want) in [(&view_share, 403), (&narrowed, 403), (&full, 201)] {
        let t = created["token"].as_str().unwrap();
        let (a, _) = upload(control.api, &put("s.txt"), Some(t), 5, 1)
            .await
            .unwrap();
        assert_eq!(a.status, want, "{created}: {}", a.body);
        let a = request(control.api, "GET", &list, Some(t), &[])
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // A revoked share's token moves nothing.
    let sid = full["share_id"].as_str().unwrap();
    let (status, _) = control
        .call("DELETE", &format!("/v1/shares/{sid}"), Some(&d.owner), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let a = request(
        control.api,
        "GET",
        &list,
        Some(full["token"].as_str().unwrap()),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 403, "{}", a.body);

    // A token signed by control's key for another container, and a revoked token.
    let other = stack
        .keys
        .signer
        .mint(&TokenRequest {
            sub: "alice",
            tenant: "t1",
            cid: "another-desktop",
            scope: Scope::Control,
            ttl: Duration::from_secs(60),
            share: None,
            admin: false,
            files: FilePolicy::Both,
            clipboard: ClipboardPolicy::Both,
        })
        .unwrap();
    let a = request(control.api, "GET", &list, Some(&other.token), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{}", a.body);
    let (status, minted) = control
        .call(
            "POST",
            &format!("/v1/containers/{}/vnc-tokens", d.cid),
            Some(&d.owner),
            Some(&serde_json::json!({"scope": "control", "ttl_seconds": 60})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let jti = {
        let t = minted["token"].as_str().unwrap();
        let claims = stack.keys.signer.own_keys().verify(t).unwrap();
        claims.jti
    };
    let (status, _) = control
        .call(
            "POST",
            &format!("/v1/tokens/{jti}/revoke"),
            Some(&d.owner),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let a = request(control.api, "GET", &list, minted["token"].as_str(), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{}", a.body);

    // Callers of the identity provider: a colleague reads but doesn't write, another
    // tenant sees nothing, a bad bearer is 401.
    let colleague = stack.identity.token("bob", "t1", false);
    let (a, _) = upload(control.api, &put("b.txt"), Some(&colleague), 5, 1)
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{}", a.body);
    let a = request(control.api, "GET", &list, Some(&colleague), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let stranger = stack.identity.token("eve", "t2", false);
    let a = request(control.api, "GET", &list, Some(&stranger), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 404, "{}", a.body);
    let a = request(control.api, "GET", &list, Some("not-a-token"), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 401, "{}", a.body);
    described(&control, "GET", &list, &a).await;

    // CORS: the viewer's origin gets its preflight answered and its answers marked;
    // another origin gets neither.
    let preflight = |origin: &'static str| {
        let list = list.clone();
        let control = &control;
        async move {
            let origin = format!("Origin: {origin}");
            request(
                control.api,
                "OPTIONS",
                &list,
                None,
                &[
                    &origin,
                    "Access-Control-Request-Method: PUT",
                    "Access-Control-Request-Headers: authorization",
                ],
            )
            .await
            .unwrap()
        }
    };
    let ok = preflight("https://viewer.example").await;
    assert_eq!(ok.status, 204, "{}", ok.head);
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some("https://viewer.example")
    );
    assert!(
        ok.header("access-control-allow-methods")
            .unwrap()
            .contains("PUT")
    );
    let other = preflight("https://evil.example").await;
    assert_eq!(
        other.header("access-control-allow-origin"),
        None,
        "{}",
        other.head
    );
    let a = request(
        control.api,
        "GET",
        &list,
        Some(&view),
        &["Origin: https://viewer.example"],
    )
    .await
    .unwrap();
    assert_eq!(
        a.header("access-control-allow-origin").as_deref(),
        Some("https://viewer.example")
    );

    // A container whose policy has no files: not even its owner moves one.
    let closed = desktop(
        &stack,
        &control,
        serde_json::json!({"files": "none", "clipboard": "to_desktop"}),
    )
    .await;
    let (status, view) = control
        .call(
            "GET",
            &format!("/v1/containers/{}", closed.cid),
            Some(&closed.owner),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        (view["files"].as_str(), view["clipboard"].as_str()),
        (Some("none"), Some("to_desktop"))
    );
    let closed_put = format!("/v1/containers/{}/files/x.txt", closed.cid);
    let (a, _) = upload(control.api, &closed_put, Some(&closed.owner), 5, 1)
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{}", a.body);
    let a = request(
        control.api,
        "GET",
        &format!("/v1/containers/{}/files", closed.cid),
        Some(&closed.owner),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 403, "{}", a.body);

    assert!(
        control
            .metric("vnc_control_file_transfers_total{direction=\"upload\",outcome=\"refused\"}")
            .await
            .unwrap_or(0.0)
            >= 10.0
    );
}

/// The static runtime has no folders to move files to: 409, saying so.
#[tokio::test]
async fn the_static_runtime_answers_409() {
    let redis = vnc_tests::redis::RedisServer::start().await.unwrap();
    let keys = vnc_tests::keys::TestKeys::new();
    let identity = vnc_tests::control::Identity::new();
    let control =
        ControlProcess::start_static(&redis.url(), &keys, &identity, &[("desk-1", "alice", "t1")])
            .await
            .unwrap();
    let owner = identity.token("alice", "t1", false);
    let put = "/v1/containers/desk-1/files/a.txt";
    let (a, _) = upload(control.api, put, Some(&owner), 5, 1).await.unwrap();
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.body.contains("static runtime"), "{}", a.body);
    described(&control, "PUT", put, &a).await;
    let list = "/v1/containers/desk-1/files";
    let a = request(control.api, "GET", list, Some(&owner), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 409, "{}", a.body);
    let a = request(control.api, "GET", put, Some(&owner), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 409, "{}", a.body);
}
