//! The store contract: devices and their delivery cursors.

use super::*;

const T0: u64 = 1_700_000_000_000;

pub async fn a_device_is_new_once_then_known(s: Arc<dyn Store>) {
    let (u, d) = (unique("u"), unique("d"));
    assert!(!s.use_device(&u, &d, T0).await.unwrap(), "first use");
    assert!(s.use_device(&u, &d, T0 + 1).await.unwrap(), "second use");
    // Another user's device of the same name is another device.
    assert!(!s.use_device(&unique("v"), &d, T0).await.unwrap());
    assert!(s.cursors(&u, &d, T0).await.unwrap().is_empty());
}

pub async fn a_device_unused_for_90_days_is_new_again_and_not_known(s: Arc<dyn Store>) {
    let (u, d) = (unique("u"), unique("d"));
    assert!(!s.device_known(&u, &d, T0).await.unwrap(), "never used");
    s.use_device(&u, &d, T0).await.unwrap();
    assert!(s.device_known(&u, &d, T0 + 1).await.unwrap());
    assert!(!s.device_known(&unique("v"), &d, T0 + 1).await.unwrap());
    let later = T0 + CURSOR_TTL_MS + 1;
    assert!(!s.device_known(&u, &d, later).await.unwrap());
    assert!(!s.use_device(&u, &d, later).await.unwrap(), "new again");
    assert!(s.device_known(&u, &d, later + 1).await.unwrap());
}

pub async fn a_cursor_only_moves_forward_per_device(s: Arc<dyn Store>) {
    let (u, phone, laptop) = (unique("u"), unique("phone"), unique("laptop"));
    let conv = dm(&u, &unique("b"));
    s.use_device(&u, &phone, T0).await.unwrap();
    assert!(s
        .advance_cursor(&u, &phone, &conv, CursorMove::to(5), T0)
        .await
        .unwrap());
    assert!(!s
        .advance_cursor(&u, &phone, &conv, CursorMove::to(3), T0)
        .await
        .unwrap());
    assert!(!s
        .advance_cursor(&u, &phone, &conv, CursorMove::to(5), T0)
        .await
        .unwrap());
    assert!(s
        .advance_cursor(&u, &phone, &conv, CursorMove::to(7), T0)
        .await
        .unwrap());
    let other = dm(&u, &unique("c"));
    assert!(s
        .advance_cursor(&u, &phone, &other, CursorMove::to(2), T0)
        .await
        .unwrap());
    let mine = s.cursors(&u, &phone, T0).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[&conv], 7);
    assert_eq!(mine[&other], 2);
    // Another device of the same user has its own.
    assert!(s.cursors(&u, &laptop, T0).await.unwrap().is_empty());
    assert!(s
        .advance_cursor(&u, &laptop, &conv, CursorMove::to(1), T0)
        .await
        .unwrap());
    assert_eq!(s.cursors(&u, &phone, T0).await.unwrap()[&conv], 7);
    assert_eq!(s.cursors(&u, &laptop, T0).await.unwrap()[&conv], 1);
}

pub async fn a_cursor_not_moved_for_90_days_is_forgotten(s: Arc<dyn Store>) {
    let (u, d) = (unique("u"), unique("d"));
    let conv = dm(&u, &unique("b"));
    s.advance_cursor(&u, &d, &conv, CursorMove::to(9), T0)
        .await
        .unwrap();
    let later = T0 + CURSOR_TTL_MS + 1;
    assert!(s.cursors(&u, &d, later).await.unwrap().is_empty());
    // Forgotten: a lower position sets it afresh.
    assert!(s
        .advance_cursor(&u, &d, &conv, CursorMove::to(4), later)
        .await
        .unwrap());
    assert_eq!(s.cursors(&u, &d, later).await.unwrap()[&conv], 4);
}

