// The client against a real server process (started by tests/clients/test_node_client.py).
//
// CHAT_TEST_URL: the server's http base URL; CHAT_TEST_USERS: JSON list of
// {id, username, token}, fresh users made for this run. Every test takes
// users of its own so that the tests do not see each other's messages.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { ChatClient, ChatError, dmPeer, tokenExpiry } from '../src/client.js';

const BASE = process.env.CHAT_TEST_URL;
const INACTIVE = JSON.parse(process.env.CHAT_TEST_INACTIVE ?? 'null');
const USERS = JSON.parse(process.env.CHAT_TEST_USERS ?? '[]');
if (!BASE || USERS.length < 2) throw new Error('set CHAT_TEST_URL and CHAT_TEST_USERS (run through pytest)');
const WS_URL = BASE.replace(/^http/, 'ws') + '/ws/';
const WAIT = 15000;

let nextUser = 0;
function users(n) {
  if (nextUser + n > USERS.length) throw new Error('not enough test users: raise the count in the pytest test');
  const picked = USERS.slice(nextUser, nextUser + n);
  nextUser += n;
  return picked;
}

const open = [];
after(() => {
  for (const c of open) c.close();
});

/**
 * A WebSocket whose traffic a test can see and disturb: every frame sent is
 * recorded; `dropAnswers` swallows answers to matching frames (as if lost on
 * the way); `kill()` closes the socket from the client side.
 */
function tappedSocket() {
  const tap = { sockets: [], sent: [], dropAnswers: null, swallowed: [] };
  class Tapped extends WebSocket {
    constructor(url) {
      super(url);
      tap.sockets.push(this);
      const refs = new Set();
      this.refs = refs;
    }
    send(data) {
      const frame = JSON.parse(data);
      tap.sent.push(frame);
      if (tap.dropAnswers && tap.dropAnswers(frame)) this.refs.add(frame.ref);
      super.send(data);
    }
    set onmessage(fn) {
      super.onmessage = fn && ((ev) => {
        const frame = JSON.parse(ev.data);
        if (frame.ref && this.refs.has(frame.ref)) {
          tap.swallowed.push(frame);
          return;
        }
        fn(ev);
      });
    }
    get onmessage() {
      return super.onmessage;
    }
  }
  tap.WebSocket = Tapped;
  tap.kill = () => tap.sockets.at(-1).close();
  return tap;
}

function client(user, extra = {}) {
  const c = new ChatClient({ url: WS_URL, token: user.token, backoffInitial: 50, backoffMax: 400, ...extra });
  c.received = [];
  c.on('message', (m) => c.received.push(m));
  open.push(c);
  return c;
}

