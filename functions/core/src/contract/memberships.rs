//! The store contract: memberships: watermarks and the conversation list.

use super::*;
use crate::protocol::ReadMark;

pub async fn watermark_only_moves_forward(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    let mut m = msg(&conv, &a, "c1", "x");
    m.enroll = vec![b.clone()];
    s.append(m).await.unwrap();
    let mark = |before, after| Some(Watermark { before, after });
    assert_eq!(s.advance_watermark(&b, &conv, 1).await.unwrap(), mark(0, 1));
    assert_eq!(s.advance_watermark(&b, &conv, 1).await.unwrap(), mark(1, 1));
    assert_eq!(s.advance_watermark(&b, &conv, 0).await.unwrap(), mark(1, 1));
    // Every member's watermark at once (the sender's moved to its message);
    // a stranger is left out.
    let mut marks = s
        .watermarks(&conv, &[a.clone(), b.clone(), unique("z")])
        .await
        .unwrap();
    marks.sort_by(|x, y| x.user_id.cmp(&y.user_id));
    let mut want = vec![
        ReadMark {
            user_id: a.clone(),
            up_to: 1,
        },
        ReadMark {
            user_id: b.clone(),
            up_to: 1,
        },
    ];
    want.sort_by(|x, y| x.user_id.cmp(&y.user_id));
    assert_eq!(marks, want);
    let m = s.membership(&b, &conv).await.unwrap().unwrap();
    assert_eq!(m.acked_up_to, 1);
    // Enrolled by a first direct message: joined at the start, whatever
    // its watermark is now (the sender's too).
    assert_eq!(m.joined_at_id, 0);
    assert_eq!(
        s.membership(&a, &conv).await.unwrap().unwrap().joined_at_id,
        0
    );
    assert_eq!(
        s.advance_watermark(&unique("z"), &conv, 1).await.unwrap(),
        None
    );
}

pub async fn conversations_list_memberships_with_newest_id(s: Arc<dyn Store>) {
    let (a, b, c) = (unique("a"), unique("b"), unique("c"));
    let (ab, ac) = (dm(&a, &b), dm(&a, &c));
    for i in 0..3 {
        s.append(msg(&ab, &b, &format!("b{i}"), "x")).await.unwrap();
    }
    let mut m = msg(&ac, &a, "a0", "x");
    m.enroll = vec![c.clone()];
    s.append(m).await.unwrap();
    let mut m = msg(&ab, &a, "a1", "x");
    m.enroll = vec![b.clone()];
    s.append(m).await.unwrap();
    let mut list = s.conversations(&a).await.unwrap();
    list.sort_by(|x, y| {
        x.membership
            .conversation_id
            .cmp(&y.membership.conversation_id)
    });
    let got: Vec<(String, u64, u64)> = list
        .iter()
        .map(|c| {
            (
                c.membership.conversation_id.clone(),
                c.last_message_id,
                c.membership.acked_up_to,
            )
        })
        .collect();
    let mut want = vec![(ab.clone(), 4, 4), (ac.clone(), 1, 1)];
    want.sort();
    assert_eq!(got, want);
    assert!(s.conversations(&unique("nobody")).await.unwrap().is_empty());
}

pub async fn conversations_come_in_pages_by_id(s: Arc<dyn Store>) {
    let me = unique("p");
    let mut convs = Vec::new();
    for i in 0..7 {
        let peer = format!("{}{i}", unique("q"));
        let conv = dm(&me, &peer);
        s.append(msg(&conv, &me, &format!("c{i}"), "hello"))
            .await
            .unwrap();
        convs.push(conv);
    }
    convs.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = s
            .conversations_page(&me, after.as_deref(), 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|c| c.membership.conversation_id.clone()));
        assert!(page.iter().all(|c| c.last_message_id == 1));
        if !more {
            break;
        }
        after = page.last().map(|c| c.membership.conversation_id.clone());
    }
    assert_eq!(seen, convs, "every conversation once, in id order");
    let (first, more) = s.conversations_page(&me, None, 100).await.unwrap();
    assert_eq!((first.len(), more), (7, false));
}
