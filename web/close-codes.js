// Why a session ended, in words, and whether the viewer tries again. The codes are the
// relay's (see docs/architecture.md, "Close codes and outcomes"). Pure: no DOM.

/** Close code → what the person in front of the page reads. */
export const CLOSE_REASONS = {
  1000: 'the desktop closed the connection',
  1001: 'the relay is shutting down (draining)',
  1006: 'the connection was lost',
  1008: 'closed by policy (input from a view-only session, or a protocol error)',
  1009: 'a message was too big for the relay',
  1011: 'the desktop’s VNC server failed or the browser stopped answering',
  4001: 'idle for too long',
  4002: 'the session reached its maximum length',
  4003: 'access was revoked or the session was ended by an administrator',
  4004: 'the container stopped',
};

/**
 * Finer words for the reasons the relay gives with a code (its `End` reasons): 4003
 * covers a revoked token, a revoked share link and an operator's kick, which call for different next
 * steps (a new link, or asking the operator). Unknown reasons fall back to the code.
 */
export const KNOWN_REASONS = {
  4003: {
    'token revoked': 'access was revoked: this link no longer works',
    'session ended by an operator': 'an operator ended the session',
    'share revoked': 'the share link was revoked: ask its owner for a new one',
  },
};

/**
 * Codes after which the viewer reconnects on its own (with back-off, moving on to the
 * next relay endpoint): a relay that drains or restarts, or a connection that dropped.
 * Everything else is final: the session ended for a reason a retry would not change.
 */
export const RETRY_CODES = new Set([1001, 1006, 1012, 1013]);

/** Delays (ms) before reconnect attempts 1, 2, …; the last one repeats. */
export const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

/** Reconnect attempts in a row (without a session in between) before giving up. */
export const MAX_ATTEMPTS = 10;

/**
 * Words for a close. `opened` says whether the session had been established: a
 * connection that closes before that was refused (bad or expired token, unknown or
 * stopped container, relay draining or unreachable), and the browser does not show
 * the HTTP status of a refused WebSocket upgrade.
 */
export function describeClose(code, reason, opened) {
  if (!opened && (code === 1006 || code === undefined || code === null)) {
    return 'could not connect: the relay refused or is unreachable (token, container, or relay down)';
  }
  const known = KNOWN_REASONS[code]?.[reason];
  if (known) return known;
  const words = CLOSE_REASONS[code] ?? `closed with code ${code}`;
  return reason && !words.includes(reason) ? `${words} (${reason})` : words;
}

/** Delay before reconnect attempt `attempt` (1-based). */
export function backoff(attempt) {
  return BACKOFF_MS[Math.min(Math.max(attempt, 1), BACKOFF_MS.length) - 1];
}
