//! The viewer's fit to the window against TigerVNC's Xvnc, which honours SetDesktopSize
//! (x11vnc does not): a control session's page (`resize=remote`, its default) makes the
//! X screen the size of the page's remote area, and follows the window when it
//! changes; a view session's page scales and leaves the X screen as it was.
//! Real Redis, the real relay serving `web/`, Xvnc and headless chromium.

use serde_json::json;
use vnc_shared::token::Scope;
use vnc_tests::browser::{Browser, XvncStack};

/// The X screen Xvnc starts with; the page's windows are all of another size.
const START: (u16, u16) = (1024, 768);

/// The remote area the control page is given: its window is this plus the page's bar.
const WANT: (u16, u16) = (1000, 700);

/// The Xvnc stack, with what these tests ask of it.
struct ResizeStack(XvncStack);

async fn stack() -> Option<ResizeStack> {
    XvncStack::start(START).await.map(ResizeStack)
}

impl ResizeStack {
    fn url(&self, scope: Scope, extra: &str) -> String {
        let token = self.0.keys.token(XvncStack::CID, scope);
        self.0.url(&token, extra)
    }

    async fn screen(&self) -> (u16, u16) {
        self.0.xvnc.screen_size().await.expect("xdpyinfo")
    }

    /// Waits until the X screen is `want` (xdpyinfo), failing with the last size seen.
    async fn wait_screen(&self, want: (u16, u16)) {
        let mut last = None;
        let found = tokio::time::timeout(vnc_tests::WAIT, async {
            loop {
                let now = self.screen().await;
                if now == want {
                    return;
                }
                last = Some(now);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "the X screen is {last:?}, not {want:?} (xdpyinfo)"
        );
    }
}

/// The height of the page above its remote area (the bar): the window is the remote
/// area plus this.
async fn bar_height(browser: &mut Browser) -> u32 {
    let bar = browser
        .eval("window.innerHeight - document.getElementById('screen').clientHeight")
        .await;
    bar.as_u64().expect("the bar's height") as u32
}

/// A control session's page resizes the X screen to its remote area (1000×700), and
/// again when its window changes; the page says it fits by `remote`.
#[tokio::test]
async fn a_control_page_resizes_the_x_screen_to_its_window() {
    let Some(s) = stack().await else {
        return;
    };
    assert_eq!(s.screen().await, START);
    let mut browser = Browser::start().await;
    let opened = browser
        .call(
            json!({"cmd": "open", "url": s.url(Scope::Control, ""), "width": 1280, "height": 830}),
        )
        .await;
    assert_eq!(
        opened["state"]["resize"], "remote",
        "the default for control"
    );
    browser.wait_state("connected", 1).await;
    let bar = bar_height(&mut browser).await;
    // First the window it opened with, then 1000×700 of remote area.
    s.wait_screen((1280, 830 - bar as u16)).await;
    browser
        .viewport(u32::from(WANT.0), u32::from(WANT.1) + bar)
        .await;
    s.wait_screen(WANT).await;
    let state = browser.state().await;
    assert_eq!(state["resizeEffective"], "remote", "{state}");
    // The page's own picture follows: noVNC's framebuffer is the new size.
    browser
        .wait_for(
            "window.vncViewer.rfb._fbWidth === 1000 && window.vncViewer.rfb._fbHeight === 700",
        )
        .await;
    browser.close().await;
}

/// A view session's page scales the picture and never resizes the X screen: not when
/// it connects, nor when its window changes. Barrier: after the window change the
/// root window is painted a new colour and the page shows it, so every message the
/// page sent before its next update request (a SetDesktopSize too) has reached Xvnc.
#[tokio::test]
async fn a_view_page_scales_and_leaves_the_x_screen_alone() {
    let Some(s) = stack().await else {
        return;
    };
    let mut browser = Browser::start().await;
    // A view link asking for remote resize gets scale, with a notice.
    let opened = browser
        .call(json!({"cmd": "open", "url": s.url(Scope::View, "&resize=remote"), "width": 1000, "height": 730}))
        .await;
    assert_eq!(opened["state"]["resize"], "scale", "{}", opened["state"]);
    browser.wait_state("connected", 1).await;
    browser.viewport(900, 600).await;
    let teal = (0x20, 0x9a, 0x8c);
    let status =
        s.0.xvnc
            .x_command("xsetroot")
            .args(["-solid", "#209a8c"])
            .status()
            .await
            .expect("xsetroot");
    assert!(status.success());
    browser.wait_pixel((START.0 - 10, START.1 - 10), teal).await;
    assert_eq!(s.screen().await, START, "a view page resized the X screen");
    let state = browser.state().await;
    assert_eq!(state["resizeEffective"], "scale", "{state}");
    assert!(
        state["abilities"]["resizeRemote"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("view-only")),
        "{state}"
    );
    // The remote option is greyed out with its reason, not hidden.
    let greyed = browser
        .eval("(() => { const o = document.querySelector('#resize option[value=remote]'); return [o.disabled, o.title, document.getElementById('resize-reason').textContent]; })()")
        .await;
    assert_eq!(greyed[0], true, "{greyed}");
    assert!(
        greyed[2].as_str().is_some_and(|t| t.contains("view-only")),
        "{greyed}"
    );
    browser.close().await;
}

/// The page's quality and compression settings reach noVNC and the URL fragment.
#[tokio::test]
async fn quality_and_compression_are_settings_kept_in_the_fragment() {
    let Some(s) = stack().await else {
        return;
    };
    let mut browser = Browser::start().await;
    browser
        .open(&s.url(Scope::Control, "&quality=2&compression=7&resize=scale"))
        .await;
    browser.wait_state("connected", 1).await;
    let levels = browser
        .eval("[window.vncViewer.rfb.qualityLevel, window.vncViewer.rfb.compressionLevel, window.vncViewer.resizeEffective]")
        .await;
    assert_eq!(levels, json!([2, 7, "scale"]));
    browser.press("#settings-toggle").await;
    browser
        .call(json!({"cmd": "eval", "expr": "(() => { const q = document.getElementById('quality'); q.value = '8'; q.dispatchEvent(new Event('change')); })()"}))
        .await;
    let after = browser
        .eval("[window.vncViewer.rfb.qualityLevel, location.hash.includes('quality=8')]")
        .await;
    assert_eq!(after, json!([8, true]));
    browser.close().await;
}
