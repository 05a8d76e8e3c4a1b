// The chat backend's browser (and Node) client: one dependency-free ES module.
//
// It owns the hard parts of the wire protocol (docs/protocol.md): reconnect
// with backoff, session resume, dedupe by (channel, seq), coalesced
// `received` acks, idempotent sends that survive a drop, typing throttle,
// presence cache and history paging. docs/client.md is the guide.

/** @typedef {import('./client').ChatClientOptions} ChatClientOptions */
/** @typedef {import('./client').Message} Message */
/** @typedef {import('./client').Welcome} Welcome */

/** An `error` answer of the server, or a failure of the client itself. */
export class ChatError extends Error {
  /**
   * @param {string} code protocol error code, or `timeout`, `disconnected`, `closed`
   * @param {string} message human text
   * @param {Record<string, any>} [extra] further fields of the error frame
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'ChatError';
    this.code = code;
    this.retryAfter = extra.retry_after ?? null;
    this.frame = extra;
  }
}

const DEFAULTS = {
  requestTimeout: 10000,
  sendTimeout: 0, // sends wait for the connection, however long, unless set
  ackDelay: 250,
  backoffInitial: 500,
  backoffMax: 15000,
  typingRenew: 3000,
  typingIdle: 4000,
  typingExpire: 8000,
  refreshBefore: 60,
  maxSeen: 2000,
};

// Close codes (docs/protocol.md, "Close codes").
const TAKEN_OVER = 4000;
const UNAUTHORIZED = 4401;
const FORBIDDEN = 4403;
const TOO_MANY = 4429;

// Frames that are re-sent when the socket drops before their answer came:
// every one whose effect is idempotent on the server (sends have client_id).
const NOT_RETRIED = new Set(['typing', 'ping', 'auth', 'received']);

let counter = 0;

/** A fresh `client_id`: random enough to be unique per user for a day. */
export function clientIdNew() {
  const bytes = new Uint8Array(9);
  globalThis.crypto.getRandomValues(bytes);
  let text = '';
  for (const b of bytes) text += b.toString(16).padStart(2, '0');
  return `c-${Date.now().toString(36)}-${text}`;
}

/** Seconds since the epoch at which a JWT expires, or null if unreadable. */
export function tokenExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(globalThis.atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return typeof json.exp === 'number' ? json.exp : null;
  } catch {
    return null;
  }
}

/** The other member of `dm:A:B` for user `me`. */
export function dmPeer(channel, me) {
  const [, a, b] = channel.split(':');
  return Number(a) === me ? Number(b) : Number(a);
}

/**
 * Which (channel, seq) a client has shown, so that each message is shown once.
 *
 * Per channel: `floor`, every seq at or below it is seen; `above`, seen seqs
 * past the floor (out of order: a send's `ok` can overtake an earlier event).
 */
class SeenSet {
  constructor(max) {
    this.max = max;
    /** @type {Map<string, {floor: number | null, above: Set<number>, last: number}>} */
    this.channels = new Map();
  }

  entry(channel) {
    let e = this.channels.get(channel);
    if (!e) {
      e = { floor: null, above: new Set(), last: 0 };
      this.channels.set(channel, e);
    }
    return e;
  }

  has(channel, seq) {
    const e = this.channels.get(channel);
    return !!e && ((e.floor !== null && seq <= e.floor) || e.above.has(seq));
  }

  /** Record a seq. `inOrder`: it came as a message event, which the server sends in seq order. */
  add(channel, seq, inOrder) {
    const e = this.entry(channel);
    if (e.floor === null && (inOrder || seq === 1)) e.floor = seq - 1;
    e.above.add(seq);
    e.last = Math.max(e.last, seq);
    this.compact(e);
  }

  /** Everything up to `seq` counts as seen (a subscribe's start point). */
  raise(channel, seq) {
    const e = this.entry(channel);
    e.floor = Math.max(e.floor ?? 0, seq);
    e.last = Math.max(e.last, seq);
    this.compact(e);
  }

