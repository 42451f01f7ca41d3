//! The store contract: the connection map.

use super::*;

pub async fn connections_are_found_by_user_and_removed(c: Arc<dyn Connections>) {
    let (u, v) = (unique("u"), unique("v"));
    let rec = |id: &str, user: &str| ConnectionRecord {
        connection_id: id.to_string(),
        user_id: user.to_string(),
        endpoint: "node-1".into(),
        connected_at_ms: 5,
        ..Default::default()
    };
    let (c1, c2, c3) = (unique("c"), unique("c"), unique("c"));
    c.register(&rec(&c1, &u)).await.unwrap();
    c.register(&rec(&c2, &u)).await.unwrap();
    c.register(&rec(&c3, &v)).await.unwrap();
    let mut mine: Vec<String> = c
        .for_user(&u)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.connection_id)
        .collect();
    mine.sort();
    let mut want = vec![c1.clone(), c2.clone()];
    want.sort();
    assert_eq!(mine, want);
    assert_eq!(c.get(&c3).await.unwrap(), Some(rec(&c3, &v)));
    c.remove(&c1).await.unwrap();
    assert_eq!(c.get(&c1).await.unwrap(), None);
    c.remove(&unique("never-registered")).await.unwrap();
    let left = c.for_user(&u).await.unwrap();
    assert_eq!(left, vec![rec(&c2, &u)]);
    assert!(c.for_user(&unique("nobody")).await.unwrap().is_empty());
}

pub async fn a_sync_goes_live_only_once_every_skip_is_seen(c: Arc<dyn Connections>) {
    let (user, conn) = (unique("u"), unique("c"));
    let (ab, ac) = (format!("dm#{user}#x"), format!("dm#{user}#y"));
    c.register(&ConnectionRecord {
        connection_id: conn.clone(),
        user_id: user.clone(),
        endpoint: "e".into(),
        connected_at_ms: 1,
        sync: SyncState::Pending,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        c.get(&conn).await.unwrap().unwrap().sync,
        SyncState::Pending
    );
    assert!(!c.begin_sync(&unique("gone")).await.unwrap());
    assert!(c.begin_sync(&conn).await.unwrap());
    assert_eq!(
        c.get(&conn).await.unwrap().unwrap().sync,
        SyncState::Syncing
    );
    // Two skips in one conversation, one in another.
    c.note_skipped(&conn, &ab).await.unwrap();
    c.note_skipped(&conn, &ab).await.unwrap();
    c.note_skipped(&conn, &ac).await.unwrap();
    let marks = std::collections::BTreeMap::from([(ab.clone(), 7u64)]);
    match c.go_live(&conn, &marks, 0).await.unwrap() {
        GoLive::Skipped {
            mut conversations,
            skips,
        } => {
            conversations.sort();
            let mut want = vec![ab.clone(), ac.clone()];
            want.sort();
            assert_eq!((conversations, skips), (want, 3));
        }
        GoLive::Done => panic!("went live with unseen skips"),
    }
    assert_eq!(
        c.get(&conn).await.unwrap().unwrap().sync,
        SyncState::Syncing
    );
    // One more skip after the sync looked: still not live.
    c.note_skipped(&conn, &ab).await.unwrap();
    assert!(matches!(
        c.go_live(&conn, &marks, 3).await.unwrap(),
        GoLive::Skipped { skips: 4, .. }
    ));
    assert_eq!(c.go_live(&conn, &marks, 4).await.unwrap(), GoLive::Done);
    let rec = c.get(&conn).await.unwrap().unwrap();
    assert_eq!((rec.sync, rec.replayed), (SyncState::Live, marks));
    // Live: skips are not noted, and the user's index shows the state.
    c.note_skipped(&conn, &ab).await.unwrap();
    let listed = c.for_user(&user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sync, SyncState::Live);
    assert!(c.begin_sync(&conn).await.unwrap());
    assert_eq!(
        c.go_live(&conn, &Default::default(), 0).await.unwrap(),
        GoLive::Done
    );
}
