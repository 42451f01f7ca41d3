// End-to-end tests of the web page in a real browser: Playwright
// (playwright-core, no browser download) drives Debian's Chromium against a
// conn-tier started here (--dev, embedded store in a fresh temp dir, a port
// the kernel picks). One server and one browser for the file; every user is a
// browser context of its own (own sessionStorage, own network, so
// `setOffline` cuts one user only).
//
//   cd clients/web && npm ci && npm run test:browser
//
// Environment:
//   CHAT_SERVER_BIN      the conn-tier binary (default: `cargo build -p conn-tier` runs first,
//                        and its binary in cargo's target dir is used)
//   CHROMIUM_BIN         the browser (default: /usr/bin/chromium)
//   CHAT_SCREENSHOT_DIR  where screenshots go (default: docs/screenshots of the repository)
//
// The binary embeds the page and the library (include_str!). When its copies
// differ from the working tree (edited since the last cargo build), the
// browser is served the working-tree files instead and a note says so: the
// tests check the code in front of you.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const SERVER_BIN = process.env.CHAT_SERVER_BIN || buildServer();

/** Builds conn-tier (a no-op when it is up to date) and finds its binary
 * wherever cargo puts it (CARGO_TARGET_DIR included). */
function buildServer() {
  execFileSync('cargo', ['build', '-q', '-p', 'conn-tier'], { cwd: REPO, stdio: 'inherit' });
  const meta = JSON.parse(
    execFileSync('cargo', ['metadata', '--no-deps', '--format-version', '1'], { cwd: REPO, maxBuffer: 64 << 20 }),
  );
  return join(meta.target_directory, 'debug', 'conn-tier');
}
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SHOTS = process.env.CHAT_SCREENSHOT_DIR || join(REPO, 'docs/screenshots');
const WAIT_MS = 15_000; // the longest any single wait may take
const TEST_MS = 60_000;

/** What the server embeds: URL path -> working-tree file, content type. */
const ASSETS = {
  '/': ['clients/web/index.html', 'text/html; charset=utf-8'],
  '/app.js': ['clients/web/app.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['clients/web/style.css', 'text/css; charset=utf-8'],
  '/chat-client.js': ['clients/js/chat-client.js', 'text/javascript; charset=utf-8'],
};

/** @type {import('node:child_process').ChildProcess|null} */ let server = null;
let serverLog = '';
let dataDir = '';
let base = '';
/** @type {import('playwright-core').Browser|null} */ let browser = null;
/** @type {string[]} URL paths served from the working tree */ let stale = [];

// ---- the server -----------------------------------------------------------------

function killServer() {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
}
// However this process ends: `after` may not run (a signal, a hard exit).
process.on('exit', () => {
  killServer();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});
for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
  process.on(sig, () => {
    killServer();
    // Once the browser runs, Playwright's own handler closes it (and exits on SIGINT).
    if (process.listenerCount(sig) === 1) process.exit(130);
  });
}

/** Starts conn-tier on a port the kernel picks (no race for a "free" port) and
 * resolves with its base URL once it logs `chat server ready url=ws://…`. */
function startServer() {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`no server binary at ${SERVER_BIN}: build it (cargo build -p conn-tier) or set CHAT_SERVER_BIN`);
  }
  dataDir = mkdtempSync(join(tmpdir(), 'chat-browser-test-'));
  const child = spawn(SERVER_BIN, ['--dev', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    env: { ...process.env, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server = child;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server was not ready within ${WAIT_MS} ms:\n${serverLog}`)), WAIT_MS);
    const onData = (/** @type {Buffer} */ chunk) => {
      serverLog += chunk.toString();
      const m = /chat server ready url=ws:\/\/([\d.]+:\d+)\/ws/.exec(serverLog);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code ?? signal}):\n${serverLog}`));
    });
  });
}

