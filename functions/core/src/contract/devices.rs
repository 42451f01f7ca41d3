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

pub async fn a_cursor_only_moves_forward_per_device(s: Arc<dyn Store>) {
    let (u, phone, laptop) = (unique("u"), unique("phone"), unique("laptop"));
    let conv = dm(&u, &unique("b"));
    s.use_device(&u, &phone, T0).await.unwrap();
    assert!(s.advance_cursor(&u, &phone, &conv, 5, T0).await.unwrap());
    assert!(!s.advance_cursor(&u, &phone, &conv, 3, T0).await.unwrap());
    assert!(!s.advance_cursor(&u, &phone, &conv, 5, T0).await.unwrap());
    assert!(s.advance_cursor(&u, &phone, &conv, 7, T0).await.unwrap());
    let other = dm(&u, &unique("c"));
    assert!(s.advance_cursor(&u, &phone, &other, 2, T0).await.unwrap());
    let mine = s.cursors(&u, &phone, T0).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[&conv], 7);
    assert_eq!(mine[&other], 2);
    // Another device of the same user has its own.
    assert!(s.cursors(&u, &laptop, T0).await.unwrap().is_empty());
    assert!(s.advance_cursor(&u, &laptop, &conv, 1, T0).await.unwrap());
    assert_eq!(s.cursors(&u, &phone, T0).await.unwrap()[&conv], 7);
    assert_eq!(s.cursors(&u, &laptop, T0).await.unwrap()[&conv], 1);
}

pub async fn a_cursor_not_moved_for_90_days_is_forgotten(s: Arc<dyn Store>) {
    let (u, d) = (unique("u"), unique("d"));
    let conv = dm(&u, &unique("b"));
    s.advance_cursor(&u, &d, &conv, 9, T0).await.unwrap();
    let later = T0 + CURSOR_TTL_MS + 1;
    assert!(s.cursors(&u, &d, later).await.unwrap().is_empty());
    // Forgotten: a lower position sets it afresh.
    assert!(s.advance_cursor(&u, &d, &conv, 4, later).await.unwrap());
    assert_eq!(s.cursors(&u, &d, later).await.unwrap()[&conv], 4);
}

pub async fn past_the_most_devices_the_least_recently_used_is_forgotten(s: Arc<dyn Store>) {
    let u = unique("u");
    let conv = dm(&u, &unique("b"));
    let devices: Vec<String> = (0..=MAX_DEVICES).map(|i| format!("d{i:02}")).collect();
    for (i, d) in devices.iter().take(MAX_DEVICES).enumerate() {
        assert!(!s.use_device(&u, d, T0 + i as u64).await.unwrap());
        s.advance_cursor(&u, d, &conv, 3, T0).await.unwrap();
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
