// The viewer: one noVNC session to one container through a relay, full window.
// Reads what to open from the URL (see params.js), shows the session's state in the
// status line, reconnects after a drain, and carries the clipboard both ways.

import RFB from './node_modules/@novnc/novnc/core/rfb.js';
import { readParams, secondsLeft } from './params.js';
import { MAX_ATTEMPTS, RETRY_CODES, backoff, describeClose } from './close-codes.js';

const $ = (id) => document.getElementById(id);
const params = readParams(window.location.href);
const viewOnly = params.claims?.scope === 'view';

// What the page is doing, for people reading the console and for the browser tests.
const state = {
  status: 'idle', // idle | connecting | connected | reconnecting | disconnected
  text: '',
  code: null, // close code of the session or attempt that ended last, until the next one is up
  reason: '',
  lastClose: null, // {code, reason, endpoint, opened} of the last end, kept across reconnects
  transport: params.transport,
  relays: params.relays.map((r) => r.ws),
  endpoint: null, // the relay (ws origin) of the current or last attempt
  attempts: 0, // reconnect attempts since the last established session
  sessions: 0, // sessions established since the page loaded
  viewOnly,
  clipboard: '', // last text the desktop put on its clipboard
  rfb: null,
};
window.vncViewer = state;

let endpointIndex = 0;
let generation = 0; // bumped per attempt: late events of an old attempt are ignored
let retryTimer = null;
let closedByUser = false;

function setStatus(status, text, code = null) {
  state.status = status;
  state.text = text;
  const el = $('status');
  el.dataset.state = status;
  el.dataset.code = code ?? '';
  el.textContent = text;
  document.title = `${status} · VNC viewer`;
}

/** Opens the channel noVNC talks RFB over: a WebSocket, or a socket.io channel. */
async function openChannel(relay) {
  if (state.transport === 'socketio') {
    // Served by the relay next to this page; a channel object noVNC accepts as is.
    const { connect } = await import('/static/vnc-socketio.js');
    return connect(relay.http, params.token, params.containerId);
  }
  const url = `${relay.ws}/websockify?token=${encodeURIComponent(params.token)}`;
  return new WebSocket(url, ['binary']);
}

