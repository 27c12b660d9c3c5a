// The viewer: one noVNC session to one container through a relay, full window.
// Reads what to open from the URL (see params.js), shows the session's state in the
// status line, reconnects after a drain, and carries the clipboard both ways. Over
// socket.io it also shows who is here and who drives, and hands control over
// (sharing.js); a share link asks for a display name first. Files move through control
// (files-panel.js), the clipboard syncs through the browser's Clipboard API
// (clipboard.js), and the picture's fit, quality and compression are settings kept in
// the URL fragment. What the session can't do is greyed out with the reason
// (abilities.js).

import RFB from './node_modules/@novnc/novnc/core/rfb.js';
import { RESIZE_MODES, readParams, secondsLeft } from './params.js';
import { abilities } from './abilities.js';
import { setUpClipboard } from './clipboard.js';
import { setUpFiles } from './files-panel.js';
import { MAX_ATTEMPTS, RETRY_CODES, backoff, describeClose } from './close-codes.js';
import { applyEvent, controlView, emptySharing } from './sharing.js';

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
  share: params.share, // opened from a share link
  name: '', // the display name given on a share link ('' lets the relay pick one)
  control: controlView(emptySharing(), params.claims?.scope), // who drives, what this page may do
  notice: '', // the last notice (control moved, someone asks for control, a refused request)
  resize: params.resize, // the fit asked for: remote | scale | off
  resizeEffective: params.resize, // the fit in use (remote falls back to scale while it can't resize)
  quality: params.quality, // noVNC qualityLevel 0..9
  compression: params.compression, // noVNC compressionLevel 0..9
  controlUrl: params.control, // control's API base ('' when the URL names none)
  abilities: null, // abilities.js: what the page can do now, and why not
  files: {
    list: [], // the download folder: {name, size, modified}
    more: false,
    listed: false, // a listing arrived
    listError: '',
    refusal: '', // control refused file calls for this desktop as a whole (409, 404)
    unreachable: '', // control did not answer the page (down, or the origin not allowed)
    uploads: [], // {name, size, loaded, state, status, error}, newest last
    progressEvents: 0, // upload progress events the page saw
    drops: 0, // file drops on the page
    lastUpload: null,
    lastDownload: null,
  },
  clipboardSync: {
    read: 'unknown', // the clipboard-read permission: granted | prompt | denied | unavailable
    write: 'unknown',
    sent: 0, // texts sent to the desktop (panel, paste or automatic)
    lastSent: '',
    written: 0, // desktop texts written to the browser's clipboard
    lastWritten: '',
    error: '',
  },
  rfb: null,
};
window.vncViewer = state;

let endpointIndex = 0;
let generation = 0; // bumped per attempt: late events of an old attempt are ignored
let retryTimer = null;
let closedByUser = false;
let sharing = emptySharing(); // what the relay said about this desktop's people (socket.io)
let controlChannel = null; // the current socket.io channel, for control requests
let noticeTimer = null;
let filesPanel = null; // files-panel.js, once set up
let clipboard = null; // clipboard.js, once set up
// How long a notice stays on screen.
const NOTICE_MS = 6000;

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
    return connect(relay.http, params.token, params.containerId, { name: state.name });
  }
  const name = state.name ? `&name=${encodeURIComponent(state.name)}` : '';
  const url = `${relay.ws}/websockify?token=${encodeURIComponent(params.token)}${name}`;
  return new WebSocket(url, ['binary']);
}

async function connect() {
  const gen = ++generation;
  clearTimeout(retryTimer);
  closedByUser = false;
  $('join').hidden = true; // Reconnect pressed at the name prompt joins without a name
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
  if (state.transport === 'socketio') {
    bindSharing(gen, channel);
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
  rfb.background = 'rgb(24, 24, 28)';
  rfb.qualityLevel = state.quality;
  rfb.compressionLevel = state.compression;
  // The relay enforces the scope; not sending input a view token may not send keeps a
  // view-only session from tripping the relay's filter at every mouse move.
  rfb.viewOnly = viewOnly;
  state.rfb = rfb;
  renderControl();
  applyFit();

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
    // Kept as it arrived (what the relay let through), whatever the page does with it.
    state.clipboard = e.detail?.text ?? '';
    clipboard?.fromDesktop(state.clipboard);
  });
}

