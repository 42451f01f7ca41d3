//! The registry's logic over the in-memory adapter (the DynamoDB one runs
//! the same checks in the contract suite, and real nodes in
//! `tests/tests/cluster.rs`).

use super::*;
use crate::outbox::outbox;
use crate::outbox::Outbound;
use chat_core::memory::MemoryConnections;
use chat_core::ports::ConnectionRecord;

fn cfg() -> ClusterConfig {
    ClusterConfig {
        heartbeat: Duration::from_millis(20),
        dead_after: Duration::from_millis(150),
        management_url: Some("http://127.0.0.1:1".into()),
        ws_url: "ws://lb/ws".into(),
        clustered: true,
    }
}

async fn node(map: &Arc<MemoryConnections>) -> (Arc<Cluster>, Arc<Hub>) {
    let hub = Arc::new(Hub::new(new_node_id(), true));
    let c = Cluster::join(map.clone(), map.clone(), hub.clone(), cfg())
        .await
        .unwrap();
    (c, hub)
}

fn conn(id: &str, node: &str) -> ConnectionRecord {
    ConnectionRecord {
        connection_id: id.into(),
        user_id: "alice".into(),
        endpoint: "http://127.0.0.1:1".into(),
        node_id: Some(node.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_silent_node_is_declared_dead_and_its_connections_deleted() {
    let map = Arc::new(MemoryConnections::new());
    let (a, _) = node(&map).await;
    let (b, _) = node(&map).await;
    map.register(&conn("a1", &a.node_id())).await.unwrap();
    map.register(&conn("b1", &b.node_id())).await.unwrap();
    // Only b heartbeats: a is silent.
    let tasks = Tasks::new();
    b.spawn(&tasks);
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while map.get("a1").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the silent node's connection was deleted");
    assert!(!b.may_reach(&a.node_id()));
    assert!(map.get("b1").await.unwrap().is_some(), "b's own is kept");
    let ids: Vec<String> = map
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(ids, vec![b.node_id()], "a was forgotten");
    assert_eq!(b.live_nodes().len(), 1);
    tasks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_node_whose_clock_is_ten_minutes_off_is_not_declared_dead_while_it_heartbeats() {
    let map = Arc::new(MemoryConnections::new());
    let (a, _) = node(&map).await;
    let (b, _) = node(&map).await;
    let tasks = Tasks::new();
    b.spawn(&tasks);
    // a heartbeats by a clock 10 minutes behind, then 10 minutes ahead:
    // its values change, so it is alive, whatever they say of the time.
    let a_id = a.node_id();
    // When the last heartbeat was sent: b sees its change at or after it.
    let mut last_beat = Instant::now();
    for offset in [-600_000i64, 600_000] {
        for _ in 0..20 {
            let at = (now_ms() as i64 + offset) as u64;
            last_beat = Instant::now();
            assert!(
                map.heartbeat(&a_id, at, false).await.unwrap(),
                "a is not dead"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(b.may_reach(&a_id));
    assert_eq!(b.live_nodes_now().await.len(), 2);
    // Then it falls silent: dead after dead_after, by b's own clock.
    let silent = Instant::now();
    while b.may_reach(&a_id) {
        assert!(
            silent.elapsed() < Duration::from_secs(5),
            "a silent node stays alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Counted from the last heartbeat, not from `silent` (taken after the
    // loop's last sleep): b may see that heartbeat during the sleep.
    assert!(last_beat.elapsed() >= cfg().dead_after);
    tasks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_node_declared_dead_closes_its_sockets_with_1012_and_rejoins_under_a_new_id() {
    let map = Arc::new(MemoryConnections::new());
    let (a, hub) = node(&map).await;
    let (out, mut inbox) = outbox(1 << 20);
    hub.insert("c1", "u1", out);
    let old = a.node_id();
    let seen = map.nodes().await.unwrap()[0].heartbeat_at_ms;
    assert!(map.declare_dead(&old, seen).await.unwrap());
    let tasks = Tasks::new();
    a.spawn(&tasks);
    let closed = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .unwrap();
    assert!(
        matches!(closed, Some(Outbound::Close(1012, _))),
        "{closed:?}"
    );
    let rejoined = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ids: Vec<String> = map
                .nodes()
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.node_id)
                .collect();
            if ids.len() == 1 && ids[0] != old && a.healthy() {
                return ids[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("rejoined");
    assert_eq!(
        hub.node(),
        rejoined,
        "new connections are recorded under the new id"
    );
    tasks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_node_that_cannot_heartbeat_in_time_counts_itself_dead() {
    let map = Arc::new(MemoryConnections::new());
    let (a, hub) = node(&map).await;
    let (out, mut inbox) = outbox(1 << 20);
    hub.insert("c1", "u1", out);
    // As if the process had been stopped for longer than dead_after.
    a.state().last_ok = Instant::now() - Duration::from_secs(1);
    assert!(!a.healthy());
    a.beat().await;
    assert!(matches!(inbox.recv().await, Some(Outbound::Close(1012, _))));
    assert!(a.healthy());
}

#[tokio::test]
async fn a_draining_node_is_unhealthy_and_marked_so_and_leaving_removes_it() {
    let map = Arc::new(MemoryConnections::new());
    let (a, _) = node(&map).await;
    map.register(&conn("a1", &a.node_id())).await.unwrap();
    assert!(a.healthy());
    a.drain().await;
    assert!(!a.healthy());
    assert!(map.nodes().await.unwrap()[0].draining);
    a.leave().await;
    assert!(map.nodes().await.unwrap().is_empty());
    assert!(map.get("a1").await.unwrap().is_none());
}

/// The connection map with slow deletes (a store under load).
struct SlowDeletes(Arc<MemoryConnections>);

#[async_trait::async_trait]
impl Connections for SlowDeletes {
    async fn register(&self, rec: &ConnectionRecord) -> chat_core::Result<()> {
        self.0.register(rec).await
    }
    async fn remove(&self, connection_id: &str) -> chat_core::Result<()> {
        tokio::time::sleep(Duration::from_millis(40)).await;
        self.0.remove(connection_id).await
    }
    async fn get(&self, connection_id: &str) -> chat_core::Result<Option<ConnectionRecord>> {
        self.0.get(connection_id).await
    }
    async fn for_user(&self, user_id: &str) -> chat_core::Result<Vec<ConnectionRecord>> {
        self.0.for_user(user_id).await
    }
    async fn begin_sync(&self, connection_id: &str) -> chat_core::Result<bool> {
        self.0.begin_sync(connection_id).await
    }
    async fn note_skipped(&self, connection_id: &str, conversation: &str) -> chat_core::Result<()> {
        self.0.note_skipped(connection_id, conversation).await
    }
    async fn go_live(
        &self,
        connection_id: &str,
        replayed: &std::collections::BTreeMap<String, u64>,
        seen: u64,
    ) -> chat_core::Result<chat_core::ports::GoLive> {
        self.0.go_live(connection_id, replayed, seen).await
    }
}

#[tokio::test]
async fn a_long_cleanup_after_a_dead_node_does_not_hold_up_this_nodes_heartbeat() {
    let map = Arc::new(MemoryConnections::new());
    let (dead, _) = node(&map).await;
    // 25 records × 40 ms = a 1 s cleanup, against a 150 ms dead_after.
    for i in 0..25 {
        map.register(&conn(&format!("d{i}"), &dead.node_id()))
            .await
            .unwrap();
    }
    let hub = Arc::new(Hub::new(new_node_id(), true));
    let me = Cluster::join(
        map.clone(),
        Arc::new(SlowDeletes(map.clone())),
        hub.clone(),
        cfg(),
    )
    .await
    .unwrap();
    let id = me.node_id();
    let tasks = Tasks::new();
    me.spawn(&tasks);
    let started = Instant::now();
    let dead_id = dead.node_id();
    // Every one of them: the janitor deletes in the map's (any) order.
    while !map.connections_of(&dead_id).await.unwrap().is_empty() {
        assert!(
            me.healthy() && me.node_id() == id,
            "still heartbeating {:?} into the cleanup",
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cleanup never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "the cleanup was slow"
    );
    assert_eq!(me.node_id(), id, "never declared dead");
    tasks.shutdown(Duration::from_secs(1)).await;
}