async function waitHealthy() {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      const res = await fetch(`${base}/healthz`);
      if (res.ok && (await res.text()).trim() === 'ok') return;
    } catch {
      /* not answering yet */
    }
    if (Date.now() > deadline) throw new Error(`${base}/healthz did not answer ok within ${WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 50)); // polling interval
  }
}

/** The URL paths whose embedded copy differs from the working tree. */
async function staleAssets() {
  const out = [];
  for (const [path, [file]] of Object.entries(ASSETS)) {
    const res = await fetch(base + path);
    assert.equal(res.status, 200, `GET ${path}`);
    if ((await res.text()) !== readFileSync(join(REPO, file), 'utf8')) out.push(path);
  }
  return out;
}

before(async () => {
  base = await startServer();
  await waitHealthy();
  stale = await staleAssets();
  if (stale.length) {
    console.log(
      `note: ${SERVER_BIN} embeds older copies of ${stale.join(', ')}; the browser gets ` +
        'the working-tree files (rebuild conn-tier to test the embedded ones)',
    );
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close().catch(() => {});
  const s = server;
  if (s && s.exitCode === null && s.signalCode === null) {
    const exited = new Promise((r) => s.once('exit', r));
    killServer();
    await exited;
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

// ---- users: one browser context each ----------------------------------------------

/**
 * @typedef {{url: string, sent: any[], received: any[]}} Socket frames of one WebSocket, parsed
 * @typedef {{name: string, ctx: import('playwright-core').BrowserContext,
 *   page: import('playwright-core').Page, sockets: Socket[], errors: string[]}} User
 * @typedef {{id: string|null, own: boolean, pending: boolean, from: string, text: string,
 *   status: string|null, title: string|null, readBy: string|null}} Row
 */

/** A new browser context on the page, signed out; `users` gets it at once (to be closed).
 * @param {User[]} users @param {string} name */
async function openPage(users, name) {
  if (!browser) throw new Error('no browser');
  const ctx = await browser.newContext({
    viewport: { width: 1000, height: 700 },
    deviceScaleFactor: 1,
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  /** @type {User} */
  const u = { name, ctx, page: /** @type {any} */ (null), sockets: [], errors: [] };
  users.push(u);
  ctx.setDefaultTimeout(WAIT_MS);
  for (const path of stale) {
    const [file, contentType] = ASSETS[/** @type {keyof ASSETS} */ (path)];
    await ctx.route(base + path, (route) =>
      route.fulfill({ status: 200, contentType, body: readFileSync(join(REPO, file), 'utf8') }),
    );
  }
  u.page = await ctx.newPage();
  u.page.on('pageerror', (e) => u.errors.push(`${name}: uncaught ${e.message}`));
  u.page.on('websocket', (ws) => {
    /** @type {Socket} */
    const s = { url: ws.url(), sent: [], received: [] };
    u.sockets.push(s);
    const parse = (/** @type {string|Buffer} */ p) => {
      try {
        return JSON.parse(String(p));
      } catch {
        return { raw: String(p) };
      }
    };
    ws.on('framesent', (f) => s.sent.push(parse(f.payload)));
    ws.on('framereceived', (f) => s.received.push(parse(f.payload)));
  });
  await u.page.goto(`${base}/`);
  await u.page.locator('#sign-in-panel').waitFor();
  return u;
}

/** Signs in through the form (the page asks /dev/token) and waits until it is live. @param {User} u */
async function signIn(u) {
  await u.page.fill('#user-id', u.name);
  await u.page.click('#sign-in');
  await waitState(u, 'live');
  assert.equal(await u.page.textContent('#me'), `Signed in as ${u.name}`);
  assert.equal(await u.page.isHidden('#sign-in-panel'), true);
}

/** @param {User[]} users @param {string} name */
async function signedIn(users, name) {
  const u = await openPage(users, name);
  await signIn(u);
  return u;
}

/** Runs a scenario; closes its browser contexts however it ends; fails on uncaught
 * errors in a page; adds the server's last log lines to a failure.
 * @param {(users: User[]) => Promise<void>} fn */
async function scenario(fn) {
  /** @type {User[]} */ const users = [];
  try {
    await fn(users);
    assert.deepEqual(users.flatMap((u) => u.errors), [], 'uncaught errors in the page');
  } catch (e) {
    const tail = serverLog.trim().split('\n').slice(-15).join('\n');
    if (e instanceof Error) e.message += `\n-- last server log lines --\n${tail}`;
    throw e;
  } finally {
    await Promise.all(users.map((u) => u.ctx.close().catch(() => {})));
  }
}

/** @param {User} u @param {string} file */
async function shot(u, file) {
  await u.page.screenshot({ path: join(SHOTS, file) });
}

// ---- reading the page and waiting for it ---------------------------------------------------

/** Runs in the page: the rows of the open conversation, top to bottom. @returns {Row[]} */
function readRows() {
  return [...document.querySelectorAll('#messages li')].map((li) => ({
    id: /** @type {HTMLElement} */ (li).dataset.messageId ?? null,
    own: li.classList.contains('own'),
    pending: li.classList.contains('pending'),
    from: li.querySelector('.from')?.textContent ?? '',
    text: li.querySelector('.text')?.textContent ?? '',
    status: li.querySelector('.status')?.textContent ?? null,
    title: li.querySelector('.status')?.getAttribute('title') ?? null,
    readBy: li.querySelector('.read-by')?.textContent ?? null,
  }));
}

/** @param {User} u @returns {Promise<Row[]>} */
function rows(u) {
  return u.page.evaluate(readRows);
}

/** "from: text" per row. @param {Row[]} rs */
const said = (rs) => rs.map((r) => `${r.from}: ${r.text}`);

/**
 * Waits until `check(rows, arg)` holds for the page's rows (polled); on
 * timeout fails with what the page shows.
 * @param {User} u @param {string} what
 * @param {(rows: Row[], arg: any) => boolean} check
 * @param {any} [arg]
 */
async function waitRows(u, what, check, arg) {
  // Polled from here, not evaluated as a string in the page: the page's
  // Content-Security-Policy forbids eval there, as it should.
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const now = await rows(u).catch(() => /** @type {Row[]} */ ([]));
    if (check(now, arg)) return;
    if (Date.now() > deadline) {
      const banner = await u.page.textContent('#banner').catch(() => '?');
      throw new Error(`${u.name}: ${what}: not within ${WAIT_MS} ms\n  banner: ${banner}\n  rows: ${JSON.stringify(now)}`);
    }
    await new Promise((r) => setTimeout(r, 50)); // polling interval
  }
}

/** Waits until the banner's data-state is `state` (and its text matches `text`).
 * @param {User} u @param {string} state @param {RegExp} [text] */
async function waitState(u, state, text) {
  try {
    await u.page.locator(`#banner[data-state="${state}"]`, text ? { hasText: text } : {}).waitFor({ timeout: WAIT_MS });
  } catch {
    const now = await u.page.getAttribute('#banner', 'data-state').catch(() => '?');
    const shown = await u.page.textContent('#banner').catch(() => '?');
    const err = await u.page.textContent('#errors').catch(() => '?');
    throw new Error(`${u.name}: the banner never showed "${state}" ${text ?? ''} (it is "${now}": ${shown}; errors: ${err})`);
  }
}

