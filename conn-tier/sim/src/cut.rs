//! A node's link to the store, which a fault can cut: while it is cut,
//! every call this node makes waits as long as a DynamoDB call times out
//! here and then fails, as the SDK's would with the store black-holed
//! (`tests/tests/cluster.rs` does the same through a proxy). The store
//! itself is the memory store, shared by every node as they share
//! DynamoDB; other nodes' calls go on.

use async_trait::async_trait;
use chat_core::ports::*;
use chat_core::protocol::ReadMark;
use chat_core::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a call waits before it fails while cut: the DynamoDB client's
/// per-attempt timeout (functions/dynamo/src/config.rs).
pub const CUT_CALL_WAIT: Duration = Duration::from_secs(3);

/// One node's switch.
#[derive(Clone, Default)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn set(&self, cut: bool) {
        self.0.store(cut, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `T` as one node reaches it.
pub struct Cut<T: ?Sized> {
    inner: Arc<T>,
    switch: Switch,
}

impl<T: ?Sized> Cut<T> {
    pub fn new(inner: Arc<T>, switch: Switch) -> Self {
        Cut { inner, switch }
    }

    /// While cut: waits, then fails. A call that started before the cut
    /// goes through.
    async fn pass(&self) -> Result<()> {
        if self.switch.is_cut() {
            tokio::time::sleep(CUT_CALL_WAIT).await;
            return Err(Error::Store(
                "the store is unreachable (simulated cut)".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl<T: MessageStore + ?Sized> MessageStore for Cut<T> {
    async fn append(&self, msg: NewMessage) -> Result<Appended> {
        self.pass().await?;
        self.inner.append(msg).await
    }
    async fn messages_after(
        &self,
        c: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.pass().await?;
        self.inner.messages_after(c, after, limit).await
    }
    async fn messages_before(
        &self,
        c: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.pass().await?;
        self.inner.messages_before(c, before, limit).await
    }
    async fn last_message_id(&self, c: &str) -> Result<u64> {
        self.pass().await?;
        self.inner.last_message_id(c).await
    }
}

#[async_trait]
impl<T: MembershipStore + ?Sized> MembershipStore for Cut<T> {
    async fn membership(&self, u: &str, c: &str) -> Result<Option<Membership>> {
        self.pass().await?;
        self.inner.membership(u, c).await
    }
    async fn conversations(&self, u: &str) -> Result<Vec<ConversationState>> {
        self.pass().await?;
        self.inner.conversations(u).await
    }
    async fn conversations_page(
        &self,
        u: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ConversationState>, bool)> {
        self.pass().await?;
        self.inner.conversations_page(u, after, limit).await
    }
    async fn advance_watermark(&self, u: &str, c: &str, up_to: u64) -> Result<Option<Watermark>> {
        self.pass().await?;
        self.inner.advance_watermark(u, c, up_to).await
    }
    async fn watermarks(&self, c: &str, users: &[String]) -> Result<Vec<ReadMark>> {
        self.pass().await?;
        self.inner.watermarks(c, users).await
    }
}

#[async_trait]
impl<T: GroupStore + ?Sized> GroupStore for Cut<T> {
    async fn group(&self, g: &str) -> Result<Option<Group>> {
        self.pass().await?;
        self.inner.group(g).await
    }
    async fn create_group(&self, g: &Group) -> Result<()> {
        self.pass().await?;
        self.inner.create_group(g).await
    }
    async fn update_group(&self, c: &GroupChange) -> Result<Group> {
        self.pass().await?;
        self.inner.update_group(c).await
    }
    async fn group_version(&self, g: &str) -> Result<Option<u64>> {
        self.pass().await?;
        self.inner.group_version(g).await
    }
    async fn member_marks(&self, g: &str) -> Result<Vec<MemberMarks>> {
        self.pass().await?;
        self.inner.member_marks(g).await
    }
    async fn note_read(&self, g: &str, u: &str, up_to: u64) -> Result<()> {
        self.pass().await?;
        self.inner.note_read(g, u, up_to).await
    }
}

#[async_trait]
impl<T: QuotaStore + ?Sized> QuotaStore for Cut<T> {
    async fn take_quota(&self, u: &str, key: &str, limit: u64, expires: u64) -> Result<bool> {
        self.pass().await?;
        self.inner.take_quota(u, key, limit, expires).await
    }
}

#[async_trait]
impl<T: DeviceStore + ?Sized> DeviceStore for Cut<T> {
    async fn use_device(&self, u: &str, d: &str, now: u64) -> Result<bool> {
        self.pass().await?;
        self.inner.use_device(u, d, now).await
    }
    async fn device_known(&self, u: &str, d: &str, now: u64) -> Result<bool> {
        self.pass().await?;
        self.inner.device_known(u, d, now).await
    }
    async fn cursors(&self, u: &str, d: &str, now: u64) -> Result<HashMap<String, u64>> {
        self.pass().await?;
        self.inner.cursors(u, d, now).await
    }
    async fn advance_cursor(
        &self,
        u: &str,
        d: &str,
        c: &str,
        mv: CursorMove,
        now: u64,
    ) -> Result<bool> {
        self.pass().await?;
        self.inner.advance_cursor(u, d, c, mv, now).await
    }
}

impl<T: Health + ?Sized> Health for Cut<T> {
    fn health(&self) -> StoreHealth {
        self.inner.health()
    }
}

#[async_trait]
impl<T: Connections + ?Sized> Connections for Cut<T> {
    async fn register(&self, rec: &ConnectionRecord) -> Result<()> {
        self.pass().await?;
        self.inner.register(rec).await
    }
    async fn remove(&self, id: &str) -> Result<()> {
        self.pass().await?;
        self.inner.remove(id).await
    }
    async fn get(&self, id: &str) -> Result<Option<ConnectionRecord>> {
        self.pass().await?;
        self.inner.get(id).await
    }
    async fn for_user(&self, u: &str) -> Result<Vec<ConnectionRecord>> {
        self.pass().await?;
        self.inner.for_user(u).await
    }
    async fn begin_sync(&self, id: &str) -> Result<bool> {
        self.pass().await?;
        self.inner.begin_sync(id).await
    }
    async fn note_skipped(&self, id: &str, c: &str) -> Result<()> {
        self.pass().await?;
        self.inner.note_skipped(id, c).await
    }
    async fn go_live(
        &self,
        id: &str,
        replayed: &BTreeMap<String, u64>,
        seen: u64,
    ) -> Result<GoLive> {
        self.pass().await?;
        self.inner.go_live(id, replayed, seen).await
    }
}

#[async_trait]
impl<T: Nodes + ?Sized> Nodes for Cut<T> {
    async fn join(&self, node: &NodeRecord) -> Result<()> {
        self.pass().await?;
        self.inner.join(node).await
    }
    async fn heartbeat(&self, id: &str, at_ms: u64, draining: bool) -> Result<bool> {
        self.pass().await?;
        self.inner.heartbeat(id, at_ms, draining).await
    }
    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.pass().await?;
        self.inner.nodes().await
    }
    async fn declare_dead(&self, id: &str, seen: u64) -> Result<bool> {
        self.pass().await?;
        self.inner.declare_dead(id, seen).await
    }
    async fn connections_of(&self, id: &str) -> Result<Vec<String>> {
        self.pass().await?;
        self.inner.connections_of(id).await
    }
    async fn forget(&self, id: &str) -> Result<()> {
        self.pass().await?;
        self.inner.forget(id).await
    }
}
