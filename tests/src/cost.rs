//! Capacity cost of the main operations on the DynamoDB store, counted
//! (not timed) with the adapters' meters: the `dynamo-cost` binary prints
//! it for docs/cost.md, and a test holds the design to its targets.

use async_trait::async_trait;
use chat_core::ids::UserId;
use chat_core::ports::{ConnectionRecord, Delivery, Fanout, FanoutJob, Nodes, Outgoing, PostError};
use chat_core::protocol::ServerFrame;
use chat_core::{Chat, Deliverer, MessageDelivery, Reply, Session};
use chat_dynamo::meter::Usage;
use chat_dynamo::{DynamoConnections, DynamoNodes, DynamoStore, Tables};
use chat_management::api::ConnectionHost;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// On-demand prices (us-east-1, per million request units), used to turn
/// units into dollars per million operations.
pub const USD_PER_MILLION_WRITE_UNITS: f64 = 0.625;
pub const USD_PER_MILLION_READ_UNITS: f64 = 0.125;

/// One measured operation.
#[derive(Debug, Clone)]
pub struct CostRow {
    pub operation: String,
    /// Units spent before the sender's answer (store, authorisation).
    pub request: Usage,
    /// Units spent delivering it (membership and connection look-ups).
    pub fanout: Usage,
    pub posts: u64,
}

impl CostRow {
    pub fn write_units(&self) -> f64 {
        self.request.write_units + self.fanout.write_units
    }
    pub fn read_units(&self) -> f64 {
        self.request.read_units + self.fanout.read_units
    }
    /// Dollars per million of this operation.
    pub fn usd_per_million(&self) -> f64 {
        self.write_units() * USD_PER_MILLION_WRITE_UNITS
            + self.read_units() * USD_PER_MILLION_READ_UNITS
    }
}

/// Counts posts; every connection "exists".
#[derive(Default)]
struct CountingDelivery(AtomicU64);

#[async_trait]
impl Delivery for CountingDelivery {
    async fn post(&self, _c: &ConnectionRecord, _f: &Outgoing) -> Result<(), PostError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Keeps fan-out jobs so their cost is measured apart from the request's.
#[derive(Default)]
struct HeldFanout(Mutex<Vec<FanoutJob>>);

#[async_trait]
impl Fanout for HeldFanout {
    async fn dispatch(&self, job: FanoutJob) -> chat_core::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(job);
        Ok(())
    }
}

struct Sink;
#[async_trait]
impl Reply for Sink {
    async fn send(&self, _f: ServerFrame) -> Result<(), PostError> {
        Ok(())
    }
}

/// Another node's management API, as a conn-tier cluster node sees it:
/// counts the broadcasts it takes (as posts), holds no connection.
struct OtherNode(Arc<CountingDelivery>);

impl ConnectionHost for OtherNode {
    fn post(&self, _: &str, _: String) -> Result<(), PostError> {
        Err(PostError::Gone)
    }
    fn connected_at(&self, _: &str) -> Option<u64> {
        None
    }
    fn close(&self, _: &str) -> bool {
        false
    }
    fn broadcast(&self, _: &[String], _: Option<&str>, _: String) -> usize {
        self.0 .0.fetch_add(1, Ordering::Relaxed);
        0
    }
}

struct Rig {
    store: Arc<DynamoStore>,
    conns: Arc<DynamoConnections>,
    nodes: Arc<DynamoNodes>,
    chat: Chat,
    held: Arc<HeldFanout>,
    deliverer: Deliverer,
    posts: Arc<CountingDelivery>,
}

impl Rig {
    fn usage(&self) -> Usage {
        [
            self.store.meter().usage(),
            self.conns.meter().usage(),
            self.nodes.meter().usage(),
        ]
        .into_iter()
        .fold(Usage::default(), |a, b| Usage {
            read_units: a.read_units + b.read_units,
            write_units: a.write_units + b.write_units,
            reported_units: a.reported_units + b.reported_units,
            calls: a.calls + b.calls,
        })
    }

    /// Measures `op`, then the fan-out jobs it queued.
    async fn measure<F: std::future::Future<Output = ()>>(&self, name: &str, op: F) -> CostRow {
        self.measure_with(&self.deliverer, name, op).await
    }

    /// Measures `op`, then the fan-out jobs it queued, run by `deliverer`.
    async fn measure_with<F: std::future::Future<Output = ()>>(
        &self,
        deliverer: &Deliverer,
        name: &str,
        op: F,
    ) -> CostRow {
        let posts0 = self.posts.0.load(Ordering::Relaxed);
        let u0 = self.usage();
        op.await;
        let u1 = self.usage();
        let jobs: Vec<FanoutJob> =
            std::mem::take(&mut *self.held.0.lock().unwrap_or_else(|p| p.into_inner()));
        for job in &jobs {
            deliverer.run(job).await.expect("fan-out");
        }
        CostRow {
            operation: name.to_string(),
            request: u1 - u0,
            fanout: self.usage() - u1,
            posts: self.posts.0.load(Ordering::Relaxed) - posts0,
        }
    }
}

