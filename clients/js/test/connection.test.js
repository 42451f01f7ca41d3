import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatClient, backoffDelay } from '../chat-client.js';
import { FakeWebSocket, harness, fakeToken, tick } from '../testing.js';

test('the token goes in ?token= and userId comes from its sub', () => {
  const h = harness(ChatClient);
  const u = new URL(h.ws().url);
  assert.equal(u.pathname, '/ws');
  assert.equal(u.searchParams.get('token'), fakeToken('alice'));
  assert.equal(h.client.userId, 'alice');
});

test('sync is the first frame on connect; states go connecting, open, syncing, live', () => {
  const h = harness(ChatClient);
  h.client.send('user:bob', 'typed before the socket opened');
  h.client.ack('dm#alice#bob', 3);
  const ws = h.ws();
  assert.deepEqual(ws.sent, []);
  ws.open();
  assert.deepEqual(ws.sent[0], { action: 'sync' });
  assert.deepEqual(ws.actions(), ['sync', 'send', 'ack']);
  assert.deepEqual(h.of('state').map((s) => s.state), ['connecting', 'open', 'syncing']);
  ws.receive({ type: 'synced' });
  assert.equal(h.client.state, 'live');
  assert.deepEqual(h.of('state').map((s) => s.state), ['connecting', 'open', 'syncing', 'live']);
});

test('sync is the first frame again on every reconnect', () => {
  const h = harness(ChatClient);
  h.goLive();
  h.client.history('dm#alice#bob'); // in flight when the socket drops
  h.ws().serverClose(1006);
  h.client.conversations(); // made while disconnected: waits for the next socket
  h.clock.advance(30_000);
  assert.equal(FakeWebSocket.instances.length, 2);
  const ws2 = h.ws().open();
  assert.deepEqual(ws2.actions(), ['sync', 'conversations']);
  ws2.serverClose(1006);
  h.clock.advance(30_000);
  const ws3 = h.ws().open();
  assert.equal(ws3.sent[0].action, 'sync');
});

test('a listener that sends on "open" still comes after sync', () => {
  const h = harness(ChatClient);
  h.client.on('state', (s) => {
    if (s.state === 'open') h.client.send('user:bob', 'hi');
  });
  h.ws().open();
  assert.deepEqual(h.ws().actions(), ['sync', 'send']);
});

test('backoffDelay: equal jitter within [ceiling/2, ceiling], doubling from 1 s, capped at 30 s', () => {
  const ceilings = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  ceilings.forEach((c, attempt) => {
    assert.equal(backoffDelay(attempt, () => 0), c / 2, `low bound of attempt ${attempt}`);
    assert.equal(backoffDelay(attempt, () => 0.999999), c, `high bound of attempt ${attempt}`);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(attempt, Math.random);
      assert.ok(d >= c / 2 && d <= c, `${d} outside [${c / 2}, ${c}]`);
    }
  });
  assert.equal(backoffDelay(1000, () => 1), 30000);
  assert.equal(backoffDelay(2, () => 0.5, { baseMs: 100, capMs: 300 }), 225);
});

test('failed attempts reconnect after growing delays, exactly when the timer is due', () => {
  const rnd = [0, 0.5, 1, 0.25, 0.75, 0.5, 0.5, 0];
  let i = 0;
  const h = harness(ChatClient, { random: () => rnd[i++ % rnd.length] });
  const expected = [500, 1500, 4000, 5000, 14000, 22500, 22500, 15000];
  for (const want of expected) {
    const before = FakeWebSocket.instances.length;
    h.ws().fail();
    const s = h.of('state').at(-1);
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.delay, want);
    h.clock.advance(want - 1);
    assert.equal(FakeWebSocket.instances.length, before, 'reconnected too early');
    h.clock.advance(1);
    assert.equal(FakeWebSocket.instances.length, before + 1, 'did not reconnect when due');
  }
});

test('the backoff resets after a connection stayed up, not after a short one', () => {
  const h = harness(ChatClient); // random 0.5: delay = 0.75 * ceiling
  h.ws().fail();
  h.clock.advance(750);
  h.ws().fail();
  h.clock.advance(1500);
  h.ws().open();
  h.clock.advance(2_000); // up for 2 s only
  h.ws().serverClose(1006);
  assert.equal(h.of('state').at(-1).delay, 3000, 'a short connection keeps growing the backoff');
  h.clock.advance(3000);
  h.ws().open();
  h.clock.advance(10_000); // stayed up
  h.ws().serverClose(1001);
  assert.equal(h.of('state').at(-1).delay, 750, 'back to the first step');
});

test('close code 1012 reconnects at once with a short jitter; 1008 backs off', () => {
  const h = harness(ChatClient, { random: () => 0.9, restartJitterMs: 1000 });
  h.ws().fail();
  h.clock.advance(1000);
  h.ws().fail();
  h.clock.advance(2000);
  h.goLive();
  h.ws().serverClose(1012, 'node restarting');
  const s = h.of('state').at(-1);
  assert.equal(s.state, 'reconnecting');
  assert.equal(s.code, 1012);
  assert.equal(s.delay, 900);
  h.clock.advance(900);
  h.goLive();
  h.ws().serverClose(1008, 'too slow');
  const s2 = h.of('state').at(-1);
  assert.equal(s2.code, 1008);
  assert.equal(s2.delay, 3800, 'third consecutive failure: ceiling 4 s, jitter 0.9');
});

