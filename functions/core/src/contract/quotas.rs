//! The store contract: quotas.

use super::*;

pub async fn a_quota_is_taken_up_to_its_limit(s: Arc<dyn Store>) {
    let (user, other) = (unique("u"), unique("u"));
    for _ in 0..3 {
        assert!(s
            .take_quota(&user, "groups#1", 3, u64::MAX / 2)
            .await
            .unwrap());
    }
    assert!(!s
        .take_quota(&user, "groups#1", 3, u64::MAX / 2)
        .await
        .unwrap());
    // Another day, another user: their own counters.
    assert!(s
        .take_quota(&user, "groups#2", 3, u64::MAX / 2)
        .await
        .unwrap());
    assert!(s
        .take_quota(&other, "groups#1", 3, u64::MAX / 2)
        .await
        .unwrap());
}
