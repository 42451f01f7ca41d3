import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatClient } from '../chat-client.js';
import { FakeWebSocket, harness, tick } from '../testing.js';

const ackFrame = (cid, id, conv = 'dm#alice#bob') => ({
  type: 'ack',
  client_msg_id: cid,
  conversation_id: conv,
  message_id: id,
  sent_at: '2026-11-29T10:00:00.123Z',
});

test('send writes a frame with a fresh client_msg_id and resolves with the ack', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const p = h.client.send('user:bob', 'hi');
  assert.deepEqual(ws.sent.at(-1), { action: 'send', to: 'user:bob', client_msg_id: 'c-1', text: 'hi' });
  assert.deepEqual(h.client.pendingSends(), [{ clientMsgId: 'c-1', to: 'user:bob', text: 'hi' }]);
  ws.receive(ackFrame('c-1', 7));
  assert.deepEqual(await p, ackFrame('c-1', 7));
  assert.deepEqual(h.client.pendingSends(), []);
  const ev = h.of('ack');
  assert.equal(ev.length, 1);
  assert.equal(ev[0].clientMsgId, 'c-1');
  assert.equal(ev[0].message.message_id, 7);
  assert.equal(ev[0].message.from, 'alice');
  // the own message joins the conversation, in order
  assert.deepEqual(h.client.messages('dm#alice#bob').map((m) => [m.message_id, m.text]), [[7, 'hi']]);
});

test('an unacked send is resent with the same client_msg_id after a reconnect, and resolves once', async () => {
  const h = harness(ChatClient);
  let ws = h.goLive();
  let resolved = 0;
  const p = h.client.send('user:bob', 'do not lose me').then((a) => {
    resolved++;
    return a;
  });
  const first = ws.sent.at(-1);
  ws.serverClose(1006);
  h.client.send('group:g1', 'typed while offline');
  h.clock.advance(1000);
  ws = h.ws().open();
  assert.deepEqual(ws.actions(), ['sync', 'send', 'send']);
  assert.deepEqual(ws.sent[1], first, 'same frame, same client_msg_id');
  assert.equal(ws.sent[2].client_msg_id, 'c-2');
  // the server is idempotent: it may answer with the original ack; a stray repeat changes nothing
  ws.receive(ackFrame('c-1', 3));
  ws.receive(ackFrame('c-1', 3));
  await p;
  await tick();
  assert.equal(resolved, 1);
  assert.equal(h.of('ack').filter((a) => a.clientMsgId === 'c-1').length, 1);
  assert.equal(h.client.messages('dm#alice#bob').length, 1);
  assert.deepEqual(h.client.pendingSends().map((s) => s.clientMsgId), ['c-2']);
});

test('a send that was acked is not resent after a reconnect', () => {
  const h = harness(ChatClient);
  let ws = h.goLive();
  h.client.send('user:bob', 'one');
  ws.receive(ackFrame('c-1', 1));
  ws.serverClose(1006);
  h.clock.advance(1000);
  ws = h.ws().open();
  assert.deepEqual(ws.actions(), ['sync']);
});

test('conflict rejects the send and it is not resent', async () => {
  const h = harness(ChatClient);
  let ws = h.goLive();
  const p = h.client.send('user:bob', 'changed text', { clientMsgId: 'dup-1' });
  ws.receive({ type: 'error', code: 'conflict', message: 'client_msg_id reused', client_msg_id: 'dup-1', action: 'send' });
  await assert.rejects(p, { code: 'conflict', clientMsgId: 'dup-1', action: 'send' });
  ws.serverClose(1006);
  h.clock.advance(1000);
  ws = h.ws().open();
  assert.deepEqual(ws.actions(), ['sync']);
  assert.deepEqual(h.of('error'), [], 'a rejected send is not also an error event');
});

test('forbidden rejects at once; internal and unavailable are retried with the same client_msg_id', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  const bad = h.client.send('group:nope', 'x');
  ws.receive({ type: 'error', code: 'forbidden', message: 'not allowed', client_msg_id: 'c-1', action: 'send' });
  await assert.rejects(bad, { code: 'forbidden' });
  const p = h.client.send('user:bob', 'retry me');
  ws.receive({ type: 'error', code: 'internal', message: 'store failure', client_msg_id: 'c-2', action: 'send' });
  assert.equal(ws.sent.filter((f) => f.client_msg_id === 'c-2').length, 1);
  h.clock.advance(750); // first retry step with random 0.5
  assert.equal(ws.sent.filter((f) => f.client_msg_id === 'c-2').length, 2);
  ws.receive(ackFrame('c-2', 9));
  assert.equal((await p).message_id, 9);
  // `unavailable` (the store cannot write for now) is retried the same way.
  const q = h.client.send('user:bob', 'disk full?');
  ws.receive({ type: 'error', code: 'unavailable', message: 'the disk is nearly full', client_msg_id: 'c-3', action: 'send' });
  h.clock.advance(750);
  assert.equal(ws.sent.filter((f) => f.client_msg_id === 'c-3').length, 2);
  ws.receive(ackFrame('c-3', 10));
  assert.equal((await q).message_id, 10);
});

test('texts the server would refuse are refused locally, without a frame', async () => {
  const h = harness(ChatClient);
  const ws = h.goLive();
  await assert.rejects(h.client.send('user:bob', ''), { code: 'bad_request' });
  await assert.rejects(h.client.send('bob', 'hi'), { code: 'bad_request' });
  await assert.rejects(h.client.send('user:bob', 'é'.repeat(5120) + 'x'), { code: 'too_large' });
  // 10,240 bytes that JSON escapes to ~60 KB: over the 32 KB frame limit (the server would close with 1009)
  await assert.rejects(h.client.send('user:bob', '\u0001'.repeat(10240)), { code: 'too_large' });
  assert.deepEqual(ws.actions(), ['sync']);
  h.client.send('user:bob', 'é'.repeat(5120));
  assert.equal(ws.actions().length, 2, 'exactly 10,240 bytes is fine');
});

test('frames are paced below the server rate limit', () => {
  const h = harness(ChatClient, { rate: { burst: 10, perSecond: 5 } });
  const ws = h.goLive();
  for (let i = 0; i < 20; i++) h.client.send('user:bob', `m${i}`);
  assert.equal(ws.sent.length, 10, 'the burst, sync included');
  h.clock.advance(199);
  assert.equal(ws.sent.length, 10);
  h.clock.advance(1);
  assert.equal(ws.sent.length, 11);
  h.clock.advance(2000);
  assert.equal(ws.sent.length, 21);
  assert.deepEqual(ws.sent.slice(1).map((f) => f.text), Array.from({ length: 20 }, (_, i) => `m${i}`), 'in order');
});

test('a storage adapter keeps unacked sends; they are resent by the next client', () => {
  /** @type {any[]} */
  let saved = [];
  const storage = { load: () => saved, save: (/** @type {any[]} */ items) => (saved = items) };
  const h = harness(ChatClient, { storage });
  h.client.send('user:bob', 'persist me');
  assert.deepEqual(saved, [{ clientMsgId: 'c-1', to: 'user:bob', text: 'persist me' }]);
  h.client.close();
  const h2 = harness(ChatClient, { storage });
  const ws = h2.goLive();
  assert.deepEqual(ws.sent[1], { action: 'send', to: 'user:bob', client_msg_id: 'c-1', text: 'persist me' });
  ws.receive(ackFrame('c-1', 1));
  assert.deepEqual(saved, []);
  assert.equal(h2.of('ack').length, 1);
  assert.equal(FakeWebSocket.instances.length, 1);
});
