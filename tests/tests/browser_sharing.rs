//! Sharing a desktop through the viewer page, in real browsers against the real stack:
//! redis-server, vnc-control (static runtime, declaring the X desktop as `desk` of user
//! `alice`) minting the owner's token and the share links, two vnc-relay nodes serving
//! `web/`, the X desktop (Xvfb + x11vnc + an xterm recording what is typed into it), and
//! three chromium pages driven through `tests/browser/driver.mjs`: the owner, a guest
//! with a control share link on the other relay node, a guest with a view share link.
//! What reaches the xterm's file shows whose keys reach the desktop.
//!
//! Needs what `tests/tests/browser.rs` needs; skips loudly without it, fails under
//! `CI=true`.
#![forbid(unsafe_code)]

use serde_json::{Value, json};
use vnc_tests::browser::{Browser, BrowserStack, browser_required, start_relay, wait_typed};
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::process::eventually;
use vnc_tests::relay::RelayProcess;

/// Where the tests click to put X's pointer (and so the keyboard) on the xterm.
const XTERM_SPOT: (u16, u16) = (200, 120);

/// `POST /v1/containers/desk/shares` as `bearer`: the share's id and its URL.
async fn share_link(control: &ControlProcess, bearer: &str, scope: &str) -> (String, String) {
    let body = json!({"scope": scope, "ttl_seconds": 600, "name": format!("{scope} link")});
    let (status, share) = control
        .call(
            "POST",
            "/v1/containers/desk/shares",
            Some(bearer),
            Some(&body),
        )
        .await
        .expect("POST /v1/containers/desk/shares");
    assert_eq!(status, 201, "{share}");
    let field = |name: &str| share[name].as_str().expect(name).to_owned();
    (field("share_id"), field("url"))
}

/// Key and pointer events `relay` dropped for `reason` (`not_driver`, `view`). Other
/// kinds don't count: noVNC answers the server's extended-clipboard announcement with a
/// ClientCutText whether or not it is view-only, which the relay drops for a session that
/// doesn't drive.
async fn dropped(relay: &RelayProcess, reason: &str) -> f64 {
    let mut sum = 0.0;
    for kind in ["key_event", "pointer_event"] {
        let series =
            format!("vnc_relay_input_dropped_total{{kind=\"{kind}\",reason=\"{reason}\"}}");
        sum += relay.metric(&series).await.unwrap_or(0.0);
    }
    sum
}

/// Opens a share link and joins as `name` through the page's name prompt.
async fn join(browser: &mut Browser, url: &str, name: &str) {
    browser.open(url).await;
    browser.wait_text("#join", "Your name").await;
    let state = browser.state().await;
    assert_eq!(
        state["status"], "idle",
        "no connection before the name: {state}"
    );
    assert_eq!(state["share"], true, "{state}");
    browser.fill("#join-name", name).await;
    browser.press("#join-button").await;
    browser.wait_state("connected", 1).await;
}

/// The page's presence list entry named `name`.
fn person<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["control"]["people"]
        .as_array()
        .and_then(|people| people.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("{name} is not in the presence list: {state}"))
}