async function until(predicate, what) {
  const deadline = Date.now() + WAIT;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const seqsOf = (c, channel) => c.received.filter((m) => m.channel === channel).map((m) => m.seq);
const range = (n) => Array.from({ length: n }, (_, i) => i + 1);

test('connects, sends a DM and shows it once on both sides', async () => {
  const [ann, bob] = users(2);
  const a = client(ann);
  const b = client(bob);
  const welcome = await a.connect();
  assert.equal(welcome.user.id, ann.id);
  assert.equal(welcome.resumed, false);
  await b.connect();
  const sent = await a.send(bob.username, 'hi bob');
  assert.equal(sent.body, 'hi bob');
  assert.match(sent.client_id, /^c-/);
  assert.equal(dmPeer(sent.channel, ann.id), bob.id);
  await until(() => b.received.length === 1, 'bob to get the DM');
  assert.deepEqual(b.received[0].id, sent.id);
  // The sender's own message comes as a `message` event too, once.
  assert.deepEqual(seqsOf(a, sent.channel), [1]);
  const reply = await b.send(sent.channel, 'hi ann');
  assert.equal(reply.channel, sent.channel);
  await until(() => a.received.length === 2, 'ann to get the reply');
});

test('resume after a drop re-sends what was not acknowledged; the client shows each message once', async () => {
  const [ann, bob] = users(2);
  const a = client(ann);
  const tap = tappedSocket();
  // Bob never acknowledges: the server must send everything again on resume.
  const b = client(bob, { WebSocket: tap.WebSocket, ackDelay: 1e9 });
  await Promise.all([a.connect(), b.connect()]);
  const first = await a.send(bob.id, 'one');
  await a.send(bob.id, 'two');
  await a.send(bob.id, 'three');
  await until(() => b.received.length === 3, 'three messages');
  const statuses = [];
  b.on('status', (s) => statuses.push(s.status));
  assert.equal(tap.sent.filter((f) => f.type === 'received').length, 0, 'nothing acknowledged before the drop');
  tap.kill();
  await a.send(bob.id, 'four (while bob is away)');
  await until(() => b.resumed && b.status === 'open' && b.received.length >= 4, 'resume');
  await a.send(bob.id, 'five');
  await until(() => b.received.length >= 5, 'five messages');
  assert.deepEqual(seqsOf(b, first.channel), range(5));
  assert.ok(b.stats.duplicates >= 3, `the resend was dropped as duplicates (${b.stats.duplicates})`);
  assert.equal(b.stats.resumes, 1);
  assert.ok(statuses.includes('reconnecting'), statuses.join());
});

test('received acks are coalesced and stop the resend', async () => {
  const [ann, bob] = users(2);
  const a = client(ann, { sendTimeout: WAIT });
  const tap = tappedSocket();
  // No timer flush in this test: the acks go out when the test says so.
  const b = client(bob, { WebSocket: tap.WebSocket, ackDelay: 1e9 });
  await Promise.all([a.connect(), b.connect()]);
  const sent = await Promise.all(range(10).map((i) => a.send(bob.id, `m${i}`)));
  const channel = sent[0].channel;
  await until(() => b.received.length === 10, 'ten messages');
  b.flushAcks();
  const acks = tap.sent.filter((f) => f.type === 'received');
  assert.deepEqual(acks.map((f) => [f.channel, f.seq]), [[channel, 10]], 'one ack covers all ten');
  await until(async () => {
    const list = await b.sync();
    return list.find((e) => e.channel === channel)?.delivered_seq === 10;
  }, 'the delivery cursor at 10');
  tap.kill();
  await until(() => b.stats.resumes === 1 && b.status === 'open', 'resume');
  await a.send(bob.id, 'after');
  await until(() => b.received.length === 11, 'the next message');
  assert.equal(b.stats.duplicates, 0, 'acknowledged messages are not sent again');
});

test('acks go out by themselves after ackDelay', async () => {
  const [ann, bob] = users(2);
  const a = client(ann);
  const tap = tappedSocket();
  const b = client(bob, { WebSocket: tap.WebSocket, ackDelay: 50 });
  await Promise.all([a.connect(), b.connect()]);
  const m = await a.send(bob.id, 'ack me');
  await until(() => tap.sent.some((f) => f.type === 'received' && f.seq === m.seq), 'an ack');
  assert.equal(b.stats.acksSent, 1);
});

test('a send whose answer is lost in a drop is retried with its client_id and lands once', async () => {
  const [ann, bob] = users(2);
  const tap = tappedSocket();
  const a = client(ann, { WebSocket: tap.WebSocket });
  const b = client(bob);
  await Promise.all([a.connect(), b.connect()]);
  tap.dropAnswers = (frame) => frame.type === 'direct';
  const sending = a.send(bob.id, 'exactly once');
  await until(() => b.received.length === 1, 'the message to be stored and delivered');
  const stored = b.received[0];
  tap.dropAnswers = null;
  tap.kill(); // the answer never came: the client must send again
  const message = await sending;
  assert.equal(message.id, stored.id);
  assert.equal(message.client_id, stored.client_id);
  const directs = tap.sent.filter((f) => f.type === 'direct');
  assert.equal(directs.length, 2, 'sent twice');
  assert.equal(directs[0].client_id, directs[1].client_id);
  const page = await b.history(stored.channel);
  assert.deepEqual(page.messages.map((m) => m.body), ['exactly once']);
  assert.deepEqual(seqsOf(a, stored.channel), [1]);
});

test('sends made while disconnected wait and go out after the reconnect', async () => {
  const [ann, bob] = users(2);
  const tap = tappedSocket();
  const a = client(ann, { WebSocket: tap.WebSocket, backoffInitial: 300 });
  const b = client(bob);
  await Promise.all([a.connect(), b.connect()]);
  const statuses = [];
  a.on('status', (e) => statuses.push(e.status));
  tap.kill();
  await until(() => statuses.includes('reconnecting'), 'reconnecting');
  const pending = [a.send(bob.id, 'q1'), a.send(bob.id, 'q2')];
  const [m1, m2] = await Promise.all(pending);
  assert.deepEqual([m1.seq, m2.seq], [1, 2]);
  await until(() => b.received.length === 2, 'both queued messages');
  assert.deepEqual(b.received.map((m) => m.body), ['q1', 'q2']);
});

test('a fresh session after the resume window re-subscribes topics and replays what was missed', async () => {
  const [ann, bob] = users(2);
  const topic = `topic:js-${ann.id}-${Date.now()}`;
  const tap = tappedSocket();
  const b = client(bob, { WebSocket: tap.WebSocket, backoffInitial: 300 });
  const a = client(ann);
  await Promise.all([a.connect(), b.connect()]);
  const sub = await b.subscribe(topic);
  assert.equal(sub.last_seq, 0);
  await a.send(topic, 't1');
  await until(() => b.received.length === 1, 't1');
  const resyncs = [];
  b.on('resync', (e) => resyncs.push(e));
  const oldSession = b.sessionId;
  tap.kill();
  // The server no longer knows the session (as after the window): a fresh one.
  b.sessionId = 's_expired_for_the_test';
  const statuses = [];
  b.on('status', (e) => statuses.push(e.status));
  await until(() => statuses.includes('reconnecting'), 'reconnecting');
  await a.send(topic, 't2 (missed)');
  await until(() => resyncs.length === 1, 'resync');
  assert.equal(b.resumed, false);
  assert.notEqual(b.sessionId, oldSession);
  await until(() => b.received.length === 2, 't2 replayed');
  await a.send(topic, 't3 (live again)');
  await until(() => b.received.length === 3, 't3 live');
  assert.deepEqual(seqsOf(b, topic), [1, 2, 3]);
});

test('close 4000 (session taken over) stops without resuming', async () => {
  const [ann] = users(1);
  const first = client(ann);
  await first.connect();
  const closes = [];
  first.on('close', (e) => closes.push(e));
  const second = client(ann, { session: first.sessionId });
  const welcome = await second.connect();
  assert.equal(welcome.resumed, true);
  await until(() => first.status === 'closed', 'the first client to stop');
  assert.equal(closes[0].code, 4000);
  assert.equal(closes[0].willReconnect, false);
  assert.equal(first.stats.reconnects, 0);
  assert.equal(first.sessionId, null, 'a later connect() starts a fresh session');
  await assert.rejects(first.sync(), (err) => err instanceof ChatError && err.code === 'closed');
});

test('close 4401 calls refreshToken and connects with the new token', async () => {
  const [ann] = users(1);
  let refreshed = 0;
  const c = client(ann, {
    token: 'not-a-token',
    refreshToken: async () => {
      refreshed += 1;
      return ann.token;
    },
  });
  const welcome = await c.connect();
  assert.equal(welcome.user.id, ann.id);
  assert.equal(refreshed, 1);
  assert.ok(tokenExpiry(ann.token) > Date.now() / 1000);
});

test('the token is replaced with an auth frame before it expires', async () => {
  const [ann] = users(1);
  const tap = tappedSocket();
  let refreshed = 0;
  const secondsLeft = tokenExpiry(ann.token) - Date.now() / 1000;
  const c = client(ann, {
    WebSocket: tap.WebSocket,
    // "Refresh when less than all of the lifetime is left": in about a second.
    refreshBefore: Math.floor(secondsLeft),
    refreshToken: async () => {
      refreshed += 1;
      return ann.token;
    },
  });
  await c.connect();
  await until(() => tap.sent.some((f) => f.type === 'auth'), 'an auth frame');
  await until(() => refreshed >= 1 && c.pending.size === 0, 'its answer');
  assert.equal(c.status, 'open');
  assert.equal(tap.sockets.length, 1, 'no reconnect for a refresh');
});

test('close 4401 without refreshToken stops with status closed', async () => {
  const c = new ChatClient({ url: WS_URL, token: 'not-a-token', backoffInitial: 50 });
  const done = c.connect();
  await assert.rejects(done, (err) => err.code === 'closed');
  assert.equal(c.status, 'closed');
});

test('errors come back as ChatError by ref; a lost answer times out', async () => {
  const [ann, bob, carol] = users(3);
  const tap = tappedSocket();
  const a = client(ann, { WebSocket: tap.WebSocket, requestTimeout: 500 });
  const b = client(bob);
  await Promise.all([a.connect(), b.connect()]);
  const dm = (await b.send(carol.id, 'private')).channel;
  await assert.rejects(a.history(dm), (err) => err instanceof ChatError && err.code === 'forbidden');
  await assert.rejects(a.send('topic:BAD NAME', 'x'), (err) => err.code === 'bad_request');
  tap.dropAnswers = (frame) => frame.type === 'sync';
  await assert.rejects(a.sync(), (err) => err.code === 'timeout');
  tap.dropAnswers = null;
  assert.ok(Array.isArray(await a.sync()));
});

test('typing: start is throttled, stop is sent, the other side sees both', async () => {
  const [ann, bob] = users(2);
  const tap = tappedSocket();
  const a = client(ann, { WebSocket: tap.WebSocket, typingIdle: 200 });
  const b = client(bob);
  await Promise.all([a.connect(), b.connect()]);
  const { channel } = await a.send(bob.id, 'hello');
  const seen = [];
  b.on('typing', (e) => seen.push(e));
  a.typing(channel);
  a.typing(channel);
  a.typing(channel);
  await until(() => seen.some((e) => e.state === 'start'), 'typing start');
  assert.deepEqual(b.typingUsers(channel), [{ id: ann.id, username: ann.username }]);
  await until(() => seen.some((e) => e.state === 'stop'), 'typing stop after idle');
  assert.deepEqual(b.typingUsers(channel), []);
  const typing = tap.sent.filter((f) => f.type === 'typing');
  assert.deepEqual(typing.map((f) => f.state), ['start', 'stop']);
});

test('presence cache: watch, change events, offline after close, re-watched after resume', async () => {
  const [ann, bob] = users(2);
  const a = client(ann);
  const tap = tappedSocket();
  const b = client(bob, { WebSocket: tap.WebSocket });
  await Promise.all([a.connect(), b.connect()]);
  await a.send(bob.id, 'so we can see each other');
  const { presence } = await b.watchPresence([ann.id]);
  assert.equal(presence[0].status, 'online');
  assert.equal(b.presenceOf(ann.id).status, 'online');
  assert.equal(b.presenceOf(ann.username).status, 'online');
  tap.kill();
  await until(() => b.stats.resumes === 1 && b.status === 'open', 'resume');
  await until(() => tap.sent.filter((f) => f.type === 'presence.subscribe').length === 2, 're-watch');
  const changes = [];
  b.on('presence', (e) => changes.push(e));
  a.close();
  await until(() => changes.some((e) => e.status === 'offline'), 'ann offline');
  assert.equal(changes.at(-1).previous, 'online');
  assert.equal(b.presenceOf(ann.id).status, 'offline');
  assert.ok(b.presenceOf(ann.id).last_seen);
});

test('history pager pages back to the beginning', async () => {
  const [ann, bob] = users(2);
  const a = client(ann, { sendTimeout: WAIT });
  await a.connect();
  for (let i = 1; i <= 7; i++) await a.send(bob.id, `h${i}`);
  const channel = a.received[0].channel;
  const pager = a.pager(channel, { limit: 3 });
  const pages = [];
  while (pager.hasMore) pages.push((await pager.older()).map((m) => m.seq));
  assert.deepEqual(pages, [[5, 6, 7], [2, 3, 4], [1]]);
  assert.deepEqual(await pager.older(), []);
  assert.equal(a.lastSeq(channel), 7);
  const read = await a.markRead(channel);
  assert.equal(read.read_seq, 7);
});

test('edit and delete resolve with the changed message; the other side gets events', async () => {
  const [ann, bob] = users(2);
  const a = client(ann);
  const b = client(bob);
  await Promise.all([a.connect(), b.connect()]);
  const events = [];
  b.on('message.edited', (e) => events.push(e));
  b.on('message.deleted', (e) => events.push(e));
  const m = await a.send(bob.id, 'tpyo');
  const edited = await a.editMessage(m.id, 'typo');
  assert.equal(edited.body, 'typo');
  const gone = await a.deleteMessage(m.id);
  assert.equal(gone.deleted, true);
  await until(() => events.length === 2, 'both events');
  assert.deepEqual(events.map((e) => e.type), ['message.edited', 'message.deleted']);
  await assert.rejects(b.editMessage(m.id, 'mine now'), (err) => err.code === 'forbidden');
});

test('sends over the rate limit are retried after retry_after and all land once', async () => {
  const [ann, bob] = users(2);
  const tap = tappedSocket();
  const a = client(ann, { WebSocket: tap.WebSocket, sendTimeout: WAIT });
  await a.connect();
  // The test server allows bursts of 10 sends, 5 a second: 30 at once meet rate_limited.
  const sent = await Promise.all(range(30).map((i) => a.send(bob.id, `burst ${i}`)));
  assert.deepEqual(sent.map((m) => m.seq).sort((x, y) => x - y), range(30));
  const directs = tap.sent.filter((f) => f.type === 'direct');
  assert.ok(directs.length > 30, `${directs.length} frames for 30 sends: some were retried`);
  assert.equal(new Set(directs.map((f) => f.client_id)).size, 30);
  const page = await a.history(sent[0].channel, { limit: 200 });
  assert.equal(page.messages.length, 30);
});

test('close 4403 (inactive user) stops without reconnecting', async () => {
  assert.ok(INACTIVE, 'CHAT_TEST_INACTIVE is set');
  const c = client(INACTIVE, { refreshToken: async () => INACTIVE.token });
  const closes = [];
  c.on('close', (e) => closes.push(e));
  await assert.rejects(c.connect(), (err) => err.code === 'closed');
  assert.equal(c.status, 'closed');
  assert.deepEqual(closes.map((e) => [e.code, e.willReconnect]), [[4403, false]]);
  assert.equal(c.stats.reconnects, 0);
});

test('close 4429 (too many connections) keeps trying until a slot is free', async () => {
  const [ann] = users(1);
  const held = [];
  for (let i = 0; i < 20; i++) held.push(client(ann));
  await Promise.all(held.map((c) => c.connect()));
  const extra = client(ann, { backoffInitial: 50, backoffMax: 200 });
  const closes = [];
  extra.on('close', (e) => closes.push(e.code));
  const connected = extra.connect();
  await until(() => closes.length >= 2, 'two refusals');
  assert.deepEqual([...new Set(closes)], [4429]);
  held[0].close();
  const welcome = await connected;
  assert.equal(welcome.user.id, ann.id);
  assert.ok(extra.stats.reconnects >= 2);
});
