// The clipboard, both ways, without the panel when the browser lets the page: text the
// desktop copies is written to the browser's clipboard (navigator.clipboard.writeText),
// and when the page gets focus, or something is pasted into it, the browser's
// clipboard is read and sent to the desktop if it changed (noVNC's
// clipboardPasteFrom). The Clipboard panel (clipboard-text, clipboard-send) stays the
// fallback. Each way only when the session may (abilities.js); the relay enforces it.

const $ = (id) => document.getElementById(id);

/**
 * `sync` is the page state's clipboard part (shown on window.vncViewer.clipboardSync),
 * `rfb()` the current noVNC session or null, `ability()` the current abilities.
 * Returns `{fromDesktop(text), render()}`.
 */
export function setUpClipboard({ sync, rfb, ability }) {
  // Last text known on both sides: what the desktop sent or the page sent. A read that
  // finds it again is not sent back (no echo of the desktop's own text).
  let last = '';

  async function permission(name) {
    try {
      return (await navigator.permissions.query({ name })).state;
    } catch {
      return 'unavailable';
    }
  }

  async function learnPermissions() {
    sync.read = navigator.clipboard?.readText ? await permission('clipboard-read') : 'unavailable';
    sync.write = navigator.clipboard?.writeText ? await permission('clipboard-write') : 'unavailable';
    render();
  }

  /** Sends `text` to the desktop when it is new and the session may. */
  function toDesktop(text, how) {
    const session = rfb();
    if (typeof text !== 'string' || !text || text === last || !session) return;
    if (!ability().toDesktop.ok) return;
    last = text;
    session.clipboardPasteFrom(text);
    sync.sent += 1;
    sync.lastSent = text;
    $('clipboard-text').value = text;
    $('clipboard-note').textContent = `sent to the desktop (${how})`;
  }

  /** Reads the browser's clipboard (needs the permission, or a prompt the user answers). */
  async function readBrowser() {
    if (sync.read !== 'granted' || !navigator.clipboard?.readText) return;
    try {
      toDesktop(await navigator.clipboard.readText(), 'automatically');
    } catch (e) {
      sync.error = String(e?.message ?? e);
    }
  }

  /** The desktop copied `text`: shown in the panel, and on the browser's clipboard. */
  async function fromDesktop(text) {
    last = text;
    $('clipboard-text').value = text;
    $('clipboard-note').textContent = 'from the desktop';
    if (!ability().fromDesktop.ok || sync.write === 'denied' || !navigator.clipboard?.writeText) return;
    try {
      await navigator.clipboard.writeText(text);
      sync.written += 1;
      sync.lastWritten = text;
    } catch (e) {
      // Not focused, or not allowed: the panel has it.
      sync.error = String(e?.message ?? e);
    }
  }

  function render() {
    const can = ability();
    const send = $('clipboard-send');
    send.disabled = !can.toDesktop.ok;
    send.title = can.toDesktop.ok ? 'put this text on the desktop\'s clipboard' : can.toDesktop.reason;
    const reasons = [];
    if (!can.toDesktop.ok) reasons.push(`To the desktop: ${can.toDesktop.reason}`);
    if (!can.fromDesktop.ok) reasons.push(`From the desktop: ${can.fromDesktop.reason}`);
    $('clipboard-reason').textContent = reasons.join(' · ');
    const auto = sync.read === 'granted' ? 'synced automatically' : 'automatic sync needs the browser\'s clipboard permission: use this panel';
    $('clipboard-auto').textContent = auto;
    $('clipboard-toggle').classList.toggle('off', !can.toDesktop.ok && !can.fromDesktop.ok);
  }

  window.addEventListener('focus', readBrowser);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') readBrowser();
  });
  // A paste into the page carries its text: no permission needed. Not a paste into one
  // of the page's own fields (the panel, the name prompt): that text is for the field.
  window.addEventListener('paste', (e) => {
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t?.isContentEditable) return;
    toDesktop(e.clipboardData?.getData('text/plain') ?? '', 'pasted');
  });
  $('clipboard-send').addEventListener('click', () => {
    last = '';
    toDesktop($('clipboard-text').value, 'from the panel');
  });
  learnPermissions();
  return { fromDesktop, render, readBrowser };
}
