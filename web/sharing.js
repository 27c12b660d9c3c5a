// Who is on the desktop and who drives it, from the relay's socket.io events (see
// docs/architecture.md, "Sharing and control"). Pure: no DOM; viewer.js keeps a
// `sharing` state, feeds it every event with applyEvent(), and renders controlView().

/**
 * Pending "give me control" requests a page keeps, newest last; older ones go first.
 * They come from other people's pages, so the list is bounded.
 */
export const MAX_REQUESTS = 8;

/** The state before the relay said anything (and after every reconnect). */
export function emptySharing() {
  return {
    self: null, // vnc:self {session_id, name, scope, privileged, input}
    viewers: [], // vnc:presence's list: {session_id, name, scope, driver, node, guest}
    more: 0, // viewers the relay left off its list
    driver: null, // session id holding the lease, or null
    requests: [], // {session_id, name} asking for control, oldest first
    asked: false, // this page asked for control and waits for an answer
  };
}

/**
 * Applies one relay event (`name`, `payload`) to `state` (changed in place).
 * Returns a notice to show, in words, or null: control moved, or someone asks for it.
 */
export function applyEvent(state, name, payload) {
  const p = payload && typeof payload === 'object' ? payload : {};
  switch (name) {
    case 'vnc:self':
      state.self = {
        session_id: String(p.session_id ?? ''),
        name: String(p.name ?? ''),
        scope: p.scope === 'view' ? 'view' : 'control',
        privileged: p.privileged === true,
        // A relay that does not say runs the lease (the relay's default).
        input: p.input === 'shared' ? 'shared' : 'lease',
      };
      return null;
    case 'vnc:presence': {
      state.viewers = Array.isArray(p.viewers) ? p.viewers.filter((v) => v && typeof v.session_id === 'string') : [];
      state.more = Number.isInteger(p.more) ? p.more : 0;
      if (p.driver !== undefined) setDriver(state, p.driver);
      if (state.more === 0) {
        // Someone who left no longer waits for control.
        const here = new Set(state.viewers.map((v) => v.session_id));
        state.requests = state.requests.filter((r) => here.has(r.session_id));
      }
      return null;
    }
    case 'vnc:control': {
      const before = state.driver;
      setDriver(state, p.driver);
      if (state.driver === before) return null;
      return driverLine(state);
    }
    case 'vnc:control:requested': {
      const sid = typeof p.session_id === 'string' ? p.session_id : '';
      if (!sid || sid === state.driver) return null;
      if (sid === state.self?.session_id) {
        state.asked = true;
        return null;
      }
      const request = { session_id: sid, name: String(p.name ?? '') || 'someone' };
      state.requests = state.requests.filter((r) => r.session_id !== sid);
      state.requests.push(request);
      if (state.requests.length > MAX_REQUESTS) state.requests.shift();
      return mayGive(state) ? `${request.name} asks for control` : null;
    }
    default:
      return null;
  }
}

function setDriver(state, driver) {
  state.driver = typeof driver === 'string' && driver ? driver : null;
  if (state.driver === null) return;
  // The new driver no longer asks; this page's own request is answered.
  state.requests = state.requests.filter((r) => r.session_id !== state.driver);
  if (state.driver === state.self?.session_id) state.asked = false;
}

/** The name of a session as the presence list has it. */
export function nameOf(state, sid) {
  if (sid && sid === state.self?.session_id) return state.self.name;
  return state.viewers.find((v) => v.session_id === sid)?.name || 'someone';
}

/** Who drives, in words: "you have control", "Ann has control", "nobody has control". */
export function driverLine(state) {
  if (state.self?.input === 'shared') return 'everyone with control can type';
  if (!state.driver) return 'nobody has control';
  if (state.driver === state.self?.session_id) return 'you have control';
  return `${nameOf(state, state.driver)} has control`;
}

/** Whether this session may give control away: the driver, or the owner (privileged). */
function mayGive(state) {
  const self = state.self;
  if (!self || self.input !== 'lease' || self.scope !== 'control') return false;
  return self.privileged || state.driver === self.session_id;
}

/**
 * What the page shows and allows, from the sharing state. `tokenScope` is the token's
 * scope claim, used until the relay said who this session is (or never: the raw
 * WebSocket transport has no presence).
 *
 * `mode`: `unknown` (no word from the relay), `view` (view-only session), `shared` (the
 * relay lets every control session type), `driving` (this session holds the lease) or
 * `waiting` (a control session that does not: its input would be dropped).
 */
export function controlView(state, tokenScope) {
  const self = state.self;
  const people = state.viewers.map((v) => ({
    session_id: v.session_id,
    name: String(v.name ?? ''),
    you: v.session_id === self?.session_id,
    driver: v.session_id === state.driver,
    guest: v.guest === true,
    viewOnly: v.scope === 'view',
  }));
  const view = {
    mode: 'unknown',
    canType: tokenScope !== 'view',
    line: '',
    people,
    more: state.more,
    request: false,
    release: false,
    take: false,
    requests: [],
  };
  if (!self) return view;
  view.line = driverLine(state);
  if (self.scope === 'view') {
    return { ...view, mode: 'view', canType: false };
  }
  if (self.input === 'shared') {
    return { ...view, mode: 'shared', canType: true };
  }
  const driving = state.driver === self.session_id;
  return {
    ...view,
    mode: driving ? 'driving' : 'waiting',
    canType: driving,
    request: !driving && !state.asked,
    release: driving,
    take: !driving && self.privileged,
    requests: mayGive(state) ? state.requests.map((r) => ({ ...r })) : [],
    line: !driving && state.asked ? `${view.line}; you asked for control` : view.line,
  };
}
