// The chat web page: plain DOM, no framework, no build step. The protocol
// work (reconnects, sync, de-duplication, resending) is in chat-client.js.
import {
  ChatClient,
  conversationIdFor,
  recipientFor,
  parseConversationId,
  tokenSubject,
} from '/chat-client.js';

const USER_ID = /^[A-Za-z0-9_.-]{1,64}$/;
const PAGE = 50;
const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));

/** @type {ChatClient|null} */ let client = null;
/** @type {string|null} */ let me = null;
/** @type {Map<string, any>} conversation items, as in the `conversations` frame */
const convs = new Map();
let order = 0; // bumps on activity, to list recent conversations first
/** @type {string|null} */ let openId = null;
/** Conversations whose last sync replay left older messages out (`gap`). */
const gapped = new Set();
/** @type {Map<string, boolean>} whether older history exists, per conversation */
const hasMore = new Map();
let loadingOlder = false;

// ---- small helpers ----------------------------------------------------------

let errorTimer = /** @type {any} */ (0);
/** @param {string} text */
function showError(text) {
  $('errors').textContent = text;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => ($('errors').textContent = ''), 8000);
}

/** @param {string} tag @param {Record<string, any>} [props] @param {(Node|string)[]} [children] */
function el(tag, props = {}, children = []) {
  const e = /** @type {any} */ (document.createElement(tag));
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('aria-') || k === 'role') e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
}

/** @param {any} item */
function title(item) {
  if (item.kind === 'group') return item.name || `group ${item.group_id}`;
  return item.peer === me ? `${me} (notes to self)` : item.peer;
}

/** The item for a conversation id, made up if the server has not listed it yet. @param {string} id */
function itemFor(id) {
  let item = convs.get(id);
  if (!item) {
    const p = parseConversationId(id);
    item = { conversation_id: id, last_message_id: 0, acked_up_to: 0, unread: 0, order: ++order };
    if (p?.kind === 'group') Object.assign(item, { kind: 'group', group_id: p.groupId, name: client?.group(p.groupId)?.name });
    else if (p) Object.assign(item, { kind: 'direct', peer: p.users[0] === me ? p.users[1] : p.users[0] });
    convs.set(id, item);
  }
  return item;
}

/** sessionStorage, which may be disabled. @param {'getItem'|'setItem'|'removeItem'} op @param {string} [value] */
function store(op, value) {
  try {
    return sessionStorage[op]('chat-token', /** @type {string} */ (value));
  } catch {
    return null;
  }
}

/** A browser cannot see the server's 401, so check `exp` here. @param {string} token */
function tokenExpired(token) {
  try {
    const exp = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).exp;
    return typeof exp === 'number' && exp * 1000 < Date.now();
  } catch {
    return false;
  }
}

/** @param {boolean} on */
function showChat(on) {
  for (const id of ['chat', 'sign-out', 'me']) $(id).hidden = !on;
  $('sign-in-panel').hidden = on;
}

/** @param {any} item */
function recount(item) {
  item.unread = Math.max(0, item.last_message_id - item.acked_up_to);
}

// ---- sign in -------------------------------------------------------------------

async function signIn(/** @type {Event} */ ev) {
  ev.preventDefault();
  const pasted = $('token').value.trim();
  if (pasted) return start(pasted);
  const user = $('user-id').value.trim();
  if (!USER_ID.test(user)) {
    showError('Enter a user id (1–64 letters, digits, _ . -) or paste a token.');
    $('user-id').focus();
    return;
  }
  try {
    const res = await fetch(`/dev/token?user=${encodeURIComponent(user)}`);
    const body = res.ok ? await res.json() : null;
    if (body && typeof body.token === 'string') return start(body.token);
  } catch {
    /* no dev endpoint */
  }
  showError('This server does not hand out development tokens (it runs without --dev): paste a token.');
  $('token').focus();
}