/** A session or attempt ended: say why, and try again when that can help. */
function ended(gen, info, opened) {
  if (gen !== generation) return;
  state.rfb = null;
  controlChannel = null;
  sharing = emptySharing();
  renderControl();
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
  controlChannel = null;
  sharing = emptySharing();
  renderControl();
  if (rfb) {
    try {
      rfb.disconnect();
    } catch {
      // already closed
    }
  }
}

/** Listens to the relay's sharing events on a socket.io channel. */
function bindSharing(gen, ch) {
  controlChannel = ch;
  ch.onnamedevent = (name, payload) => {
    if (gen !== generation) return;
    const notice = applyEvent(sharing, name, payload);
    if (notice) showNotice(notice);
    renderControl();
  };
}

/** Asks the relay to move control (request, grant, release, take); says when it refuses. */
async function askControl(event, payload) {
  const ch = controlChannel;
  if (!ch) return;
  let answer;
  try {
    answer = await ch.emit(event, payload);
  } catch (e) {
    answer = { ok: false, error: String(e?.message ?? e) };
  }
  if (ch !== controlChannel) return;
  if (!answer?.ok) {
    showNotice(`the relay refused: ${answer?.error ?? 'no answer'}`);
  } else if (event === 'vnc:control:request' && answer.asked) {
    sharing.asked = true;
    showNotice('you asked for control: waiting for the person who has it');
  }
  renderControl();
}

function showNotice(text) {
  state.notice = text;
  const el = $('notice');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    el.hidden = true;
  }, NOTICE_MS);
}

/** Shows who drives and what this page may do, and keeps noVNC's input in step. */
function renderControl() {
  const view = controlView(sharing, params.claims?.scope);
  state.control = view;
  // A control session that does not drive would have its input dropped by the relay:
  // its keyboard and mouse don't pretend to work.
  if (state.rfb && state.rfb.viewOnly !== !view.canType) {
    state.rfb.viewOnly = !view.canType;
    applyFit();
  }
  renderAbilities();
  $('scope').hidden = !(viewOnly || view.mode === 'view');
  $('not-driving').hidden = view.mode !== 'waiting';
  $('control-line').hidden = !view.line;
  $('control-line').textContent = view.line;
  $('control-request').hidden = !view.request;
  $('control-take').hidden = !view.take;
  $('control-release').hidden = !view.release;

  const toggle = $('people-toggle');
  toggle.hidden = view.mode === 'unknown';
  toggle.textContent = `People (${view.people.length + view.more})`;
  const list = $('people');
  list.replaceChildren(
    ...view.people.map((p) => {
      const li = document.createElement('li');
      li.dataset.session = p.session_id;
      li.append(p.name || 'someone');
      const tags = [
        [p.you, 'you', ''],
        [p.driver, 'has control', 'driver'],
        [p.guest, 'guest', ''],
        [p.viewOnly, 'view only', ''],
      ];
      for (const [on, text, cls] of tags) {
        if (!on) continue;
        const tag = document.createElement('span');
        tag.className = `tag ${cls}`.trim();
        tag.textContent = text;
        li.append(tag);
      }
      return li;
    }),
  );
  $('people-more').textContent = view.more ? `and ${view.more} more` : '';
  if (view.mode === 'unknown') $('people-panel').hidden = true;

  const requests = $('requests');
  requests.replaceChildren(
    ...view.requests.map((r) => {
      const row = document.createElement('div');
      row.className = 'request';
      row.dataset.session = r.session_id;
      const text = document.createElement('span');
      text.textContent = `${r.name} asks for control`;
      const give = document.createElement('button');
      give.type = 'button';
      give.className = 'give';
      give.textContent = 'Give control';
      give.addEventListener('click', () => askControl('vnc:control:grant', { session_id: r.session_id }));
      row.append(text, give);
      return row;
    }),
  );
  requests.hidden = view.requests.length === 0;
}

/** A share link: asks for the name the others will see, then connects. */
function askName() {
  const form = $('join');
  const input = $('join-name');
  try {
    input.value = localStorage.getItem('vnc-viewer-name') ?? '';
  } catch {
    // storage may be off; the field stays empty
  }
  form.hidden = false;
  setStatus('idle', 'enter your name to join');
  input.focus();
  form.addEventListener(
    'submit',
    (e) => {
      e.preventDefault();
      state.name = input.value.trim();
      try {
        localStorage.setItem('vnc-viewer-name', state.name);
      } catch {
        // not remembered, asked again next time
      }
      form.hidden = true;
      connect();
    },
    { once: true },
  );
}

