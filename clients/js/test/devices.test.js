import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatClient, defaultDeviceId } from '../chat-client.js';
import { harness } from '../testing.js';

const conv = 'dm#alice#bob';
const msg = (id, c = conv) => ({
  type: 'message',
  conversation_id: c,
  message_id: id,
  from: 'bob',
  text: `m${id}`,
  sent_at: '2026-11-29T10:00:00.000Z',
});
const received = (ws) => ws.sent.filter((f) => f.action === 'received');

test('the device id goes in ?device=, and one is kept in the storage it was made in', () => {
  const h = harness(ChatClient, { deviceId: 'laptop-1' });
  assert.equal(new URL(h.ws().url).searchParams.get('device'), 'laptop-1');
  const kept = new Map();
  const storage = { getItem: (k) => kept.get(k) ?? null, setItem: (k, v) => kept.set(k, v) };
  const first = defaultDeviceId(storage);
  assert.match(first, /^[A-Za-z0-9_.-]{1,64}$/);
  assert.equal(defaultDeviceId(storage), first, 'the same install, the same id');
  assert.notEqual(defaultDeviceId(null), defaultDeviceId(null), 'without storage, a new one each time');
  const none = harness(ChatClient, { deviceId: null });
  assert.equal(new URL(none.ws().url).searchParams.get('device'), null);
});

test('after synced, one received frame tells the run this device holds, where it starts and ends', () => {
  const h = harness(ChatClient, { deviceId: 'laptop-1' });
  const ws = h.ws().open();
  ws.receive(msg(4)).receive(msg(5)).receive(msg(6));
  ws.receive(msg(2, 'grp#g')).receive(msg(3, 'grp#g'));
  assert.deepEqual(received(ws), [], 'nothing before synced');
  ws.receive({ type: 'synced' });
  assert.deepEqual(received(ws), [
    {
      action: 'received',
      items: [
        { conversation_id: conv, from: 4, up_to: 6 },
        { conversation_id: 'grp#g', from: 2, up_to: 3 },
      ],
    },
  ]);
});

test('live messages are told at most once per conversation per period, and a hole stops the run', () => {
  const h = harness(ChatClient, { deviceId: 'laptop-1', receivedEveryMs: 5000 });
  const ws = h.goLive();
  ws.receive(msg(1));
  assert.equal(received(ws).length, 0, 'paced');
  h.clock.advance(5000);
  assert.deepEqual(received(ws).at(-1), { action: 'received', items: [{ conversation_id: conv, from: 1, up_to: 1 }] });
  ws.receive(msg(2)).receive(msg(4)); // 3 never came
  h.clock.advance(5000);
  assert.deepEqual(received(ws).at(-1), { action: 'received', items: [{ conversation_id: conv, from: 1, up_to: 2 }] });
  assert.equal(received(ws).length, 2);
  // flushReceived() (a page being hidden) tells at once, without pacing.
  ws.receive(msg(3));
  h.client.flushReceived();
  assert.deepEqual(received(ws).at(-1), { action: 'received', items: [{ conversation_id: conv, from: 1, up_to: 4 }] });
});

test('own sends count: an ack right after the run extends it', () => {
  const h = harness(ChatClient, { deviceId: 'laptop-1' });
  const ws = h.goLive();
  ws.receive(msg(1));
  h.client.send('user:bob', 'mine');
  ws.receive({ type: 'ack', client_msg_id: 'c-1', conversation_id: conv, message_id: 2, sent_at: 't' });
  h.client.flushReceived();
  assert.deepEqual(received(ws).at(-1), { action: 'received', items: [{ conversation_id: conv, from: 1, up_to: 2 }] });
});

test('an ack that comes before a message below it starts the run high, and it reaches down when the message comes', () => {
  // The device's cursor is at 20; bob's 21 is still on its way when this
  // connection's own send is acked as 22. Told as 22..22, the server keeps
  // the cursor at 20 (a run from 22 steps over 21); once 21 comes, the run
  // is 21..22 and is told again.
  const h = harness(ChatClient, { deviceId: 'laptop-1' });
  const ws = h.goLive();
  h.client.send('user:bob', 'mine');
  ws.receive({ type: 'ack', client_msg_id: 'c-1', conversation_id: conv, message_id: 22, sent_at: 't' });
  h.client.flushReceived();
  assert.deepEqual(received(ws).at(-1), { action: 'received', items: [{ conversation_id: conv, from: 22, up_to: 22 }] });
  ws.receive(msg(21));
  h.client.flushReceived();
  assert.deepEqual(received(ws).at(-1), { action: 'received', items: [{ conversation_id: conv, from: 21, up_to: 22 }] });
  assert.equal(received(ws).length, 2);
});

test('after a gap the run starts above the position the gap names: what it left out counts as told', () => {
  const h = harness(ChatClient, { deviceId: 'laptop-1' });
  const ws = h.ws().open();
  // This device stood at 1; 2 and 3 were left out (history has them).
  ws.receive({ type: 'gap', conversation_id: conv, after: 1, before: 4 });
  ws.receive(msg(4)).receive(msg(5)).receive({ type: 'synced' });
  assert.deepEqual(h.of('gap'), [{ conversationId: conv, after: 1, before: 4 }]);
  assert.deepEqual(received(ws).at(-1), { action: 'received', items: [{ conversation_id: conv, from: 2, up_to: 5 }] });
  // A malformed gap counts for nothing: the run starts where it got.
  const other = harness(ChatClient, { deviceId: 'laptop-1' });
  const ws2 = other.ws().open();
  ws2.receive({ type: 'gap', conversation_id: conv, before: 4 });
  ws2.receive(msg(4)).receive({ type: 'synced' });
  assert.deepEqual(received(ws2).at(-1), { action: 'received', items: [{ conversation_id: conv, from: 4, up_to: 4 }] });
});

test('without a device no received frame is ever sent', () => {
  const h = harness(ChatClient, { deviceId: null });
  const ws = h.ws().open();
  ws.receive(msg(1)).receive({ type: 'synced' });
  h.clock.advance(60_000);
  h.client.flushReceived();
  assert.deepEqual(received(ws), []);
});