/** @param {string} token */
function start(token) {
  me = tokenSubject(token);
  if (!me || tokenExpired(token)) {
    showError(me ? 'That token has expired: sign in again.' : 'That token is not a JWT with a user id (sub).');
    me = null;
    return signOut();
  }
  store('setItem', token); // this tab only, so a reload stays signed in
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  everLive = false;
  client = new ChatClient({ url: `${scheme}://${location.host}/ws`, token, keepaliveMs: 25000 });
  const c = client;
  Object.entries({ state: onState, message: onMessage, receipt: onReceipt, group: onGroup }).forEach(([t, fn]) => c.on(t, fn));
  client.on('ack', (/** @type {any} */ a) => onMessage(a.message)); // our send, stored
  client.on('gap', (/** @type {any} */ g) => {
    gapped.add(g.conversationId);
    hasMore.set(g.conversationId, true);
  });
  client.on('error', (/** @type {any} */ e) => {
    if (e.code === 'unauthorized') signOut('The server refused the token. Sign in again.');
    else showError(`Error: ${e.code}: ${e.message}`);
  });
  showChat(true);
  $('me').textContent = `Signed in as ${me}`;
  $('new-chat-user').focus();
}

/** @param {string} [why] */
function signOut(why) {
  client?.close();
  client = null;
  me = null;
  openId = null;
  convs.clear();
  hasMore.clear();
  store('removeItem');
  showChat(false);
  $('conversation-list').replaceChildren();
  $('messages').replaceChildren();
  setBanner('closed', '');
  if (why) showError(why);
  $('user-id').focus();
}

// ---- connection banner -----------------------------------------------------------

/** @param {string} state @param {string} text */
function setBanner(state, text) {
  const b = $('banner');
  b.dataset.state = state;
  b.textContent = text;
}

let everLive = false;
/** @param {{state: string, delay?: number, attempt?: number}} s */
function onState(s) {
  const hint = !everLive && (s.attempt ?? 0) >= 3 ? ' Is the server up, and the token valid?' : '';
  const text = {
    connecting: 'Connecting…',
    open: 'Connected, catching up…',
    syncing: 'Connected, catching up…',
    live: 'Connected.',
    reconnecting: `Connection lost. Reconnecting in ${Math.ceil((s.delay ?? 0) / 1000)} s…${hint}`,
    closed: 'Disconnected.',
  }[s.state];
  setBanner(s.state, text ?? s.state);
  if (s.state === 'live') {
    const again = everLive;
    everLive = true;
    refreshConversations(again);
  }
}

// ---- conversation list -----------------------------------------------------------

/** @param {boolean} [reconnected] live again after a lost connection */
async function refreshConversations(reconnected = false) {
  if (!client) return;
  const c = client;
  try {
    const items = /** @type {any[]} */ (await c.allConversations({ limit: 100 }));
    if (c !== client) return;
    for (const it of items) {
      const mine = convs.get(it.conversation_id);
      if (mine) {
        // keep what this page learned meanwhile: ids only grow
        it.last_message_id = Math.max(it.last_message_id, mine.last_message_id);
        it.acked_up_to = Math.max(it.acked_up_to, mine.acked_up_to);
        it.order = mine.order;
      } else it.order = 0;
      recount(it);
      convs.set(it.conversation_id, it);
    }
    renderList();
    // Sync brought this device what it missed since its position. Another
    // tab of this browser (the same device id) may have moved that past
    // what this tab shows: after a reconnect, a hole in the open
    // conversation (and after a `gap`) has its newest page read again.
    const gap = openId !== null && gapped.delete(openId);
    if (openId && (gap || (reconnected && hasHole(c.messages(openId))))) openConversation(openId, { reload: true });
  } catch (e) {
    if (/** @type {any} */ (e).code !== 'disconnected') showError(`Could not list conversations: ${/** @type {any} */ (e).message}`);
  }
}

/** Whether ids are missing between the oldest and the newest message held.
 * @param {{message_id: number}[]} list in id order */
function hasHole(list) {
  return list.some((m, i) => i > 0 && m.message_id !== list[i - 1].message_id + 1);
}

