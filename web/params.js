// What the viewer is asked to open: read from the page URL. Pure functions (no DOM),
// so they can be tested under node.
//
// URL format (the fragment is preferred: browsers never send it to a server, so the
// token stays out of access logs; the query works too, fragment wins):
//
//   http://RELAY/#token=JWT&containerId=CID&relays=ws://a:6080,ws://b:6080&transport=ws
//
//   token        the VNC token (required)
//   containerId  the container to open (default: the token's `cid` claim)
//   relays       relay endpoints to use, comma separated, tried in order; after a drain
//                (close 1001) or a failed connect the viewer moves on to the next one.
//                Each is `ws://host:port`, `wss://host:port`, `http(s)://host:port` or
//                `host:port`. Default: the relay that served the page.
//   transport    `ws` (raw WebSocket at /websockify, the default) or `socketio`
//                (socket.io namespace /vnc through the relay's /static/vnc-socketio.js);
//                a share link defaults to `socketio`: who is here and who drives, and
//                handing control over, need it
//   share        `1` on a share link (control's share URL); a token with a `share`
//                claim counts as one too: the page asks for a display name first
//   control      control's API base (`https://control.example`, `http://127.0.0.1:8080`):
//                where the page moves files (PUT/GET /v1/containers/{id}/files…, the
//                VNC token as the bearer); without it the file buttons say why they are off
//   resize       `remote` (the remote desktop follows the window), `scale` (scaled to
//                fit) or `off` (1:1, scroll bars); default `remote` when the token may
//                drive, `scale` for a view token, which can't resize the remote desktop
//   quality      0..9, noVNC's qualityLevel (JPEG quality of Tight; default 6)
//   compression  0..9, noVNC's compressionLevel (default 2)

/** Transports the viewer speaks. */
export const TRANSPORTS = ['ws', 'socketio'];

/** How the remote screen fits the window: resized to it, scaled into it, or neither. */
export const RESIZE_MODES = ['remote', 'scale', 'off'];

/** noVNC's defaults for its quality and compression levels (both 0..9). */
export const DEFAULT_QUALITY = 6;
export const DEFAULT_COMPRESSION = 2;

/**
 * Reads the viewer's settings from a URL (a `URL` or a string).
 * Returns `{token, containerId, relays, transport, share, claims, problems}`; `problems` lists
 * what is missing or wrong, in words, empty when the page can connect.
 */
export function readParams(href) {
  const url = new URL(href);
  const query = url.searchParams;
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ''));
  const get = (name) => fragment.get(name) ?? query.get(name) ?? '';

  const problems = [];
  const token = get('token').trim();
  const claims = token ? decodeClaims(token) : null;
  if (!token) {
    problems.push('no token: open this page as …/#token=JWT&containerId=ID');
  } else if (!claims) {
    problems.push('the token is not a JWT (header.payload.signature)');
  }
  const containerId = get('containerId').trim() || (claims && typeof claims.cid === 'string' ? claims.cid : '');
  if (token && !containerId) {
    problems.push('no containerId and the token names none');
  }
  const share = get('share').trim() === '1' || typeof claims?.share === 'string';
  let transport = get('transport').trim().toLowerCase() || (share ? 'socketio' : 'ws');
  if (transport === 'socket.io') transport = 'socketio';
  if (!TRANSPORTS.includes(transport)) {
    problems.push(`unknown transport "${transport}" (ws or socketio)`);
    transport = 'ws';
  }
  const relays = [];
  for (const entry of get('relays').split(',')) {
    if (!entry.trim()) continue;
    const base = relayBase(entry, url);
    if (base) relays.push(base);
    else problems.push(`not a relay endpoint: "${entry.trim()}"`);
  }
  if (relays.length === 0) relays.push(relayBase(url.origin, url));
  // Settings of the picture: a bad value is named and replaced by the default, it does
  // not keep the page from connecting.
  const notes = [];
  const view = claims?.scope === 'view';
  const resize = resizeMode(get('resize'), view, notes);
  const quality = level(get('quality'), DEFAULT_QUALITY, 'quality', notes);
  const compression = level(get('compression'), DEFAULT_COMPRESSION, 'compression', notes);
  const control = controlBase(get('control'), notes);
  return {
    token, containerId, relays, transport, share, claims, problems,
    resize, quality, compression, control, notes,
  };
}