  compact(e) {
    if (e.floor !== null) {
      for (const s of e.above) if (s <= e.floor) e.above.delete(s);
      while (e.above.delete(e.floor + 1)) e.floor += 1;
    }
    if (e.above.size > this.max) {
      // Bounded memory: the oldest out-of-order seqs become part of the floor.
      const sorted = [...e.above].sort((x, y) => x - y);
      e.floor = sorted[sorted.length - this.max];
      this.compact(e);
    }
  }

  /** The seq up to which everything was seen (what `received` may acknowledge), or null. */
  floor(channel) {
    return this.channels.get(channel)?.floor ?? null;
  }

  last(channel) {
    return this.channels.get(channel)?.last ?? 0;
  }
}

/**
 * A connection to the chat server that survives drops.
 *
 * Events (`addEventListener(type, fn)` or `on(type, fn)`; `fn` gets the payload):
 * status, welcome, message, message.edited, message.deleted, receipt, typing,
 * presence, resync, error, close.
 */
export class ChatClient {
  /** @param {ChatClientOptions} options */
  constructor(options) {
    if (!options || !options.url) throw new TypeError('ChatClient needs options.url');
    this.options = { ...DEFAULTS, ...options };
    this.url = options.url;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError('no WebSocket: pass options.WebSocket');
    this.token = options.token ?? null;
    this.tokenInForce = null;
    this.refreshed = null;
    /** @type {'idle'|'connecting'|'open'|'reconnecting'|'closed'} */
    this.status = 'idle';
    this.sessionId = options.session ?? null;
    this.user = null;
    this.resumed = false;
    this.heartbeat = 25;
    this.attempt = 0;
    this.stats = { duplicates: 0, reconnects: 0, resumes: 0, acksSent: 0 };
    this.seen = new SeenSet(this.options.maxSeen);
    /** @type {Set<string>} topics this client subscribed to */
    this.topics = new Set();
    /** @type {Map<string, number>} channel -> seq acknowledged with `received` */
    this.acked = new Map();
    this.ackTimer = null;
    /** @type {Map<string, any>} ref -> pending request */
    this.pending = new Map();
    /** @type {Map<string, {user: any, status: string, last_seen: string|null}>} user id -> presence */
    this.presence = new Map();
    this.watched = new Set();
    /** @type {Map<string, {last: number, timer: any}>} */
    this.typingOut = new Map();
    /** @type {Map<string, Map<number, {user: any, timer: any}>>} */
    this.typingIn = new Map();
    this.listeners = new Map();
    this.ws = null;
    this.timers = { reconnect: null, ping: null, refresh: null };
    this.lastFrameAt = 0;
    this.waiters = [];
    this.onOnline = () => {
      if (this.status === 'reconnecting') this.reconnectNow();
    };
  }

  // --- events ---------------------------------------------------------------

