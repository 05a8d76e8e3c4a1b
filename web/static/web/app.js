// The demo page: every feature of the backend through the client (clients/js).
// No framework and no build step: the DOM is updated by hand, keyed by
// (channel, seq), so a message can never be shown twice.

import { ChatClient, clientIdNew, dmPeer } from '../rtc/client.js';

const $ = (id) => document.getElementById(id);
const TOKENS = 'chat.tokens';

const state = {
  client: null,
  me: null,
  /** channel -> {channel, last_seq, read_seq, unread} */
  channels: new Map(),
  /** channel -> Map(seq -> message) */
  messages: new Map(),
  /** client_id -> {channel, body} of sends not answered yet */
  pending: new Map(),
  /** user id -> username */
  names: new Map(),
  /** dm channel -> {delivered, read} of the other member */
  receipts: new Map(),
  current: null, // open channel, or {draftTo: username} for a new DM
  pager: null,
  editing: null,
};

// --- REST -------------------------------------------------------------------

async function api(method, path, body, auth = true) {
  const headers = { 'Content-Type': 'application/json' };
  if (auth) headers.Authorization = `Bearer ${tokens().access}`;
  let res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  if (res.status === 401 && auth) {
    await refreshAccess();
    headers.Authorization = `Bearer ${tokens().access}`;
    res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  }
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) throw Object.assign(new Error(data?.message ?? `HTTP ${res.status}`), { status: res.status, data });
  return data;
}

function tokens() {
  return JSON.parse(sessionStorage.getItem(TOKENS) ?? 'null');
}

function storeTokens(value) {
  sessionStorage.setItem(TOKENS, JSON.stringify(value));
}

async function refreshAccess() {
  const t = tokens();
  if (!t) throw new Error('signed out');
  const fresh = await api('POST', '/api/auth/token/refresh/', { refresh: t.refresh }, false).catch((err) => {
    logout();
    throw err;
  });
  storeTokens({ ...t, access: fresh.access, refresh: fresh.refresh ?? t.refresh });
  return fresh.access;
}

// --- sign in ----------------------------------------------------------------

$('auth-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const action = ev.submitter?.value ?? 'login';
  const username = $('auth-username').value.trim();
  const password = $('auth-password').value;
  $('auth-error').textContent = '';
  try {
    if (action === 'register') await api('POST', '/api/auth/register/', { username, password }, false);
    const pair = await api('POST', '/api/auth/token/', { username, password }, false);
    storeTokens({ access: pair.access, refresh: pair.refresh, username });
    start();
  } catch (err) {
    $('auth-error').textContent = err.message;
  }
});

$('logout').addEventListener('click', logout);

function logout() {
  sessionStorage.removeItem(TOKENS);
  state.client?.close();
  location.reload();
}

// --- connection -------------------------------------------------------------

