// Files in and out of the desktop through control's file routes (docs/architecture.md,
// "File transfer"): their URLs, control's refusals in words, and the listing. Pure: no
// DOM, no network (files-panel.js does those), tested under node.

/** The longest name control takes, in UTF-8 bytes (longer: 400). */
export const MAX_NAME_BYTES = 255;

/** Files of a listing the page shows: control sends at most 1000 (`more` past it). */
export const MAX_LISTED = 1000;

/** `GET` this for the download folder's listing. */
export function listUrl(control, cid) {
  return `${control}/v1/containers/${encodeURIComponent(cid)}/files`;
}

/** `PUT` (upload) or `GET` (download) this for one file. */
export function fileUrl(control, cid, name) {
  return `${listUrl(control, cid)}/${encodeURIComponent(name)}`;
}

/**
 * Why control would refuse `name` (400), in words, or '' when it takes it: one path
 * component, not `.`, no `..`, `/`, `\`, NUL or control character, at most 255 bytes.
 */
export function nameProblem(name) {
  if (!name) return 'the file has no name';
  if (name === '.' || name.includes('..')) return `"${name}": a name can't be . or hold ..`;
  // eslint-disable-next-line no-control-regex
  if (/[/\\\u0000-\u001f\u007f]/.test(name)) return `"${name}": a name can't hold /, \\ or control characters`;
  if (new TextEncoder().encode(name).length > MAX_NAME_BYTES) {
    return `"${name.slice(0, 40)}…": the name is longer than ${MAX_NAME_BYTES} bytes`;
  }
  return '';
}

/**
 * Control's answer to a file call in words. `status` 0 means no answer reached the page
 * (network, or a CORS refusal: the browser does not tell them apart); `body` is the
 * response text (control's JSON error `{error, message}`, or anything).
 */
export function describeFileError(status, body, verb = 'the transfer') {
  let message = '';
  try {
    const parsed = JSON.parse(body);
    message = typeof parsed?.message === 'string' ? parsed.message : '';
  } catch {
    message = '';
  }
  const said = message ? `: ${message}` : '';
  switch (status) {
    case 0:
      return `control did not answer ${verb} (is it reachable, and this page's origin in its viewer_origins?)`;
    case 400:
      return `control refused the name${said}`;
    case 401:
      return `control refused this link's token${said}`;
    case 403:
      return `not allowed${said}`;
    case 404:
      return `not found${said}`;
    case 409:
      return message || 'control can\'t move files for this desktop now';
    case 411:
      return 'the browser sent no length: control needs one';
    case 413:
      return `the file is too large for control${said}`;
    case 429:
      return `control is busy (too many transfers or requests): try again in a moment${said}`;
    default:
      if (status >= 500) return `control or its container engine failed (${status})${said}`;
      return `${verb} failed (${status})${said}`;
  }
}

/**
 * The listing from control's `{files: [{name, size, modified}], more}`: only entries
 * with a string name and a number size, at most MAX_LISTED; `null` for anything else.
 */
export function parseListing(body) {
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch {
    return null;
  }
  if (!parsed || !Array.isArray(parsed.files)) return null;
  const files = parsed.files
    .filter((f) => f && typeof f.name === 'string' && Number.isFinite(f.size))
    .slice(0, MAX_LISTED)
    .map((f) => ({ name: f.name, size: f.size, modified: f.modified ?? null }));
  return { files, more: parsed.more === true };
}

/** A size in words: `512 B`, `1.5 KB`, `50.0 MB` (powers of 1024). */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return '?';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}
