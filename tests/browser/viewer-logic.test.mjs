// The viewer's pure parts (URL parameters, close codes, back-off, who drives) under
// node's test runner: `node --test tests/browser/` (tests/tests/browser.rs runs it too).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { controlBase, decodeClaims, policyOf, readParams, relayBase, secondsLeft } from '../../web/params.js';
import { abilities } from '../../web/abilities.js';
import { describeFileError, fileUrl, formatBytes, nameProblem, parseListing } from '../../web/files.js';
import { BACKOFF_MS, RETRY_CODES, backoff, describeClose } from '../../web/close-codes.js';
import { MAX_REQUESTS, applyEvent, controlView, emptySharing } from '../../web/sharing.js';

const jwt = (claims) =>
  `eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2ln`;

test('the fragment wins over the query, and containerId defaults to the cid claim', () => {
  const token = jwt({ cid: 'desk', scope: 'control', exp: 2_000_000_000 });
  const p = readParams(`http://relay:6080/?token=from-query#token=${token}`);
  assert.equal(p.token, token);
  assert.equal(p.containerId, 'desk');
  assert.equal(p.transport, 'ws');
  assert.deepEqual(p.relays, [{ ws: 'ws://relay:6080', http: 'http://relay:6080' }]);
  assert.deepEqual(p.problems, []);
});

test('the query alone works', () => {
  const token = jwt({ cid: 'c1' });
  const p = readParams(`https://relay.example/?token=${token}&containerId=other&transport=socket.io`);
  assert.equal(p.containerId, 'other');
  assert.equal(p.transport, 'socketio');
  assert.deepEqual(p.relays, [{ ws: 'wss://relay.example', http: 'https://relay.example' }]);
});

test('relay lists keep their order and normalise every form', () => {
  const p = readParams(`https://page/#token=${jwt({ cid: 'c' })}&relays=a:1,ws://b:2,https://c:3,wss://d`);
  assert.deepEqual(
    p.relays.map((r) => r.ws),
    ['wss://a:1', 'ws://b:2', 'wss://c:3', 'wss://d'],
  );
  assert.equal(relayBase('ftp://x', new URL('http://page/')), null);
});

test('missing or broken input is named', () => {
  assert.match(readParams('http://page/').problems.join(), /no token/);
  assert.match(readParams('http://page/#token=abc').problems.join(), /not a JWT/);
  assert.match(readParams(`http://page/#token=${jwt({})}`).problems.join(), /no containerId/);
  assert.match(readParams(`http://page/#token=${jwt({ cid: 'c' })}&transport=carrier-pigeon`).problems.join(), /unknown transport/);
});

test('claims decode for display, expiry counts down', () => {
  assert.deepEqual(decodeClaims(jwt({ scope: 'view', sub: 'ü' })), { scope: 'view', sub: 'ü' });
  assert.equal(decodeClaims('a.%%%.c'), null);
  assert.equal(secondsLeft({ exp: 100 }, 90_000), 10);
  assert.equal(secondsLeft({}, 0), null);
});

test('close codes read as words; only drains and lost connections are retried', () => {
  assert.match(describeClose(1001, '', true), /draining/);
  assert.match(describeClose(4004, '', true), /container stopped/);
  assert.match(describeClose(4003, 'kicked by admin', true), /revoked.*\(kicked by admin\)/);
  assert.equal(describeClose(4003, 'session ended by an operator', true), 'an operator ended the session');
  assert.match(describeClose(4003, 'token revoked', true), /access was revoked: this link no longer works/);
  assert.match(describeClose(4003, 'share revoked', true), /the share link was revoked/);
  assert.match(describeClose(1006, '', false), /could not connect/);
  assert.match(describeClose(4999, '', true), /code 4999/);
  for (const code of [1001, 1006]) assert.ok(RETRY_CODES.has(code));
  for (const code of [1000, 1008, 1009, 1011, 4001, 4002, 4003, 4004]) assert.ok(!RETRY_CODES.has(code));
  assert.equal(backoff(1), BACKOFF_MS[0]);
  assert.equal(backoff(99), BACKOFF_MS.at(-1));
});

test('a share link defaults to socket.io and says so; an explicit transport wins', () => {
  const token = jwt({ cid: 'desk', scope: 'control' });
  const shared = readParams(`http://relay/#token=${token}&containerId=desk&share=1`);
  assert.equal(shared.share, true);
  assert.equal(shared.transport, 'socketio');
  assert.equal(readParams(`http://relay/#token=${token}&share=1&transport=ws`).transport, 'ws');
  const plain = readParams(`http://relay/#token=${token}`);
  assert.equal(plain.share, false);
  assert.equal(plain.transport, 'ws');
  // The token's share claim marks a share link without share=1.
  assert.equal(readParams(`http://relay/#token=${jwt({ cid: 'd', share: 'h1' })}`).share, true);
});

