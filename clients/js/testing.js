// Test doubles for chat-client.js: a WebSocket driven by the test and a
// manual clock. Used by test/*.test.js; also handy for an app's own tests.

/** A WebSocket look-alike. The client calls send/close; the test calls
 * open/receive/serverClose/fail. Every instance is recorded on the class. */
export class FakeWebSocket {
  /** @type {FakeWebSocket[]} */
  static instances = [];

  static reset() {
    FakeWebSocket.instances = [];
  }

  /** The newest socket. */
  static get last() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }

  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** @type {any[]} frames the client sent, parsed */
    this.sent = [];
    /** @type {{code: number, reason: string}|null} */
    this.closedByClient = null;
    /** @type {any} */ this.onopen = null;
    /** @type {any} */ this.onmessage = null;
    /** @type {any} */ this.onerror = null;
    /** @type {any} */ this.onclose = null;
    FakeWebSocket.instances.push(this);
  }

  /** @param {string} data */
  send(data) {
    if (this.readyState !== 1) throw new Error('InvalidStateError: not open');
    if (typeof data !== 'string') throw new Error('the client must send text frames');
    this.sent.push(JSON.parse(data));
  }

  /** @param {number} [code] @param {string} [reason] */
  close(code = 1000, reason = '') {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // ---- driven by the test ----

  open() {
    this.readyState = 1;
    this.onopen?.({ type: 'open' });
    return this;
  }

  /** @param {any} frame an object (sent as JSON) or a raw string */
  receive(frame) {
    this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    return this;
  }

  /** @param {number} [code] @param {string} [reason] */
  serverClose(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }

  /** A failed connection attempt (never opened). @param {string} [message] */
  fail(message = 'connection refused') {
    this.onerror?.({ type: 'error', message });
    this.serverClose(1006);
  }

  /** Actions of the frames sent so far. */
  actions() {
    return this.sent.map((f) => f.action);
  }
}

/** A manual clock with setTimeout/clearTimeout; advance() runs what is due, in order. */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.t = start;
    this.seq = 0;
    /** @type {Map<number, {at: number, fn: () => void, seq: number}>} */
    this.timers = new Map();
    this.now = () => this.t;
    this.setTimeout = (/** @type {() => void} */ fn, /** @type {number} */ ms) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.t + Math.max(0, ms), fn, seq: id });
      return id;
    };
    this.clearTimeout = (/** @type {number} */ id) => {
      this.timers.delete(id);
    };
  }

  /** Delays of the timers pending now, relative to now, soonest first. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.t).sort((a, b) => a - b);
  }

  /** @param {number} ms */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      let nextId = 0;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (!next || t.at < next.at || (t.at === next.at && t.seq < next.seq))) {
          next = t;
          nextId = id;
        }
      }
      if (!next) break;
      this.timers.delete(nextId);
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
}

/** An unsigned JWT-shaped token naming `sub` (the client only reads `sub`). @param {string} sub */
export function fakeToken(sub) {
  const b64 = (/** @type {any} */ o) =>
    btoa(JSON.stringify(o)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: 4102444800 })}.c2ln`;
}

/**
 * A client wired to FakeWebSocket and a FakeClock, connected (not yet open),
 * with every event recorded. Deterministic: random() is 0.5 unless given,
 * keepalive is off unless given, client_msg_ids are c-1, c-2, ..., and no
 * device unless `deviceId` is given (so no `received` frames).
 * @param {typeof import('./chat-client.js').ChatClient} ChatClient
 * @param {Partial<import('./chat-client.js').ChatClientOptions>} [opts]
 */
export function harness(ChatClient, opts = {}) {
  FakeWebSocket.reset();
  const clock = new FakeClock();
  let n = 0;
  const client = new ChatClient({
    url: 'ws://chat.test/ws',
    token: fakeToken('alice'),
    WebSocket: FakeWebSocket,
    autoConnect: false,
    keepaliveMs: 0,
    random: () => 0.5,
    now: clock.now,
    timers: clock,
    newId: () => `c-${++n}`,
    deviceId: null,
    ...opts,
  });
  /** @type {[string, any][]} */
  const events = [];
  for (const t of ['message', 'receipt', 'group', 'state', 'error', 'ack', 'gap']) client.on(t, (d) => events.push([t, d]));
  client.connect();
  return {
    client,
    clock,
    events,
    /** The newest socket. */
    ws: () => FakeWebSocket.last,
    /** Events of one type, their details. @param {string} type */
    of: (type) => events.filter(([t]) => t === type).map(([, d]) => d),
    /** Opens the newest socket and answers its sync with `synced`. */
    goLive() {
      const ws = FakeWebSocket.last;
      ws.open();
      ws.receive({ type: 'synced' });
      return ws;
    },
  };
}

/** Lets queued microtasks and promise callbacks run. */
export const tick = () => new Promise((r) => setImmediate(r));