test('close() stops: no reconnect, state closed, pending sends and requests rejected', async () => {
  const h = harness(ChatClient);
  h.goLive();
  const sent = h.client.send('user:bob', 'hi');
  const hist = h.client.history('dm#alice#bob');
  h.client.close();
  assert.equal(h.client.state, 'closed');
  assert.deepEqual(h.ws().closedByClient, { code: 1000, reason: 'client closed' });
  await assert.rejects(sent, { code: 'closed' });
  await assert.rejects(hist, { code: 'closed' });
  h.clock.advance(120_000);
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.deepEqual(h.clock.pending(), []);
  await assert.rejects(h.client.ping(), { code: 'closed' });
  await assert.rejects(h.client.send('user:bob', 'late'), { code: 'closed' });
});

test('close() while waiting to reconnect cancels the timer', () => {
  const h = harness(ChatClient);
  h.ws().fail();
  assert.equal(h.clock.pending().length, 1);
  h.client.close();
  assert.deepEqual(h.clock.pending(), []);
  assert.equal(h.of('state').at(-1).state, 'closed');
});

test('reconnect() drops a live socket and connects at once; sends are resent after sync', async () => {
  const h = harness(ChatClient);
  const old = h.goLive();
  const sent = h.client.send('user:bob', 'typed before the network changed');
  const hist = h.client.history('dm#alice#bob');
  h.client.reconnect();
  assert.deepEqual(old.closedByClient, { code: 4003, reason: 'reconnect' });
  await assert.rejects(hist, { code: 'disconnected' });
  assert.deepEqual(h.of('state').slice(-2).map((s) => s.state), ['reconnecting', 'connecting']);
  assert.equal(FakeWebSocket.instances.length, 2, 'no backoff wait');
  assert.deepEqual(h.clock.pending(), [], 'the reconnect timer is cancelled');
  const ws2 = h.ws().open();
  assert.deepEqual(ws2.sent, [
    { action: 'sync' },
    { action: 'send', to: 'user:bob', client_msg_id: 'c-1', text: 'typed before the network changed' },
  ]);
  old.receive({ type: 'ack', client_msg_id: 'c-1', conversation_id: 'dm#alice#bob', message_id: 1, sent_at: 'x' });
  assert.equal(h.client.pendingSends().length, 1, 'frames of the dropped socket are ignored');
  ws2.receive({ type: 'ack', client_msg_id: 'c-1', conversation_id: 'dm#alice#bob', message_id: 1, sent_at: 'x' });
  assert.equal((await sent).message_id, 1);
});

test('reconnect() while waiting to reconnect connects now; after close() it does nothing', () => {
  const h = harness(ChatClient);
  h.ws().fail();
  assert.equal(h.client.state, 'reconnecting');
  h.client.reconnect();
  assert.equal(FakeWebSocket.instances.length, 2);
  assert.equal(h.client.state, 'connecting');
  assert.deepEqual(h.clock.pending(), []);
  h.client.reconnect(); // an attempt in flight is abandoned for a fresh one
  assert.equal(FakeWebSocket.instances.length, 3);
  assert.deepEqual(FakeWebSocket.instances[1].closedByClient, { code: 4003, reason: 'reconnect' });
  h.client.close();
  h.client.reconnect();
  assert.equal(FakeWebSocket.instances.length, 3);
  assert.equal(h.client.state, 'closed');
});

test('a refused upgrade that says 401 stops reconnecting; an anonymous failure does not', () => {
  const h = harness(ChatClient);
  h.ws().fail('Unexpected server response: 401');
  assert.equal(h.client.state, 'closed');
  assert.equal(h.of('error')[0].code, 'unauthorized');
  h.clock.advance(60_000);
  assert.equal(FakeWebSocket.instances.length, 1);

  const h2 = harness(ChatClient);
  h2.ws().fail('Unexpected server response: 503');
  assert.equal(h2.client.state, 'reconnecting');
  h2.clock.advance(60_000);
  assert.equal(FakeWebSocket.instances.length, 2);
});

test('keepalive: pings after a silence, drops and reconnects when the pong does not come', () => {
  const h = harness(ChatClient, { keepaliveMs: 1000 });
  const ws = h.goLive();
  h.clock.advance(1000);
  assert.deepEqual(ws.actions(), ['sync', 'ping']);
  ws.receive({ type: 'pong' });
  h.clock.advance(1000);
  assert.deepEqual(ws.actions(), ['sync', 'ping', 'ping']);
  h.clock.advance(1000); // nothing came back
  assert.equal(ws.closedByClient?.code, 4000);
  assert.equal(h.client.state, 'reconnecting');
  h.clock.advance(1000);
  assert.equal(FakeWebSocket.instances.length, 2);
});

test('autoConnect connects on the next microtask, after listeners are attached', async () => {
  FakeWebSocket.reset();
  const c = new ChatClient({ url: 'ws://x/ws', token: fakeToken('al'), WebSocket: FakeWebSocket, keepaliveMs: 0 });
  const states = [];
  c.on('state', (s) => states.push(s.state));
  assert.equal(FakeWebSocket.instances.length, 0);
  await tick();
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.deepEqual(states, ['connecting']);
  c.close();
});
