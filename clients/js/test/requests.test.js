import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatClient } from '../chat-client.js';
import { harness, tick } from '../testing.js';

const group = (id, name, members = ['alice', 'bob'], admins = ['alice']) => ({ type: 'group', group_id: id, name, members, admins });

test('pipelined requests resolve in frame order with their own answers', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const convs = h.client.conversations();
  const hist = h.client.history('dm#alice#bob');
  const pong = h.client.ping();
  const grp = h.client.createGroup('team', ['bob']);
  assert.deepEqual(ws.sent.slice(1), [
    { action: 'conversations' },
    { action: 'history', conversation_id: 'dm#alice#bob' },
    { action: 'ping' },
    { action: 'createGroup', name: 'team', members: ['bob'] },
  ]);
  const items = [{ conversation_id: 'dm#alice#bob', kind: 'direct', peer: 'bob', last_message_id: 7, acked_up_to: 5, unread: 2 }];
  ws.receive({ type: 'conversations', items });
  ws.receive({ type: 'history', conversation_id: 'dm#alice#bob', messages: [], has_more: false });
  ws.receive({ type: 'pong' });
  ws.receive(group('g1', 'team'));
  assert.deepEqual((await convs).items, items);
  assert.equal((await hist).has_more, false);
  assert.equal(await pong, undefined);
  assert.equal((await grp).group_id, 'g1');
  assert.equal(h.of('group').length, 1, 'the answer is also a group event');
});

test('a group frame about another change does not answer our request', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  let settled = false;
  const add = h.client.addMember('g2', 'carol').then((g) => ((settled = true), g));
  ws.receive(group('g9', 'other')); // someone else's change, pushed to us
  await tick();
  assert.equal(settled, false);
  ws.receive(group('g2', 'ours', ['alice', 'bob', 'carol']));
  assert.deepEqual((await add).members, ['alice', 'bob', 'carol']);
  assert.deepEqual(ws.sent.at(-1), { action: 'addMember', group_id: 'g2', user_id: 'carol' });
  const rm = h.client.removeMember('g2', 'carol');
  assert.deepEqual(ws.sent.at(-1), { action: 'removeMember', group_id: 'g2', user_id: 'carol' });
  ws.receive(group('g2', 'ours'));
  assert.deepEqual((await rm).members, ['alice', 'bob']);
  assert.equal(h.of('group').length, 3);
});

test('a drop rejects the requests in flight, but keeps the sends for resending', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const a = h.client.conversations();
  const b = h.client.history('dm#alice#bob', { limit: 10 });
  const s = h.client.send('user:bob', 'keep me');
  ws.serverClose(1006);
  await assert.rejects(a, { code: 'disconnected' });
  await assert.rejects(b, { code: 'disconnected' });
  let sendSettled = false;
  s.then(
    () => (sendSettled = true),
    () => (sendSettled = true),
  );
  await tick();
  assert.equal(sendSettled, false);
  h.clock.advance(1000);
  const ws2 = h.ws().open();
  assert.deepEqual(ws2.actions(), ['sync', 'send']);
  ws2.receive({ type: 'ack', client_msg_id: 'c-1', conversation_id: 'dm#alice#bob', message_id: 1, sent_at: 't' });
  assert.equal((await s).message_id, 1);
});

test('an error frame rejects the request it names; an unclaimed one is an error event', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const hist = h.client.history('grp#nope');
  const convs = h.client.conversations();
  ws.receive({ type: 'error', code: 'forbidden', message: 'not allowed', action: 'history' });
  await assert.rejects(hist, (e) => e.code === 'forbidden' && e.action === 'history' && e.name === 'ChatError');
  ws.receive({ type: 'conversations', items: [] });
  assert.deepEqual((await convs).items, []);
  ws.receive({ type: 'error', code: 'forbidden', message: 'not allowed', action: 'ack' });
  assert.deepEqual(h.of('error').map((e) => [e.code, e.action]), [['forbidden', 'ack']]);
  assert.equal(h.client.state, 'live');
});