fn session(user: &str, conn: &str) -> Session {
    Session::new(conn, UserId::parse(user).expect("user id"))
}

/// Measures the operations of docs/cost.md on fresh tables.
pub async fn measure(tables: &Tables) -> anyhow::Result<Vec<CostRow>> {
    let store = Arc::new(DynamoStore::new(tables));
    let conns = Arc::new(DynamoConnections::new(tables));
    let posts = Arc::new(CountingDelivery::default());
    let held = Arc::new(HeldFanout::default());
    let deliverer = Deliverer::new(store.clone(), conns.clone(), posts.clone());
    let chat = Chat::new(
        store.clone(),
        conns.clone(),
        held.clone(),
        MessageDelivery::Dispatch,
    );
    let nodes = Arc::new(DynamoNodes::new(tables));
    let rig = Rig {
        store,
        conns,
        nodes,
        chat,
        held,
        deliverer,
        posts,
    };
    let text_1kb = "x".repeat(1000);
    let mut rows = Vec::new();

    // Everyone involved holds one connection (setup, not counted).
    let members: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    for (i, u) in ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|s| s.to_string())
        .chain(members.iter().cloned())
        .enumerate()
    {
        rig.chat
            .connect(&session(&u, &format!("c{i}")), "node-1", None)
            .await?;
    }
    let alice = session("alice", "c0");
    let (carol, dave) = (session("carol", "c2"), session("dave", "c3"));

    rows.push(
        rig.measure("connect + disconnect", async {
            let s = session("erin", "c-erin");
            rig.chat.connect(&s, "node-1", None).await.expect("connect");
            rig.chat.disconnect("c-erin").await.expect("disconnect");
        })
        .await,
    );
    rows.push(
        rig.measure("1 KB 1:1 send, first in the conversation", async {
            rig.chat
                .send(&alice, "user:bob", "k0".into(), text_1kb.clone())
                .await
                .expect("send");
        })
        .await,
    );
    rows.push(
        rig.measure("1 KB 1:1 send", async {
            rig.chat
                .send(&alice, "user:bob", "k1".into(), text_1kb.clone())
                .await
                .expect("send");
        })
        .await,
    );
    rows.push(
        rig.measure("100-byte 1:1 send", async {
            rig.chat
                .send(&alice, "user:bob", "k2".into(), "y".repeat(100))
                .await
                .expect("send");
        })
        .await,
    );
    rows.push(
        rig.measure("1:1 resend of an acked client_msg_id", async {
            rig.chat
                .send(&alice, "user:bob", "k1".into(), text_1kb.clone())
                .await
                .expect("send");
        })
        .await,
    );
    let refs: Vec<String> = members[..99].to_vec();
    let mut gid = String::new();
    let create = rig
        .measure("create a 100-member group", async {
            match rig
                .chat
                .create_group(&alice, "big".into(), refs)
                .await
                .expect("create")
            {
                ServerFrame::Group { group_id, .. } => gid = group_id,
                other => panic!("{other:?}"),
            }
        })
        .await;
    rows.push(create);
    // A first send and a conversation listing read the member list into
    // the caches of the fan-out and of the services (not counted): later
    // uses check its version only.
    let to_group = format!("group:{gid}");
    let group_send = |id: &'static str| {
        let (to, text) = (to_group.clone(), text_1kb.clone());
        let (chat, alice) = (&rig.chat, &alice);
        async move {
            chat.send(alice, &to, id.into(), text).await.expect("send");
        }
    };
    rig.measure("warm-up", group_send("g0")).await;
    let reader = session(&members[1], "c5");
    rig.chat.conversations(&reader, None, None).await?;
    rows.push(
        rig.measure("1 KB send to a 100-member group", group_send("g1"))
            .await,
    );

    // A member reads both: one receipt, to their author (alice), and to
    // the reader's other devices (none online here).
    rows.push(
        rig.measure("ack in a 100-member group (1 author)", async {
            rig.chat
                .ack(&reader, &format!("grp#{gid}"), 2)
                .await
                .expect("ack");
        })
        .await,
    );
    rows.push(
        rig.measure("receipts of a 100-member group", async {
            rig.chat
                .receipts(&reader, &format!("grp#{gid}"))
                .await
                .expect("receipts");
        })
        .await,
    );
    // A send as in a conn-tier cluster of two nodes: this one, and another
    // whose management API takes the broadcast (docs/design.md, "Group
    // look-ups"). Setup, not counted.
    let (broadcasting, _other) = cluster_of_two(&rig).await?;
    rig.measure_with(&broadcasting, "warm-up", group_send("gb0"))
        .await;
    rows.push(
        rig.measure_with(
            &broadcasting,
            "1 KB send to a 100-member group, 2-node cluster (broadcast)",
            group_send("gb1"),
        )
        .await,
    );
    // A member leaves and another joins (the 100th): the next send reads
    // the member list again.
    rig.chat.remove_member(&alice, &gid, &members[0]).await?;
    rig.chat.add_member(&alice, &gid, &members[99]).await?;
    rig.held.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    rows.push(
        rig.measure(
            "1 KB send to a 100-member group, right after an addMember",
            group_send("g2"),
        )
        .await,
    );
    rig.chat.remove_member(&alice, &gid, &members[99]).await?;
    rig.chat.add_member(&alice, &gid, &members[0]).await?;
    rig.held.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    rows.push(
        rig.measure_with(
            &broadcasting,
            "1 KB send to a 100-member group, 2-node cluster (broadcast), right after an addMember",
            group_send("gb2"),
        )
        .await,
    );
    for i in 0..10 {
        rig.chat
            .send(&dave, "user:carol", format!("d{i}"), text_1kb.clone())
            .await?;
    }
    rig.held.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    rows.push(
        rig.measure("sync of 10 missed 1 KB messages (1 conversation)", async {
            rig.chat.sync(&carol, &Sink).await.expect("sync");
        })
        .await,
    );
    // A known device (seen once, with a cursor at 10) that misses 10.
    let phone = session("carol", "c2").with_device(Some(
        chat_core::ids::DeviceId::parse("phone").expect("device id"),
    ));
    rig.chat.sync(&phone, &Sink).await?;
    rig.chat
        .received(
            &phone,
            &[chat_core::protocol::ReceivedItem {
                conversation_id: "dm#carol#dave".into(),
                from: 1,
                up_to: 10,
            }],
        )
        .await?;
    for i in 10..20 {
        rig.chat
            .send(&dave, "user:carol", format!("d{i}"), text_1kb.clone())
            .await?;
    }
    rig.held.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    rows.push(
        rig.measure(
            "sync of 10 missed 1 KB messages on a known device (1 conversation)",
            async {
                rig.chat.sync(&phone, &Sink).await.expect("sync");
            },
        )
        .await,
    );
    rows.push(
        rig.measure(
            "received (a device's cursor moves, 1 conversation)",
            async {
                rig.chat
                    .received(
                        &phone,
                        &[chat_core::protocol::ReceivedItem {
                            conversation_id: "dm#carol#dave".into(),
                            from: 11,
                            up_to: 20,
                        }],
                    )
                    .await
                    .expect("received");
            },
        )
        .await,
    );
    rows.push(
        rig.measure("ack (watermark moves, receipt fan-out)", async {
            rig.chat
                .ack(&carol, "dm#carol#dave", 20)
                .await
                .expect("ack");
        })
        .await,
    );
    Ok(rows)
}

