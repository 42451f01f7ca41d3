//! The DynamoDB adapter against the emulator: table shapes from the one
//! template, clear start-up errors, throttling and 5xx faults, and the
//! capacity targets. Needs the emulator (`--features emulator`,
//! `localstack/start.sh`); `scripts/test-all` runs it.

use chat_core::ports::{MessageStore, NewMessage};
use chat_dynamo::schema::ALL;
use chat_dynamo::{connect, connect_to, DynamoStore};
use chat_tests::{fault_proxy, fresh_tables, proxy_stats, SECRET};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;

#[tokio::test]
async fn tables_made_from_the_template_have_the_keys_indexes_and_ttl_the_adapter_expects() {
    let prefix = fresh_tables().await.unwrap();
    // connect() checks every table's keys and indexes against the schema.
    let tables = connect(&prefix)
        .await
        .expect("tables match the adapter's schema");
    for spec in ALL {
        let name = tables.name(&spec);
        let ttl = tables
            .client
            .describe_time_to_live()
            .table_name(&name)
            .send()
            .await
            .unwrap();
        let attr = ttl
            .time_to_live_description()
            .and_then(|d| d.attribute_name())
            .map(str::to_string);
        assert_eq!(attr.as_deref(), spec.ttl_attribute, "TTL of {name}");
    }
}

