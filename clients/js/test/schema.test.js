// The library's frame types are checked against the JSON Schemas generated
// from the server's serde types (docs/schemas/*.json, kept equal to the code
// by tests/tests/protocol_schema.rs): every server frame type is handled,
// and each JSDoc frame typedef has exactly the schema's fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const here = new URL('.', import.meta.url);
const source = readFileSync(new URL('../chat-client.js', here), 'utf8');
const server = JSON.parse(readFileSync(new URL('../../../docs/schemas/server-frame.json', here), 'utf8'));
const client = JSON.parse(readFileSync(new URL('../../../docs/schemas/client-frame.json', here), 'utf8'));

/** Each variant of a tagged schema: tag value -> its property names. */
function variants(schema, tag) {
  const out = new Map();
  for (const v of schema.oneOf) {
    const name = v.properties[tag].const;
    const props = new Set(Object.keys(v.properties));
    for (const part of v.allOf ?? []) {
      const def = schema.definitions[part.$ref.split('/').pop()];
      for (const p of Object.keys(def.properties)) props.add(p);
    }
    props.delete(tag);
    out.set(name, props);
  }
  return out;
}

/** The field names of a JSDoc `@typedef {{...}} Name`. */
function typedefFields(name) {
  const m = source.match(new RegExp(`@typedef \\{\\{([^{}]*?)\\}\\} ${name}\\b`));
  assert.ok(m, `typedef ${name} in chat-client.js`);
  const body = m[1].replace(/\n\s*\*/g, ' ');
  return new Set([...body.matchAll(/(\w+)\??:/g)].map((x) => x[1]));
}

test('every server frame type is handled by the library', () => {
  const handled = new Set([...source.matchAll(/case '(\w+)':/g)].map((m) => m[1]));
  for (const type of variants(server, 'type').keys()) {
    assert.ok(handled.has(type), `chat-client.js handles '${type}'`);
  }
});

test('the frame typedefs have exactly the fields of the schema', () => {
  const types = variants(server, 'type');
  const same = (name, want, extra = []) => {
    const got = typedefFields(name);
    for (const e of extra) got.delete(e);
    got.delete('type');
    assert.deepEqual([...got].sort(), [...want].sort(), name);
  };
  same('AckFrame', types.get('ack'));
  same('ReceiptFrame', types.get('receipt'));
  same('ReceiptsFrame', types.get('receipts'));
  same('GroupFrame', types.get('group'));
  // A message as the library hands it on; `client_msg_id` marks the
  // library's own pending sends (not a wire field).
  same('Message', Object.keys(server.definitions.MessageView.properties), ['client_msg_id']);
  same('ConversationItem', Object.keys(server.definitions.ConversationItem.properties));
  const page = new Set(types.get('conversations'));
  same('ConversationsPage', page);
  same('HistoryPage', types.get('history'));
});

test('every action the library sends is a client frame of the schema', () => {
  const actions = new Set(variants(client, 'action').keys());
  const sent = new Set([...source.matchAll(/action: '(\w+)'/g)].map((m) => m[1]));
  assert.ok(sent.size >= 5, [...sent].join(','));
  for (const a of sent) assert.ok(actions.has(a), `'${a}' is an action of the protocol`);
});