const self = (over = {}) => ({ session_id: 's-me', name: 'Ann', scope: 'control', privileged: false, input: 'lease', ...over });
const viewer = (sid, name, over = {}) => ({ session_id: sid, name, scope: 'control', driver: false, node: 'n1', guest: false, ...over });

test('before the relay speaks the token scope decides; a view session never types', () => {
  assert.equal(controlView(emptySharing(), 'control').mode, 'unknown');
  assert.equal(controlView(emptySharing(), 'control').canType, true);
  assert.equal(controlView(emptySharing(), 'view').canType, false);
  const s = emptySharing();
  applyEvent(s, 'vnc:self', self({ scope: 'view' }));
  applyEvent(s, 'vnc:presence', { viewers: [viewer('s-owner', 'alice'), viewer('s-me', 'Ann', { scope: 'view', guest: true })], more: 0, driver: 's-owner' });
  const v = controlView(s, 'view');
  assert.equal(v.mode, 'view');
  assert.equal(v.canType, false);
  assert.equal(v.line, 'alice has control');
  assert.deepEqual([v.request, v.take, v.release, v.requests.length], [false, false, false, 0]);
  assert.deepEqual(v.people.map((p) => [p.name, p.you, p.driver, p.guest, p.viewOnly]), [
    ['alice', false, true, false, false],
    ['Ann', true, false, true, true],
  ]);
});

test('a guest waits, asks, is given control and drives; the owner sees the request and can take back', () => {
  const guest = emptySharing();
  const owner = emptySharing();
  applyEvent(guest, 'vnc:self', self({ session_id: 's-ann' }));
  applyEvent(owner, 'vnc:self', self({ session_id: 's-owner', name: 'alice', privileged: true }));
  const presence = { viewers: [viewer('s-owner', 'alice'), viewer('s-ann', 'Ann', { guest: true })], more: 0, driver: 's-owner' };
  for (const s of [guest, owner]) applyEvent(s, 'vnc:presence', presence);

  let g = controlView(guest, 'control');
  assert.equal(g.mode, 'waiting');
  assert.equal(g.canType, false, 'a control session that does not drive does not type');
  assert.deepEqual([g.request, g.take, g.release], [true, false, false]);
  assert.equal(g.line, 'alice has control');
  let o = controlView(owner, 'control');
  assert.equal(o.mode, 'driving');
  assert.deepEqual([o.canType, o.request, o.take, o.release], [true, false, false, true]);

  // The request reaches the whole room: the owner may give, the guest waits.
  const asked = { session_id: 's-ann', name: 'Ann' };
  assert.equal(applyEvent(owner, 'vnc:control:requested', asked), 'Ann asks for control');
  assert.equal(applyEvent(guest, 'vnc:control:requested', asked), null);
  assert.deepEqual(controlView(owner, 'control').requests, [asked]);
  g = controlView(guest, 'control');
  assert.equal(g.request, false, 'asked once');
  assert.match(g.line, /you asked for control/);

  // The owner grants: control moves, the request is answered.
  const moved = { driver: 's-ann', by: 's-owner' };
  assert.equal(applyEvent(guest, 'vnc:control', moved), 'you have control');
  assert.equal(applyEvent(owner, 'vnc:control', moved), 'Ann has control');
  g = controlView(guest, 'control');
  assert.deepEqual([g.mode, g.canType, g.release, g.request], ['driving', true, true, false]);
  o = controlView(owner, 'control');
  assert.deepEqual([o.mode, o.canType, o.take, o.request], ['waiting', false, true, true]);
  assert.deepEqual(o.requests, []);
  // The same driver again (a presence after the move) is no news.
  assert.equal(applyEvent(owner, 'vnc:control', moved), null);

  // The owner takes it back.
  assert.equal(applyEvent(guest, 'vnc:control', { driver: 's-owner', by: 's-owner' }), 'alice has control');
  assert.equal(controlView(guest, 'control').canType, false);
  assert.equal(applyEvent(guest, 'vnc:control', { driver: null, by: 's-owner' }), 'nobody has control');
});

