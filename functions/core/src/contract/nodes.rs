//! The store contract: the node registry.

use super::*;

fn node(id: &str, at: u64) -> NodeRecord {
    NodeRecord {
        node_id: id.to_string(),
        management_url: "http://127.0.0.1:8201".into(),
        ws_url: "ws://lb/ws".into(),
        started_at_ms: at,
        heartbeat_at_ms: at,
        draining: false,
        dead: false,
    }
}

async fn listed(n: &Arc<dyn Nodes>, id: &str) -> Option<NodeRecord> {
    n.nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.node_id == id)
}

pub async fn nodes_join_heartbeat_and_are_listed(_c: Arc<dyn Connections>, n: Arc<dyn Nodes>) {
    let (a, b) = (unique("node-"), unique("node-"));
    n.join(&node(&a, 1000)).await.unwrap();
    n.join(&node(&b, 1000)).await.unwrap();
    assert!(n.join(&node(&a, 1000)).await.is_err(), "an id joins once");
    assert!(n.heartbeat(&a, 3000, false).await.unwrap());
    assert!(n.heartbeat(&b, 3500, true).await.unwrap());
    let ra = listed(&n, &a).await.unwrap();
    assert_eq!(
        (ra.heartbeat_at_ms, ra.draining, ra.dead),
        (3000, false, false)
    );
    assert_eq!(ra.management_url, "http://127.0.0.1:8201");
    assert_eq!(ra.ws_url, "ws://lb/ws");
    assert_eq!(ra.started_at_ms, 1000);
    let rb = listed(&n, &b).await.unwrap();
    assert_eq!((rb.heartbeat_at_ms, rb.draining), (3500, true));
    assert!(!n
        .heartbeat(&unique("never-joined-"), 1, false)
        .await
        .unwrap());
}

pub async fn a_node_declared_dead_cannot_heartbeat_and_a_newer_heartbeat_wins(
    _c: Arc<dyn Connections>,
    n: Arc<dyn Nodes>,
) {
    let a = unique("node-");
    n.join(&node(&a, 1000)).await.unwrap();
    assert!(n.heartbeat(&a, 2000, false).await.unwrap());
    // A janitor that saw the heartbeat of 1000 is too late: it beat since.
    assert!(!n.declare_dead(&a, 1000).await.unwrap());
    assert!(!listed(&n, &a).await.unwrap().dead);
    assert!(n.declare_dead(&a, 2000).await.unwrap());
    assert!(!n.declare_dead(&a, 2000).await.unwrap(), "once");
    assert!(listed(&n, &a).await.unwrap().dead);
    assert!(
        !n.heartbeat(&a, 9000, false).await.unwrap(),
        "the dead stay dead"
    );
    assert_eq!(listed(&n, &a).await.unwrap().heartbeat_at_ms, 2000);
}

pub async fn a_nodes_connections_are_found_by_node_and_a_forgotten_node_is_gone(
    c: Arc<dyn Connections>,
    n: Arc<dyn Nodes>,
) {
    let (a, b) = (unique("node-"), unique("node-"));
    n.join(&node(&a, 1)).await.unwrap();
    let rec = |id: &str, node: Option<&str>| ConnectionRecord {
        connection_id: id.to_string(),
        user_id: unique("u"),
        endpoint: "http://127.0.0.1:8201".into(),
        node_id: node.map(str::to_string),
        connected_at_ms: 1,
        ..Default::default()
    };
    let (c1, c2, c3, c4) = (unique("c"), unique("c"), unique("c"), unique("c"));
    c.register(&rec(&c1, Some(&a))).await.unwrap();
    c.register(&rec(&c2, Some(&a))).await.unwrap();
    c.register(&rec(&c3, Some(&b))).await.unwrap();
    c.register(&rec(&c4, None)).await.unwrap();
    assert_eq!(
        c.get(&c1).await.unwrap().unwrap().node_id.as_deref(),
        Some(a.as_str())
    );
    let mut of_a = n.connections_of(&a).await.unwrap();
    of_a.sort();
    let mut want = vec![c1.clone(), c2.clone()];
    want.sort();
    assert_eq!(of_a, want);
    c.remove(&c1).await.unwrap();
    assert_eq!(n.connections_of(&a).await.unwrap(), vec![c2.clone()]);
    assert_eq!(n.connections_of(&b).await.unwrap(), vec![c3]);
    n.forget(&a).await.unwrap();
    assert!(listed(&n, &a).await.is_none());
    assert!(
        !n.heartbeat(&a, 5, false).await.unwrap(),
        "a forgotten node must rejoin"
    );
    n.forget(&a).await.unwrap();
}