pub async fn past_the_most_devices_the_least_recently_used_is_forgotten(s: Arc<dyn Store>) {
    let u = unique("u");
    let conv = dm(&u, &unique("b"));
    let devices: Vec<String> = (0..=MAX_DEVICES).map(|i| format!("d{i:02}")).collect();
    for (i, d) in devices.iter().take(MAX_DEVICES).enumerate() {
        assert!(!s.use_device(&u, d, T0 + i as u64).await.unwrap());
        s.advance_cursor(&u, d, &conv, CursorMove::to(3), T0)
            .await
            .unwrap();
    }
    // d00 is the least recently used; d01 is used again now.
    s.use_device(&u, &devices[1], T0 + 100).await.unwrap();
    assert!(!s
        .use_device(&u, &devices[MAX_DEVICES], T0 + 101)
        .await
        .unwrap());
    assert!(
        s.cursors(&u, &devices[0], T0 + 102)
            .await
            .unwrap()
            .is_empty(),
        "the forgotten device's cursors go with it"
    );
    assert!(
        !s.use_device(&u, &devices[0], T0 + 103).await.unwrap(),
        "new again"
    );
    // That pushed out d02 (d01 was used later); the others stay known.
    assert_eq!(
        s.cursors(&u, &devices[1], T0 + 104).await.unwrap()[&conv],
        3
    );
    assert!(s.use_device(&u, &devices[3], T0 + 105).await.unwrap());
}

pub async fn a_run_moves_the_cursor_only_if_it_reaches_down_to_it(s: Arc<dyn Store>) {
    let (u, d) = (unique("u"), unique("d"));
    let conv = dm(&u, &unique("b"));
    let run = |from, up_to, floor| CursorMove { from, up_to, floor };
    s.use_device(&u, &d, T0).await.unwrap();
    // No cursor: the device stands at the floor (its join point, 4).
    assert!(
        !s.advance_cursor(&u, &d, &conv, run(6, 8, 4), T0)
            .await
            .unwrap(),
        "5 never got"
    );
    assert!(s.cursors(&u, &d, T0).await.unwrap().is_empty());
    assert!(s
        .advance_cursor(&u, &d, &conv, run(5, 8, 4), T0)
        .await
        .unwrap());
    // At 8: a run from 10 steps over 9; one from 9, or from below, moves it.
    assert!(!s
        .advance_cursor(&u, &d, &conv, run(10, 12, 4), T0)
        .await
        .unwrap());
    assert_eq!(s.cursors(&u, &d, T0).await.unwrap()[&conv], 8);
    assert!(s
        .advance_cursor(&u, &d, &conv, run(9, 10, 4), T0)
        .await
        .unwrap());
    assert!(s
        .advance_cursor(&u, &d, &conv, run(2, 12, 4), T0)
        .await
        .unwrap());
    assert!(
        !s.advance_cursor(&u, &d, &conv, run(1, 11, 4), T0)
            .await
            .unwrap(),
        "never back"
    );
    assert_eq!(s.cursors(&u, &d, T0).await.unwrap()[&conv], 12);
    // Expired: the floor again, not the forgotten 12.
    let later = T0 + CURSOR_TTL_MS + 1;
    assert!(!s
        .advance_cursor(&u, &d, &conv, run(13, 14, 4), later)
        .await
        .unwrap());
    assert!(s
        .advance_cursor(&u, &d, &conv, run(5, 6, 4), later)
        .await
        .unwrap());
    assert_eq!(s.cursors(&u, &d, later).await.unwrap()[&conv], 6);
}

pub async fn a_cursor_below_the_join_point_stands_at_it(s: Arc<dyn Store>) {
    // The phone's cursor is at 2; the user left, and rejoined at 4.
    let (u, d) = (unique("u"), unique("d"));
    let conv = dm(&u, &unique("b"));
    let run = |from, up_to| CursorMove {
        from,
        up_to,
        floor: 4,
    };
    s.use_device(&u, &d, T0).await.unwrap();
    s.advance_cursor(&u, &d, &conv, CursorMove::to(2), T0)
        .await
        .unwrap();
    assert!(
        !s.advance_cursor(&u, &d, &conv, run(6, 8), T0)
            .await
            .unwrap(),
        "5 never got"
    );
    assert!(
        !s.advance_cursor(&u, &d, &conv, run(3, 4), T0)
            .await
            .unwrap(),
        "nothing above the floor"
    );
    assert!(s
        .advance_cursor(&u, &d, &conv, run(5, 8), T0)
        .await
        .unwrap());
    assert_eq!(s.cursors(&u, &d, T0).await.unwrap()[&conv], 8);
}