function renderList() {
  const items = [...convs.values()].sort((a, b) => b.order - a.order || b.last_message_id - a.last_message_id);
  const list = $('conversation-list');
  list.replaceChildren(
    ...items.map((it) => {
      const unread = it.conversation_id === openId ? 0 : it.unread;
      const badge = el('span', { className: 'unread', text: String(unread), hidden: unread === 0, 'aria-label': `${unread} unread` });
      const btn = el('button', { type: 'button', className: 'conv' }, [
        el('span', { className: 'name', text: title(it) + (it.removed ? ' (left)' : '') }),
        el('span', { className: 'kind', text: it.kind === 'group' ? 'group' : 'direct' }),
        badge,
      ]);
      if (it.conversation_id === openId) btn.setAttribute('aria-current', 'true');
      btn.addEventListener('click', () => openConversation(it.conversation_id));
      return el('li', { dataset: { conversationId: it.conversation_id, testid: 'conversation' } }, [btn]);
    }),
  );
}

// ---- conversation view -----------------------------------------------------------

/** @param {string} id @param {{reload?: boolean}} [o] */
async function openConversation(id, { reload = false } = {}) {
  if (!client) return;
  const switching = id !== openId;
  openId = id;
  itemFor(id);
  $('conversation-title').textContent = title(convs.get(id));
  $('composer').disabled = $('send').disabled = !!convs.get(id).removed;
  renderGroupPanel();
  renderList();
  renderMessages({ toBottom: true });
  if (switching || reload) {
    const c = client;
    try {
      // The newest page, for display: what this tab shows of a chat it opens
      // (sync delivers what this device misses; a reload keeps nothing).
      const page = await c.history(id, { limit: PAGE }); // it joins c.messages(id)
      if (c !== client || openId !== id) return;
      const newest = page.messages.at(-1)?.message_id ?? 0;
      const item = convs.get(id);
      item.last_message_id = Math.max(item.last_message_id, newest);
      hasMore.set(id, page.has_more);
      renderMessages({ toBottom: true });
      // Who has read how far, for ✓✓ and "read by n of m" on one's own messages.
      await c.fetchReceipts(id);
      if (c !== client || openId !== id) return;
      renderMessages();
    } catch (e) {
      // a chat nobody wrote in yet does not exist for the server: nothing to show
      if (!['forbidden', 'disconnected'].includes(/** @type {any} */ (e).code)) {
        showError(`Could not load messages: ${/** @type {any} */ (e).message}`);
      }
    }
  }
  if (switching) $('composer').focus();
}

/** The messages shown: the run without gaps that ends at the newest one. @param {string} id */
function shownMessages(id) {
  const all = client ? client.messages(id) : [];
  let i = all.length - 1;
  while (i > 0 && all[i - 1].message_id === all[i].message_id - 1) i--;
  return all.slice(Math.max(i, 0));
}

/** @param {{toBottom?: boolean, keepFromBottom?: number}} [o] */
function renderMessages({ toBottom = false, keepFromBottom } = {}) {
  const box = $('messages');
  if (!client || !openId) {
    box.replaceChildren();
    return;
  }
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const shown = shownMessages(openId);
  const readers = client.receipts(openId);
  const rows = shown.map((m) => messageRow(m, readers));
  for (const p of client.pendingSends(openId)) {
    rows.push(
      el('li', { className: 'own pending', dataset: { clientMsgId: p.clientMsgId } }, [
        el('span', { className: 'from', text: me ?? '' }),
        el('span', { className: 'text', text: p.text }),
        el('span', { className: 'status', text: '…', title: 'sending', 'aria-label': 'sending' }),
      ]),
    );
  }
  box.replaceChildren(...rows);
  const oldest = shown[0]?.message_id ?? 0;
  const more = oldest > 1 && hasMore.get(openId) !== false;
  $('load-older').hidden = !more;
  if (keepFromBottom !== undefined) box.scrollTop = box.scrollHeight - keepFromBottom;
  else if (toBottom || atBottom) box.scrollTop = box.scrollHeight;
  ackShown();
}

