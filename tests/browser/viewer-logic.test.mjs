// The viewer's pure parts (URL parameters, close codes, back-off) under node's test
// runner: `node --test tests/browser/` (tests/tests/browser.rs runs it too).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeClaims, readParams, relayBase, secondsLeft } from '../../web/params.js';
import { BACKOFF_MS, RETRY_CODES, backoff, describeClose } from '../../web/close-codes.js';

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
  assert.match(describeClose(1006, '', false), /could not connect/);
  assert.match(describeClose(4999, '', true), /code 4999/);
  for (const code of [1001, 1006]) assert.ok(RETRY_CODES.has(code));
  for (const code of [1000, 1008, 1009, 1011, 4001, 4002, 4003, 4004]) assert.ok(!RETRY_CODES.has(code));
  assert.equal(backoff(1), BACKOFF_MS[0]);
  assert.equal(backoff(99), BACKOFF_MS.at(-1));
});