/**
 * The resize mode from the URL's `resize` (`''` for none). A view token can't resize
 * the remote desktop (its input, SetDesktopSize included, never reaches the server):
 * `remote` becomes `scale` for it, with a note.
 */
export function resizeMode(text, view, notes = []) {
  const asked = text.trim().toLowerCase();
  const fallback = view ? 'scale' : 'remote';
  if (!asked) return fallback;
  if (!RESIZE_MODES.includes(asked)) {
    notes.push(`unknown resize "${asked}" (remote, scale or off): using ${fallback}`);
    return fallback;
  }
  if (asked === 'remote' && view) {
    notes.push('a view-only session can\'t resize the remote desktop: scaling it instead');
    return 'scale';
  }
  return asked;
}

/** A level 0..9 from the URL (`''` for none): the default when absent or wrong. */
export function level(text, fallback, name, notes = []) {
  const t = text.trim();
  if (!t) return fallback;
  if (!/^[0-9]$/.test(t)) {
    notes.push(`${name} must be 0 to 9, not "${t}": using ${fallback}`);
    return fallback;
  }
  return Number(t);
}

/**
 * Control's API base from the URL's `control`: an http(s) URL, kept as origin plus path
 * without a trailing slash (`https://api.example/vnc`); `''` when absent or not one.
 */
export function controlBase(text, notes = []) {
  const t = text.trim();
  if (!t) return '';
  let u;
  try {
    u = new URL(t);
  } catch {
    u = null;
  }
  if (!u || !['http:', 'https:'].includes(u.protocol) || u.search || u.hash || u.username) {
    notes.push(`control must be an http(s) URL without query, not "${t}"`);
    return '';
  }
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

/**
 * Normalises one relay endpoint to `{ws, http}`: the WebSocket origin (`ws://h:p`) and
 * the HTTP origin (`http://h:p`) of the same relay; null if it is not one.
 * A bare `host:port` takes the page's security (https page → wss).
 */
export function relayBase(entry, page) {
  let text = entry.trim();
  if (!/^[a-z]+:\/\//i.test(text)) {
    text = `${page.protocol === 'https:' ? 'wss' : 'ws'}://${text}`;
  }
  let u;
  try {
    u = new URL(text);
  } catch {
    return null;
  }
  const secure = { 'wss:': true, 'https:': true, 'ws:': false, 'http:': false }[u.protocol];
  if (secure === undefined || !u.host) return null;
  return {
    ws: `${secure ? 'wss' : 'ws'}://${u.host}`,
    http: `${secure ? 'https' : 'http'}://${u.host}`,
  };
}

/**
 * The claims of a JWT, decoded without verifying it: for display only (scope, expiry).
 * The relay verifies the token; nothing here grants or refuses anything.
 */
export function decodeClaims(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/** Which way files may move (`files` claim; none when absent, as control reads it). */
export const FILE_POLICIES = ['none', 'upload', 'download', 'both'];
/** Which way the clipboard may move (`clipboard` claim; both when absent). */
export const CLIPBOARD_POLICIES = ['both', 'to_desktop', 'from_desktop', 'none'];

/**
 * The token's transfer policy as control and the relay read it: `{files, clipboard,
 * upload, download, toDesktop, fromDesktop}`. Absent claims get the defaults of
 * docs/architecture.md (no files, the clipboard both ways); an unknown value allows
 * nothing (the server refuses such a token anyway).
 */
export function policyOf(claims) {
  const files = claims?.files === undefined ? 'none' : claims.files;
  const clipboard = claims?.clipboard === undefined ? 'both' : claims.clipboard;
  const f = FILE_POLICIES.includes(files) ? files : 'none';
  const c = CLIPBOARD_POLICIES.includes(clipboard) ? clipboard : 'none';
  return {
    files: f,
    clipboard: c,
    upload: f === 'upload' || f === 'both',
    download: f === 'download' || f === 'both',
    toDesktop: c === 'to_desktop' || c === 'both',
    fromDesktop: c === 'from_desktop' || c === 'both',
  };
}

/** Seconds until the token expires (negative once it has); null without `exp`. */
export function secondsLeft(claims, nowMs = Date.now()) {
  if (!claims || typeof claims.exp !== 'number') return null;
  return claims.exp - Math.floor(nowMs / 1000);
}