#[tokio::test]
async fn a_missing_table_is_a_startup_error_that_names_it() {
    let err = connect("no-such-prefix-").await.unwrap_err().to_string();
    assert!(err.contains("no-such-prefix-messages"), "{err}");
    assert!(err.contains("does not exist"), "{err}");

    // The server refuses to start, and says which table.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_conn-tier"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store",
            "dynamodb",
            "--table-prefix",
            "no-such-prefix-",
        ])
        .env("CHAT_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-prefix-messages"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_startup_error_that_names_it() {
    let err = connect_to("chat-", Some("http://127.0.0.1:9"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("http://127.0.0.1:9"), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(
        err.contains("localstack/start.sh"),
        "says what to start: {err}"
    );
}

#[tokio::test]
async fn throttling_and_5xx_never_lose_an_acked_message_nor_ack_an_unstored_one() {
    let prefix = fresh_tables().await.unwrap();
    let (_proxy, url) = fault_proxy(0.3).await;
    let faulty = Arc::new(DynamoStore::new(
        &connect_to(&prefix, Some(&url)).await.unwrap(),
    ));
    let truth = DynamoStore::new(&connect(&prefix).await.unwrap());
    let conv = "dm#alice#bob";
    let msg = |i: usize| NewMessage {
        conversation_id: conv.into(),
        sender: if i.is_multiple_of(2) { "alice" } else { "bob" }.into(),
        client_msg_id: format!("m{i}"),
        text: format!("message {i}"),
        sent_at_ms: 1,
        enroll: vec![],
        origin: None,
        member_only: false,
    };
    let n = 40;
    // Every message is sent until it is acked, as a client would, retrying
    // with the same client_msg_id; sends run four at a time.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = 0;
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        let batch: Vec<usize> = pending.drain(..pending.len().min(4)).collect();
        let results = futures_util::future::join_all(batch.iter().map(|&i| {
            let s = faulty.clone();
            async move { (i, s.append(msg(i)).await) }
        }))
        .await;
        for (i, r) in results {
            match r {
                Ok(a) => {
                    // Acked: it must be stored, exactly as acked.
                    let stored = truth
                        .messages_after(conv, a.message.message_id - 1, 1)
                        .await
                        .unwrap();
                    assert_eq!(stored.first(), Some(&a.message), "acked but not stored");
                    acked.insert(a.message.client_msg_id.clone(), a.message.message_id);
                }
                Err(_) => {
                    failures += 1;
                    pending.push(i);
                }
            }
        }
    }
    let stored = truth.messages_after(conv, 0, 1000).await.unwrap();
    let ids: Vec<u64> = stored.iter().map(|m| m.message_id).collect();
    assert_eq!(
        ids,
        (1..=n as u64).collect::<Vec<_>>(),
        "one message per client_msg_id, gapless"
    );
    for m in &stored {
        assert_eq!(acked.get(&m.client_msg_id), Some(&m.message_id));
        assert_eq!(m.text, format!("message {}", &m.client_msg_id[1..]));
    }
    // Faults were really injected: the proxy counts what it did.
    let stats = proxy_stats(&url).await;
    eprintln!("{n} messages, {failures} sends failed after the SDK's retries and were retried; proxy: {stats}");
    assert!(stats["throttled"].as_u64().unwrap() > 10, "{stats}");
    assert!(stats["failed"].as_u64().unwrap() > 3, "{stats}");
    assert!(stats["forwarded"].as_u64().unwrap() > 0, "{stats}");
}

#[tokio::test]
async fn a_send_costs_three_write_units_plus_its_message_and_a_group_message_is_stored_once() {
    let prefix = fresh_tables().await.unwrap();
    let rows = chat_tests::cost::measure(&connect(&prefix).await.unwrap())
        .await
        .unwrap();
    eprintln!("{}", chat_tests::cost::markdown(&rows));
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.operation == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    // A short message: claim + message + sender watermark, no transaction.
    assert_eq!(row("100-byte 1:1 send").write_units(), 3.0);
    // 1,000 bytes of text make a 1.1 KB item: two units for the message itself.
    assert_eq!(row("1 KB 1:1 send").write_units(), 4.0);
    // Each send also reads: the newest id (consistent) at least.
    assert!(row("100-byte 1:1 send").read_units() >= 1.0);
    // A group message is written once, however many members read it, in
    // one transaction with a check that the sender is still a member
    // (docs/security.md): the transaction doubles the message's 2 units and
    // the check costs 2 more.
    let group = row("1 KB send to a 100-member group");
    assert_eq!(
        group.write_units(),
        row("1 KB 1:1 send").write_units() + 4.0
    );
    assert_eq!(group.posts, 99);
    // The fan-out checks the cached member list's version (one strongly
    // consistent read of the group's item) and looks up where each member
    // is connected (half a unit each); the list itself is read again only
    // after a change.
    assert_eq!(group.fanout.read_units, 1.0 + 100.0 * 0.5);
    // In a conn-tier cluster the members are not looked up: the version
    // check, one listing of the node registry (half a unit) and one post
    // to the other node, whose hub finds its own connections of them.
    let broadcast = row("1 KB send to a 100-member group, 2-node cluster (broadcast)");
    assert_eq!(broadcast.fanout.read_units, 1.0 + 0.5);
    assert_eq!(broadcast.posts, 1, "one post to the other node");
    assert!(
        broadcast.fanout.read_units <= 10.0,
        "at most 10 read units of look-ups per 100-member send"
    );
    let broadcast_after_add = row(
        "1 KB send to a 100-member group, 2-node cluster (broadcast), right after an addMember",
    );
    assert_eq!(broadcast_after_add.fanout.read_units, 1.0 + 3.0 + 0.5);
    let after_add = row("1 KB send to a 100-member group, right after an addMember");
    assert!(after_add.fanout.read_units > group.fanout.read_units);
    assert_eq!(after_add.write_units(), group.write_units());
    // A group ack tells the author of what it covers (alice) and the
    // reader's other devices (none here): one post, two look-ups, not a
    // receipt to each of the 99 others. Finding the author reads each
    // member's newest message id (one Query of the member items), not the
    // messages.
    let ack = row("ack in a 100-member group (1 author)");
    assert_eq!(ack.posts, 1);
    assert_eq!(ack.fanout.read_units, 1.0);
    assert_eq!(
        ack.request.read_units,
        2.0 + 3.0,
        "membership, newest id, member items"
    );
    assert_eq!(
        ack.write_units(),
        2.0,
        "the watermark and the author's read count"
    );
    // A resend writes at most the failed claim, and reads the original.
    let resend = row("1:1 resend of an acked client_msg_id");
    assert!(resend.write_units() <= 1.0 && resend.read_units() >= 1.0);
    // Device cursors cost nothing on the send path (above), one write per
    // conversation a `received` moves, and on a known device's sync the
    // device's last use (one write) and its cursors (one Query).
    let received = row("received (a device's cursor moves, 1 conversation)");
    assert_eq!(received.write_units(), 1.0);
    assert_eq!(received.posts, 0, "no receipt");
    let on_device = row("sync of 10 missed 1 KB messages on a known device (1 conversation)");
    let plain = row("sync of 10 missed 1 KB messages (1 conversation)");
    assert_eq!(on_device.write_units(), 1.0);
    assert!(on_device.read_units() <= plain.read_units() + 1.0);
}

#[tokio::test]
async fn a_send_retried_after_a_restart_or_a_crash_between_claim_and_message_is_stored_once() {
    use chat_dynamo::codec::{to_item, ClaimItem};
    let prefix = fresh_tables().await.unwrap();
    let conv = "dm#alice#bob";
    let msg = |sender: &str, cmid: &str, text: &str| NewMessage {
        conversation_id: conv.into(),
        sender: sender.into(),
        client_msg_id: cmid.into(),
        text: text.into(),
        sent_at_ms: 1,
        enroll: vec![],
        origin: None,
        member_only: false,
    };
    let first = DynamoStore::new(&connect(&prefix).await.unwrap())
        .append(msg("alice", "kept", "before the restart"))
        .await
        .unwrap();
    assert_eq!(first.message.message_id, 1);
    // A new process (new client, nothing in memory): the retry finds it.
    let tables = connect(&prefix).await.unwrap();
    let store = DynamoStore::new(&tables);
    let again = store
        .append(msg("alice", "kept", "before the restart"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);

    // A process died between the claim and the message: the claim points
    // at id 2, which was never written.
    let users = tables.name(&chat_dynamo::schema::USERS);
    let orphan = |cmid: &str, id: u64| ClaimItem {
        user_id: "alice".into(),
        sk: ClaimItem::sort_key(cmid),
        conversation_id: conv.into(),
        message_id: id,
        expires_at: u64::MAX / 2,
    };
    tables
        .client
        .put_item()
        .table_name(&users)
        .set_item(Some(to_item(&orphan("ghost", 2))))
        .send()
        .await
        .unwrap();
    let stored = store.append(msg("alice", "ghost", "boo")).await.unwrap();
    assert!(!stored.duplicate);
    assert_eq!(
        (stored.message.message_id, stored.message.text.as_str()),
        (2, "boo")
    );
    let retried = store.append(msg("alice", "ghost", "boo")).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.message.message_id, 2);

    // An orphan claim whose id someone else took meanwhile is re-pointed.
    tables
        .client
        .put_item()
        .table_name(&users)
        .set_item(Some(to_item(&orphan("late", 3))))
        .send()
        .await
        .unwrap();
    assert_eq!(
        store
            .append(msg("bob", "b1", "bob took 3"))
            .await
            .unwrap()
            .message
            .message_id,
        3
    );
    let late = store.append(msg("alice", "late", "finally")).await.unwrap();
    assert_eq!((late.message.message_id, late.duplicate), (4, false));
    let texts: Vec<String> = store
        .messages_after(conv, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        texts,
        vec!["before the restart", "boo", "bob took 3", "finally"]
    );
}

/// The original of a first message stalled after its put (DynamoDB
/// unreachable, the process frozen or killed): the sender's watermark and
/// the recipient's enrollment were never written, and the client, with no
/// ack, resends. The resend answers with the original and writes what it
/// missed, so the recipient's `sync` lists the conversation.
#[tokio::test]
async fn the_resend_of_a_first_message_enrolls_a_recipient_the_original_never_enrolled() {
    use chat_core::ports::MembershipStore;
    use chat_dynamo::codec::MembershipItem;
    let prefix = fresh_tables().await.unwrap();
    let tables = connect(&prefix).await.unwrap();
    let store = DynamoStore::new(&tables);
    let users = tables.name(&chat_dynamo::schema::USERS);
    let msg = |conv: &str, cmid: &str| NewMessage {
        conversation_id: conv.into(),
        sender: "alice".into(),
        client_msg_id: cmid.into(),
        text: "hello bob".into(),
        sent_at_ms: 1,
        enroll: vec!["bob".into()],
        origin: None,
        member_only: false,
    };
    let conv = "dm#alice#bob";
    let first = store.append(msg(conv, "c-1")).await.unwrap();
    assert!(!first.duplicate);
    // Undo the original's tail: what a stall after the put leaves.
    for user in ["alice", "bob"] {
        tables
            .client
            .delete_item()
            .table_name(&users)
            .set_key(Some(MembershipItem::key(user, conv)))
            .send()
            .await
            .unwrap();
    }
    assert!(store.membership("bob", conv).await.unwrap().is_none());

    let again = store.append(msg(conv, "c-1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);
    let bob = store.membership("bob", conv).await.unwrap();
    assert_eq!(bob.map(|m| m.acked_up_to), Some(0), "bob enrolled, unread");
    let alice = store.membership("alice", conv).await.unwrap();
    assert_eq!(alice.map(|m| m.acked_up_to), Some(1), "alice's watermark");
    let listed: Vec<String> = store
        .conversations("bob")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.membership.conversation_id)
        .collect();
    assert_eq!(listed, [conv], "bob's sync lists the conversation");

    // The same client_msg_id reused for another conversation answers with
    // the original and enrolls nobody there.
    let other = "dm#alice#carol";
    let reused = NewMessage {
        enroll: vec!["carol".into()],
        ..msg(other, "c-1")
    };
    let answer = store.append(reused).await.unwrap();
    assert!(answer.duplicate);
    assert_eq!(answer.message.conversation_id, conv);
    assert!(store.membership("carol", other).await.unwrap().is_none());
    assert!(store.membership("alice", other).await.unwrap().is_none());
}