/** @param {any} m @param {Record<string, number>} readers */
function messageRow(m, readers) {
  const own = m.from === me;
  const time = m.sent_at ? new Date(m.sent_at) : null;
  const children = [
    el('span', { className: 'from', text: m.from ?? '' }),
    el('span', { className: 'text', text: m.text }),
    el('time', { dateTime: m.sent_at ?? '', text: time && !isNaN(+time) ? time.toLocaleTimeString() : '' }),
  ];
  if (own) {
    // The protocol has no per-recipient delivery report, so there is no honest
    // "delivered" state: ✓ = sent (stored durably: the server acked it),
    // ✓✓ = read (another member's watermark is at or past this id). The
    // watermarks come from a `receipts` request when the conversation opens,
    // then from the `receipt` frames the server pushes to a message's author.
    const by = Object.entries(readers).filter(([u, upTo]) => u !== me && upTo >= m.message_id).map(([u]) => u);
    children.push(
      el('span', {
        className: 'status',
        text: by.length ? '✓✓' : '✓',
        title: by.length ? `read by ${by.join(', ')}` : 'sent',
        'aria-label': by.length ? `read by ${by.join(', ')}` : 'sent',
      }),
    );
    // In a group: how many of the others have read it.
    const read = parseConversationId(m.conversation_id)?.kind === 'group' ? client?.readBy(m.conversation_id, m.message_id) : null;
    if (read) children.push(el('span', { className: 'read-by', text: `read by ${read.n} of ${read.m}` }));
  }
  return el('li', { className: own ? 'own' : 'theirs', dataset: { messageId: String(m.message_id) } }, children);
}

/** Acks the newest displayed message of the open conversation, if the page is seen. */
function ackShown() {
  if (!client || !openId || document.visibilityState !== 'visible') return;
  const newest = shownMessages(openId).at(-1)?.message_id;
  if (!newest) return;
  const item = itemFor(openId);
  client.ack(openId, newest);
  if (newest > item.acked_up_to) {
    item.acked_up_to = newest;
    item.last_message_id = Math.max(item.last_message_id, newest);
    recount(item);
    renderList();
  }
}

async function loadOlder() {
  if (!client || !openId || loadingOlder) return;
  const id = openId;
  const oldest = shownMessages(id)[0]?.message_id;
  if (!oldest || oldest <= 1 || hasMore.get(id) === false) return;
  loadingOlder = true;
  const box = $('messages');
  const fromBottom = box.scrollHeight - box.scrollTop;
  try {
    const page = await client.history(id, { before: oldest, limit: PAGE });
    hasMore.set(id, page.has_more);
    if (openId === id) renderMessages({ keepFromBottom: fromBottom });
  } catch (e) {
    showError(`Could not load older messages: ${/** @type {any} */ (e).message}`);
  } finally {
    loadingOlder = false;
  }
}

// ---- live events -------------------------------------------------------------------

/** A new message in a conversation; own messages move my watermark too. @param {any} m */
function onMessage(m) {
  const item = itemFor(m.conversation_id);
  item.last_message_id = Math.max(item.last_message_id, m.message_id);
  if (m.from === me) item.acked_up_to = Math.max(item.acked_up_to, m.message_id);
  item.order = ++order;
  recount(item);
  if (m.conversation_id === openId) renderMessages({ toBottom: m.from === me });
  renderList();
}

/** @param {any} r */
function onReceipt(r) {
  if (r.user_id === me) {
    const item = itemFor(r.conversation_id); // read on another device
    item.acked_up_to = Math.max(item.acked_up_to, r.up_to);
    recount(item);
    renderList();
  }
  if (r.conversation_id === openId) renderMessages();
}

/** @param {any} g */
function onGroup(g) {
  const id = `grp#${g.group_id}`;
  const item = itemFor(id);
  item.name = g.name;
  item.removed = !g.members.includes(me);
  if (id === openId) {
    $('conversation-title').textContent = title(item);
    $('composer').disabled = $('send').disabled = item.removed;
    renderGroupPanel();
  }
  renderList();
}

function renderGroupPanel() {
  const p = openId ? parseConversationId(openId) : null;
  $('group-panel').hidden = p?.kind !== 'group';
  if (p?.kind !== 'group' || !client) return;
  const g = client.group(p.groupId);
  $('group-member-list').textContent = g
    ? g.members.map((/** @type {string} */ u) => (g.admins.includes(u) ? `${u} (admin)` : u)).join(', ')
    : 'not known yet (shown after the next change to the group)';
}

// ---- user actions ----------------------------------------------------------------