/** Polls a condition on what this process recorded (WebSocket frames).
 * @param {() => boolean} cond @param {string} what */
async function waitFor(cond, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 20)); // polling interval
  }
}

// ---- doing things on the page ----------------------------------------------------------

/** Types into the composer and sends with Enter. @param {User} u @param {string} text */
async function sendWithEnter(u, text) {
  await u.page.fill('#composer', text);
  await u.page.press('#composer', 'Enter');
  assert.equal(await u.page.inputValue('#composer'), '', 'the composer is emptied on send');
}

/** Opens a direct chat through "New chat with user". @param {User} u @param {string} peer */
async function openChat(u, peer) {
  await u.page.fill('#new-chat-user', peer);
  await u.page.click('#open-chat');
  await u.page.locator('#conversation-title', { hasText: peer }).waitFor();
  assert.equal(await u.page.isEnabled('#composer'), true);
}

/** The conversation list's item for a conversation id. @param {User} u @param {string} id */
function listItem(u, id) {
  return u.page.locator(`#conversation-list li[data-conversation-id="${id}"]`);
}

/** Alice writes first, Bob opens the chat from his list and reads it, and the
 * receipt reaches Alice (so Bob's read mark is stored before anything else).
 * @param {User} alice @param {User} bob @param {string} text */
