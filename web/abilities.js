// What the page can do for this session, and why not: every control the page can't use
// is greyed out with one of these reasons (as its tooltip and as visible text), never
// hidden. Pure: no DOM, tested under node. The servers enforce all of it (control the
// file policy, the relay the scope, the driver and the clipboard); this only keeps the
// page from offering what they would refuse.

import { policyOf } from './params.js';

/**
 * `what`:
 *   claims       the token's decoded claims (scope, files, clipboard)
 *   control      control's API base ('' when the URL names none)
 *   canType      whether this session's input reaches the desktop now (a control
 *                session that drives, or any when input is shared)
 *   mode         sharing.js's controlView mode (unknown, view, shared, driving, waiting)
 *   filesRefusal control's reason when it refused file calls for this desktop as a
 *                whole (409: the static runtime or not running; 404), or ''
 *   filesUnreachable why control could not be asked (no answer: down, or this page's
 *                origin not on its viewer_origins), or ''
 *
 * Returns `{upload, download, toDesktop, fromDesktop, resizeRemote}`, each
 * `{ok: boolean, reason: string}` (`reason` empty when ok).
 */
export function abilities({
  claims, control = '', canType = true, mode = 'unknown', filesRefusal = '', filesUnreachable = '',
}) {
  const policy = policyOf(claims);
  const view = claims?.scope === 'view' || mode === 'view';
  const waiting = mode === 'waiting';
  const no = (reason) => ({ ok: false, reason });
  const yes = { ok: true, reason: '' };

  const files = (allowed, verb) => {
    // Control's refusal of the whole desktop first: no token would do better.
    if (filesRefusal) return no(filesRefusal);
    if (!allowed) {
      if (verb === 'upload' && view) return no('a view-only link can\'t upload files');
      if (policy.files === 'none') return no('this link\'s token allows no file transfer');
      return no(`this link's token does not allow ${verb}s`);
    }
    if (!control) return no('this link does not say where the control API is (no control= in its URL)');
    if (filesUnreachable) return no(filesUnreachable);
    return yes;
  };

  let toDesktop = yes;
  if (!policy.toDesktop) toDesktop = no('this link\'s token keeps the browser\'s clipboard off the desktop');
  else if (view) toDesktop = no('a view-only link can\'t send the clipboard to the desktop');
  else if (waiting || !canType) toDesktop = no('someone else has control: ask for it to send the clipboard');

  const fromDesktop = policy.fromDesktop ? yes : no('this link\'s token keeps the desktop\'s clipboard on the desktop');

  let resizeRemote = yes;
  if (view) resizeRemote = no('a view-only link can\'t resize the remote desktop');
  else if (waiting || !canType) resizeRemote = no('someone else has control: the remote desktop keeps its size');

  return {
    upload: files(policy.upload, 'upload'),
    download: files(policy.download, 'download'),
    toDesktop,
    fromDesktop,
    resizeRemote,
  };
}
