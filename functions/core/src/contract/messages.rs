//! The store contract: messages: ids, idempotency, paging, sizes.

use super::*;

pub async fn ids_start_at_one_and_are_gapless(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    assert_eq!(s.last_message_id(&conv).await.unwrap(), 0);
    for i in 1..=3u64 {
        let r = s
            .append(msg(&conv, &a, &format!("c{i}"), &format!("m{i}")))
            .await
            .unwrap();
        assert!(!r.duplicate);
        assert_eq!(r.message.message_id, i);
    }
    assert_eq!(s.last_message_id(&conv).await.unwrap(), 3);
    let all = s.messages_after(&conv, 0, 10).await.unwrap();
    let ids: Vec<u64> = all.iter().map(|m| m.message_id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(all[1].text, "m2");
    assert_eq!(all[1].sender, a);
    assert_eq!(all[1].client_msg_id, "c2");
}

pub async fn resend_returns_original_and_stores_nothing(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    let first = s.append(msg(&conv, &a, "same", "hello")).await.unwrap();
    let again = s
        .append(msg(&conv, &a, "same", "hello, edited"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);
    // The id is scoped to the sender: another user may use the same one.
    let other = s.append(msg(&conv, &b, "same", "mine")).await.unwrap();
    assert!(!other.duplicate);
    assert_eq!(other.message.message_id, 2);
    assert_eq!(s.messages_after(&conv, 0, 10).await.unwrap().len(), 2);
}

pub async fn append_moves_sender_watermark_and_enrolls_recipient(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    let mut m = msg(&conv, &a, "c1", "hi");
    m.enroll = vec![b.clone()];
    s.append(m.clone()).await.unwrap();
    m.client_msg_id = "c2".into();
    s.append(m).await.unwrap();
    assert_eq!(
        s.membership(&a, &conv).await.unwrap().unwrap().acked_up_to,
        2
    );
    let mb = s.membership(&b, &conv).await.unwrap().unwrap();
    assert_eq!(mb.acked_up_to, 0);
    assert_eq!(mb.conversation_id, conv);
    assert!(s.membership(&unique("z"), &conv).await.unwrap().is_none());
}

pub async fn concurrent_appends_get_exactly_one_to_n(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    let n = 24u64;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let s = s.clone();
            let sender = if i % 2 == 0 { a.clone() } else { b.clone() };
            let conv = conv.clone();
            tokio::spawn(async move { s.append(msg(&conv, &sender, &format!("c{i}"), "x")).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().message.message_id);
    }
    ids.sort();
    assert_eq!(ids, (1..=n).collect::<Vec<_>>());
    let stored: Vec<u64> = s
        .messages_after(&conv, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(stored, (1..=n).collect::<Vec<_>>());
}

pub async fn history_pages_backwards(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    for i in 1..=7 {
        s.append(msg(&conv, &a, &format!("c{i}"), &format!("m{i}")))
            .await
            .unwrap();
    }
    let ids = |p: &HistoryPage| p.messages.iter().map(|m| m.message_id).collect::<Vec<_>>();
    let p = s.messages_before(&conv, None, 3).await.unwrap();
    assert_eq!((ids(&p), p.has_more), (vec![5, 6, 7], true));
    let p = s.messages_before(&conv, Some(5), 3).await.unwrap();
    assert_eq!((ids(&p), p.has_more), (vec![2, 3, 4], true));
    let p = s.messages_before(&conv, Some(2), 3).await.unwrap();
    assert_eq!((ids(&p), p.has_more), (vec![1], false));
    let p = s.messages_before(&conv, Some(100), 100).await.unwrap();
    assert_eq!((ids(&p).len(), p.has_more), (7, false));
    let p = s
        .messages_before(&dm(&unique("x"), &unique("y")), None, 10)
        .await
        .unwrap();
    assert_eq!((ids(&p).len(), p.has_more), (0, false));
}

pub async fn messages_after_pages_forwards(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    for i in 1..=5 {
        s.append(msg(&conv, &a, &format!("c{i}"), "x"))
            .await
            .unwrap();
    }
    let ids: Vec<u64> = s
        .messages_after(&conv, 2, 2)
        .await
        .unwrap()
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids, vec![3, 4]);
    assert!(s.messages_after(&conv, 5, 10).await.unwrap().is_empty());
}

pub async fn largest_text_round_trips(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    // 853 × 12 bytes + 4: exactly the 10,240-byte limit, in 1- to 4-byte characters.
    let text = "ü€😀\"\\\n".repeat(853) + "abcd";
    assert_eq!(text.len(), crate::protocol::MAX_TEXT_BYTES);
    s.append(msg(&conv, &a, "big", &text)).await.unwrap();
    assert_eq!(s.messages_after(&conv, 0, 1).await.unwrap()[0].text, text);
}
