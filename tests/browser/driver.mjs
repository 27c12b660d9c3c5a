// Drives Debian's chromium (headless, through playwright-core) for the browser tests in
// tests/tests/browser.rs and browser_sharing.rs, which start the real stack and then talk
// to this script (through tests/src/browser.rs).
//
// Protocol: one JSON command per line on stdin, one JSON answer per line on stdout
// (`{"ok":true,...}` or `{"ok":false,"error":"..."}`), in order. Commands:
//
//   {"cmd":"open","url":U,"width":W?,"height":H?,"permissions":[P]?}
//                                                 load the viewer page in a new context
//                                                 (viewport W×H, permissions granted to
//                                                 it, e.g. clipboard-read)
//   {"cmd":"state"}                               the page's window.vncViewer
//   {"cmd":"waitState","status":S,"timeoutMs":N,"sessions":K?}
//                                                 until the page's status is S (and,
//                                                 if given, at least K sessions were set up)
//   {"cmd":"pixel","x":X,"y":Y}                   [r,g,b] of the remote screen at X,Y
//   {"cmd":"waitPixel","x":X,"y":Y,"rgb":[r,g,b],"tolerance":T,"timeoutMs":N}
//   {"cmd":"click","x":X,"y":Y}                   a click on the remote screen at X,Y
//   {"cmd":"type","text":T}                       keystrokes to the focused page
//   {"cmd":"ignoreViewOnly"}                      make noVNC send input although the token
//                                                 is view-only (what a modified page does)
//   {"cmd":"waitControl","mode":M,"timeoutMs":N}  until the page's control.mode is M
//                                                 (unknown, view, shared, driving, waiting)
//   {"cmd":"waitFor","expr":E,"timeoutMs":N}     until the JavaScript expression E is true
//                                                 in the page (e.g. about window.vncViewer)
//   {"cmd":"press","selector":S}                  a click on the page's element S (a button)
//   {"cmd":"fill","selector":S,"text":T}          T typed into the input field S
//   {"cmd":"text","selector":S}                   the text of element S, and whether it is
//                                                 visible
//   {"cmd":"waitText","selector":S,"text":T,"timeoutMs":N}
//                                                 until element S is visible and its text
//                                                 holds T
//   {"cmd":"viewport","width":W,"height":H}      resize the page's window (its viewport)
//   {"cmd":"eval","expr":E}                       the JSON value of expression E in the page
//   {"cmd":"dropFile","name":N,"size":S,"seed":K,"selector":T?}
//                                                 build a file of S bytes (xorshift32
//                                                 from seed K) in the page and drop it on
//                                                 element T (default #screen) as a
//                                                 DataTransfer; answers its SHA-256 (hex)
//   {"cmd":"download","selector":S,"path":P,"timeoutMs":N}
//                                                 click S and save the download it starts
//                                                 to P; answers its suggested name
//   {"cmd":"screenshot","path":P}
//   {"cmd":"close"}
//
// Remote screen coordinates are framebuffer pixels; the script maps them through
// noVNC's scaling. Chromium: $CHROMIUM or /usr/bin/chromium.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let browser = null;
let page = null;
const consoleLines = [];

const NETWORK_CHANGED = 'ERR_NETWORK_CHANGED';

async function open({ url, width = 1280, height = 830, permissions = [] }) {
  if (!browser) {
    // launch() gives every run a fresh temporary --user-data-dir and removes it after.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
  }
  // Chromium aborts a page's loads when the machine's network interfaces change
  // (ERR_NETWORK_CHANGED), as they do whenever a Docker container starts or stops: a
  // load that failed so is tried again (3 times at most), each time in a fresh context
  // (no load it cached, failed or not, carries over); any other failure is not.
  for (let attempt = 1; ; attempt++) {
    const context = await browser.newContext({ viewport: { width, height }, permissions });
    page = await context.newPage();
    page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
    const seen = consoleLines.length;
    try {
      await page.goto(url, { waitUntil: 'load' });
      await page.waitForFunction(() => window.vncViewer !== undefined, null, { timeout: 20_000 });
      break;
    } catch (e) {
      const changed = String(e).includes(NETWORK_CHANGED)
        || consoleLines.slice(seen).some((line) => line.includes(NETWORK_CHANGED));
      if (!changed || attempt === 3) throw e;
      consoleLines.push(`driver: load ${attempt} hit ${NETWORK_CHANGED}; trying again`);
      await context.close();
    }
  }
  return { state: await viewerState() };
}

function viewerState() {
  return page.evaluate(() => {
    const { rfb, ...rest } = window.vncViewer;
    return { ...rest, hasSession: rfb !== null, statusText: document.getElementById('status').textContent };
  });
}

async function waitState({ status, sessions = 0, timeoutMs = 10_000 }) {
  try {
    await page.waitForFunction(
      ([s, k]) => window.vncViewer.status === s && window.vncViewer.sessions >= k,
      [status, sessions],
      { timeout: timeoutMs, polling: 50 },
    );
  } catch {
    throw new Error(`status is not ${status} (sessions >= ${sessions}): ${JSON.stringify(await viewerState())}`);
  }
  return { state: await viewerState() };
}

// The canvas noVNC draws the remote screen on, read in framebuffer coordinates.
function readPixel([x, y]) {
  const canvas = document.querySelector('#screen canvas');
  if (!canvas || !window.vncViewer.rfb) return null;
  const d = canvas.getContext('2d').getImageData(x, y, 1, 1).data;
  return [d[0], d[1], d[2]];
}