async function firstMessage(alice, bob, text) {
  await openChat(alice, bob.name);
  await sendWithEnter(alice, text);
  await listItem(bob, `dm#${[alice.name, bob.name].sort().join('#')}`).locator('button.conv').click();
  await waitRows(bob, 'the first message shown', (rs, t) => rs.length === 1 && rs[0].id === '1' && rs[0].text === t, text);
  await waitRows(alice, 'read by the peer', (rs) => rs.length === 1 && rs[0].status === '✓✓');
}

// ---- scenarios ---------------------------------------------------------------------------

test('1:1 chat both ways, with unread badge and read receipts', { timeout: TEST_MS }, () =>
  scenario(async (users) => {
    const alice = await openPage(users, 'alice');
    await alice.page.fill('#user-id', 'alice');
    await shot(alice, 'sign-in.png');
    await signIn(alice);
    const bob = await signedIn(users, 'bob');

    await openChat(alice, 'bob');
    await sendWithEnter(alice, 'Hi Bob, lunch at noon?');
    await waitRows(alice, 'own message acked', (rs) => rs.length === 1 && rs[0].id === '1' && !rs[0].pending);
    // Bob has not opened the conversation: not read yet.
    assert.equal((await rows(alice))[0].status, '✓');

    // Bob sees it in his list, unread, and opens it from there.
    const conv = listItem(bob, 'dm#alice#bob');
    await conv.locator('.unread', { hasText: '1' }).waitFor();
    assert.equal(await conv.locator('.name').textContent(), 'alice');
    await shot(bob, 'conversation-list.png');
    await conv.locator('button.conv').click();
    await waitRows(bob, "alice's message shown", (rs) => rs.length === 1 && rs[0].text === 'Hi Bob, lunch at noon?');
    assert.deepEqual(said(await rows(bob)), ['alice: Hi Bob, lunch at noon?']);
    assert.equal((await rows(bob))[0].own, false);
    await conv.locator('.unread').waitFor({ state: 'hidden' });

    // Bob has it on screen: read, for Alice.
    await waitRows(alice, 'read receipt from bob', (rs) => rs[0].status === '✓✓' && rs[0].title === 'read by bob');

    // Bob replies (with the Send button); Alice sees it, and reads it.
    await bob.page.fill('#composer', 'Sure, see you there!');
    await bob.page.click('#send');
    await waitRows(alice, "bob's reply shown", (rs) => rs.length === 2 && rs[1].text === 'Sure, see you there!');
    await waitRows(bob, 'read receipt from alice', (rs) => rs.length === 2 && rs[1].id === '2' && rs[1].status === '✓✓');

    for (const u of [alice, bob]) {
      const rs = await rows(u);
      assert.deepEqual(said(rs), ['alice: Hi Bob, lunch at noon?', 'bob: Sure, see you there!'], u.name);
      assert.deepEqual(rs.map((r) => r.id), ['1', '2'], u.name);
      assert.deepEqual(rs.map((r) => r.own), [u === alice, u === bob], u.name);
    }
    assert.deepEqual((await rows(alice)).map((r) => r.status), ['✓✓', null]);
    await shot(alice, 'direct-chat-receipts.png');
  }),
);