test('only the driver or the owner see requests; requests are bounded and leave with their session', () => {
  const other = emptySharing();
  applyEvent(other, 'vnc:self', self({ session_id: 's-bob' }));
  applyEvent(other, 'vnc:presence', { viewers: [], more: 0, driver: 's-owner' });
  assert.equal(applyEvent(other, 'vnc:control:requested', { session_id: 's-ann', name: 'Ann' }), null);
  assert.deepEqual(controlView(other, 'control').requests, []);

  const owner = emptySharing();
  applyEvent(owner, 'vnc:self', self({ session_id: 's-owner', privileged: true }));
  for (let i = 0; i < MAX_REQUESTS + 3; i += 1) {
    applyEvent(owner, 'vnc:control:requested', { session_id: `s-${i}`, name: `G${i}` });
  }
  applyEvent(owner, 'vnc:control:requested', { session_id: 's-5', name: 'G5' });
  const names = controlView(owner, 'control').requests.map((r) => r.name);
  assert.equal(names.length, MAX_REQUESTS);
  assert.equal(names.at(-1), 'G5', 'a repeated request moves to the end');
  assert.ok(!names.includes('G0'), 'the oldest went');
  applyEvent(owner, 'vnc:presence', { viewers: [viewer('s-owner', 'alice'), viewer('s-7', 'G7')], more: 0, driver: null });
  assert.deepEqual(controlView(owner, 'control').requests.map((r) => r.name), ['G7']);
  // The owner with a free lease: asks (takes it) or takes.
  const o = controlView(owner, 'control');
  assert.deepEqual([o.mode, o.request, o.take, o.line], ['waiting', true, true, 'nobody has control']);
});

test('shared input: every control session types and nobody asks', () => {
  const s = emptySharing();
  applyEvent(s, 'vnc:self', self({ input: 'shared' }));
  applyEvent(s, 'vnc:presence', { viewers: [], more: 0, driver: null });
  const v = controlView(s, 'control');
  assert.deepEqual([v.mode, v.canType, v.request, v.take, v.release], ['shared', true, false, false, false]);
  assert.equal(v.line, 'everyone with control can type');
});

test('resize defaults to remote for a token that may drive and to scale for a view token', () => {
  const control = readParams(`http://page/#token=${jwt({ cid: 'c', scope: 'control' })}`);
  assert.equal(control.resize, 'remote');
  assert.equal(control.quality, 6);
  assert.equal(control.compression, 2);
  assert.deepEqual(control.notes, []);
  const view = readParams(`http://page/#token=${jwt({ cid: 'c', scope: 'view' })}`);
  assert.equal(view.resize, 'scale');
  for (const mode of ['scale', 'off']) {
    assert.equal(readParams(`http://page/#token=${jwt({ cid: 'c' })}&resize=${mode}`).resize, mode);
  }
});