async function pixel({ x, y }) {
  return { rgb: await page.evaluate(readPixel, [x, y]) };
}

async function waitPixel({ x, y, rgb, tolerance = 0, timeoutMs = 10_000 }) {
  const close = (p) => p && p.every((v, i) => Math.abs(v - rgb[i]) <= tolerance);
  const deadline = Date.now() + timeoutMs;
  let last = null;
  for (;;) {
    last = await page.evaluate(readPixel, [x, y]);
    if (close(last)) return { rgb: last };
    if (Date.now() > deadline) {
      throw new Error(`pixel ${x},${y} is ${JSON.stringify(last)}, not ${JSON.stringify(rgb)} ±${tolerance}`);
    }
    await page.waitForTimeout(50);
  }
}

async function click({ x, y }) {
  const at = await page.evaluate(([fx, fy]) => {
    const canvas = document.querySelector('#screen canvas');
    const r = canvas.getBoundingClientRect();
    return [r.left + ((fx + 0.5) * r.width) / canvas.width, r.top + ((fy + 0.5) * r.height) / canvas.height];
  }, [x, y]);
  await page.mouse.click(at[0], at[1]);
  return { at };
}

async function type({ text }) {
  await page.keyboard.type(text, { delay: 15 });
  return {};
}

async function ignoreViewOnly() {
  await page.evaluate(() => {
    window.vncViewer.rfb.viewOnly = false;
  });
  return {};
}

async function waitControl({ mode, timeoutMs = 10_000 }) {
  try {
    await page.waitForFunction((m) => window.vncViewer.control?.mode === m, mode, { timeout: timeoutMs, polling: 50 });
  } catch {
    throw new Error(`control mode is not ${mode}: ${JSON.stringify(await viewerState())}`);
  }
  return { state: await viewerState() };
}

async function waitFor({ expr, timeoutMs = 10_000 }) {
  try {
    await page.waitForFunction(expr, null, { timeout: timeoutMs, polling: 50 });
  } catch {
    throw new Error(`not true in time: ${expr}; state: ${JSON.stringify(await viewerState())}`);
  }
  return { state: await viewerState() };
}

async function press({ selector }) {
  await page.click(selector, { timeout: 5_000 });
  return {};
}

async function fill({ selector, text }) {
  await page.fill(selector, text, { timeout: 5_000 });
  return {};
}

async function text({ selector }) {
  const el = page.locator(selector).first();
  return { text: await el.textContent({ timeout: 5_000 }), visible: await el.isVisible() };
}

async function waitText({ selector, text: want, timeoutMs = 10_000 }) {
  const el = page.locator(selector).filter({ hasText: want }).first();
  try {
    await el.waitFor({ state: 'visible', timeout: timeoutMs });
  } catch {
    const all = await page.locator(selector).allTextContents();
    throw new Error(`no visible ${selector} says ${JSON.stringify(want)}: ${JSON.stringify(all)}`);
  }
  return { text: await el.textContent() };
}

async function viewport({ width, height }) {
  await page.setViewportSize({ width, height });
  return {};
}

async function evaluate({ expr }) {
  return { value: await page.evaluate(expr) };
}

// The file is made in the page (no 50 MB over the driver's pipe) and hashed there, so
// the test compares what the page sent with what arrived.
async function dropFile({ name, size, seed = 1, selector = '#screen' }) {
  const sha256 = await page.evaluate(
    async ([n, len, k, sel]) => {
      const bytes = new Uint8Array(len);
      let x = k >>> 0 || 1;
      for (let i = 0; i < len; i += 1) {
        x ^= x << 13;
        x >>>= 0;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        bytes[i] = x & 0xff;
      }
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
      const file = new File([bytes], n, { type: 'application/octet-stream' });
      const dt = new DataTransfer();
      dt.items.add(file);
      const target = document.querySelector(sel);
      for (const type of ['dragenter', 'dragover', 'drop']) {
        target.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
      }
      return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
    },
    [name, size, seed, selector],
  );
  return { sha256 };
}

async function download({ selector, path, timeoutMs = 10_000 }) {
  const [dl] = await Promise.all([
    page.waitForEvent('download', { timeout: timeoutMs }),
    page.click(selector, { timeout: 5_000 }),
  ]);
  await dl.saveAs(path);
  return { name: dl.suggestedFilename() };
}

async function screenshot({ path }) {
  await page.screenshot({ path });
  return { path };
}

const commands = {
  open, state: async () => ({ state: await viewerState() }), waitState, pixel, waitPixel, click, type,
  ignoreViewOnly, waitControl, waitFor, press, fill, text, waitText, screenshot, viewport,
  eval: evaluate, dropFile, download,
};

async function handle(line) {
  const msg = JSON.parse(line);
  if (msg.cmd === 'close') return { ok: true, close: true };
  const run = commands[msg.cmd];
  if (!run) throw new Error(`unknown command ${msg.cmd}`);
  if (msg.cmd !== 'open' && !page) throw new Error('no page: send "open" first');
  return { ok: true, ...(await run(msg)) };
}

const reply = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const input = createInterface({ input: process.stdin });
for await (const line of input) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = await handle(line);
  } catch (e) {
    answer = { ok: false, error: String(e?.message ?? e), console: consoleLines.slice(-20) };
  }
  reply(answer);
  if (answer.close) break;
}
if (browser) await browser.close();