async function connect() {
  const gen = ++generation;
  clearTimeout(retryTimer);
  closedByUser = false;
  dropSession();
  const relay = params.relays[endpointIndex % params.relays.length];
  state.endpoint = relay.ws;
  $('endpoint').textContent = relay.ws.replace(/^wss?:\/\//, '');
  setStatus('connecting', `connecting to ${relay.ws} over ${transportName()}…`);

  let channel;
  try {
    channel = await openChannel(relay);
  } catch (e) {
    if (gen === generation) ended(gen, { code: 1006, reason: String(e?.message ?? e) }, false);
    return;
  }
  if (gen !== generation) {
    channel.close?.();
    return;
  }

  let opened = false;
  let closeInfo = null;
  let rfb;
  try {
    rfb = new RFB($('screen'), channel, { shared: true });
  } catch (e) {
    ended(gen, { code: 1006, reason: String(e?.message ?? e) }, false);
    return;
  }
  // noVNC takes the channel's onclose when it attaches (in the constructor) and tells
  // only clean/unclean; wrap it to learn the relay's close code and reason.
  const inner = channel.onclose;
  channel.onclose = (e) => {
    closeInfo = { code: e?.code ?? 1006, reason: e?.reason ?? '' };
    inner?.call(channel, e);
  };
  rfb.scaleViewport = true;
  rfb.background = 'rgb(24, 24, 28)';
  // The relay enforces the scope; not sending input a view token may not send keeps a
  // view-only session from tripping the relay's filter at every mouse move.
  rfb.viewOnly = viewOnly;
  state.rfb = rfb;

  rfb.addEventListener('connect', () => {
    if (gen !== generation) return;
    opened = true;
    state.attempts = 0;
    state.sessions += 1;
    state.code = null;
    state.reason = '';
    setStatus('connected', `connected to ${params.containerId} through ${relay.ws} (${transportName()})`);
    rfb.focus({ preventScroll: true });
  });
  rfb.addEventListener('disconnect', (e) => {
    ended(gen, closeInfo ?? { code: e.detail?.clean ? 1000 : 1006, reason: '' }, opened);
  });
  rfb.addEventListener('securityfailure', (e) => {
    closeInfo = { code: 1008, reason: `VNC security failure: ${e.detail?.reason ?? e.detail?.status}` };
  });
  rfb.addEventListener('credentialsrequired', () => {
    // The relay answers the desktop's VNC password itself; a prompt here means it did not.
    setStatus('connecting', 'the desktop asks for a VNC password the relay did not answer');
  });
  rfb.addEventListener('desktopname', (e) => {
    $('desktop').textContent = e.detail?.name ?? '';
  });
  rfb.addEventListener('clipboard', (e) => {
    state.clipboard = e.detail?.text ?? '';
    $('clipboard-text').value = state.clipboard;
    $('clipboard-note').textContent = 'from the desktop';
  });
}

/** A session or attempt ended: say why, and try again when that can help. */
function ended(gen, info, opened) {
  if (gen !== generation) return;
  state.rfb = null;
  state.code = info.code;
  state.reason = info.reason;
  state.lastClose = { code: info.code, reason: info.reason, endpoint: state.endpoint, opened };
  const words = describeClose(info.code, info.reason, opened);
  if (closedByUser) {
    setStatus('disconnected', 'disconnected', info.code);
    return;
  }
  // A connect that failed before the session was set up (1006: refused or unreachable)
  // is retried too: the next endpoint may take it.
  const retry = RETRY_CODES.has(info.code);
  const left = secondsLeft(params.claims);
  if (retry && left !== null && left <= 0) {
    setStatus('disconnected', `disconnected: ${words}; the token has expired, ask for a new link`, info.code);
    return;
  }
  if (!retry || state.attempts >= MAX_ATTEMPTS) {
    const tail = retry ? ` (gave up after ${state.attempts} attempts)` : '';
    setStatus('disconnected', `disconnected: ${words}${tail}`, info.code);
    return;
  }
  state.attempts += 1;
  // Next endpoint: a draining relay refuses new sessions, another node takes them.
  endpointIndex = (endpointIndex + 1) % params.relays.length;
  const delay = backoff(state.attempts);
  setStatus(
    'reconnecting',
    `${words}; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${state.attempts} of ${MAX_ATTEMPTS})…`,
    info.code,
  );
  retryTimer = setTimeout(connect, delay);
}

function dropSession() {
  const rfb = state.rfb;
  state.rfb = null;
  if (rfb) {
    try {
      rfb.disconnect();
    } catch {
      // already closed
    }
  }
}

function transportName() {
  return state.transport === 'socketio' ? 'socket.io' : 'WebSocket';
}

/** Keeps the URL (fragment) in step with a setting changed on the page. */
function rememberInFragment(name, value) {
  const url = new URL(window.location.href);
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ''));
  fragment.set(name, value);
  url.hash = fragment.toString();
  history.replaceState(null, '', url);
}

function setUp() {
  const transport = $('transport');
  transport.value = state.transport;
  transport.addEventListener('change', () => {
    state.transport = transport.value;
    rememberInFragment('transport', state.transport);
    state.attempts = 0;
    connect();
  });
  $('reconnect').addEventListener('click', () => {
    state.attempts = 0;
    connect();
  });
  $('disconnect').addEventListener('click', () => {
    closedByUser = true;
    clearTimeout(retryTimer);
    if (state.rfb) state.rfb.disconnect();
    else setStatus('disconnected', 'disconnected');
  });
  $('clipboard-toggle').addEventListener('click', () => {
    const panel = $('clipboard-panel');
    panel.hidden = !panel.hidden;
  });
  $('clipboard-send').addEventListener('click', () => {
    if (!state.rfb) return;
    state.rfb.clipboardPasteFrom($('clipboard-text').value);
    $('clipboard-note').textContent = 'sent to the desktop';
  });

  if (viewOnly) {
    $('scope').hidden = false;
    $('clipboard-send').disabled = true;
  }
  if (params.claims) {
    const c = params.claims;
    const exp = typeof c.exp === 'number' ? new Date(c.exp * 1000).toLocaleString() : 'no expiry';
    $('token-info').title = `user ${c.sub ?? '?'} · tenant ${c.tenant ?? '?'} · scope ${c.scope ?? '?'} · token expires ${exp}`;
  }
  if (params.problems.length) {
    setStatus('disconnected', params.problems.join('; '));
    return;
  }
  const left = secondsLeft(params.claims);
  if (left !== null && left <= 0) {
    setStatus('disconnected', 'the token has expired: ask for a new link');
    return;
  }
  connect();
}

setUp();
