// chat-client.js: a client of the chat WebSocket protocol (docs/protocol.md).
//
// One ES module, no dependencies, plain JavaScript with JSDoc types. It runs
// in a browser as-is (<script type="module">) and in Node (inject a WebSocket
// constructor: Node 20 has no global one).
//
// What it does for the app:
// - connects with `?token=`, reconnects with jittered exponential backoff
//   (equal jitter, 1 s doubling up to 30 s, reset once a connection stayed up);
// - names its install with a stable device id (`?device=`): in a browser one
//   is made once and kept in localStorage; in Node pass `deviceId` (keep it
//   in a file of your own); sync then replays what this device misses, even
//   what another device of the same user read meanwhile;
// - sends {"action":"sync"} as the first frame of every connection;
// - tells the server what this device keeps (`received`, its delivery
//   cursor): after `synced`, then at most once per conversation every
//   `receivedEveryMs` (a first one within 200 ms), and at once on
//   flushReceived() (a page being hidden);
// - keeps each conversation's messages de-duplicated on
//   (conversation_id, message_id) and sorted by message_id;
// - keeps unacknowledged sends and resends them with the SAME client_msg_id
//   after a reconnect (the server is idempotent on it), so nothing typed is lost;
// - matches answers to requests with a FIFO per connection (answers come back
//   in frame order), and rejects the requests in flight when the connection drops;
// - paces its frames below the server's per-connection rate limit.

/**
 * @typedef {{conversation_id: string, message_id: number, from: string|null,
 *   text: string, sent_at: string, client_msg_id?: string}} Message
 * @typedef {{type: 'ack', client_msg_id: string, conversation_id: string,
 *   message_id: number, sent_at: string}} AckFrame
 * @typedef {{type: 'receipt', conversation_id: string, user_id: string, up_to: number}} ReceiptFrame
 * @typedef {{user_id: string, up_to: number}} ReadMark
 * @typedef {{type: 'receipts', conversation_id: string, members: ReadMark[]}} ReceiptsFrame
 * @typedef {{type: 'group', group_id: string, name: string, members: string[], admins: string[]}} GroupFrame
 * @typedef {{conversation_id: string, kind: 'direct'|'group', peer?: string, group_id?: string,
 *   name?: string, last_message_id: number, acked_up_to: number, unread: number,
 *   members?: number, last_sent?: number, read_by?: number}} ConversationItem
 * @typedef {{n: number, m: number}} ReadBy
 * @typedef {{items: ConversationItem[], next_cursor?: string}} ConversationsPage
 * @typedef {{conversation_id: string, messages: Message[], has_more: boolean}} HistoryPage
 * @typedef {'connecting'|'open'|'syncing'|'live'|'reconnecting'|'closed'} ConnState
 * @typedef {{state: ConnState, delay?: number, attempt?: number, code?: number, reason?: string}} StateEvent
 * @typedef {{clientMsgId: string, to: string, text: string}} StoredSend
 * @typedef {{load(): StoredSend[], save(items: StoredSend[]): void}} StorageAdapter
 * @typedef {{setTimeout(fn: () => void, ms: number): any, clearTimeout(id: any): void}} Timers
 *
 * @typedef {object} ChatClientOptions
 * @property {string} url WebSocket URL, e.g. ws://127.0.0.1:8080/ws
 * @property {string} token JWT; sent as ?token=
 * @property {any} [WebSocket] constructor; defaults to globalThis.WebSocket
 * @property {boolean} [autoConnect=true] connect on the next microtask
 * @property {boolean} [autoAck=false] ack every message as soon as it arrives
 * @property {number} [baseDelayMs=1000] first reconnect delay ceiling
 * @property {number} [maxDelayMs=30000] reconnect delay cap
 * @property {number} [stableAfterMs=10000] a connection up this long resets the backoff
 * @property {number} [restartJitterMs=1000] after close code 1012, reconnect within [0, this)
 * @property {number} [keepaliveMs=30000] ping when nothing was received for this long;
 *   no answer for as long again drops the connection (0 turns it off)
 * @property {{burst: number, perSecond: number}|null} [rate] client-side pacing
 *   (default 100 frames burst, 50/s; the server allows 200 burst, 100/s); null turns it off
 * @property {number} [maxFrameBytes=32768] larger frames are refused locally (the server closes with 1009)
 * @property {() => number} [random=Math.random]
 * @property {() => number} [now=Date.now]
 * @property {Timers} [timers] defaults to globalThis.setTimeout/clearTimeout
 * @property {() => string} [newId] generates client_msg_ids
 * @property {StorageAdapter} [storage] optional: keeps unacked sends (sync load/save)
 * @property {string|null} [deviceId] this install's stable id (1-64 of A-Z a-z 0-9 _ . -);
 *   default: one kept in localStorage where there is one, else made for this client only.
 *   null: connect without a device (sync starts at the read watermark; no `received`)
 * @property {number} [receivedEveryMs=5000] at most one `received` per conversation this often
 */

export const MAX_TEXT_BYTES = 10240;
const DEVICE_KEY = 'chat-device-id';
const MAX_RECEIVED_ITEMS = 100;
/** What a first `received` waits, to take the messages arriving with it. */
const RECEIVED_BATCH_MS = 200;
const RETRYABLE_SEND_CODES = new Set(['internal', 'rate_limited', 'unavailable']);
const CONNECTED = new Set(['open', 'syncing', 'live']);
const enc = new TextEncoder();

