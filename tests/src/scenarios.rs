//! Scenarios run unchanged in every mode (embedded, DynamoDB, the local
//! cloud through the Lambda binaries, a cluster): the caller connects the
//! clients its way, the scenario drives them and asserts.

use crate::TestClient;
use serde_json::{json, Value};
use std::time::Duration;

/// The clients of [`only_the_authors_get_a_group_receipt`], connected
/// (and synced, where the mode needs a first `sync`) by the caller.
pub struct FiveMembers {
    /// alice's two devices: both get the receipts for her messages.
    pub alice: TestClient,
    pub alice_2: TestClient,
    pub bob: TestClient,
    pub carol: TestClient,
    pub dave: TestClient,
    /// dave's other device: told of his read (its unread count).
    pub dave_2: TestClient,
    pub erin: TestClient,
    /// Not in the group.
    pub zed: TestClient,
}

/// A group of five where three post: alice 1, bob 2, carol 3, alice 4.
/// dave acks up to 2, past messages of alice and bob: exactly their
/// devices get a `receipt` (alice's found by reading the range, since her
/// newest message is past the ack; bob's from his newest message), and
/// dave's other device; carol and erin get none, nor does dave's acking
/// connection. `receipts` answers every
/// member's watermark, the `conversations` item of a group says how many
/// read your newest message, and a stranger is `forbidden`.
pub async fn only_the_authors_get_a_group_receipt(p: FiveMembers) {
    let FiveMembers {
        mut alice,
        mut alice_2,
        mut bob,
        mut carol,
        mut dave,
        mut dave_2,
        mut erin,
        mut zed,
    } = p;
    let g = alice
        .create_group("five", &["bob", "carol", "dave", "erin"])
        .await;
    let gid = g["group_id"].as_str().expect("group id").to_string();
    let conv = format!("grp#{gid}");
    for c in [
        &mut alice_2,
        &mut bob,
        &mut carol,
        &mut dave,
        &mut dave_2,
        &mut erin,
    ] {
        assert_eq!(c.expect("group").await, g);
    }
    let to = format!("group:{gid}");
    for (id, author) in [(1u64, "alice"), (2, "bob"), (3, "carol"), (4, "alice")] {
        let mut everyone = [
            ("alice", &mut alice),
            ("alice", &mut alice_2),
            ("bob", &mut bob),
            ("carol", &mut carol),
            ("dave", &mut dave),
            ("dave", &mut dave_2),
            ("erin", &mut erin),
        ];
        // The first of the author's connections sends; the others get it.
        let sender = everyone
            .iter()
            .position(|(u, _)| *u == author)
            .expect("author");
        let ack = everyone[sender].1.send_text(&to, &format!("m{id}")).await;
        assert_eq!(ack["message_id"], id);
        for (i, (_, c)) in everyone.iter_mut().enumerate() {
            if i != sender {
                let m = c.expect("message").await;
                assert_eq!(
                    (m["message_id"].as_u64(), m["from"].as_str()),
                    (Some(id), Some(author))
                );
            }
        }
    }

    dave.send(json!({"action":"ack","conversation_id":conv,"up_to":2}))
        .await;
    let want = json!({"type":"receipt","conversation_id":conv,"user_id":"dave","up_to":2});
    for c in [&mut alice, &mut alice_2, &mut bob, &mut dave_2] {
        assert_eq!(c.expect("receipt").await, want);
    }
    for c in [&mut carol, &mut erin, &mut dave] {
        c.expect_silence(Duration::from_millis(500)).await;
    }
    for c in [&mut alice, &mut alice_2, &mut bob, &mut dave_2] {
        c.expect_silence(Duration::from_millis(100)).await;
    }

    // Every member's watermark (a sender's moved to its own message).
    erin.send(json!({"action":"receipts","conversation_id":conv}))
        .await;
    let r = erin.expect("receipts").await;
    assert_eq!(r["conversation_id"], conv.as_str());
    let mut marks: Vec<(String, u64)> = r["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap_or_default().to_string(),
                m["up_to"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    marks.sort();
    let want: Vec<(String, u64)> = [
        ("alice", 4),
        ("bob", 2),
        ("carol", 3),
        ("dave", 2),
        ("erin", 0),
    ]
    .iter()
    .map(|(u, n)| (u.to_string(), *n))
    .collect();
    assert_eq!(marks, want);

    // "read by n of m" on one's own newest message, from `conversations`.
    let item = |c: Value| -> Value {
        c["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|i| i["conversation_id"] == conv.as_str())
                    .cloned()
            })
            .unwrap_or(Value::Null)
    };
    // bob's message 2 is read by dave (his ack), and by alice and carol,
    // who wrote after it (a send moves the sender's watermark); not erin.
    bob.send(json!({"action":"conversations"})).await;
    let mine = item(bob.expect("conversations").await);
    assert_eq!(
        (&mine["members"], &mine["last_sent"], &mine["read_by"]),
        (&json!(5), &json!(2), &json!(3)),
        "{mine}"
    );
    alice.send(json!({"action":"conversations"})).await;
    let mine = item(alice.expect("conversations").await);
    assert_eq!(
        (&mine["members"], &mine["last_sent"], &mine["read_by"]),
        (&json!(5), &json!(4), &json!(0)),
        "{mine}"
    );

    zed.send(json!({"action":"receipts","conversation_id":conv}))
        .await;
    let e = zed.expect("error").await;
    assert_eq!(e["code"], "forbidden", "{e}");
}
