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

/** Transports the viewer speaks. */
export const TRANSPORTS = ['ws', 'socketio'];

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
  return { token, containerId, relays, transport, share, claims, problems };
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

/** Seconds until the token expires (negative once it has); null without `exp`. */
export function secondsLeft(claims, nowMs = Date.now()) {
  if (!claims || typeof claims.exp !== 'number') return null;
  return claims.exp - Math.floor(nowMs / 1000);
}