/// A deliverer as a conn-tier cluster node runs it: this node in the
/// registry, and another node whose management API (on 127.0.0.1) counts
/// the broadcasts it takes as posts. The server task ends with the handle.
async fn cluster_of_two(rig: &Rig) -> anyhow::Result<(Deliverer, tokio::task::JoinHandle<()>)> {
    use conn_tier::cluster::{new_node_id, Cluster, ClusterBroadcast, ClusterConfig};
    let credential = crate::management_credential();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let api =
        chat_management::api::router(Arc::new(OtherNode(rig.posts.clone())), credential.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, api).await;
    });
    let now = chat_core::time::now_ms();
    rig.nodes
        .join(&chat_core::ports::NodeRecord {
            node_id: new_node_id(),
            management_url: url,
            ws_url: "ws://127.0.0.1:1/ws".into(),
            started_at_ms: now,
            heartbeat_at_ms: now,
            draining: false,
            dead: false,
        })
        .await?;
    let hub = Arc::new(conn_tier::hub::Hub::new(new_node_id(), true));
    let cluster = Cluster::join(
        rig.nodes.clone(),
        rig.conns.clone(),
        hub.clone(),
        ClusterConfig {
            heartbeat: std::time::Duration::from_secs(2),
            dead_after: std::time::Duration::from_secs(60),
            management_url: Some("http://127.0.0.1:1".into()),
            ws_url: "ws://127.0.0.1:1/ws".into(),
            clustered: true,
        },
    )
    .await?;
    let link = Arc::new(conn_tier::cluster::broadcast::SignedPost::new(credential));
    let broadcast = ClusterBroadcast::new(hub, cluster, link);
    let deliverer = Deliverer::new(rig.store.clone(), rig.conns.clone(), rig.posts.clone())
        .with_broadcast(
            Arc::new(broadcast),
            chat_core::ports::BROADCAST_FROM_MEMBERS,
        );
    Ok((deliverer, server))
}

/// The rows as a markdown table.
pub fn markdown(rows: &[CostRow]) -> String {
    let mut out = String::from(
        "| operation | write units | read units (request) | read units (fan-out) | posts | calls | $ per million |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} |\n",
            r.operation,
            r.write_units(),
            r.request.read_units,
            r.fanout.read_units,
            r.posts,
            r.request.calls + r.fanout.calls,
            r.usd_per_million()
        ));
    }
    out
}