/** An error from the server (`code` as in docs/protocol.md) or from the client
 * (`disconnected`, `closed`, `unauthorized`, `bad_frame`, `too_large`, `bad_request`). */
export class ChatError extends Error {
  /** @param {string} code @param {string} message @param {{action?: string, clientMsgId?: string, frame?: any}} [extra] */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'ChatError';
    this.code = code;
    this.action = extra.action;
    this.clientMsgId = extra.clientMsgId;
    this.frame = extra.frame;
  }
}

/**
 * Reconnect delay for the n-th consecutive failure (0-based), with equal jitter:
 * ceiling = min(cap, base * 2^attempt), delay uniform in [ceiling/2, ceiling).
 * @param {number} attempt @param {() => number} random
 * @param {{baseMs?: number, capMs?: number}} [o]
 */
export function backoffDelay(attempt, random, { baseMs = 1000, capMs = 30000 } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** The conversation a `to` (`user:<id>` / `group:<id>`) lands in, seen from user `me`.
 * @param {string} me @param {string} to */
export function conversationIdFor(me, to) {
  if (to.startsWith('group:')) return `grp#${to.slice(6)}`;
  if (to.startsWith('user:')) return `dm#${[me, to.slice(5)].sort().join('#')}`;
  throw new ChatError('bad_request', `bad recipient ${to}`);
}

/** @param {string} id @returns {{kind: 'direct', users: string[]}|{kind: 'group', groupId: string}|null} */
export function parseConversationId(id) {
  const parts = id.split('#');
  if (parts[0] === 'dm' && parts.length === 3) return { kind: 'direct', users: [parts[1], parts[2]] };
  if (parts[0] === 'grp' && parts.length === 2) return { kind: 'group', groupId: parts[1] };
  return null;
}

/** The `to` that sends into a conversation, seen from user `me`. @param {string} me @param {string} conversationId */
export function recipientFor(me, conversationId) {
  const p = parseConversationId(conversationId);
  if (!p) throw new ChatError('bad_request', `bad conversation id ${conversationId}`);
  if (p.kind === 'group') return `group:${p.groupId}`;
  const [a, b] = p.users;
  return `user:${a === me ? b : a}`;
}

/** The `sub` of a JWT, without checking it (the server does). @param {string} token */
export function tokenSubject(token) {
  try {
    const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const json = new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
    const sub = JSON.parse(json).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

/** This install's device id: the one kept in `storage` (localStorage by
 * default, where there is one), or a new one kept there; without a storage, a
 * new one each call. @param {{getItem(k: string): string|null, setItem(k: string, v: string): void}|null} [storage] */
export function defaultDeviceId(storage = globalThis.localStorage ?? null) {
  try {
    const kept = storage?.getItem(DEVICE_KEY);
    if (kept && /^[A-Za-z0-9_.-]{1,64}$/.test(kept)) return kept;
  } catch {
    /* storage disabled */
  }
  const id = 'd-' + defaultNewId().slice(2, 26);
  try {
    storage?.setItem(DEVICE_KEY, id);
  } catch {
    /* storage disabled or full: this id lives as long as the client */
  }
  return id;
}

function defaultNewId() {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  return 'c-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Index of `id` in a list sorted by message_id, or -(insertion point) - 1.
 * @param {Message[]} list @param {number} id */
function search(list, id) {
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const m = list[mid].message_id;
    if (m === id) return mid;
    if (m < id) lo = mid + 1;
    else hi = mid - 1;
  }
  return -lo - 1;
}

export class ChatClient {
  /** @param {ChatClientOptions} opts */
  constructor(opts) {
    if (!opts || !opts.url || !opts.token) throw new TypeError('ChatClient needs {url, token}');
    this._url = opts.url;
    this._token = opts.token;
    /** The user id the token names (its `sub`), or null if it cannot be read. */
    this.userId = tokenSubject(opts.token);
    this._WS = opts.WebSocket ?? globalThis.WebSocket;
    this._autoAck = !!opts.autoAck;
    this._baseMs = opts.baseDelayMs ?? 1000;
    this._capMs = opts.maxDelayMs ?? 30000;
    this._stableMs = opts.stableAfterMs ?? 10000;
    this._restartJitterMs = opts.restartJitterMs ?? 1000;
    this._keepaliveMs = opts.keepaliveMs ?? 30000;
    this._rate = opts.rate === undefined ? { burst: 100, perSecond: 50 } : opts.rate;
    this._maxFrameBytes = opts.maxFrameBytes ?? 32768;
    this._random = opts.random ?? Math.random;
    this._now = opts.now ?? (() => Date.now());
    const t = opts.timers ?? globalThis;
    this._setTimeout = (/** @type {() => void} */ fn, /** @type {number} */ ms) => t.setTimeout(fn, ms);
    this._clearTimeout = (/** @type {any} */ id) => t.clearTimeout(id);
    this._newId = opts.newId ?? defaultNewId;
    this._storage = opts.storage ?? null;
    /** This install's device id, sent as ?device= (null: none). */
    this.deviceId = opts.deviceId === undefined ? defaultDeviceId() : opts.deviceId;
    this._receivedEveryMs = opts.receivedEveryMs ?? 5000;

    /** @type {Map<string, Set<Function>>} */ this._listeners = new Map();
    /** @type {ConnState} */ this.state = 'closed';
    this._ws = null;
    this._conn = 0; // connection generation
    this._attempt = 0; // consecutive failures, for the backoff
    this._openedAt = 0;
    this._stopped = false;
    this._reconnectTimer = null;
    this._keepaliveTimer = null;
    this._pumpTimer = null;
    this._keepalivePing = false;
    this._lastRx = 0;
    /** @type {string[]} frames waiting for rate tokens */ this._outq = [];
    this._tokens = 0;
    this._tokensAt = 0;
    /** @type {{action: string, expect: string, match?: (f: any) => boolean, resolve: Function, reject: Function}[]} */
    this._fifo = []; // requests written on this connection, in frame order
    /** @type {{frame: any, expect: string, match?: (f: any) => boolean, resolve: Function, reject: Function}[]} */
    this._waiting = []; // requests made while not connected
    /** @type {Map<string, {clientMsgId: string, to: string, text: string, resolve?: Function, reject?: Function, retryTimer?: any, retries: number}>} */
    this._outbox = new Map(); // unacked sends, in creation order
    /** @type {Map<string, Message[]>} */ this._convs = new Map();
    /** @type {Map<string, Map<string, number>>} */ this._receipts = new Map();
    /** @type {Map<string, number>} */ this._memberCounts = new Map(); // per conversation, members (you included)
    /** @type {Map<string, GroupFrame>} */ this._groups = new Map();
    /** @type {Map<string, number>} */ this._ackWanted = new Map(); // newest up_to asked per conversation
    /** @type {Map<string, number>} */ this._ackToSend = new Map(); // not yet written, or written on a dropped connection
    /** @type {Map<string, number>} */ this._ackThisConn = new Map();
    /** @type {Map<string, number>} */ this._autoAckDue = new Map();
    /** Per conversation, the first id this connection got, a message or
     * the ack of its own send (its run is the ids held without a hole
     * around it; after a `gap`, the first id replayed).
     * @type {Map<string, number>} */ this._runFrom = new Map();
    /** Per conversation, the `gap` this connection was told: the ids above
     * `after` and below `before` count as told (paged back on demand).
     * @type {Map<string, {after: number, before: number}>} */ this._gaps = new Map();
    /** @type {Map<string, {from: number, upTo: number}>} */ this._receivedSent = new Map(); // the run last told the server
    /** @type {Map<string, number>} */ this._receivedAt = new Map(); // when, per conversation
    this._receivedTimer = null;

    if (this._storage) {
      for (const s of this._storage.load() ?? []) {
        if (s && s.clientMsgId && s.to && s.text) {
          this._outbox.set(s.clientMsgId, { clientMsgId: s.clientMsgId, to: s.to, text: s.text, retries: 0 });
        }
      }
    }
    if (opts.autoConnect !== false) queueMicrotask(() => this.state === 'closed' && !this._stopped && this.connect());
  }

  // ---- events -------------------------------------------------------------

  /** Subscribes to `message`, `receipt`, `group`, `state`, `error`, `ack` or `gap`; returns an unsubscribe function.
   * @param {string} type @param {(detail: any) => void} fn */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type)?.add(fn);
    return () => this.off(type, fn);
  }

  /** @param {string} type @param {(detail: any) => void} fn */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /** @param {string} type @param {any} detail */
  _emit(type, detail) {
    for (const fn of [...(this._listeners.get(type) ?? [])]) {
      try {
        fn(detail);
      } catch (e) {
        console.error(`chat-client: a ${type} listener threw`, e);
      }
    }
  }

  /** @param {ConnState} state @param {Omit<StateEvent, 'state'>} [extra] */
  _setState(state, extra = {}) {
    this.state = state;
    this._emit('state', { state, ...extra });
  }

  // ---- connection ---------------------------------------------------------

  /** Connects (or, while waiting to reconnect, reconnects now). Also restarts after close(). */
  connect() {
    this._stopped = false;
    if (this._ws) return this;
    if (this._reconnectTimer !== null) {
      this._clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    const conn = ++this._conn;
    this._setState('connecting', { attempt: this._attempt });
    const u = new URL(this._url);
    u.searchParams.set('token', this._token);
    if (this.deviceId) u.searchParams.set('device', this.deviceId);
    let ws;
    try {
      ws = new this._WS(u.toString());
    } catch (e) {
      // A malformed URL will not get better by retrying.
      this._stopped = true;
      this._emit('error', new ChatError('bad_request', `cannot open WebSocket: ${/** @type {Error} */ (e).message}`));
      this._setState('closed');
      return this;
    }
    this._ws = ws;
    let opened = false;
    let unauthorized = false;
    ws.onopen = () => {
      if (this._conn !== conn) return;
      opened = true;
      this._onOpen();
    };
    ws.onmessage = (/** @type {{data: any}} */ ev) => {
      if (this._conn === conn) this._onFrame(ev.data);
    };
    ws.onerror = (/** @type {any} */ ev) => {
      // Browsers cannot see the HTTP status of a refused upgrade; Node's `ws`
      // reports "Unexpected server response: 401". Only then do we stop.
      const msg = String(ev?.message ?? ev?.error?.message ?? '');
      if (!opened && /\b401\b/.test(msg)) unauthorized = true;
    };
    ws.onclose = (/** @type {{code?: number, reason?: string}} */ ev) => {
      if (this._conn !== conn) return;
      if (unauthorized) {
        this._stopped = true;
        this._emit('error', new ChatError('unauthorized', 'the server refused the token (HTTP 401)'));
      }
      this._onDrop(ev?.code ?? 1006, ev?.reason ?? '', opened);
    };
    return this;
  }

  /** Drops the current connection, if any, and connects again at once; unacked sends are
   * resent, requests in flight rejected with `disconnected`, as after any drop. For when the
   * app learns that the network changed (a browser's `offline` and `online` events): the old
   * socket may be dead without a close, which only the keepalive would notice, up to twice
   * `keepaliveMs` later. Does nothing after close(). */
  reconnect() {
    if (this._stopped) return this;
    if (this._ws) this._drop(4003, 'reconnect');
    return this.connect();
  }

  /** Closes for good: no reconnect; pending sends and requests are rejected with code `closed`. */
  close() {
    this._stopped = true;
    const err = () => new ChatError('closed', 'the client was closed');
    if (this._ws) this._drop(1000, 'client closed');
    if (this._reconnectTimer !== null) this._clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    for (const r of this._waiting.splice(0)) r.reject(err());
    for (const e of this._outbox.values()) {
      if (e.retryTimer) this._clearTimeout(e.retryTimer);
      e.reject?.(err());
    }
    this._outbox.clear(); // a storage adapter keeps its copy for the next client
    if (this.state !== 'closed') this._setState('closed');
  }

  /** Replaces the token; used from the next connection on. @param {string} token */
  setToken(token) {
    this._token = token;
    this.userId = tokenSubject(token) ?? this.userId;
  }

  _onOpen() {
    this._openedAt = this._now();
    this._runFrom.clear(); // what this connection gets starts a new run
    this._gaps.clear();
    this._receivedSent.clear(); // and each is told once on it
    this._lastRx = this._openedAt;
    this._tokens = this._rate ? this._rate.burst : Infinity;
    this._tokensAt = this._openedAt;
    // The first frame: the server replays what we missed, then `synced`.
    this._writeRequest({
      frame: { action: 'sync' },
      expect: 'synced',
      resolve: () => {},
      reject: (/** @type {ChatError} */ e) => {
        if (e.code === 'disconnected' || e.code === 'closed') return;
        // Without a complete sync we cannot go live: start over, with backoff.
        this._emit('error', e);
        if (this._ws) this._drop(4001, 'sync failed', true);
      },
    });
    // Then, in the order they were made: unacked sends, acks, requests.
    for (const e of this._outbox.values()) if (!e.retryTimer) this._writeSend(e);
    for (const [conv, upTo] of this._ackToSend) this._writeAck(conv, upTo);
    this._ackToSend.clear();
    for (const r of this._waiting.splice(0)) this._writeRequest(r);
    this._setState('open');
    this._setState('syncing');
    this._armKeepalive();
  }

  /** Abandons the current socket now and handles it like a drop.
   * @param {number} code @param {string} reason @param {boolean} [countAsFailure] */
  _drop(code, reason, countAsFailure = false) {
    const ws = this._ws;
    try {
      ws.close(code >= 4000 || code === 1000 ? code : 1000, reason);
    } catch {
      /* already closing */
    }
    this._onDrop(code, reason, !countAsFailure);
  }

  /** @param {number} code @param {string} reason @param {boolean} opened */
  _onDrop(code, reason, opened) {
    this._ws = null;
    this._conn++; // events of the old socket are ignored from now on
    for (const t of [this._keepaliveTimer, this._pumpTimer, this._receivedTimer]) if (t !== null) this._clearTimeout(t);
    this._keepaliveTimer = this._pumpTimer = this._receivedTimer = null;
    this._keepalivePing = false;
    this._outq = [];
    const err = this._stopped
      ? new ChatError('closed', 'the client was closed')
      : new ChatError('disconnected', `connection closed (${code}${reason ? ' ' + reason : ''})`);
    for (const r of this._fifo.splice(0)) r.reject(err);
    // Acks written on the dropped socket may be lost: write them again next time.
    for (const [conv, upTo] of this._ackThisConn) {
      this._ackToSend.set(conv, Math.max(upTo, this._ackToSend.get(conv) ?? 0));
    }
    this._ackThisConn.clear();
    if (this._stopped) {
      if (this.state !== 'closed') this._setState('closed', { code, reason });
      return;
    }
    let delay;
    if (code === 1012) {
      // The node restarted or was declared dead: come back at once, spread out a little.
      delay = Math.floor(this._random() * this._restartJitterMs);
    } else {
      if (opened && this._now() - this._openedAt >= this._stableMs) this._attempt = 0;
      delay = backoffDelay(this._attempt, this._random, { baseMs: this._baseMs, capMs: this._capMs });
      this._attempt++;
    }
    this._setState('reconnecting', { delay, attempt: this._attempt, code, reason });
    this._reconnectTimer = this._setTimeout(() => {
      this._reconnectTimer = null;
      if (!this._stopped) this.connect();
    }, delay);
  }

  _armKeepalive() {
    if (!this._keepaliveMs) return;
    const conn = this._conn;
    this._keepaliveTimer = this._setTimeout(() => {
      this._keepaliveTimer = null;
      if (this._conn !== conn || !this._ws) return;
      if (this._now() - this._lastRx >= this._keepaliveMs) {
        if (this._keepalivePing) {
          this._drop(4000, 'keepalive timeout', true);
          return;
        }
        this._keepalivePing = true;
        this.ping().then(
          () => {
            if (this._conn === conn) this._keepalivePing = false;
          },
          () => {},
        );
      }
      this._armKeepalive();
    }, this._keepaliveMs);
  }

  // ---- writing --------------------------------------------------------------

  /** @param {any} frame */
  _write(frame) {
    this._outq.push(JSON.stringify(frame));
    this._pump();
  }

  _pump() {
    if (this._pumpTimer !== null || !this._ws) return;
    if (this._rate) {
      const now = this._now();
      this._tokens = Math.min(this._rate.burst, this._tokens + ((now - this._tokensAt) / 1000) * this._rate.perSecond);
      this._tokensAt = now;
    }
    while (this._outq.length && this._tokens >= 1) {
      this._tokens -= 1;
      const data = /** @type {string} */ (this._outq.shift());
      try {
        this._ws.send(data);
      } catch {
        return; // the socket is closing; its close event re-queues what matters
      }
    }
    if (this._outq.length && this._rate) {
      const wait = Math.ceil(((1 - this._tokens) * 1000) / this._rate.perSecond);
      this._pumpTimer = this._setTimeout(() => {
        this._pumpTimer = null;
        this._pump();
      }, wait);
    }
  }

  /** @param {any} frame @param {string} expect @param {(f: any) => boolean} [match] */
  _newRequest(frame, expect, match) {
    /** @type {any} */ let r;
    const p = new Promise((resolve, reject) => {
      r = { frame, expect, match, resolve, reject };
    });
    p.catch(() => {}); // an ignored rejection must not crash a Node app
    return { r, p };
  }

  /** @param {any} frame @param {string} expect @param {(f: any) => boolean} [match] */
  _request(frame, expect, match) {
    const { r, p } = this._newRequest(frame, expect, match);
    if (this._ws && CONNECTED.has(this.state)) this._writeRequest(r);
    else if (this._stopped) r.reject(new ChatError('closed', 'the client was closed'));
    else this._waiting.push(r);
    return p;
  }

  /** @param {{frame: any, expect: string, match?: (f: any) => boolean, resolve: Function, reject: Function}} r */
  _writeRequest(r) {
    this._fifo.push({ action: r.frame.action, expect: r.expect, match: r.match, resolve: r.resolve, reject: r.reject });
    this._write(r.frame);
  }

  /** @param {{clientMsgId: string, to: string, text: string}} e */
  _writeSend(e) {
    this._write({ action: 'send', to: e.to, client_msg_id: e.clientMsgId, text: e.text });
  }

  /** @param {string} conv @param {number} upTo */
  _writeAck(conv, upTo) {
    this._ackThisConn.set(conv, upTo);
    this._write({ action: 'ack', conversation_id: conv, up_to: upTo });
  }

  _saveOutbox() {
    if (!this._storage) return;
    try {
      this._storage.save([...this._outbox.values()].map(({ clientMsgId, to, text }) => ({ clientMsgId, to, text })));
    } catch (e) {
      console.error('chat-client: storage.save failed', e);
    }
  }

  // ---- the API ------------------------------------------------------------

  /**
   * Sends a text to `user:<id>` or `group:<id>`. Resolves with the server's
   * ack once the message is durable; survives reconnects (resent with the same
   * client_msg_id). Rejects on an error frame other than `internal`
   * (retried), e.g. `conflict`, `forbidden`, `too_large`, or on close().
   * @param {string} to @param {string} text @param {{clientMsgId?: string}} [o]
   * @returns {Promise<AckFrame>}
   */
  send(to, text, o = {}) {
    const clientMsgId = o.clientMsgId ?? this._newId();
    /** @type {any} */ let entry;
    /** @type {Promise<AckFrame>} */
    const p = new Promise((resolve, reject) => {
      entry = { clientMsgId, to, text, resolve, reject, retries: 0 };
    });
    p.catch(() => {});
    const bad = this._checkSend(to, text, clientMsgId);
    if (bad) {
      entry.reject(bad);
      return p;
    }
    if (this._stopped) {
      entry.reject(new ChatError('closed', 'the client was closed'));
      return p;
    }
    this._outbox.set(clientMsgId, entry);
    this._saveOutbox();
    if (this._ws && CONNECTED.has(this.state)) this._writeSend(entry);
    return p;
  }

  /** @param {string} to @param {string} text @param {string} id */
  _checkSend(to, text, id) {
    const opt = { action: 'send', clientMsgId: id };
    if (typeof to !== 'string' || !/^(user|group):[^\s#]+$/.test(to)) {
      return new ChatError('bad_request', 'to must be user:<id> or group:<id>', opt);
    }
    if (typeof text !== 'string' || text.length === 0) return new ChatError('bad_request', 'text must not be empty', opt);
    if (!id || id.length > 64) return new ChatError('bad_request', 'client_msg_id must be 1 to 64 characters', opt);
    if (this._outbox.has(id)) return new ChatError('bad_request', `client_msg_id ${id} is already pending`, opt);
    const bytes = enc.encode(text).length;
    if (bytes > MAX_TEXT_BYTES) {
      return new ChatError('too_large', `text is ${bytes} bytes of UTF-8; the limit is ${MAX_TEXT_BYTES}`, opt);
    }
    const frame = JSON.stringify({ action: 'send', to, client_msg_id: id, text });
    if (enc.encode(frame).length > this._maxFrameBytes) {
      return new ChatError('too_large', `the frame would exceed ${this._maxFrameBytes} bytes`, opt);
    }
    return null;
  }

  /**
   * Marks a conversation read up to `upTo` (what the app displayed). Only
   * moves forward; sent now if connected, else after the next sync.
   * @param {string} conversationId @param {number} upTo @returns {boolean} whether it moved
   */
  ack(conversationId, upTo) {
    if (!(upTo > (this._ackWanted.get(conversationId) ?? 0))) return false;
    this._ackWanted.set(conversationId, upTo);
    if (this._ws && CONNECTED.has(this.state)) {
      this._ackToSend.delete(conversationId);
      this._writeAck(conversationId, upTo);
    } else this._ackToSend.set(conversationId, upTo);
    return true;
  }

  /** A page of a conversation, ascending; its messages also join messages().
   * @param {string} conversationId @param {{before?: number, limit?: number}} [o] @returns {Promise<HistoryPage>} */
  history(conversationId, { before, limit } = {}) {
    /** @type {any} */ const f = { action: 'history', conversation_id: conversationId };
    if (before !== undefined && before !== null) f.before = before;
    if (limit !== undefined && limit !== null) f.limit = limit;
    return this._request(f, 'history', (a) => a.conversation_id === conversationId);
  }

  /** One page of the caller's conversations; `next_cursor` is absent on the last page.
   * @param {{limit?: number, cursor?: string}} [o] @returns {Promise<ConversationsPage>} */
  conversations({ limit, cursor } = {}) {
    /** @type {any} */ const f = { action: 'conversations' };
    if (limit !== undefined && limit !== null) f.limit = limit;
    if (cursor !== undefined && cursor !== null) f.cursor = cursor;
    return this._request(f, 'conversations');
  }

  /** Every member's read watermark in a conversation (the `receipts` request);
   * they join receipts() and readBy(), which `receipt` frames keep up to date.
   * @param {string} conversationId @returns {Promise<ReceiptsFrame>} */
  fetchReceipts(conversationId) {
    return this._request({ action: 'receipts', conversation_id: conversationId }, 'receipts', (r) => r.conversation_id === conversationId);
  }

  /** "read by n of m" for a message: n = other members known to have read
   * up to it (from fetchReceipts() and the `receipt` frames since), m = the
   * other members (from the last of fetchReceipts(), a `group` frame or a
   * `conversations` item); null while m is not known.
   * @param {string} conversationId @param {number} messageId @returns {ReadBy|null} */
  readBy(conversationId, messageId) {
    const members = this._memberCounts.get(conversationId);
    if (members === undefined || members < 2) return null;
    const marks = this._receipts.get(conversationId) ?? new Map();
    let n = 0;
    for (const [user, upTo] of marks) if (user !== this.userId && upTo >= messageId) n++;
    return { n: Math.min(n, members - 1), m: members - 1 };
  }

  /** Every conversation, following next_cursor. @param {{limit?: number}} [o] @returns {Promise<ConversationItem[]>} */
  async allConversations({ limit } = {}) {
    const items = [];
    /** @type {string|undefined} */ let cursor;
    for (let i = 0; i < 1000; i++) {
      const page = await this.conversations({ limit, cursor });
      items.push(...(page.items ?? []));
      if (typeof page.next_cursor !== 'string' || !page.next_cursor || page.next_cursor === cursor) break;
      cursor = page.next_cursor;
    }
    return items;
  }

  /** @param {string} name @param {string[]} members @returns {Promise<GroupFrame>} */
  createGroup(name, members) {
    // A `group` frame of someone else's change may arrive first; ours has our name and us in it.
    const me = this.userId;
    return this._request({ action: 'createGroup', name, members }, 'group', (g) => g.name === name && (!me || g.members?.includes(me)));
  }

  /** @param {string} groupId @param {string} userId @returns {Promise<GroupFrame>} */
  addMember(groupId, userId) {
    return this._request({ action: 'addMember', group_id: groupId, user_id: userId }, 'group', (g) => g.group_id === groupId);
  }

  /** @param {string} groupId @param {string} userId @returns {Promise<GroupFrame>} */
  removeMember(groupId, userId) {
    return this._request({ action: 'removeMember', group_id: groupId, user_id: userId }, 'group', (g) => g.group_id === groupId);
  }

  /** @returns {Promise<void>} */
  ping() {
    return this._request({ action: 'ping' }, 'pong').then(() => undefined);
  }

  // ---- local state ----------------------------------------------------------

  /** A conversation's known messages, sorted by message_id, without duplicates (a copy).
   * @param {string} conversationId @returns {Message[]} */
  messages(conversationId) {
    return [...(this._convs.get(conversationId) ?? [])];
  }

  /** Conversations with at least one known message. */
  conversationIds() {
    return [...this._convs.keys()];
  }

  /** Sends not acknowledged yet, oldest first (to show them as "sending").
   * @param {string} [conversationId] @returns {StoredSend[]} */
  pendingSends(conversationId) {
    const all = [...this._outbox.values()].map(({ clientMsgId, to, text }) => ({ clientMsgId, to, text }));
    if (!conversationId || !this.userId) return all;
    return all.filter((s) => conversationIdFor(/** @type {string} */ (this.userId), s.to) === conversationId);
  }

  /** Read watermarks of members seen in `receipt` frames and fetchReceipts() this session.
   * @param {string} conversationId @returns {Record<string, number>} */
  receipts(conversationId) {
    return Object.fromEntries(this._receipts.get(conversationId) ?? []);
  }

  /** The last `group` frame seen for a group, if any. @param {string} groupId */
  group(groupId) {
    return this._groups.get(groupId);
  }

  /** Inserts a message in order; false if it was already there. @param {Message} m */
  _insert(m) {
    let list = this._convs.get(m.conversation_id);
    if (!list) this._convs.set(m.conversation_id, (list = []));
    const i = search(list, m.message_id);
    if (i >= 0) return false;
    list.splice(-i - 1, 0, m);
    return true;
  }

  // ---- reading --------------------------------------------------------------

  /** @param {any} data */
  _onFrame(data) {
    this._lastRx = this._now();
    this._keepalivePing = false;
    let f;
    try {
      f = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch {
      this._emit('error', new ChatError('bad_frame', 'the server sent a frame that is not JSON'));
      return;
    }
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
      case 'message':
        return this._onMessage(f);
      case 'ack':
        return this._onAck(f);
      case 'receipt': {
        let m = this._receipts.get(f.conversation_id);
        if (!m) this._receipts.set(f.conversation_id, (m = new Map()));
        m.set(f.user_id, Math.max(f.up_to, m.get(f.user_id) ?? 0));
        this._emit('receipt', f);
        return;
      }
      case 'receipts': {
        if (typeof f.conversation_id === 'string' && Array.isArray(f.members)) {
          // The whole membership as it is now: it replaces what was known
          // (a member who left drops out), keeping a newer mark a `receipt`
          // may have brought meanwhile.
          const old = this._receipts.get(f.conversation_id) ?? new Map();
          const m = new Map();
          for (const r of f.members) {
            if (typeof r?.user_id === 'string' && Number.isSafeInteger(r.up_to)) m.set(r.user_id, Math.max(r.up_to, old.get(r.user_id) ?? 0));
          }
          this._receipts.set(f.conversation_id, m);
          this._memberCounts.set(f.conversation_id, f.members.length);
        }
        if (!this._answer('receipts', f)) this._emit('error', new ChatError('bad_frame', 'unexpected receipts frame', { frame: f }));
        return;
      }
      case 'group':
        this._groups.set(f.group_id, f);
        if (Array.isArray(f.members)) {
          const conv = `grp#${f.group_id}`;
          this._memberCounts.set(conv, f.members.length);
          // Marks of members who left no longer count.
          const marks = this._receipts.get(conv);
          if (marks) for (const u of [...marks.keys()]) if (!f.members.includes(u)) marks.delete(u);
        }
        this._answer('group', f); // if it answers our request; else it is news
        this._emit('group', f);
        return;
      case 'synced':
        if (this._answer('synced', f)) {
          this._setState('live');
          this._flushAutoAck();
          this.flushReceived();
        }
        return;
      case 'gap':
        // The replay left out the messages above `after` (this device's
        // position) and below `before`: they count as told (history pages
        // back for them), so the run starts at `after + 1`.
        if (typeof f.conversation_id === 'string' && Number.isSafeInteger(f.after) && Number.isSafeInteger(f.before) && f.after >= 0 && f.before > f.after + 1) {
          this._gaps.set(f.conversation_id, { after: f.after, before: f.before });
          this._runFrom.set(f.conversation_id, f.before);
        }
        this._emit('gap', { conversationId: f.conversation_id, after: f.after, before: f.before });
        return;
      case 'history':
        for (const m of f.messages ?? []) if (this._valid(m)) this._insert(m);
        this._scheduleReceived(); // it may have filled a gap
        if (!this._answer('history', f)) this._emit('error', new ChatError('bad_frame', 'unexpected history frame', { frame: f }));
        return;
      case 'conversations':
        for (const it of Array.isArray(f.items) ? f.items : []) {
          if (typeof it?.conversation_id === 'string' && Number.isSafeInteger(it.members)) this._memberCounts.set(it.conversation_id, it.members);
        }
      // falls through
      case 'pong':
        if (!this._answer(f.type, f)) this._emit('error', new ChatError('bad_frame', `unexpected ${f.type} frame`, { frame: f }));
        return;
      case 'error':
        return this._onError(f);
      default:
        // A frame type from a newer server: ignore it.
        return;
    }
  }

  /** Resolves the oldest request waiting for this kind of answer. @param {string} expect @param {any} f */
  _answer(expect, f) {
    const i = this._fifo.findIndex((r) => r.expect === expect && (!r.match || r.match(f)));
    if (i < 0) return false;
    const [r] = this._fifo.splice(i, 1);
    r.resolve(f);
    return true;
  }

  /** @param {any} m */
  _valid(m) {
    return m && typeof m.conversation_id === 'string' && Number.isSafeInteger(m.message_id);
  }

  /** @param {any} f */
  _onMessage(f) {
    if (!this._valid(f)) return;
    const { type, ...m } = f;
    this._noteRun(m.conversation_id, m.message_id);
    if (!this._insert(m)) return; // a duplicate (live and replayed copies)
    this._emit('message', m);
    this._scheduleReceived();
    if (this._autoAck) {
      this._autoAckDue.set(m.conversation_id, Math.max(m.message_id, this._autoAckDue.get(m.conversation_id) ?? 0));
      if (this.state === 'live') queueMicrotask(() => this._flushAutoAck());
    }
  }

  /** The first id this connection got of a conversation starts its run.
   * @param {string} conv @param {number} id */
  _noteRun(conv, id) {
    if (!this._runFrom.has(conv)) this._runFrom.set(conv, id);
  }

  /** The run this device holds of a conversation: every id from `from` to
   * `upTo`, without a hole, around the first id this connection got (an
   * ack that came before a message below it starts it high; it reaches
   * down once that message comes), and below it the ids a `gap` said were
   * left out. The server moves the device's cursor only if `from` reaches
   * down to it. null when there is none.
   * @param {string} conv @returns {{from: number, upTo: number} | null} */
  heldRun(conv) {
    const start = this._runFrom.get(conv);
    const list = this._convs.get(conv);
    if (start === undefined || !list) return null;
    const at = search(list, start);
    if (at < 0) return null;
    let lo = at;
    while (lo > 0 && list[lo - 1].message_id === list[lo].message_id - 1) lo--;
    let hi = at;
    while (hi + 1 < list.length && list[hi + 1].message_id === list[hi].message_id + 1) hi++;
    let from = list[lo].message_id;
    const gap = this._gaps.get(conv);
    if (gap && from <= gap.before && from > gap.after) from = gap.after + 1;
    return { from, upTo: list[hi].message_id };
  }

  /** Whether the run of `conv` grew (up, or down) since it was last told.
   * @param {string} conv */
  _runToTell(conv) {
    const run = this.heldRun(conv);
    if (!run) return null;
    const sent = this._receivedSent.get(conv);
    return !sent || run.upTo > sent.upTo || run.from < sent.from ? run : null;
  }

  _scheduleReceived() {
    if (!this.deviceId || this.state !== 'live' || this._receivedTimer !== null) return;
    // When the soonest conversation may be told again: at once (after a
    // short batching delay) for one not told recently, else its period.
    const now = this._now();
    let wait = this._receivedEveryMs;
    for (const conv of this._runFrom.keys()) {
      if (!this._runToTell(conv)) continue;
      const due = (this._receivedAt.get(conv) ?? -Infinity) + this._receivedEveryMs - now;
      wait = Math.min(wait, Math.max(RECEIVED_BATCH_MS, due));
    }
    const conn = this._conn;
    this._receivedTimer = this._setTimeout(() => {
      this._receivedTimer = null;
      if (this._conn === conn) this._sendReceived(false);
    }, wait);
  }

  /** Tells the server now what this device holds, every conversation that
   * moved (for a page being hidden or closed). */
  flushReceived() {
    this._sendReceived(true);
  }

  /** @param {boolean} all whether to skip the per-conversation pacing */
  _sendReceived(all) {
    if (!this.deviceId || !this._ws || this.state !== 'live') return;
    const now = this._now();
    /** @type {{conversation_id: string, from: number, up_to: number}[]} */ const items = [];
    let later = false;
    for (const conv of this._runFrom.keys()) {
      const run = this._runToTell(conv);
      if (!run) continue;
      if (!all && now - (this._receivedAt.get(conv) ?? 0) < this._receivedEveryMs) {
        later = true;
        continue;
      }
      items.push({ conversation_id: conv, from: run.from, up_to: run.upTo });
    }
    for (let i = 0; i < items.length; i += MAX_RECEIVED_ITEMS) {
      const chunk = items.slice(i, i + MAX_RECEIVED_ITEMS);
      this._write({ action: 'received', items: chunk });
      for (const it of chunk) {
        this._receivedSent.set(it.conversation_id, { from: it.from, upTo: it.up_to });
        this._receivedAt.set(it.conversation_id, now);
      }
    }
    if (later) this._scheduleReceived();
  }

  _flushAutoAck() {
    for (const [conv, upTo] of this._autoAckDue) this.ack(conv, upTo);
    this._autoAckDue.clear();
  }

  /** @param {AckFrame} f */
  _onAck(f) {
    const e = this._outbox.get(f.client_msg_id);
    if (!e) return; // an ack we already had
    this._outbox.delete(f.client_msg_id);
    this._saveOutbox();
    /** @type {Message} */
    const m = {
      conversation_id: f.conversation_id,
      message_id: f.message_id,
      from: this.userId,
      text: e.text,
      sent_at: f.sent_at,
      client_msg_id: f.client_msg_id,
    };
    if (this._valid(m)) {
      this._noteRun(m.conversation_id, m.message_id);
      this._insert(m);
      this._scheduleReceived();
    }
    e.resolve?.(f);
    this._emit('ack', { clientMsgId: f.client_msg_id, to: e.to, text: e.text, message: m, frame: f });
  }

  /** @param {any} f */
  _onError(f) {
    const err = new ChatError(f.code ?? 'internal', f.message ?? 'error', { action: f.action, clientMsgId: f.client_msg_id, frame: f });
    if (f.client_msg_id && (!f.action || f.action === 'send')) {
      const e = this._outbox.get(f.client_msg_id);
      if (!e) return this._emit('error', err);
      if (RETRYABLE_SEND_CODES.has(err.code) && e.retries < 5) {
        // "Retry with the same client_msg_id" (docs/protocol.md).
        const delay = backoffDelay(e.retries++, this._random, { baseMs: this._baseMs, capMs: this._capMs });
        e.retryTimer = this._setTimeout(() => {
          e.retryTimer = null;
          if (this._outbox.get(e.clientMsgId) === e && this._ws && CONNECTED.has(this.state)) this._writeSend(e);
        }, delay);
        return;
      }
      // conflict, forbidden, too_large, bad_request...: resending cannot help.
      this._outbox.delete(f.client_msg_id);
      this._saveOutbox();
      if (e.reject) e.reject(err);
      else this._emit('error', err);
      return;
    }
    if (f.action) {
      const i = this._fifo.findIndex((r) => r.action === f.action);
      if (i >= 0) {
        const [r] = this._fifo.splice(i, 1);
        r.reject(err);
        return;
      }
      return this._emit('error', err); // e.g. an `ack` frame refused
    }
    this._emit('error', err);
    if (err.code === 'rate_limited' && this._ws) {
      // We cannot tell which frame was dropped, so the FIFO may be off by one:
      // start over (sync, resend) with backoff. The pacing makes this rare.
      this._drop(4002, 'rate limited', true);
    }
  }
}