/** What the page can do now (abilities.js), from the token, the sharing view and control. */
function ability() {
  return abilities({
    claims: params.claims,
    control: params.control,
    canType: state.control.canType,
    mode: state.control.mode,
    filesRefusal: state.files.refusal,
    filesUnreachable: state.files.unreachable,
  });
}

/** Greys out what the session can't do, with the reason, everywhere it shows. */
function renderAbilities() {
  state.abilities = ability();
  filesPanel?.render();
  clipboard?.render();
  const remote = state.abilities.resizeRemote;
  const option = $('resize').querySelector('option[value="remote"]');
  option.disabled = !remote.ok;
  option.title = remote.reason;
  $('resize-reason').textContent = remote.ok ? '' : `Resize remote: ${remote.reason}`;
}

/**
 * Applies the fit to noVNC: `remote` resizes the remote desktop to the window
 * (SetDesktopSize; noVNC sends it only while not view-only), `scale` scales the
 * picture into the window, `off` shows it 1:1 (scroll bars past the window). A
 * session that can't resize now (view only, not the driver) scales until it can.
 */
function applyFit() {
  const remoteOk = ability().resizeRemote.ok;
  const fit = state.resize === 'remote' && !remoteOk ? 'scale' : state.resize;
  state.resizeEffective = fit;
  const rfb = state.rfb;
  if (!rfb) return;
  // `remote` scales too: a server that ignores SetDesktopSize (x11vnc) still fits the
  // window, and one that follows it ends at scale 1.
  rfb.scaleViewport = fit !== 'off';
  // `off`: 1:1, with noVNC's scroll bars when the desktop is larger than the window.
  rfb.clipViewport = false;
  // Set again when it turns on: noVNC asks the server for the window's size then.
  rfb.resizeSession = fit === 'remote';
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

/** The picture's settings: fit, quality, compression; each kept in the URL fragment. */
function setUpSettings() {
  const resize = $('resize');
  resize.value = state.resize;
  resize.addEventListener('change', () => {
    if (!RESIZE_MODES.includes(resize.value)) return;
    state.resize = resize.value;
    rememberInFragment('resize', state.resize);
    applyFit();
  });
  for (const name of ['quality', 'compression']) {
    const select = $(name);
    select.replaceChildren(
      ...Array.from({ length: 10 }, (_, i) => {
        const option = document.createElement('option');
        option.value = String(i);
        option.textContent = String(i);
        return option;
      }),
    );
    select.value = String(state[name]);
    select.addEventListener('change', () => {
      state[name] = Number(select.value);
      rememberInFragment(name, select.value);
      if (state.rfb) state.rfb[`${name}Level`] = state[name];
    });
  }
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
  $('control-request').addEventListener('click', () => askControl('vnc:control:request'));
  $('control-take').addEventListener('click', () => askControl('vnc:control:take'));
  $('control-release').addEventListener('click', () => askControl('vnc:control:release'));
  $('people-toggle').addEventListener('click', () => {
    const panel = $('people-panel');
    panel.hidden = !panel.hidden;
  });
  $('clipboard-toggle').addEventListener('click', () => {
    const panel = $('clipboard-panel');
    panel.hidden = !panel.hidden;
  });
  // The panels on the right share their place: opening one closes the others (first,
  // in the capture phase, before the button's own handler opens it).
  const sidePanels = ['clipboard', 'files', 'settings'];
  for (const name of sidePanels) {
    $(`${name}-toggle`).addEventListener(
      'click',
      () => {
        for (const other of sidePanels) if (other !== name) $(`${other}-panel`).hidden = true;
      },
      true,
    );
  }
  $('settings-toggle').addEventListener('click', () => {
    const panel = $('settings-panel');
    panel.hidden = !panel.hidden;
  });
  setUpSettings();
  clipboard = setUpClipboard({ sync: state.clipboardSync, rfb: () => state.rfb, ability });
  filesPanel = setUpFiles({ params, files: state.files, ability, changed: renderAbilities });

  renderControl();
  if (params.notes.length) showNotice(params.notes.join('; '));
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
  if (params.share) {
    askName();
    return;
  }
  connect();
}

setUp();