test('a failed sync is an error event and starts over with backoff', () => {
  const h = harness(ChatClient);
  const ws = h.ws().open();
  ws.receive({ type: 'error', code: 'internal', message: 'x', action: 'sync' });
  assert.equal(h.of('error')[0].code, 'internal');
  assert.equal(h.client.state, 'reconnecting');
  assert.ok(ws.closedByClient);
  h.clock.advance(1000);
  assert.equal(h.ws().sent.length, 0);
  h.ws().open();
  assert.deepEqual(h.ws().actions(), ['sync']);
});

test('an unattributable rate_limited error reconnects, and sends survive it', () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  h.client.send('user:bob', 'x');
  ws.receive({ type: 'error', code: 'rate_limited', message: 'slow down' });
  assert.equal(h.of('error')[0].code, 'rate_limited');
  assert.equal(h.client.state, 'reconnecting');
  h.clock.advance(1000);
  h.ws().open();
  assert.deepEqual(h.ws().actions(), ['sync', 'send']);
});

test('conversations takes limit and cursor and returns next_cursor; allConversations follows it', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const one = h.client.conversations({ limit: 2, cursor: 'abc' });
  assert.deepEqual(ws.sent.at(-1), { action: 'conversations', limit: 2, cursor: 'abc' });
  ws.receive({ type: 'conversations', items: [{ conversation_id: 'a' }], next_cursor: 'def' });
  assert.equal((await one).next_cursor, 'def');

  const all = h.client.allConversations({ limit: 1 });
  await tick();
  assert.deepEqual(ws.sent.at(-1), { action: 'conversations', limit: 1 });
  ws.receive({ type: 'conversations', items: [{ conversation_id: 'a' }], next_cursor: 'k1' });
  await tick();
  assert.deepEqual(ws.sent.at(-1), { action: 'conversations', limit: 1, cursor: 'k1' });
  ws.receive({ type: 'conversations', items: [{ conversation_id: 'b' }] }); // no next_cursor: the last page
  assert.deepEqual((await all).map((i) => i.conversation_id), ['a', 'b']);
  assert.equal(ws.actions().filter((a) => a === 'conversations').length, 3);
});

test('requests made while disconnected are written after sync on the next connection', async () => {
  const h = harness(ChatClient);
  const p = h.client.ping();
  const ws = h.ws().open();
  assert.deepEqual(ws.actions(), ['sync', 'ping']);
  ws.receive({ type: 'synced' });
  ws.receive({ type: 'pong' });
  await p;
});

test('events: state, message, receipt, group, error, ack all reach listeners; off() unsubscribes', () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const seen = [];
  const un = h.client.on('message', (m) => seen.push(m.message_id));
  h.client.send('user:bob', 'hi');
  ws.receive({ type: 'message', conversation_id: 'dm#alice#bob', message_id: 1, from: 'bob', text: 'a', sent_at: 't' });
  ws.receive({ type: 'ack', client_msg_id: 'c-1', conversation_id: 'dm#alice#bob', message_id: 2, sent_at: 't' });
  ws.receive({ type: 'receipt', conversation_id: 'dm#alice#bob', user_id: 'bob', up_to: 2 });
  ws.receive(group('g', 'n'));
  ws.receive({ type: 'error', code: 'bad_request', message: 'x' });
  un();
  ws.receive({ type: 'message', conversation_id: 'dm#alice#bob', message_id: 3, from: 'bob', text: 'b', sent_at: 't' });
  assert.deepEqual(seen, [1]);
  assert.deepEqual(
    [...new Set(h.events.map(([t]) => t))].sort(),
    ['ack', 'error', 'group', 'message', 'receipt', 'state'],
  );
  assert.equal(h.of('message').length, 2);
});

test('a throwing listener does not break the client', () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const orig = console.error;
  console.error = () => {};
  try {
    h.client.on('message', () => {
      throw new Error('app bug');
    });
    ws.receive({ type: 'message', conversation_id: 'c#x', message_id: 1, from: 'bob', text: 'a', sent_at: 't' });
  } finally {
    console.error = orig;
  }
  assert.equal(h.client.messages('c#x').length, 1);
  assert.equal(h.of('message').length, 1);
});
