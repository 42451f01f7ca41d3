import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatClient, conversationIdFor, recipientFor, parseConversationId } from '../chat-client.js';
import { harness, tick } from '../testing.js';

const conv = 'dm#alice#bob';
const msg = (id, c = conv, text = `m${id}`) => ({
  type: 'message',
  conversation_id: c,
  message_id: id,
  from: 'bob',
  text,
  sent_at: '2026-11-29T10:00:00.000Z',
});
const ids = (list) => list.map((m) => m.message_id);

test('a live copy that overtakes the replay: one sorted list, each id once, one event each', () => {
  const h = harness(ChatClient);
  const ws = h.ws().open();
  // sync replays 1..3 while a live copy of 4 and 5 (and again 3) arrive in between
  ws.receive(msg(1)).receive(msg(4)).receive(msg(2)).receive(msg(5)).receive(msg(3)).receive(msg(3));
  ws.receive(msg(4)); // replayed copy of the live one
  ws.receive({ type: 'synced' });
  assert.deepEqual(ids(h.client.messages(conv)), [1, 2, 3, 4, 5]);
  assert.deepEqual(ids(h.of('message')), [1, 4, 2, 5, 3], 'one event per new message, in arrival order');
  assert.equal(h.of('message')[0].type, undefined, 'events carry the message, not the frame type');
});

test('conversations are kept apart, and a reconnect replay is de-duplicated too', () => {
  const h = harness(ChatClient);
  let ws = h.goLive();
  ws.receive(msg(2, 'grp#g1')).receive(msg(1, conv)).receive(msg(1, 'grp#g1'));
  ws.serverClose(1006);
  h.clock.advance(1000);
  ws = h.ws().open();
  ws.receive(msg(1, 'grp#g1')).receive(msg(2, 'grp#g1')).receive(msg(3, 'grp#g1')).receive({ type: 'synced' });
  assert.deepEqual(ids(h.client.messages('grp#g1')), [1, 2, 3]);
  assert.deepEqual(ids(h.client.messages(conv)), [1]);
  assert.equal(h.of('message').length, 4);
  assert.deepEqual(h.client.conversationIds().sort(), [conv, 'grp#g1'].sort());
});

test('messages() is a copy, and sorted after random arrival of many ids', () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const order = Array.from({ length: 200 }, (_, i) => i + 1);
  let seed = 7;
  for (let i = order.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  for (const id of order) ws.receive(msg(id));
  for (const id of order.slice(0, 50)) ws.receive(msg(id));
  const list = h.client.messages(conv);
  assert.deepEqual(ids(list), Array.from({ length: 200 }, (_, i) => i + 1));
  list.pop();
  assert.equal(h.client.messages(conv).length, 200);
  assert.equal(h.of('message').length, 200);
});

test('history pages join the list without message events and without duplicates', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  ws.receive(msg(5)).receive(msg(6));
  const page = h.client.history(conv, { before: 6, limit: 3 });
  assert.deepEqual(ws.sent.at(-1), { action: 'history', conversation_id: conv, before: 6, limit: 3 });
  ws.receive({ type: 'history', conversation_id: conv, messages: [msg(3), msg(4), msg(5)].map(({ type, ...m }) => m), has_more: true });
  const got = await page;
  assert.equal(got.has_more, true);
  assert.deepEqual(ids(got.messages), [3, 4, 5]);
  assert.deepEqual(ids(h.client.messages(conv)), [3, 4, 5, 6]);
  assert.equal(h.of('message').length, 2);
});

test('ack() only moves forward, waits for the connection, and is written again after a drop', () => {
  const h = harness(ChatClient);
  assert.equal(h.client.ack(conv, 3), true);
  assert.equal(h.client.ack(conv, 2), false);
  let ws = h.goLive();
  assert.deepEqual(ws.sent, [{ action: 'sync' }, { action: 'ack', conversation_id: conv, up_to: 3 }]);
  assert.equal(h.client.ack(conv, 3), false);
  assert.equal(h.client.ack(conv, 7), true);
  assert.deepEqual(ws.sent.at(-1), { action: 'ack', conversation_id: conv, up_to: 7 });
  ws.serverClose(1006);
  h.clock.advance(1000);
  ws = h.ws().open();
  assert.deepEqual(ws.sent, [{ action: 'sync' }, { action: 'ack', conversation_id: conv, up_to: 7 }]);
});