test('a view token asking for remote resize scales instead, and says so', () => {
  const p = readParams(`http://page/#token=${jwt({ cid: 'c', scope: 'view' })}&resize=remote`);
  assert.equal(p.resize, 'scale');
  assert.match(p.notes.join(), /view-only session can't resize/);
  assert.equal(readParams(`http://page/#token=${jwt({ cid: 'c', scope: 'view' })}&resize=off`).resize, 'off');
});

test('quality and compression are 0..9; anything else is named and falls back', () => {
  const p = readParams(`http://page/#token=${jwt({ cid: 'c' })}&quality=9&compression=0`);
  assert.equal(p.quality, 9);
  assert.equal(p.compression, 0);
  const bad = readParams(`http://page/?quality=1#token=${jwt({ cid: 'c' })}&quality=10&compression=x&resize=huge`);
  assert.equal(bad.quality, 6, 'the fragment wins, and 10 is out of range');
  assert.equal(bad.compression, 2);
  assert.equal(bad.resize, 'remote');
  assert.equal(bad.notes.length, 3);
  assert.deepEqual(bad.problems, [], 'a bad setting does not keep the page from connecting');
});

test('control is an http(s) base without a trailing slash', () => {
  assert.equal(controlBase('http://127.0.0.1:8080/'), 'http://127.0.0.1:8080');
  assert.equal(controlBase('https://api.example/vnc/'), 'https://api.example/vnc');
  const notes = [];
  assert.equal(controlBase('ws://x', notes), '');
  assert.equal(controlBase('https://x/?a=1', notes), '');
  assert.equal(notes.length, 2);
  assert.equal(readParams(`http://page/#token=${jwt({ cid: 'c' })}&control=${encodeURIComponent('http://c:1/')}`).control, 'http://c:1');
});

test('the policy claims read as control and the relay read them', () => {
  assert.deepEqual(policyOf({}), {
    files: 'none', clipboard: 'both', upload: false, download: false, toDesktop: true, fromDesktop: true,
  });
  const p = policyOf({ files: 'download', clipboard: 'from_desktop' });
  assert.equal(p.upload, false);
  assert.equal(p.download, true);
  assert.equal(p.toDesktop, false);
  assert.equal(p.fromDesktop, true);
  assert.equal(policyOf({ files: 'everything', clipboard: 'sideways' }).download, false);
  assert.equal(policyOf({ clipboard: 'sideways' }).fromDesktop, false);
});

test('what the page can\'t do is greyed out with a reason in words', () => {
  const full = { scope: 'control', files: 'both', clipboard: 'both' };
  const all = abilities({ claims: full, control: 'http://c', canType: true, mode: 'driving' });
  for (const [what, a] of Object.entries(all)) assert.deepEqual(a, { ok: true, reason: '' }, what);

  const view = abilities({ claims: { scope: 'view', files: 'download', clipboard: 'from_desktop' }, control: 'http://c', canType: false });
  assert.match(view.upload.reason, /view-only link can't upload/);
  assert.equal(view.download.ok, true);
  assert.match(view.toDesktop.reason, /clipboard off the desktop/);
  assert.match(view.resizeRemote.reason, /view-only link can't resize/);

  const share = abilities({ claims: { scope: 'control', files: 'none', clipboard: 'to_desktop' }, control: 'http://c' });
  assert.match(share.upload.reason, /allows no file transfer/);
  assert.match(share.download.reason, /allows no file transfer/);
  assert.match(share.fromDesktop.reason, /desktop's clipboard on the desktop/);
  assert.match(abilities({ claims: { files: 'upload' }, control: 'http://c' }).download.reason, /does not allow downloads/);

  const waiting = abilities({ claims: full, control: 'http://c', canType: false, mode: 'waiting' });
  assert.match(waiting.toDesktop.reason, /someone else has control/);
  assert.match(waiting.resizeRemote.reason, /someone else has control/);
  assert.equal(waiting.upload.ok, true, 'files move whoever drives');

  assert.match(abilities({ claims: full }).upload.reason, /no control= in its URL/);
  const refused = abilities({ claims: full, control: 'http://c', filesRefusal: 'the static runtime has no files' });
  assert.equal(refused.upload.reason, 'the static runtime has no files');
  assert.equal(refused.download.reason, 'the static runtime has no files');
  const noneButRefused = abilities({ claims: { files: 'none' }, control: 'http://c', filesRefusal: 'static' });
  assert.equal(noneButRefused.upload.reason, 'static', 'the desktop-wide refusal says more than the claim');
  const unreachable = abilities({ claims: { scope: 'view', files: 'download' }, control: 'http://c', filesUnreachable: 'no answer' });
  assert.match(unreachable.upload.reason, /view-only/, 'the claim says more than a control that did not answer');
  assert.equal(unreachable.download.reason, 'no answer');
});

test('file names, URLs and control\'s refusals in words', () => {
  assert.equal(fileUrl('http://c', 'd 1', 'a b#.txt'), 'http://c/v1/containers/d%201/files/a%20b%23.txt');
  assert.equal(nameProblem('report.pdf'), '');
  assert.match(nameProblem('..'), /can't be/);
  assert.match(nameProblem('a/b'), /can't hold/);
  assert.match(nameProblem('x'.repeat(256)), /longer than 255 bytes/);
  assert.equal(nameProblem('é'.repeat(127)), '', '254 bytes');
  const body = (message) => JSON.stringify({ statusCode: 0, error: 'x', message });
  assert.equal(describeFileError(409, body('the static runtime moves no files')), 'the static runtime moves no files');
  assert.match(describeFileError(413, body('over 4096 bytes')), /too large for control: over 4096 bytes/);
  assert.match(describeFileError(403, body('no uploads')), /^not allowed: no uploads/);
  assert.match(describeFileError(429, 'not json'), /busy/);
  assert.match(describeFileError(400, body('bad name')), /refused the name: bad name/);
  assert.match(describeFileError(0, ''), /viewer_origins/);
  assert.deepEqual(parseListing('{"files":[{"name":"a","size":1,"modified":2},{"name":3}],"more":true}'), {
    files: [{ name: 'a', size: 1, modified: 2 }],
    more: true,
  });
  assert.equal(parseListing('[]'), null);
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(50 * 1024 * 1024), '50.0 MB');
});