  /** @param {string} type @param {(payload: any) => void} fn */
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
  }

  removeEventListener(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }

  /** Like addEventListener; returns a function that removes the listener. */
  on(type, fn) {
    this.addEventListener(type, fn);
    return () => this.removeEventListener(type, fn);
  }

  emit(type, payload) {
    for (const fn of [...(this.listeners.get(type) ?? [])]) {
      try {
        fn(payload);
      } catch (err) {
        // A failing listener must not break the connection; report it.
        if (type !== 'error') this.emit('error', err);
        else globalThis.console?.error(err);
      }
    }
  }

  changeStatus(status, detail = {}) {
    this.status = status;
    this.emit('status', { status, resumed: this.resumed, attempt: this.attempt, ...detail });
  }

  // --- connection -----------------------------------------------------------

  /** Open the connection; resolves with the first `welcome`. */
  connect() {
    if (this.status === 'open') return Promise.resolve(this.welcome);
    const ready = this.whenOpen(0);
    if (this.status === 'idle' || this.status === 'closed') {
      globalThis.addEventListener?.('online', this.onOnline);
      this.attempt = 0;
      this.open();
    }
    return ready;
  }

  /** Close for good (no reconnect); pending requests fail with `closed`. */
  close() {
    globalThis.removeEventListener?.('online', this.onOnline);
    this.stop('closed', { code: 1000, reason: 'closed by the client' });
  }

  /** Drop the current socket now and reconnect (resuming), e.g. after a network change. */
  reconnectNow() {
    if (this.status === 'idle' || this.status === 'closed') return;
    clearTimeout(this.timers.reconnect);
    if (this.ws) {
      this.dropSocket(3000, 'reconnect');
      this.failInFlight();
    }
    this.attempt = Math.max(this.attempt, 1);
    this.open();
  }

  async open() {
    clearTimeout(this.timers.reconnect);
    this.changeStatus(this.sessionId && this.attempt > 0 ? 'reconnecting' : 'connecting');
    let token;
    try {
      token = await this.currentToken();
    } catch (err) {
      this.stop('closed', { code: UNAUTHORIZED, reason: 'no token: ' + err.message });
      return;
    }
    if (this.status === 'closed') return;
    let url = this.url + (this.url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
    if (this.sessionId) url += '&session=' + encodeURIComponent(this.sessionId);
    const ws = new this.WebSocket(url);
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.onClose(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event follows
  }

  /** The token for the next connect: a refreshed one first, else options.token. */
  async currentToken() {
    let token = this.refreshed;
    this.refreshed = null;
    if (!token) token = typeof this.token === 'function' ? await this.token() : this.token;
    if (!token && this.options.refreshToken) token = await this.options.refreshToken();
    if (!token) throw new Error('options.token or options.refreshToken is required');
    this.tokenInForce = token;
    return token;
  }

  onClose(code, reason) {
    this.ws = null;
    this.stopTimers();
    this.failInFlight();
    if (this.status === 'closed') return;
    this.emit('close', { code, reason, willReconnect: ![TAKEN_OVER, FORBIDDEN].includes(code) });
    if (code === TAKEN_OVER) {
      // Another socket resumed this session: resuming back would ping-pong.
      // A later connect() starts a fresh session.
      this.sessionId = null;
      this.stop('closed', { code, reason: 'session taken over by another connection' });
    } else if (code === FORBIDDEN) {
      this.stop('closed', { code, reason: 'forbidden: the user is inactive' });
    } else if (code === UNAUTHORIZED) {
      this.refreshThenReconnect();
    } else {
      this.scheduleReconnect(code === TOO_MANY ? 4 : 1);
    }
  }

  async refreshThenReconnect() {
    if (!this.options.refreshToken) {
      this.stop('closed', { code: UNAUTHORIZED, reason: 'token refused and no refreshToken callback' });
      return;
    }
    try {
      this.refreshed = await this.options.refreshToken();
    } catch (err) {
      this.stop('closed', { code: UNAUTHORIZED, reason: 'token refresh failed: ' + err.message });
      return;
    }
    // A refreshed token that is refused again would loop: back off like any drop.
    this.scheduleReconnect(1);
  }

  /** Exponential backoff with "equal jitter": half fixed, half random. */
  scheduleReconnect(factor) {
    const { backoffInitial, backoffMax } = this.options;
    const cap = Math.min(backoffMax, backoffInitial * 2 ** this.attempt * factor);
    const delay = Math.round(cap / 2 + Math.random() * (cap / 2));
    this.attempt += 1;
    this.stats.reconnects += 1;
    this.changeStatus('reconnecting', { delay });
    this.timers.reconnect = setTimeout(() => this.open(), delay);
  }

  stop(status, detail) {
    clearTimeout(this.timers.reconnect);
    this.stopTimers();
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.ws) this.dropSocket(1000, 'closed');
    for (const [ref, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(ref);
      p.reject(new ChatError('closed', detail.reason));
    }
    for (const w of this.waiters.splice(0)) w.reject(new ChatError('closed', detail.reason));
    this.changeStatus(status, detail);
  }

  dropSocket(code, reason) {
    const ws = this.ws;
    this.ws = null;
    this.stopTimers();
    ws.onmessage = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  stopTimers() {
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.refresh);
  }

  /** Resolves once the connection is open (with `welcome`); timeout 0 waits forever. */
  whenOpen(timeout) {
    if (this.status === 'open') return Promise.resolve(this.welcome);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject, timer: null };
      if (timeout > 0) {
        waiter.timer = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(new ChatError('timeout', 'not connected'));
        }, timeout);
      }
      this.waiters.push(waiter);
    });
  }

  onWelcome(frame) {
    const previous = this.sessionId;
    this.welcome = frame;
    this.sessionId = frame.session;
    this.user = frame.user;
    this.heartbeat = frame.heartbeat;
    this.resumed = frame.resumed;
    if (frame.resumed) this.stats.resumes += 1;
    this.attempt = 0;
    this.startTimers();
    this.changeStatus('open', { resumed: frame.resumed });
    this.emit('welcome', frame);
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve(frame);
    }
    // What the old socket left unanswered goes out again, in order.
    for (const [ref, p] of this.pending) if (!p.sent) this.transmit(ref, p);
    this.restore(frame, previous);
  }

  /** After a welcome: re-subscribe what the server does not hold for us. */
  async restore(frame, previous) {
    const kept = new Set(frame.channels);
    const again = frame.resumed ? [...this.topics].filter((t) => !kept.has(t)) : [...this.topics];
    const jobs = again.map((topic) => this.subscribe(topic, { since: this.seen.floor(topic) ?? undefined }));
    if (previous && !frame.resumed) {
      // A fresh session: the window passed (or the server forgot). Replay what
      // was missed in the channels received without subscribing.
      for (const [channel, e] of this.seen.channels) {
        if (!channel.startsWith('topic:') && e.floor !== null) {
          jobs.push(this.subscribe(channel, { since: e.floor }));
        }
      }
    }
    if (this.watched.size) jobs.push(this.watchPresence([...this.watched]));
    this.flushAcks();
    const results = await Promise.allSettled(jobs);
    for (const r of results) if (r.status === 'rejected') this.emit('error', r.reason);
    if (previous && !frame.resumed) this.emit('resync', { session: frame.session, previous });
  }

  startTimers() {
    this.lastFrameAt = Date.now();
    const every = Math.max(1000, (this.heartbeat * 1000) / 2);
    this.timers.ping = setInterval(() => {
      if (Date.now() - this.lastFrameAt > this.heartbeat * 2000 + every) {
        // Nothing heard for too long: the connection is dead without a close.
        this.dropSocket(3000, 'no answer');
        this.onClose(1006, 'no answer from the server');
        return;
      }
      this.raw({ type: 'ping' });
    }, every);
    this.scheduleRefresh();
  }

  /** Replace the token before it expires (an `auth` frame keeps the session). */
  scheduleRefresh() {
    clearTimeout(this.timers.refresh);
    if (!this.options.refreshToken || !this.tokenInForce) return;
    const exp = tokenExpiry(this.tokenInForce);
    if (!exp) return;
    const inMs = Math.max(1000, (exp - this.options.refreshBefore) * 1000 - Date.now());
    this.timers.refresh = setTimeout(async () => {
      try {
        const token = await this.options.refreshToken();
        await this.request('auth', { token });
        this.tokenInForce = token;
        if (typeof this.token !== 'function') this.token = token;
        this.scheduleRefresh();
      } catch (err) {
        this.emit('error', err); // the server closes with 4401 at expiry; that path refreshes again
      }
    }, Math.min(inMs, 2 ** 31 - 1));
  }

  // --- frames in ------------------------------------------------------------

  onFrame(data) {
    this.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.emit('error', new ChatError('bad_json', 'the server sent a frame that is not JSON'));
      return;
    }
    const p = frame.ref !== undefined ? this.pending.get(frame.ref) : undefined;
    if (p && ['ok', 'error', 'pong'].includes(frame.type)) return this.settle(frame.ref, p, frame);
    switch (frame.type) {
      case 'welcome':
        return this.onWelcome(frame);
      case 'message':
        return this.accept(frame, true);
      case 'typing':
        return this.onTyping(frame);
      case 'presence':
        return this.presenceUpdate(frame);
      case 'error':
        return this.emit('error', new ChatError(frame.code, frame.message, frame));
      case 'ok':
      case 'pong':
        return undefined;
      default:
        return this.emit(frame.type, frame); // message.edited, message.deleted, receipt
    }
  }

  /** A message from an event, a replay, or the `ok` of our own send: shown once. */
  accept(message, inOrder) {
    if (this.seen.has(message.channel, message.seq)) {
      this.stats.duplicates += 1;
      return false;
    }
    this.seen.add(message.channel, message.seq, inOrder);
    if (message.from && this.typingIn.get(message.channel)?.has(message.from.id)) {
      this.typingClear(message.channel, message.from.id);
    }
    this.emit('message', message);
    this.ackSoon();
    return true;
  }

  // --- acknowledgements -----------------------------------------------------

  ackSoon() {
    if (this.ackTimer === null && this.status !== 'closed') {
      this.ackTimer = setTimeout(() => this.flushAcks(), this.options.ackDelay);
    }
  }

  /** One `received` per channel for everything seen in order since the last one. */
  flushAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.status !== 'open') return;
    for (const [channel] of this.seen.channels) {
      const floor = this.seen.floor(channel);
      if (floor === null || floor <= (this.acked.get(channel) ?? 0)) continue;
      this.acked.set(channel, floor);
      this.stats.acksSent += 1;
      this.request('received', { channel, seq: floor }).catch((err) => {
        if (this.acked.get(channel) === floor) this.acked.delete(channel);
        if (err.code !== 'disconnected' && err.code !== 'closed') this.emit('error', err);
      });
    }
  }

  // --- requests -------------------------------------------------------------

  /**
   * Send a frame and wait for its answer (the `ok` frame); an `error` answer
   * rejects with ChatError. Frames wait for the connection while it is down.
   */
  request(type, fields = {}, { timeout } = {}) {
    const ref = `r${++counter}`;
    const wait = timeout ?? this.options.requestTimeout;
    return new Promise((resolve, reject) => {
      if (this.status === 'closed' || this.status === 'idle') {
        reject(new ChatError('closed', 'not connected: call connect() first'));
        return;
      }
      const p = { frame: { type, ...fields, ref }, resolve, reject, sent: false, timer: null };
      if (wait > 0) {
        p.timer = setTimeout(() => {
          this.pending.delete(ref);
          reject(new ChatError('timeout', `no answer to ${type} within ${wait} ms`));
        }, wait);
      }
      this.pending.set(ref, p);
      if (this.status === 'open') this.transmit(ref, p);
    });
  }

  transmit(ref, p) {
    p.sent = this.raw(p.frame);
  }

  raw(frame) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  settle(ref, p, frame) {
    if (frame.type === 'error' && frame.code === 'rate_limited' && p.frame.client_id) {
      // An idempotent send: try again when the server says so.
      p.sent = false;
      setTimeout(() => this.pending.has(ref) && this.status === 'open' && this.transmit(ref, p), frame.retry_after * 1000);
      return;
    }
    clearTimeout(p.timer);
    this.pending.delete(ref);
    if (frame.type === 'error') p.reject(new ChatError(frame.code, frame.message, frame));
    else p.resolve(frame);
  }

  /** The socket dropped: answers to what it carried will not come. */
  failInFlight() {
    for (const [ref, p] of this.pending) {
      if (!p.sent) continue;
      if (NOT_RETRIED.has(p.frame.type)) {
        clearTimeout(p.timer);
        this.pending.delete(ref);
        p.reject(new ChatError('disconnected', 'the connection dropped before the answer'));
      } else {
        p.sent = false; // goes out again after the next welcome
      }
    }
  }

  // --- sending --------------------------------------------------------------

  /**
   * Send a message. `target`: `topic:NAME`, `broadcast`, `dm:A:B`, or a user
   * id / username for a direct message. Resolves with the stored message
   * (also emitted as a `message` event); a drop meanwhile is retried with the
   * same `client_id`, so it lands once.
   */
  async send(target, body, { clientId, timeout } = {}) {
    const client_id = clientId ?? clientIdNew();
    let frame;
    if (typeof target === 'string' && target.startsWith('topic:')) frame = { channel: target };
    else if (target === 'broadcast') frame = null;
    else if (typeof target === 'string' && target.startsWith('dm:')) {
      if (!this.user) await this.whenOpen(0);
      frame = { to: dmPeer(target, this.user.id) };
    } else frame = { to: target };
    const type = frame === null ? 'broadcast' : frame.channel ? 'publish' : 'direct';
    const ok = await this.request(type, { ...frame, body, client_id }, { timeout: timeout ?? this.options.sendTimeout });
    const channel = ok.message.channel;
    this.stopTyping(channel);
    this.accept(ok.message, false);
    return ok.message;
  }

  /** Edit one's own message (staff: any); resolves with the changed message. */
  async editMessage(id, body) {
    return (await this.request('edit', { id, body })).message;
  }

  /** Delete a message; resolves with its tombstone. */
  async deleteMessage(id) {
    return (await this.request('delete', { id })).message;
  }

  // --- channels -------------------------------------------------------------

  /**
   * Receive a topic's messages (and create it if missing). With `since`, the
   * messages after it are replayed first. Re-subscribed automatically after
   * a reconnect that did not resume.
   */
  async subscribe(channel, { since } = {}) {
    if (channel.startsWith('topic:')) this.topics.add(channel);
    const fields = { channel };
    if (since !== undefined && since !== null) {
      fields.since = since;
      this.seen.raise(channel, since);
    }
    const ok = await this.request('subscribe', fields);
    if (since === undefined || since === null) this.seen.raise(channel, ok.last_seq);
    this.flushAcks();
    return ok;
  }

  async unsubscribe(channel) {
    this.topics.delete(channel);
    return this.request('unsubscribe', { channel });
  }

  /** Mark a channel read up to `seq` (default: the newest seq seen). */
  markRead(channel, seq) {
    const upto = seq ?? this.seen.last(channel);
    return this.request('read', { channel, seq: upto });
  }

  /** Every channel of the user with `last_seq`, cursors and `unread`. */
  async sync() {
    return (await this.request('sync')).channels;
  }

  /** One page of history, ascending by seq: `{messages, has_more}`. */
  history(channel, { before, after, limit } = {}) {
    const fields = { channel };
    if (before !== undefined) fields.before = before;
    if (after !== undefined) fields.after = after;
    if (limit !== undefined) fields.limit = limit;
    return this.request('history', fields);
  }

  /**
   * Scroll-back paging: `older()` returns the next older page (ascending),
   * starting from the newest; `hasMore` turns false at the beginning.
   */
  pager(channel, { limit = 50 } = {}) {
    const state = { oldest: null, hasMore: true };
    return {
      get hasMore() {
        return state.hasMore;
      },
      get oldest() {
        return state.oldest;
      },
      older: async () => {
        if (!state.hasMore) return [];
        const page = await this.history(channel, { limit, before: state.oldest ?? undefined });
        if (page.messages.length) state.oldest = page.messages[0].seq;
        state.hasMore = page.has_more && page.messages.length > 0;
        return page.messages;
      },
    };
  }

  /** The newest seq shown in a channel (0 if none). */
  lastSeq(channel) {
    return this.seen.last(channel);
  }

  // --- typing ---------------------------------------------------------------

  /**
   * Call on every keystroke: sends `start` at most every `typingRenew` ms and
   * `stop` after `typingIdle` ms without a call (or when a message is sent).
   */
  typing(channel) {
    let t = this.typingOut.get(channel);
    const now = Date.now();
    if (!t) {
      t = { last: 0, timer: null };
      this.typingOut.set(channel, t);
    }
    if (now - t.last >= this.options.typingRenew && this.status === 'open') {
      t.last = now;
      this.request('typing', { channel, state: 'start' }).catch(() => {});
    }
    clearTimeout(t.timer);
    t.timer = setTimeout(() => this.stopTyping(channel), this.options.typingIdle);
  }

  /** Send `stop` if this client said `start` (the server would wait 6 s otherwise). */
  stopTyping(channel) {
    const t = this.typingOut.get(channel);
    if (!t) return;
    clearTimeout(t.timer);
    this.typingOut.delete(channel);
    if (t.last && this.status === 'open') this.request('typing', { channel, state: 'stop' }).catch(() => {});
  }

  /** Users typing in a channel now: `[{id, username}]`. */
  typingUsers(channel) {
    return [...(this.typingIn.get(channel)?.values() ?? [])].map((e) => e.user);
  }

  onTyping(frame) {
    const { channel, user, state } = frame;
    if (state === 'start') {
      let users = this.typingIn.get(channel);
      if (!users) this.typingIn.set(channel, (users = new Map()));
      clearTimeout(users.get(user.id)?.timer);
      // A lost `stop` ends the display anyway.
      const timer = setTimeout(() => this.typingClear(channel, user.id), this.options.typingExpire);
      users.set(user.id, { user, timer });
      this.emit('typing', { channel, user, state, users: this.typingUsers(channel) });
    } else {
      this.typingClear(channel, user.id, user);
    }
  }

  typingClear(channel, userId, user) {
    const users = this.typingIn.get(channel);
    const entry = users?.get(userId);
    if (entry) {
      clearTimeout(entry.timer);
      users.delete(userId);
    }
    if (entry || user) {
      this.emit('typing', { channel, user: user ?? entry.user, state: 'stop', users: this.typingUsers(channel) });
    }
  }

  // --- presence -------------------------------------------------------------

  /** Watch users (ids or usernames); resolves with their current states. Re-watched after reconnects. */
  async watchPresence(users) {
    for (const u of users) this.watched.add(u);
    const ok = await this.request('presence.subscribe', { users });
    for (const entry of ok.presence) this.presenceUpdate(entry);
    return { presence: ok.presence, denied: ok.denied };
  }

  async unwatchPresence(users) {
    for (const u of users) this.watched.delete(u);
    return this.request('presence.unsubscribe', { users });
  }

  /** `online`, `away` or `dnd`; resolves with the status others now see. */
  async setStatus(status) {
    return (await this.request('presence.set', { status })).status;
  }

  /** The cached presence of a user (by id or username), or undefined. */
  presenceOf(user) {
    if (typeof user === 'number') return this.presence.get(user);
    for (const entry of this.presence.values()) if (entry.user.username === user) return entry;
    return undefined;
  }

  presenceUpdate(frame) {
    const previous = this.presence.get(frame.user.id);
    const entry = { user: frame.user, status: frame.status, last_seen: frame.last_seen };
    this.presence.set(frame.user.id, entry);
    if (!previous || previous.status !== entry.status || previous.last_seen !== entry.last_seen) {
      this.emit('presence', { ...entry, previous: previous?.status ?? null });
    }
  }

  /** Round trip to the server; resolves with its clock (ms). */
  async ping() {
    return (await this.request('ping')).t;
  }
}

export default ChatClient;
