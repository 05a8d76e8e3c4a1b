// Types of the chat client (clients/js/src/client.js). See docs/client.md.

export interface UserRef {
  id: number;
  username: string;
}

/** A message as the server sends it (protocol section 3). */
export interface Message {
  type: 'message';
  id: number;
  channel: string;
  seq: number;
  kind: 'direct' | 'topic' | 'broadcast' | 'system';
  from: UserRef | null;
  body: string | null;
  client_id: string | null;
  created_at: string;
  edited_at: string | null;
  deleted: boolean;
}

export interface Welcome {
  type: 'welcome';
  session: string;
  user: UserRef;
  heartbeat: number;
  resume_window: number;
  resumed: boolean;
  channels: string[];
}

export interface SyncEntry {
  channel: string;
  last_seq: number;
  delivered_seq: number;
  read_seq: number;
  unread: number;
}

export interface HistoryPage {
  type: 'ok';
  messages: Message[];
  has_more: boolean;
  archived_before_seq?: number;
}

export interface PresenceEntry {
  user: UserRef;
  status: 'online' | 'away' | 'dnd' | 'offline';
  last_seen: string | null;
}

export type Status = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ChatClientOptions {
  /** WebSocket URL, e.g. `wss://chat.example.com/ws/`. */
  url: string;
  /** Access token, or a function that returns one (may be async). */
  token?: string | (() => string | Promise<string>);
  /** Returns a fresh access token: called on close 4401 and before expiry. */
  refreshToken?: () => Promise<string>;
  /** A WebSocket constructor; default `globalThis.WebSocket`. */
  WebSocket?: new (url: string) => WebSocket;
  /** Resume this session id on the first connect. */
  session?: string;
  /** Milliseconds before a request without answer fails with `timeout` (10000). */
  requestTimeout?: number;
  /** The same for sends; 0 (default) waits as long as the client is not closed. */
  sendTimeout?: number;
  /** Milliseconds over which `received` acks are coalesced (250). */
  ackDelay?: number;
  /** First reconnect delay in ms (500), doubled per attempt up to backoffMax (15000); jittered. */
  backoffInitial?: number;
  backoffMax?: number;
  /** `typing()` sends `start` at most this often (3000 ms)... */
  typingRenew?: number;
  /** ...and `stop` after this long without a call (4000 ms). */
  typingIdle?: number;
  /** A typing user shown longer than this without a renewed `start` is dropped (8000 ms). */
  typingExpire?: number;
  /** Seconds before token expiry to refresh it (60). */
  refreshBefore?: number;
  /** Out-of-order seqs remembered per channel for dedupe (2000). */
  maxSeen?: number;
}

export interface StatusEvent {
  status: Status;
  resumed: boolean;
  attempt: number;
  delay?: number;
  code?: number;
  reason?: string;
}

export interface TypingEvent {
  channel: string;
  user: UserRef;
  state: 'start' | 'stop';
  users: UserRef[];
}

export interface ChatEvents {
  status: StatusEvent;
  welcome: Welcome;
  message: Message;
  'message.edited': { type: 'message.edited'; id: number; channel: string; seq: number; body: string; edited_at: string };
  'message.deleted': { type: 'message.deleted'; id: number; channel: string; seq: number };
  receipt: { type: 'receipt'; channel: string; user: UserRef; delivered_seq?: number; read_seq?: number };
  typing: TypingEvent;
  presence: PresenceEntry & { previous: string | null };
  resync: { session: string; previous: string };
  close: { code: number; reason: string; willReconnect: boolean };
  error: ChatError | Error;
}

export class ChatError extends Error {
  constructor(code: string, message: string, extra?: Record<string, unknown>);
  /** A protocol error code, or `timeout`, `disconnected`, `closed`. */
  code: string;
  /** Seconds to wait, for `rate_limited`. */
  retryAfter: number | null;
  frame: Record<string, unknown>;
}

export interface Pager {
  readonly hasMore: boolean;
  readonly oldest: number | null;
  older(): Promise<Message[]>;
}

export class ChatClient {
  constructor(options: ChatClientOptions);
  readonly status: Status;
  readonly sessionId: string | null;
  readonly user: UserRef | null;
  readonly resumed: boolean;
  /** Topics this client subscribed to (re-subscribed after a reconnect). */
  readonly topics: ReadonlySet<string>;
  readonly stats: { duplicates: number; reconnects: number; resumes: number; acksSent: number };

  addEventListener<K extends keyof ChatEvents>(type: K, fn: (payload: ChatEvents[K]) => void): void;
  removeEventListener<K extends keyof ChatEvents>(type: K, fn: (payload: ChatEvents[K]) => void): void;
  on<K extends keyof ChatEvents>(type: K, fn: (payload: ChatEvents[K]) => void): () => void;

  connect(): Promise<Welcome>;
  close(): void;
  reconnectNow(): void;
  /** Send the pending `received` acks now instead of after ackDelay. */
  flushAcks(): void;

  request(type: string, fields?: Record<string, unknown>, options?: { timeout?: number }): Promise<any>;
  send(target: string | number, body: string, options?: { clientId?: string; timeout?: number }): Promise<Message>;
  editMessage(id: number, body: string): Promise<Message>;
  deleteMessage(id: number): Promise<Message>;

  subscribe(channel: string, options?: { since?: number }): Promise<{ channel: string; last_seq: number }>;
  unsubscribe(channel: string): Promise<{ channel: string }>;
  markRead(channel: string, seq?: number): Promise<{ channel: string; delivered_seq: number; read_seq: number }>;
  sync(): Promise<SyncEntry[]>;
  history(channel: string, options?: { before?: number; after?: number; limit?: number }): Promise<HistoryPage>;
  pager(channel: string, options?: { limit?: number }): Pager;
  lastSeq(channel: string): number;

  typing(channel: string): void;
  stopTyping(channel: string): void;
  typingUsers(channel: string): UserRef[];

  watchPresence(users: Array<number | string>): Promise<{ presence: PresenceEntry[]; denied: Array<number | string> }>;
  unwatchPresence(users: Array<number | string>): Promise<unknown>;
  setStatus(status: 'online' | 'away' | 'dnd'): Promise<string>;
  presenceOf(user: number | string): PresenceEntry | undefined;
  ping(): Promise<number>;
}

export function clientIdNew(): string;
export function tokenExpiry(token: string): number | null;
export function dmPeer(channel: string, me: number): number;
export default ChatClient;