test('autoAck acks the newest message once sync is done, then each live one', async () => {
  const h = harness(ChatClient, { autoAck: true });
  const ws = h.ws().open();
  ws.receive(msg(1)).receive(msg(3)).receive(msg(2)).receive(msg(1, 'grp#g'));
  await tick();
  assert.deepEqual(ws.actions(), ['sync'], 'no acks while syncing');
  ws.receive({ type: 'synced' });
  assert.deepEqual(ws.sent.slice(1), [
    { action: 'ack', conversation_id: conv, up_to: 3 },
    { action: 'ack', conversation_id: 'grp#g', up_to: 1 },
  ]);
  ws.receive(msg(4));
  await tick();
  assert.deepEqual(ws.sent.at(-1), { action: 'ack', conversation_id: conv, up_to: 4 });
  ws.receive(msg(4));
  await tick();
  assert.equal(ws.sent.length, 4, 'a duplicate is not acked again');
});

test('without autoAck nothing is acked by itself', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  ws.receive(msg(1));
  await tick();
  assert.deepEqual(ws.actions(), ['sync']);
});

test('receipt and group frames become events and queryable state', () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  ws.receive({ type: 'receipt', conversation_id: conv, user_id: 'bob', up_to: 4 });
  ws.receive({ type: 'receipt', conversation_id: conv, user_id: 'bob', up_to: 2 });
  assert.deepEqual(h.client.receipts(conv), { bob: 4 });
  assert.equal(h.of('receipt').length, 2);
  const g = { type: 'group', group_id: 'g1', name: 'team', members: ['alice', 'bob'], admins: ['bob'] };
  ws.receive(g);
  assert.deepEqual(h.of('group'), [g]);
  assert.deepEqual(h.client.group('g1'), g);
});

test('readBy says read by n of m from fetchReceipts, the receipts after it, and the group size', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const g = 'grp#g1';
  assert.equal(h.client.readBy(g, 3), null, 'no member count known yet');
  const asked = h.client.fetchReceipts(g);
  await tick();
  assert.deepEqual(ws.sent.at(-1), { action: 'receipts', conversation_id: g });
  ws.receive({
    type: 'receipts',
    conversation_id: g,
    members: [
      { user_id: 'alice', up_to: 3 },
      { user_id: 'bob', up_to: 3 },
      { user_id: 'carol', up_to: 1 },
    ],
  });
  const answer = await asked;
  assert.equal(answer.members.length, 3);
  // alice is "me": only the other two count.
  assert.deepEqual(h.client.readBy(g, 3), { n: 1, m: 2 });
  assert.deepEqual(h.client.readBy(g, 1), { n: 2, m: 2 });
  ws.receive({ type: 'receipt', conversation_id: g, user_id: 'carol', up_to: 5 });
  assert.deepEqual(h.client.readBy(g, 3), { n: 2, m: 2 });
  // A member joins: m grows with the group frame.
  ws.receive({ type: 'group', group_id: 'g1', name: 'team', members: ['alice', 'bob', 'carol', 'dave'], admins: ['alice'] });
  assert.deepEqual(h.client.readBy(g, 3), { n: 2, m: 3 });
  // bob leaves: his read no longer counts, nor does he.
  ws.receive({ type: 'group', group_id: 'g1', name: 'team', members: ['alice', 'carol', 'dave'], admins: ['alice'] });
  assert.deepEqual(h.client.readBy(g, 3), { n: 1, m: 2 });
  // A fresh answer replaces the marks.
  const again = h.client.fetchReceipts(g);
  await tick();
  ws.receive({ type: 'receipts', conversation_id: g, members: [{ user_id: 'alice', up_to: 3 }, { user_id: 'dave', up_to: 3 }] });
  await again;
  assert.deepEqual(h.client.receipts(g), { alice: 3, dave: 3 });
  assert.deepEqual(h.client.readBy(g, 3), { n: 1, m: 1 });
});

test('a frame that is not JSON is an error event; unknown frame types are ignored', () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  ws.receive('{nope');
  ws.receive({ type: 'from-the-future', x: 1 });
  assert.deepEqual(h.of('error').map((e) => e.code), ['bad_frame']);
  assert.equal(h.client.state, 'live');
});

test('conversation id helpers', () => {
  assert.equal(conversationIdFor('bob', 'user:alice'), 'dm#alice#bob');
  assert.equal(conversationIdFor('alice', 'user:bob'), 'dm#alice#bob');
  assert.equal(conversationIdFor('alice', 'user:alice'), 'dm#alice#alice');
  assert.equal(conversationIdFor('alice', 'group:4f1c'), 'grp#4f1c');
  assert.equal(recipientFor('alice', 'dm#alice#bob'), 'user:bob');
  assert.equal(recipientFor('bob', 'dm#alice#bob'), 'user:alice');
  assert.equal(recipientFor('alice', 'dm#alice#alice'), 'user:alice');
  assert.equal(recipientFor('x', 'grp#4f1c'), 'group:4f1c');
  assert.deepEqual(parseConversationId('grp#g'), { kind: 'group', groupId: 'g' });
  assert.equal(parseConversationId('nope'), null);
});