async function sendMessage(/** @type {Event} */ ev) {
  ev.preventDefault();
  const box = $('composer');
  const text = box.value;
  if (!client || !openId || !me || !text.trim()) return;
  box.value = '';
  const p = client.send(recipientFor(me, openId), text);
  renderMessages({ toBottom: true });
  try {
    await p;
  } catch (e) {
    const err = /** @type {any} */ (e);
    if (err.code !== 'closed') showError(`Not sent (${err.code}): ${err.message}`);
    renderMessages();
  }
}

function openChat(/** @type {Event} */ ev) {
  ev.preventDefault();
  const user = $('new-chat-user').value.trim();
  if (!me || !USER_ID.test(user)) {
    showError('Enter a user id (1–64 letters, digits, _ . -).');
    $('new-chat-user').focus();
    return;
  }
  $('new-chat-user').value = '';
  const id = conversationIdFor(me, `user:${user}`);
  itemFor(id).order = ++order;
  openConversation(id);
}

async function createGroup(/** @type {Event} */ ev) {
  ev.preventDefault();
  if (!client) return;
  const name = $('group-name').value.trim();
  const members = $('group-members').value.split(/[\s,]+/).filter(Boolean);
  const bad = members.find((m) => !USER_ID.test(m));
  if (!name || bad) {
    showError(!name ? 'Enter a group name.' : `Not a user id: ${bad}`);
    $(!name ? 'group-name' : 'group-members').focus();
    return;
  }
  try {
    const g = await client.createGroup(name, members);
    $('group-name').value = $('group-members').value = '';
    itemFor(`grp#${g.group_id}`).order = ++order;
    openConversation(`grp#${g.group_id}`);
  } catch (e) {
    showError(`Could not create the group: ${/** @type {any} */ (e).message}`);
  }
}

/** @param {'addMember'|'removeMember'} action */
async function changeMember(action) {
  const p = openId ? parseConversationId(openId) : null;
  const user = $('member-user').value.trim();
  if (!client || p?.kind !== 'group') return;
  if (!USER_ID.test(user)) {
    showError('Enter a user id.');
    $('member-user').focus();
    return;
  }
  try {
    await client[action](p.groupId, user);
    $('member-user').value = '';
  } catch (e) {
    showError(`Could not ${action === 'addMember' ? 'add' : 'remove'} ${user}: ${/** @type {any} */ (e).message}`);
  }
}

// ---- wiring ----------------------------------------------------------------------

$('sign-in-form').addEventListener('submit', signIn);
$('sign-out').addEventListener('click', () => signOut());
$('composer-form').addEventListener('submit', sendMessage);
$('composer').addEventListener('keydown', (/** @type {KeyboardEvent} */ e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('composer-form').requestSubmit();
  }
});
$('new-chat-form').addEventListener('submit', openChat);
$('group-form').addEventListener('submit', createGroup);
$('member-form').addEventListener('submit', (/** @type {Event} */ e) => {
  e.preventDefault();
  changeMember('addMember');
});
$('add-member').addEventListener('click', () => changeMember('addMember'));
$('remove-member').addEventListener('click', () => changeMember('removeMember'));
$('load-older').addEventListener('click', loadOlder);
$('messages').addEventListener('scroll', () => {
  if ($('messages').scrollTop < 40) loadOlder();
});
document.addEventListener('visibilitychange', ackShown);
// This browser's delivery cursors (what it keeps), told at once when the page
// is hidden or closed rather than at the next pacing tick.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden') client?.flushReceived();
});
window.addEventListener('pagehide', () => client?.flushReceived());
// The network went away or came back: the socket may be dead without a close
// (only the keepalive would notice, up to 50 s later), so start over at once:
// offline, the banner says so and sends wait as "…"; online, no backoff wait.
window.addEventListener('offline', () => client?.reconnect());
window.addEventListener('online', () => client?.reconnect());

// A token from an embedding app (#token=...), else one this tab already used.
function tokenFromHash() {
  const t = new URLSearchParams(location.hash.slice(1)).get('token');
  if (t) history.replaceState(null, '', location.pathname + location.search); // keep it out of the address bar
  return t;
}
window.addEventListener('hashchange', () => {
  const t = tokenFromHash();
  if (t) {
    if (client) signOut();
    start(t);
  }
});
const fromHash = tokenFromHash();
const saved = store('getItem');
if (fromHash || saved) start(/** @type {string} */ (fromHash || saved));
else $('user-id').focus();
