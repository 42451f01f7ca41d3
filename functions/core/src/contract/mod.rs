//! The store contract suite: one set of checks every [`Store`] and
//! [`Connections`] adapter must pass (memory, embedded, DynamoDB). Each
//! check uses fresh, randomly named conversations, so one store instance
//! can run them all, in any order, even against a shared emulator.
//!
//! An adapter's tests run it with one macro call, which makes one test per
//! check, named after it, so a failure names the check:
//!
//! # Layout
//! - this file: [`Fixture`], the macros, the helpers the checks share;
//! - `messages`, `memberships`, `groups`, `quotas`, `devices`: the [`Store`] checks, one
//!   file per entity (as the store ports are split);
//! - `connections`, `nodes`: the [`Connections`] and [`Nodes`] checks.
//!
//! ```ignore
//! chat_core::store_contract!(async { Fixture::from(Arc::new(MyStore::new()) as Arc<dyn Store>) });
//! chat_core::connections_contract!(async { Arc::new(MyConnections::new()) as Arc<dyn Connections> });
//! ```

use crate::error::Error;
use crate::ids::{ConversationId, UserId};
use crate::ports::*;
use std::sync::Arc;

mod connections;
mod devices;
mod groups;
mod memberships;
mod messages;
mod nodes;
mod quotas;

pub use connections::*;
pub use devices::*;
pub use groups::*;
pub use memberships::*;
pub use messages::*;
pub use nodes::*;
pub use quotas::*;

/// A store under test, and whatever must live as long as it (a temporary
/// directory, say).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub keep: Option<Box<dyn std::any::Any + Send>>,
}

impl From<Arc<dyn Store>> for Fixture {
    fn from(store: Arc<dyn Store>) -> Self {
        Fixture { store, keep: None }
    }
}

/// One test per store check. `$fixture` is a future of a [`Fixture`] (or
/// of an `Arc<dyn Store>`), evaluated afresh for every check.
#[macro_export]
macro_rules! store_contract {
    ($fixture:expr) => {
        $crate::store_contract!(@checks $fixture;
            ids_start_at_one_and_are_gapless,
            resend_returns_original_and_stores_nothing,
            append_moves_sender_watermark_and_enrolls_recipient,
            concurrent_appends_get_exactly_one_to_n,
            history_pages_backwards,
            messages_after_pages_forwards,
            watermark_only_moves_forward,
            conversations_list_memberships_with_newest_id,
            groups_change_only_at_the_expected_version,
            a_member_is_added_only_at_the_conversations_newest_id,
            largest_text_round_trips,
            a_member_removed_while_sending_stays_removed,
            a_group_keeps_each_members_newest_message_and_read_watermark,
            conversations_come_in_pages_by_id,
            a_quota_is_taken_up_to_its_limit,
            a_device_is_new_once_then_known,
            a_device_unused_for_90_days_is_new_again_and_not_known,
            a_cursor_only_moves_forward_per_device,
            a_run_moves_the_cursor_only_if_it_reaches_down_to_it,
            a_cursor_below_the_join_point_stands_at_it,
            a_cursor_not_moved_for_90_days_is_forgotten,
            past_the_most_devices_the_least_recently_used_is_forgotten,
        );
    };
    (@checks $fixture:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture: $crate::contract::Fixture = ($fixture).await.into();
                $crate::contract::$check(fixture.store.clone()).await;
            }
        )*
    };
}

/// One test per connection-map check; `$connections` is a future of an
/// `Arc<dyn Connections>`.
#[macro_export]
macro_rules! connections_contract {
    ($connections:expr) => {
        $crate::connections_contract!(@checks $connections;
            connections_are_found_by_user_and_removed,
            a_sync_goes_live_only_once_every_skip_is_seen,
        );
    };
    (@checks $connections:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let c: std::sync::Arc<dyn $crate::ports::Connections> = ($connections).await;
                $crate::contract::$check(c).await;
            }
        )*
    };
}

/// One test per node-registry check; `$pair` is a future of the
/// connection map and the registry over the same table.
#[macro_export]
macro_rules! nodes_contract {
    ($pair:expr) => {
        $crate::nodes_contract!(@checks $pair;
            nodes_join_heartbeat_and_are_listed,
            a_node_declared_dead_cannot_heartbeat_and_a_newer_heartbeat_wins,
            a_nodes_connections_are_found_by_node_and_a_forgotten_node_is_gone,
        );
    };
    (@checks $pair:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (c, n): (
                    std::sync::Arc<dyn $crate::ports::Connections>,
                    std::sync::Arc<dyn $crate::ports::Nodes>,
                ) = ($pair).await;
                $crate::contract::$check(c, n).await;
            }
        )*
    };
}

pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub(crate) fn msg(conv: &str, sender: &str, cmid: &str, text: &str) -> NewMessage {
    NewMessage {
        conversation_id: conv.to_string(),
        sender: sender.to_string(),
        client_msg_id: cmid.to_string(),
        text: text.to_string(),
        sent_at_ms: 1_700_000_000_000,
        enroll: vec![],
        origin: None,
        member_only: false,
    }
}

pub(crate) fn dm(a: &str, b: &str) -> String {
    let id = |u: &str| UserId::parse(u).expect("a valid user id");
    ConversationId::direct(&id(a), &id(b)).to_string()
}