/// The owner (A, relay 1) drives; a guest with a control share link (B, "Ann", relay 2)
/// asks for control in the page, A gives it in the page, B's keys reach the desktop and
/// A's don't; a guest with a view share link (C, "Cy") never types, even with noVNC's
/// view-only switched off; A takes control back; revoking the share links through control
/// ends B and C with 4003 `share revoked`, in words, and A goes on.
#[tokio::test]
async fn a_share_link_hands_control_over_and_its_revocation_ends_only_the_guests() {
    if !browser_required() {
        return;
    }
    let mut stack = BrowserStack::start_unregistered(&[]).await;
    let relay_2 = start_relay(&stack.redis, &stack.keys, "relay-2", &[]).await;
    let typed = stack.desktop.xterm_recording("typed", "80x20+40+40").await;
    let identity = Identity::new();
    let relay_1 = format!("http://{}", stack.relay.public);
    let relay_url = format!("ws://{}", stack.relay.public);
    let control = ControlProcess::start_static_with(
        &stack.redis.url(),
        &stack.keys,
        &identity,
        &[("desk", "alice", "t1", stack.desktop.vnc_port)],
        &["--relay-url", &relay_url],
    )
    .await
    .expect("start vnc-control");
    let alice = identity.token("alice", "t1", false);

    // A: the owner's own token from control, on relay 1, over socket.io (presence).
    let minted = eventually("a VNC token from control", vnc_tests::WAIT, || async {
        let body = json!({"scope": "control", "ttl_seconds": 300});
        let (status, minted) = control
            .call(
                "POST",
                "/v1/containers/desk/vnc-tokens",
                Some(&alice),
                Some(&body),
            )
            .await
            .ok()?;
        (status == 200).then_some(minted)
    })
    .await;
    let token = minted["token"].as_str().expect("token");
    let mut a = Browser::start().await;
    a.open(&format!(
        "{relay_1}/#token={token}&containerId=desk&transport=socketio"
    ))
    .await;
    a.wait_state("connected", 1).await;
    let state = a.wait_control("driving").await;
    assert_eq!(state["control"]["line"], "you have control", "{state}");
    a.click(XTERM_SPOT).await;
    a.type_text("A-drives\n").await;
    wait_typed(&typed, "A-drives\n").await;

    // The share links as control makes them: the page on relay 1, share=1.
    let (control_share, control_url) = share_link(&control, &alice, "control").await;
    let (view_share, view_url) = share_link(&control, &alice, "view").await;
    for url in [&control_url, &view_url] {
        assert!(url.starts_with(&format!("{relay_1}/#token=")), "{url}");
        assert!(url.ends_with("&share=1"), "{url}");
    }

    // B: the control share link opened on relay 2, as Ann.
    let mut b = Browser::start().await;
    let on_relay_2 = control_url.replacen(&relay_1, &format!("http://{}", relay_2.public), 1);
    join(&mut b, &on_relay_2, "Ann").await;
    let state = b.wait_control("waiting").await;
    assert_eq!(
        state["transport"], "socketio",
        "a share link speaks socket.io: {state}"
    );
    assert_eq!(state["endpoint"], format!("ws://{}", relay_2.public));
    assert_eq!(state["control"]["line"], "alice has control", "{state}");
    b.wait_text("#not-driving", "not in control").await;
    b.wait_text("#control-request", "Request control").await;
    // What B can't do while it doesn't drive is greyed out with the reason, not hidden.
    let greyed = b
        .eval("[document.getElementById('clipboard-send').disabled, document.getElementById('clipboard-send').title, document.querySelector('#resize option[value=remote]').disabled, document.getElementById('resize-reason').textContent]")
        .await;
    assert_eq!(greyed[0], true, "{greyed}");
    assert!(
        greyed[1]
            .as_str()
            .is_some_and(|t| t.contains("someone else has control")),
        "{greyed}"
    );
    assert_eq!(greyed[2], true, "{greyed}");
    assert!(
        greyed[3]
            .as_str()
            .is_some_and(|t| t.contains("someone else has control")),
        "{greyed}"
    );

    // C: the view share link, as Cy.
    let mut c = Browser::start().await;
    join(&mut c, &view_url, "Cy").await;
    c.wait_control("view").await;
    c.wait_text("#scope", "view only").await;

    // Everyone is in A's presence list, guests and view-only marked, across both nodes.
    let state = a
        .wait_for("window.vncViewer.control.people.length === 3")
        .await;
    assert_eq!(person(&state, "alice")["you"], true, "{state}");
    assert_eq!(person(&state, "alice")["driver"], true, "{state}");
    assert_eq!(person(&state, "Ann")["guest"], true, "{state}");
    assert_eq!(person(&state, "Ann")["viewOnly"], false, "{state}");
    assert_eq!(person(&state, "Cy")["guest"], true, "{state}");
    assert_eq!(person(&state, "Cy")["viewOnly"], true, "{state}");
    a.press("#people-toggle").await;
    a.wait_text("#people li", "Cy").await;

    // Before control moves, B's and C's keys don't reach the desktop: B's page sends
    // none, C's sends them (view-only switched off, as a modified page would) and the
    // relay drops them.
    b.click(XTERM_SPOT).await;
    b.type_text("B-early\n").await;
    c.call(json!({"cmd": "ignoreViewOnly"})).await;
    c.click(XTERM_SPOT).await;
    c.type_text("C-was-here\n").await;

    // B asks in the page; A gives in the page.
    b.press("#control-request").await;
    b.wait_text("#control-line", "you asked for control").await;
    a.wait_text("#requests .request", "Ann asks for control")
        .await;
    a.press("#requests button.give").await;
    b.wait_control("driving").await;
    b.wait_text("#control-line", "you have control").await;
    // Driving, B may send its clipboard and resize again.
    let open = b
        .eval("[document.getElementById('clipboard-send').disabled, document.querySelector('#resize option[value=remote]').disabled]")
        .await;
    assert_eq!(open, json!([false, false]));
    let state = a.wait_control("waiting").await;
    assert_eq!(state["control"]["line"], "Ann has control", "{state}");
    a.wait_text("#not-driving", "not in control").await;
    a.wait_text("#control-take", "Take control").await;
    c.wait_text("#control-line", "Ann has control").await;

    b.click(XTERM_SPOT).await;
    b.type_text("B-drives\n").await;
    wait_typed(&typed, "B-drives\n").await;
    // A's keys no longer reach the desktop; B's marker typed after them shows that
    // everything before it arrived (x11vnc applies input in order).
    a.click(XTERM_SPOT).await;
    a.type_text("A-not-driving\n").await;
    b.type_text("B-marker\n").await;
    wait_typed(&typed, "B-marker\n").await;
    let got = std::fs::read_to_string(&typed).expect("read the typed file");
    for absent in ["B-early", "C-was-here", "A-not-driving"] {
        assert!(
            !got.contains(absent),
            "{absent} reached the desktop: {got:?}"
        );
    }
    // C's page did send (the relay dropped it as view-only); the pages of sessions that
    // didn't drive sent nothing for the relay to drop.
    assert!(dropped(&stack.relay, "view").await > 0.0);
    for relay in [&stack.relay, &relay_2] {
        assert_eq!(dropped(relay, "not_driver").await, 0.0, "{}", relay.node_id);
    }

    // A takes control back.
    a.press("#control-take").await;
    a.wait_control("driving").await;
    let state = b.wait_control("waiting").await;
    assert_eq!(state["control"]["line"], "alice has control", "{state}");
    b.type_text("B-after-take\n").await;
    a.click(XTERM_SPOT).await;
    a.type_text("A-again\n").await;
    wait_typed(&typed, "A-again\n").await;
    let got = std::fs::read_to_string(&typed).expect("read the typed file");
    assert!(!got.contains("B-after-take"), "{got:?}");
    assert_eq!(
        dropped(&relay_2, "not_driver").await,
        0.0,
        "B's page sent keys"
    );

    // Revoking the share links ends B's and C's sessions for good, in words; A goes on.
    for share in [&control_share, &view_share] {
        let (status, body) = control
            .call("DELETE", &format!("/v1/shares/{share}"), Some(&alice), None)
            .await
            .expect("DELETE /v1/shares/{id}");
        assert_eq!(status, 200, "{body}");
    }
    for guest in [&mut b, &mut c] {
        let state = guest.wait_state("disconnected", 1).await;
        assert_eq!(state["code"], 4003, "{state}");
        assert_eq!(state["reason"], "share revoked", "{state}");
        let text = state["statusText"].as_str().unwrap_or_default();
        assert!(text.contains("the share link was revoked"), "{state}");
        assert_eq!(
            state["attempts"], 0,
            "a revoked share is not retried: {state}"
        );
        guest
            .wait_text("#status", "the share link was revoked")
            .await;
    }
    let state = a
        .wait_for("window.vncViewer.control.people.length === 1")
        .await;
    assert_eq!(state["status"], "connected", "{state}");
    assert_eq!(state["sessions"], 1, "A's session went on: {state}");
    assert_eq!(state["control"]["mode"], "driving", "{state}");
    a.type_text("A-after-revoke\n").await;
    wait_typed(&typed, "A-after-revoke\n").await;

    for browser in [a, b, c] {
        browser.close().await;
    }
}