test("a group of three: each one's message reaches the two others", { timeout: TEST_MS }, () =>
  scenario(async (users) => {
    const [alice, bob, carol] = await Promise.all(['alice', 'bob', 'carol'].map((n) => signedIn(users, n)));

    await alice.page.fill('#group-name', 'Weekend trip');
    await alice.page.fill('#group-members', 'bob, carol');
    await alice.page.click('#create-group');
    await alice.page.locator('#conversation-title', { hasText: 'Weekend trip' }).waitFor();
    const gid = String(await alice.page.getAttribute('#conversation-list li:has(button[aria-current="true"])', 'data-conversation-id'));
    assert.match(gid, /^grp#/);
    await alice.page.locator('#group-panel').waitFor();
    assert.equal(await alice.page.textContent('#group-member-list'), 'alice (admin), bob, carol');

    // The others learn of it from the `group` frame, and open it from their list.
    for (const u of [bob, carol]) {
      const item = listItem(u, gid);
      await item.locator('.name', { hasText: 'Weekend trip' }).waitFor();
      assert.equal(await item.locator('.kind').textContent(), 'group');
      await item.locator('button.conv').click();
      await u.page.locator('#conversation-title', { hasText: 'Weekend trip' }).waitFor();
      assert.equal(await u.page.textContent('#group-member-list'), 'alice (admin), bob, carol');
    }

    /** @type {[User, string][]} */
    const lines = [
      [alice, 'Train at 9 on Saturday?'],
      [bob, 'Works for me.'],
      [carol, "I'll bring snacks."],
    ];
    for (const [i, [from, text]] of lines.entries()) {
      await sendWithEnter(from, text);
      for (const u of [alice, bob, carol]) {
        await waitRows(u, `message ${i + 1} shown`, (rs, n) => rs.length === n && rs.every((r) => r.id && !r.pending), i + 1);
      }
    }
    for (const u of [alice, bob, carol]) {
      const rs = await rows(u);
      assert.deepEqual(said(rs), lines.map(([from, text]) => `${from.name}: ${text}`), u.name);
      assert.deepEqual(rs.map((r) => r.id), ['1', '2', '3'], u.name);
      assert.deepEqual(rs.map((r) => r.own), lines.map(([from]) => from === u), u.name);
    }
    // Both others have it on screen: Alice's message is read by both.
    await waitRows(alice, 'read by bob and carol', (rs) => /^read by (bob, carol|carol, bob)$/.test(rs[0].title ?? ''));
    assert.equal((await rows(alice))[0].status, '✓✓');
    await waitRows(alice, '"read by 2 of 2" on her message', (rs) => rs[0].readBy === 'read by 2 of 2');
    // Only one's own messages carry it.
    assert.deepEqual((await rows(alice)).map((r) => r.readBy), ['read by 2 of 2', null, null]);
    await shot(carol, 'group.png');
  }),
);

// The two offline tests have users of their own, so that their conversation
// holds only what they send.

test('offline reader: 5 messages sent meanwhile arrive after reconnecting, in order, once each', { timeout: TEST_MS }, () =>
  scenario(async (users) => {
    const alice = await signedIn(users, 'alice.c');
    const bob = await signedIn(users, 'bob.c');
    await firstMessage(alice, bob, 'Before the tunnel');

    await bob.ctx.setOffline(true);
    await waitState(bob, 'reconnecting');
    const socketsBefore = bob.sockets.length;

    const texts = [1, 2, 3, 4, 5].map((i) => `Offline message ${i}`);
    for (const t of texts) await sendWithEnter(alice, t);
    await waitRows(alice, 'all 5 acked', (rs) => rs.length === 6 && rs.every((r) => r.id && !r.pending));
    // Nothing reached Bob, so nothing is read.
    assert.deepEqual((await rows(alice)).map((r) => r.status), ['✓✓', '✓', '✓', '✓', '✓', '✓']);
    assert.deepEqual(said(await rows(bob)), ['alice.c: Before the tunnel']);
    assert.match(String(await bob.page.getAttribute('#banner', 'data-state')), /^(reconnecting|connecting)$/);

    await bob.ctx.setOffline(false);
    await waitState(bob, 'live');
    await waitRows(bob, 'the 5 messages shown', (rs, want) => want.every((t) => rs.some((r) => r.text === t)), texts);

    // They came on a new connection, replayed by its sync, in order.
    const synced = () => bob.sockets.slice(socketsBefore).find((s) => s.received.some((f) => f.type === 'synced'));
    await waitFor(() => !!synced(), 'bob: a new connection that synced');
    const fresh = /** @type {Socket} */ (synced());
    assert.deepEqual(fresh.sent[0], { action: 'sync' }, 'sync is the first frame');
    const replayed = fresh.received.slice(0, fresh.received.findIndex((f) => f.type === 'synced'));
    // Message 1 may come again first: a repeat, if bob went offline before
    // his page told the server it keeps it (`received`, batched).
    const replayedNew = replayed.filter((f) => f.message_id !== 1);
    assert.ok(replayed.length - replayedNew.length <= 1, 'message 1 at most once');
    assert.deepEqual(replayedNew.map((f) => `${f.type} ${f.message_id} ${f.text}`), texts.map((t, i) => `message ${i + 2} ${t}`));

    // The sync brought them: no history reload is needed (no gap).
    assert.equal(fresh.received.some((f) => f.type === 'history'), false, 'no reload after reconnecting');
    await sendWithEnter(bob, 'Back above ground, got them all');
    await waitRows(bob, 'reply acked', (rs) => rs.some((r) => r.text === 'Back above ground, got them all' && r.id));
    const rs = await rows(bob);
    assert.deepEqual(
      said(rs),
      ['alice.c: Before the tunnel', ...texts.map((t) => `alice.c: ${t}`), 'bob.c: Back above ground, got them all'],
      'each message exactly once, in order',
    );
    assert.deepEqual(rs.map((r) => r.id), ['1', '2', '3', '4', '5', '6', '7']);
    // Bob has them on screen now: read, for Alice.
    await waitRows(alice, 'read by bob.c', (rs) => rs.length === 7 && rs.slice(0, 6).every((r) => r.status === '✓✓'));
    await shot(bob, 'offline-catch-up.png');
  }),
);

test('two devices of one user: the one that was offline while the other read shows every message, without a reload', { timeout: TEST_MS }, () =>
  scenario(async (users) => {
    const alice = await signedIn(users, 'alice.e');
    const phone = await signedIn(users, 'bob.e'); // bob's phone
    await firstMessage(alice, phone, 'Hello phone');
    const laptop = await signedIn(users, 'bob.e'); // bob's laptop: another browser, another device
    const conv = 'dm#alice.e#bob.e';
    await listItem(laptop, conv).locator('button.conv').click();
    await waitRows(laptop, 'the first message', (rs) => rs.length === 1 && rs[0].text === 'Hello phone');
    const device = (/** @type {User} */ u) => new URL(u.sockets[0].url).searchParams.get('device');
    assert.ok(device(phone) && device(laptop), 'each page names its device');
    assert.notEqual(device(phone), device(laptop), 'two browsers, two devices');

    await laptop.ctx.setOffline(true);
    await waitState(laptop, 'reconnecting');
    const socketsBefore = laptop.sockets.length;
    const texts = [1, 2, 3].map((i) => `While the laptop sleeps ${i}`);
    for (const t of texts) await sendWithEnter(alice, t);
    // The phone shows and reads them: bob's read watermark moves past them.
    await waitRows(phone, 'the phone shows all', (rs, want) => want.every((t) => rs.some((r) => r.text === t)), texts);
    await waitRows(alice, 'read by bob.e', (rs) => rs.length === 4 && rs.every((r) => r.status === '✓✓'));

    await laptop.ctx.setOffline(false);
    await waitState(laptop, 'live');
    await waitRows(laptop, 'the laptop shows all 3', (rs, want) => want.every((t) => rs.some((r) => r.text === t)), texts);
    const fresh = laptop.sockets.slice(socketsBefore).find((s) => s.received.some((f) => f.type === 'synced'));
    assert.ok(fresh, 'a new connection that synced');
    const replayed = fresh.received.slice(0, fresh.received.findIndex((f) => f.type === 'synced'));
    // 2..4 though bob read them; message 1 may come again first (a repeat,
    // if the laptop went offline before telling that it keeps it).
    assert.deepEqual(replayed.map((f) => f.message_id).filter((id) => id !== 1), [2, 3, 4], 'replayed by sync, though bob read them');
    assert.equal(fresh.received.some((f) => f.type === 'history'), false, 'no history reload');
    assert.deepEqual(said(await rows(laptop)), ['alice.e: Hello phone', ...texts.map((t) => `alice.e: ${t}`)]);
    // Each browser named its own device, and the laptop told what it keeps.
    await waitFor(() => fresh.sent.some((f) => f.action === 'received'), 'laptop: received');
    await shot(laptop, 'two-devices-catch-up.png');
  }),
);

test('a message sent while offline is delivered once after reconnecting', { timeout: TEST_MS }, () =>
  scenario(async (users) => {
    const alice = await signedIn(users, 'alice.d');
    const bob = await signedIn(users, 'bob.d');
    await firstMessage(alice, bob, 'Are you on the train?');

    await bob.ctx.setOffline(true);
    await waitState(bob, 'reconnecting', /^Connection lost\. Reconnecting in \d+ s…$/);
    const socketsBefore = bob.sockets.length;
    await sendWithEnter(bob, 'Yes, the signal comes and goes');
    // Kept, and shown as sending ("…"), while there is no connection.
    await waitRows(bob, 'shown as pending', (rs) => rs.length === 2 && rs[1].pending && rs[1].status === '…');
    await shot(bob, 'reconnecting.png');
    assert.deepEqual(said(await rows(alice)), ['alice.d: Are you on the train?'], 'nothing got through while offline');

    await bob.ctx.setOffline(false);
    await waitState(bob, 'live');
    await waitRows(bob, 'acked after reconnecting', (rs) => rs.length === 2 && rs[1].id === '2' && !rs[1].pending);
    await waitRows(alice, "bob's message delivered", (rs) => rs.some((r) => r.text === 'Yes, the signal comes and goes'));
    const sends = () => bob.sockets.slice(socketsBefore).filter((s) => s.sent.some((f) => f.action === 'send'));
    await waitFor(() => sends().length > 0, 'bob: the send on the new connection');
    assert.equal(sends().length, 1, 'sent on one connection');
    assert.deepEqual(sends()[0].sent[0], { action: 'sync' }, 'after its sync');

    // A later message from Bob is stored after any copy of the first one: once
    // Alice has it, her list is final.
    await sendWithEnter(bob, 'Tunnel again, back in 5');
    await waitRows(alice, 'the follow-up delivered', (rs) => rs.some((r) => r.text === 'Tunnel again, back in 5'));
    const rs = await rows(alice);
    assert.deepEqual(
      said(rs),
      ['alice.d: Are you on the train?', 'bob.d: Yes, the signal comes and goes', 'bob.d: Tunnel again, back in 5'],
      'delivered exactly once, in order',
    );
    assert.deepEqual(rs.map((r) => r.id), ['1', '2', '3']);
    await waitRows(bob, 'no pending rows; read by alice', (rs) => rs.length === 3 && rs.slice(1).every((r) => r.status === '✓✓'));
  }),
);
