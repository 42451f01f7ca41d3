//! Scenarios of the order guarantee (docs/protocol.md, "Order"), shared
//! by the in-process suites (`tests/ordering.rs`) and the local-cloud one
//! (`tests/lambda_e2e.rs`): what a client receives is checked as it
//! arrives; nothing is sorted or de-duplicated.

use crate::{TestClient, TestServer};
use serde_json::{json, Value};
use std::collections::HashMap;

/// What one connection saw of one conversation: the ids, in arrival order.
#[derive(Default, Debug)]
pub struct Seen {
    pub ids: Vec<u64>,
    pub repeats: usize,
}

impl Seen {
    /// Takes a `message` frame; fails the test on a gap or a step back to
    /// an id not seen before.
    pub fn take(&mut self, m: &Value) {
        let id = m["message_id"].as_u64().expect("message_id");
        match self.ids.last() {
            Some(&last) if id <= last => {
                assert!(
                    self.ids.contains(&id),
                    "id {id} came after {last} and was never seen before: {:?}",
                    self.ids
                );
                self.repeats += 1;
            }
            Some(&last) => assert_eq!(id, last + 1, "a gap after {last}: {:?}", self.ids),
            None => {}
        }
        if self.ids.last().is_none_or(|&l| id > l) {
            self.ids.push(id);
        }
    }
}

/// Sends `n` texts to `to` from `c`, pipelined, and waits for every ack;
/// a send answered `internal` (a function that failed, local cloud) is
/// resent with its client_msg_id, as a client does.
pub async fn burst(mut c: TestClient, to: String, tag: String, n: usize) -> TestClient {
    let frame = |i: usize| json!({"action":"send","to":to,"client_msg_id":format!("{tag}-{i}"),"text":format!("{tag} {i}")});
    for i in 0..n {
        c.send(frame(i)).await;
    }
    let mut acked = 0;
    while acked < n {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("ack") => acked += 1,
            Some("error") if f["code"] == "internal" && f["action"] == "send" => {
                let cmid = f["client_msg_id"].as_str().unwrap_or_default();
                let i = cmid
                    .strip_prefix(&format!("{tag}-"))
                    .and_then(|i| i.parse().ok())
                    .unwrap_or_else(|| panic!("an error naming no send of this burst: {f}"));
                c.send(frame(i)).await;
            }
            // Group frames and messages of the group reach senders too.
            Some("message") | Some("group") | Some("receipt") => {}
            _ => panic!("unexpected frame while sending: {f}"),
        }
    }
    c
}

/// Rounds of: a receiver offline while a peer sends `missed` to a group,
/// then online and syncing first while two peers send `live` each. The
/// receiver must see 1..=missed+2×live, in order, without gaps. Returns the
/// repeats it saw (exact repeats of ids already sent).
pub async fn sync_while_peers_send(
    server: &TestServer,
    rounds: usize,
    missed: usize,
    live: usize,
) -> usize {
    let mut repeats = 0;
    for round in 0..rounds {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (rx_user, p1_user, p2_user) = (
            format!("rx{}", &tag[..8]),
            format!("pa{}", &tag[..8]),
            format!("pb{}", &tag[..8]),
        );
        let mut p1 = server.client(&p1_user).await;
        let p2 = server.client(&p2_user).await;
        let gid = p1.create_group("race", &[&rx_user, &p2_user]).await["group_id"]
            .as_str()
            .unwrap()
            .to_string();
        let to = format!("group:{gid}");
        // The receiver is offline for the first `missed`.
        let p1 = burst(p1, to.clone(), format!("{round}-early"), missed).await;
        // It comes online and syncs first, while both peers keep sending.
        let mut rx = server.raw_client(&rx_user).await;
        rx.send(json!({"action":"sync"})).await;
        let a = tokio::spawn(burst(p1, to.clone(), format!("{round}-a"), live));
        let b = tokio::spawn(burst(p2, to.clone(), format!("{round}-b"), live));
        let total = (missed + 2 * live) as u64;
        let conv = format!("grp#{gid}");
        let mut seen = Seen::default();
        let mut synced = false;
        while seen.ids.last().copied() != Some(total) || !synced {
            let f = rx.recv().await;
            match f["type"].as_str() {
                Some("message") => {
                    assert_eq!(f["conversation_id"], conv.as_str());
                    seen.take(&f);
                }
                Some("synced") => {
                    // `synced` ends the replay: everything missed before
                    // the sync came before it (live ones may too).
                    let missed_ids: Vec<u64> = (1..=missed as u64).collect();
                    assert!(
                        seen.ids.len() >= missed && seen.ids[..missed] == missed_ids[..],
                        "round {round}: synced before the replay of 1..={missed}: {:?}",
                        seen.ids
                    );
                    synced = true;
                }
                Some("group") => {}
                _ => panic!("unexpected frame: {f}"),
            }
        }
        assert_eq!(seen.ids, (1..=total).collect::<Vec<_>>(), "round {round}");
        repeats += seen.repeats;
        a.await.unwrap();
        b.await.unwrap();
    }
    repeats
}

/// Three senders send `per_sender` each to a group; a member that never
/// syncs (its first frame is a ping) reads. Returns what it saw of the
/// group: in order, without gaps, from the first id it saw.
pub async fn never_syncs_on_a_busy_group(server: &TestServer, per_sender: usize) -> Seen {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let senders: Vec<String> = (1..=3).map(|i| format!("s{i}{}", &tag[..8])).collect();
    let watcher_id = format!("w{}", &tag[..8]);
    let mut creator = server.client(&senders[0]).await;
    let others = [
        senders[1].as_str(),
        senders[2].as_str(),
        watcher_id.as_str(),
    ];
    let gid = creator.create_group("busy", &others).await["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watcher = server.client(&watcher_id).await;
    let mut clients = vec![creator];
    for s in &senders[1..] {
        clients.push(server.client(s).await);
    }
    // A connection that never syncs gets live messages from 1 s after it
    // connected on AWS (`CHAT_SYNC_GRACE_MS`; before, they wait for a sync
    // that never comes): the senders start after it, or a fast burst
    // could end inside it and the last id never come.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(senders.clone())
        .map(|(c, s)| tokio::spawn(burst(c, format!("group:{gid}"), s, per_sender)))
        .collect();
    let total = (per_sender * senders.len()) as u64;
    let conv = format!("grp#{gid}");
    let mut seen: HashMap<String, Seen> = HashMap::new();
    while seen.get(&conv).and_then(|s| s.ids.last().copied()) != Some(total) {
        // Longer than one failed invocation of the local cloud's `fanout`
        // (its timeout, then the poller's retry), which holds up the rest.
        let f = watcher
            .try_recv(std::time::Duration::from_secs(45))
            .await
            .expect("a frame within 45 s")
            .expect("a text frame");
        match f["type"].as_str() {
            Some("message") => seen
                .entry(f["conversation_id"].as_str().unwrap().to_string())
                .or_default()
                .take(&f),
            Some("group") => {}
            _ => panic!("unexpected frame: {f}"),
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    seen.remove(&conv).unwrap_or_default()
}
