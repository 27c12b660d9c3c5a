//! The viewer's clipboard without its panel, against TigerVNC's Xvnc (which keeps the X
//! clipboard and the RFB clipboard in step): with the browser's clipboard permissions
//! granted, text set in the X clipboard (`xclip`) lands on the browser's clipboard, and
//! text on the browser's clipboard reaches the X clipboard when the page gets focus.
//! Without the permission the page says the panel is the way, and the panel still
//! works. Real Redis, the real relay serving `web/`, Xvnc and headless chromium.

use serde_json::json;
use vnc_shared::token::Scope;
use vnc_tests::browser::{Browser, PAGE_WAIT_MS, XvncStack};
use vnc_tests::desktop::Xvnc;
use vnc_tests::process::eventually;

/// Waits until the X CLIPBOARD selection holds `want`.
async fn wait_x_clipboard(xvnc: &Xvnc, want: &str) {
    eventually(
        &format!("{want:?} in the X clipboard"),
        std::time::Duration::from_millis(PAGE_WAIT_MS),
        || async { (xvnc.clipboard().await.ok()? == want).then_some(()) },
    )
    .await
}

#[tokio::test]
async fn the_clipboard_syncs_both_ways_without_the_panel_when_the_browser_allows_it() {
    let Some(stack) = XvncStack::start((1024, 768)).await else {
        return;
    };
    let xvnc = &stack.xvnc;
    let url = stack.url(&stack.keys.token(XvncStack::CID, Scope::Control), "");

    let mut browser = Browser::start().await;
    browser
        .call(json!({"cmd": "open", "url": url, "permissions": ["clipboard-read", "clipboard-write"]}))
        .await;
    browser.wait_state("connected", 1).await;
    browser
        .wait_for("window.vncViewer.clipboardSync.read === 'granted'")
        .await;
    browser.press("#clipboard-toggle").await;
    browser
        .wait_text("#clipboard-auto", "synced automatically")
        .await;

    // Desktop → browser: the page writes it to the browser's clipboard.
    xvnc.set_clipboard("copied on the desktop").await.unwrap();
    browser
        .wait_for("window.vncViewer.clipboardSync.lastWritten === 'copied on the desktop'")
        .await;
    let read = browser.eval("navigator.clipboard.readText()").await;
    assert_eq!(read, "copied on the desktop");

    // Browser → desktop: something else copied in the browser, then the page gets focus.
    browser
        .eval("navigator.clipboard.writeText('copied in the browser').then(() => window.dispatchEvent(new Event('focus')))")
        .await;
    wait_x_clipboard(xvnc, "copied in the browser").await;
    let state = browser.state().await;
    assert_eq!(state["clipboardSync"]["sent"], 1, "{state}");
    // Focus again with nothing new: nothing is sent again.
    browser
        .eval("window.dispatchEvent(new Event('focus'))")
        .await;
    xvnc.set_clipboard("second desktop text").await.unwrap();
    browser
        .wait_for("window.vncViewer.clipboardSync.lastWritten === 'second desktop text'")
        .await;
    let state = browser.state().await;
    assert_eq!(state["clipboardSync"]["sent"], 1, "{state}");
    browser.close().await;

    // No permission: the page says so, and the panel carries the text.
    let mut browser = Browser::start().await;
    browser.open(&url).await;
    browser.wait_state("connected", 1).await;
    browser.press("#clipboard-toggle").await;
    browser.wait_text("#clipboard-auto", "use this panel").await;
    browser.fill("#clipboard-text", "typed in the panel").await;
    browser.press("#clipboard-send").await;
    wait_x_clipboard(xvnc, "typed in the panel").await;
    browser.close().await;
}