function start() {
  $('auth').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  $('me').textContent = tokens().username;
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/`;
  const client = new ChatClient({ url, token: () => tokens().access, refreshToken: refreshAccess });
  state.client = client;
  window.chat = client; // for the console (and the browser tests)
  client.on('status', showStatus);
  client.on('welcome', (w) => {
    state.me = w.user;
    state.names.set(w.user.id, w.user.username);
    loadChannels();
  });
  client.on('message', onMessage);
  // The old session was gone: edits and deletions of the gap are not replayed.
  client.on('resync', () => typeof state.current === 'string' && openChannel(state.current));
  client.on('message.edited', (e) => patchMessage(e.channel, e.seq, { body: e.body, edited_at: e.edited_at }));
  client.on('message.deleted', (e) => patchMessage(e.channel, e.seq, { body: null, deleted: true }));
  client.on('receipt', onReceipt);
  client.on('typing', (e) => e.channel === state.current && showTyping(e.users));
  client.on('presence', (e) => {
    state.names.set(e.user.id, e.user.username);
    renderChannels();
    renderPresence();
    if (typeof state.current === 'string') $('conv-title').textContent = channelLabel(state.current);
  });
  client.on('error', (err) => console.warn('chat:', err));
  client.connect().catch((err) => showStatus({ status: 'closed', reason: err.message }));
}

function showStatus(s) {
  const badge = $('status');
  badge.dataset.status = s.status;
  badge.dataset.resumed = String(!!s.resumed);
  const text = {
    idle: 'Offline',
    connecting: 'Connecting…',
    open: s.resumed ? 'Online · resumed' : 'Online',
    reconnecting: 'Reconnecting…',
    closed: s.reason ? `Offline: ${s.reason}` : 'Offline',
  };
  badge.textContent = text[s.status];
}

// --- channels ---------------------------------------------------------------

async function loadChannels() {
  const list = await state.client.sync();
  for (const entry of list) state.channels.set(entry.channel, { ...state.channels.get(entry.channel), ...entry });
  const peers = [...state.channels.keys()].filter((c) => c.startsWith('dm:')).map((c) => dmPeer(c, state.me.id));
  if (peers.length) await state.client.watchPresence(peers).catch(() => {});
  renderChannels();
  if (typeof state.current === 'string') markRead(state.current);
}

function channelLabel(channel) {
  if (channel.startsWith('dm:')) return '@' + (state.names.get(dmPeer(channel, state.me.id)) ?? dmPeer(channel, state.me.id));
  if (channel.startsWith('topic:')) return '#' + channel.slice(6);
  if (channel.startsWith('system:')) return 'notices';
  return channel;
}

function renderChannels() {
  const ul = $('channels');
  ul.replaceChildren(
    ...[...state.channels.values()].map((entry) => {
      const li = document.createElement('li');
      li.dataset.channel = entry.channel;
      li.classList.toggle('active', entry.channel === state.current);
      if (entry.channel.startsWith('dm:')) li.append(presenceDot(dmPeer(entry.channel, state.me.id)));
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = channelLabel(entry.channel);
      const unread = document.createElement('span');
      unread.className = 'unread';
      unread.dataset.count = String(entry.unread ?? 0);
      unread.textContent = String(entry.unread ?? 0);
      li.append(name, unread);
      li.addEventListener('click', () => openChannel(entry.channel));
      return li;
    }),
  );
}

function presenceDot(userId) {
  const dot = document.createElement('span');
  const p = state.client.presenceOf(userId);
  dot.className = 'dot';
  dot.dataset.status = p?.status ?? 'offline';
  dot.title = p ? `${p.status}${p.last_seen ? ', last seen ' + when(p.last_seen) : ''}` : 'offline';
  return dot;
}

function renderPresence() {
  const el = $('conv-presence');
  el.replaceChildren();
  const channel = state.current;
  if (typeof channel !== 'string' || !channel.startsWith('dm:')) return;
  const p = state.client.presenceOf(dmPeer(channel, state.me.id));
  if (!p) return;
  el.append(presenceDot(p.user.id), ' ', p.status === 'offline' ? `last seen ${when(p.last_seen)}` : p.status);
  el.dataset.status = p.status;
}

function when(iso) {
  if (!iso) return 'never';
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : d.toLocaleString();
}

function touchChannel(channel) {
  if (!state.channels.has(channel)) state.channels.set(channel, { channel, last_seq: 0, read_seq: 0, unread: 0 });
  return state.channels.get(channel);
}

$('topic-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('topic-name').value.trim().toLowerCase().replace(/^#|^topic:/, '');
  $('topic-form').reset();
  await openChannel('topic:' + name).catch((err) => alert(err.message));
});

$('dm-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const username = $('dm-user').value.trim();
  $('dm-form').reset();
  const known = [...state.channels.keys()].find((c) => c.startsWith('dm:') && channelLabel(c) === '@' + username);
  if (known) return openChannel(known);
  // The channel exists once the first message is sent: until then, a draft.
  state.current = { draftTo: username };
  $('conv-title').textContent = `New message to @${username}`;
  $('messages').replaceChildren();
  $('older').hidden = true;
  showConversation();
  return undefined;
});

// --- a conversation ---------------------------------------------------------

async function openChannel(channel) {
  const client = state.client;
  state.current = channel;
  state.editing = null;
  touchChannel(channel);
  $('conv-title').textContent = channelLabel(channel);
  $('messages').replaceChildren();
  showTyping(client.typingUsers(channel));
  showConversation();
  renderChannels();
  renderPresence();
  if (channel.startsWith('topic:') && !client.topics.has(channel)) await client.subscribe(channel);
  state.pager = client.pager(channel, { limit: 30 });
  store(await state.pager.older());
  if (channel.startsWith('dm:')) await loadReceipts(channel);
  renderMessages();
  $('older').hidden = !state.pager.hasMore;
  $('scroller').scrollTop = $('scroller').scrollHeight;
  markRead(channel);
}

function showConversation() {
  $('app').classList.add('show-conv');
  $('composer').hidden = false;
  $('body').focus();
}

$('back').addEventListener('click', () => $('app').classList.remove('show-conv'));

$('older').addEventListener('click', async () => {
  const scroller = $('scroller');
  const before = scroller.scrollHeight;
  store(await state.pager.older());
  renderMessages();
  $('older').hidden = !state.pager.hasMore;
  scroller.scrollTop = scroller.scrollHeight - before;
});

function store(messages) {
  for (const m of messages) {
    if (!state.messages.has(m.channel)) state.messages.set(m.channel, new Map());
    state.messages.get(m.channel).set(m.seq, m);
    if (m.from) state.names.set(m.from.id, m.from.username);
  }
}

function onMessage(m) {
  store([m]);
  state.pending.delete(m.client_id);
  const entry = touchChannel(m.channel);
  entry.last_seq = Math.max(entry.last_seq ?? 0, m.seq);
  const mine = m.from?.id === state.me.id;
  if (m.channel === state.current) {
    const scroller = $('scroller');
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 60;
    renderMessages();
    if (atBottom || mine) scroller.scrollTop = scroller.scrollHeight;
    if (!mine) markRead(m.channel);
  } else if (!mine) {
    entry.unread = (entry.unread ?? 0) + 1;
  }
  if (m.channel.startsWith('dm:') && !state.client.presenceOf(dmPeer(m.channel, state.me.id))) {
    state.client.watchPresence([dmPeer(m.channel, state.me.id)]).catch(() => {});
  }
  renderChannels();
}

function patchMessage(channel, seq, changes) {
  const m = state.messages.get(channel)?.get(seq);
  if (!m) return;
  Object.assign(m, changes);
  if (channel === state.current) renderMessages();
}

function markRead(channel) {
  if (document.hidden) return;
  const entry = state.channels.get(channel);
  const seq = Math.max(state.client.lastSeq(channel), entry?.last_seq ?? 0);
  if (!seq || (entry && entry.read_seq >= seq)) return;
  state.client
    .markRead(channel, seq)
    .then((ok) => {
      Object.assign(touchChannel(channel), { read_seq: ok.read_seq, unread: 0 });
      renderChannels();
    })
    .catch(() => {});
}

document.addEventListener('visibilitychange', () => typeof state.current === 'string' && markRead(state.current));

/** The other member's positions in a DM, from the newest message of mine. */
async function loadReceipts(channel) {
  const mine = [...(state.messages.get(channel)?.values() ?? [])].filter((m) => m.from?.id === state.me.id);
  const r = state.receipts.get(channel) ?? { delivered: 0, read: 0 };
  const newest = mine.at(-1);
  if (newest) {
    const readers = await api('GET', `/api/messages/${newest.id}/readers/`).catch(() => ({ results: [] }));
    for (const entry of readers.results) r.read = Math.max(r.read, entry.read_seq);
  }
  r.delivered = Math.max(r.delivered, r.read);
  state.receipts.set(channel, r);
}

function onReceipt(e) {
  if (!e.channel.startsWith('dm:')) return;
  const r = state.receipts.get(e.channel) ?? { delivered: 0, read: 0 };
  if (e.delivered_seq) r.delivered = Math.max(r.delivered, e.delivered_seq);
  if (e.read_seq) r.read = Math.max(r.read, e.read_seq);
  r.delivered = Math.max(r.delivered, r.read);
  state.receipts.set(e.channel, r);
  if (e.channel === state.current) renderMessages();
}

function renderMessages() {
  const channel = state.current;
  const ol = $('messages');
  const rows = [...(state.messages.get(channel)?.values() ?? [])].sort((a, b) => a.seq - b.seq);
  const items = rows.map((m) => messageItem(m));
  for (const [clientId, p] of state.pending) if (p.channel === channel) items.push(pendingItem(clientId, p));
  ol.replaceChildren(...items);
}

function messageItem(m) {
  const li = document.createElement('li');
  const mine = m.from?.id === state.me.id;
  li.className = 'msg' + (mine ? ' mine' : '') + (m.deleted ? ' deleted' : '');
  li.dataset.channel = m.channel;
  li.dataset.seq = String(m.seq);
  li.dataset.id = String(m.id);
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.append(m.from ? m.from.username : 'system', ' · ', when(m.created_at));
  if (m.edited_at && !m.deleted) meta.append(' · edited');
  if (mine && m.channel.startsWith('dm:')) meta.append(ticks(m));
  if (mine && !m.deleted) meta.append(actions(m));
  const body = document.createElement('div');
  body.className = 'body';
  body.textContent = m.deleted ? 'message deleted' : m.body;
  li.append(meta, body);
  return li;
}

function ticks(m) {
  const r = state.receipts.get(m.channel) ?? { delivered: 0, read: 0 };
  const span = document.createElement('span');
  span.className = 'ticks';
  const s = m.seq <= r.read ? 'read' : m.seq <= r.delivered ? 'delivered' : 'sent';
  span.dataset.state = s;
  span.title = s;
  span.textContent = s === 'sent' ? '✓' : '✓✓';
  return span;
}

function actions(m) {
  const span = document.createElement('span');
  span.className = 'actions';
  const edit = document.createElement('button');
  edit.type = 'button';
  edit.className = 'link edit';
  edit.textContent = 'edit';
  edit.addEventListener('click', () => {
    state.editing = m;
    $('body').value = m.body;
    $('send').textContent = 'Save';
    $('cancel-edit').hidden = false;
    $('body').focus();
  });
  const del = document.createElement('button');
  del.type = 'button';
  del.className = 'link delete';
  del.textContent = 'delete';
  del.addEventListener('click', async () => {
    const tomb = await state.client.deleteMessage(m.id).catch((err) => alert(err.message));
    if (tomb) patchMessage(tomb.channel, tomb.seq, tomb);
  });
  span.append(edit, del);
  return span;
}

function pendingItem(clientId, p) {
  const li = document.createElement('li');
  li.className = 'msg mine pending';
  li.dataset.clientId = clientId;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const t = document.createElement('span');
  t.className = 'ticks';
  t.dataset.state = 'pending';
  t.textContent = '🕓';
  t.title = 'sending';
  meta.append(state.me.username, ' · sending ', t);
  const body = document.createElement('div');
  body.className = 'body';
  body.textContent = p.body;
  li.append(meta, body);
  return li;
}

function showTyping(users) {
  const names = users.map((u) => u.username);
  $('typing').textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
}

// --- composing --------------------------------------------------------------

$('body').addEventListener('input', () => {
  if (typeof state.current === 'string' && !state.editing && $('body').value) state.client.typing(state.current);
});

$('cancel-edit').addEventListener('click', endEdit);

function endEdit() {
  state.editing = null;
  $('composer').reset();
  $('send').textContent = 'Send';
  $('cancel-edit').hidden = true;
}

$('composer').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const body = $('body').value;
  if (!body.trim()) return;
  const client = state.client;
  if (state.editing) {
    const m = state.editing;
    endEdit();
    const changed = await client.editMessage(m.id, body).catch((err) => alert(err.message));
    if (changed) patchMessage(changed.channel, changed.seq, changed);
    return;
  }
  $('composer').reset();
  const current = state.current;
  const target = typeof current === 'string' ? current : current?.draftTo;
  if (!target) return;
  // Shown at once as "sending"; replaced by the stored message when it lands
  // (the client retries with the same client_id across reconnects).
  const clientId = clientIdNew();
  if (typeof current === 'string') {
    state.pending.set(clientId, { channel: current, body });
    renderMessages();
    $('scroller').scrollTop = $('scroller').scrollHeight;
  }
  try {
    const m = await client.send(target, body, { clientId });
    if (typeof current !== 'string') {
      state.names.set(dmPeer(m.channel, state.me.id), current.draftTo);
      await openChannel(m.channel);
    }
  } catch (err) {
    state.pending.delete(clientId);
    renderMessages();
    alert(`Not sent: ${err.message}`);
  }
});

// --- search -----------------------------------------------------------------

$('search-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const q = $('search-q').value.trim();
  if (!q) return;
  const data = await api('GET', `/api/messages/search/?q=${encodeURIComponent(q)}`).catch((err) => ({ error: err }));
  const ol = $('search-list');
  if (data.error) {
    ol.replaceChildren(Object.assign(document.createElement('li'), { textContent: data.error.message }));
  } else {
    ol.replaceChildren(
      ...data.results.map((r) => {
        const li = document.createElement('li');
        li.dataset.channel = r.message.channel;
        const label = document.createElement('strong');
        label.textContent = `${channelLabel(r.message.channel)} · ${r.message.from?.username ?? 'system'}: `;
        const snippet = document.createElement('span');
        snippet.innerHTML = r.snippet; // HTML-escaped by the server; its only markup is <mark>
        li.append(label, snippet);
        li.addEventListener('click', () => openChannel(r.message.channel));
        return li;
      }),
    );
    if (!data.results.length) ol.replaceChildren(Object.assign(document.createElement('li'), { textContent: 'nothing found' }));
  }
  $('search-results').hidden = false;
  showConversation();
});

$('search-close').addEventListener('click', () => {
  $('search-results').hidden = true;
});

if (tokens()) start();
