//! The store contract: groups: versioned changes, and removal racing a send.

use super::*;

pub async fn groups_change_only_at_the_expected_version(s: Arc<dyn Store>) {
    let gid = unique("g");
    let conv = ConversationId::group(&gid).to_string();
    let (a, b, c) = (unique("a"), unique("b"), unique("c"));
    let member = |u: &str, seq| GroupMember::founding(u, 1, seq);
    let group = Group {
        group_id: gid.clone(),
        name: "team ✨".into(),
        created_by: a.clone(),
        created_at_ms: 1,
        admins: vec![a.clone()],
        members: vec![member(&a, 0), member(&b, 1)],
        version: 1,
        next_seq: 2,
    };
    s.create_group(&group).await.unwrap();
    assert_eq!(s.group(&gid).await.unwrap().as_ref(), Some(&group));
    assert!(matches!(
        s.create_group(&group).await,
        Err(Error::Contended)
    ));
    assert_eq!(
        s.membership(&b, &conv).await.unwrap().unwrap().acked_up_to,
        0
    );
    s.append(msg(&conv, &a, "g1", "before c joined"))
        .await
        .unwrap();

    let add = GroupChange {
        group_id: gid.clone(),
        expected_version: 1,
        admins: vec![a.clone()],
        add: vec![GroupMember {
            joined_at_id: 1,
            ..member(&c, 2)
        }],
        remove: vec![],
    };
    let after = s.update_group(&add).await.unwrap();
    assert_eq!(after.version, 2);
    assert_eq!(after.member_ids(), vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(s.group(&gid).await.unwrap().unwrap(), after);
    // The member list keeps each member's join point (a fan-out filters by
    // it), as the membership does.
    let listed = s.group(&gid).await.unwrap().unwrap();
    assert_eq!(
        listed
            .members
            .iter()
            .map(|m| m.joined_at_id)
            .collect::<Vec<_>>(),
        vec![0, 0, 1]
    );
    let joined = s.membership(&c, &conv).await.unwrap().unwrap();
    assert_eq!(joined.acked_up_to, 1);
    // The join point: the newest id when c joined (sync never goes below).
    assert_eq!(joined.joined_at_id, 1);
    let first = s.membership(&b, &conv).await.unwrap().unwrap();
    assert_eq!(first.joined_at_id, 0, "a first member joined at the start");
    // A stale version loses, and changes nothing.
    let stale = GroupChange {
        remove: vec![b.clone()],
        add: vec![],
        ..add.clone()
    };
    assert!(matches!(
        s.update_group(&stale).await,
        Err(Error::Contended)
    ));
    assert_eq!(s.group(&gid).await.unwrap().unwrap().members.len(), 3);

    let remove = GroupChange {
        group_id: gid.clone(),
        expected_version: 2,
        admins: vec![b.clone()],
        add: vec![],
        remove: vec![a.clone()],
    };
    let after = s.update_group(&remove).await.unwrap();
    assert_eq!(after.member_ids(), vec![b.clone(), c.clone()]);
    assert_eq!(after.admins, vec![b.clone()]);
    assert!(s.membership(&a, &conv).await.unwrap().is_none());
    assert_eq!(s.group(&gid).await.unwrap().unwrap().next_seq, 3);
    assert!(s.group(&unique("nope")).await.unwrap().is_none());
}

/// A member's join point is the group's newest id when the add commits: an
/// add prepared before a message came in is refused (the service reads the
/// newest id again and retries), and changes nothing. Otherwise that
/// message, stored while the user was not a member, would be above their
/// join point and reach them.
pub async fn a_member_is_added_only_at_the_conversations_newest_id(s: Arc<dyn Store>) {
    let gid = unique("g");
    let conv = ConversationId::group(&gid).to_string();
    let (a, b) = (unique("a"), unique("b"));
    let member = |u: &str, seq, joined_at_id| GroupMember {
        joined_at_id,
        ..GroupMember::founding(u, 1, seq)
    };
    s.create_group(&Group {
        group_id: gid.clone(),
        name: "late".into(),
        created_by: a.clone(),
        created_at_ms: 1,
        admins: vec![a.clone()],
        members: vec![member(&a, 0, 0)],
        version: 1,
        next_seq: 1,
    })
    .await
    .unwrap();
    s.append(msg(&conv, &a, "m1", "one")).await.unwrap();
    let add = |joined_at_id| GroupChange {
        group_id: gid.clone(),
        expected_version: 1,
        admins: vec![a.clone()],
        add: vec![member(&b, 1, joined_at_id)],
        remove: vec![],
    };
    let prepared = add(1);
    // #2 comes in after the add read the newest id (1).
    s.append(msg(&conv, &a, "m2", "two")).await.unwrap();
    assert!(matches!(
        s.update_group(&prepared).await,
        Err(Error::Contended)
    ));
    assert_eq!(s.group_version(&gid).await.unwrap(), Some(1));
    assert!(s.membership(&b, &conv).await.unwrap().is_none());
    let after = s.update_group(&add(2)).await.unwrap();
    assert!(after.is_member(&b));
    let joined = s.membership(&b, &conv).await.unwrap().unwrap();
    assert_eq!((joined.joined_at_id, joined.acked_up_to), (2, 2));
}

pub async fn a_member_removed_while_sending_stays_removed(s: Arc<dyn Store>) {
    let gid = unique("g");
    let conv = ConversationId::group(&gid).to_string();
    let (admin, member) = (unique("a"), unique("m"));
    let joined = |u: &str, seq| GroupMember::founding(u, 1, seq);
    s.create_group(&Group {
        group_id: gid.clone(),
        name: "race".into(),
        created_by: admin.clone(),
        created_at_ms: 1,
        admins: vec![admin.clone()],
        members: vec![joined(&admin, 0), joined(&member, 1)],
        version: 1,
        next_seq: 2,
    })
    .await
    .unwrap();
    let sender = {
        let (s, conv, member) = (s.clone(), conv.clone(), member.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..30 {
                let mut m = msg(&conv, &member, &format!("r{i}"), "still here?");
                m.member_only = true;
                outcomes.push(s.append(m).await.map(|a| a.message.message_id));
                tokio::task::yield_now().await;
            }
            outcomes
        })
    };
    // The admin removes the member while the sends go on.
    tokio::task::yield_now().await;
    let group = s.group(&gid).await.unwrap().unwrap();
    s.update_group(&GroupChange {
        group_id: gid.clone(),
        expected_version: group.version,
        admins: vec![admin.clone()],
        add: vec![],
        remove: vec![member.clone()],
    })
    .await
    .unwrap();
    let outcomes = sender.await.unwrap();
    // A send never re-creates the membership...
    assert!(s.membership(&member, &conv).await.unwrap().is_none());
    assert_eq!(
        s.group(&gid).await.unwrap().unwrap().member_ids(),
        vec![admin.clone()]
    );
    // ...every send after the removal was refused...
    let stored: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().copied())
        .collect();
    for o in &outcomes {
        if let Err(e) = o {
            assert!(matches!(e, Error::Forbidden), "{e:?}");
        }
    }
    let first_refused = outcomes.iter().position(|o| o.is_err());
    if let Some(k) = first_refused {
        assert!(
            outcomes[k..].iter().all(|o| o.is_err()),
            "once removed, always refused"
        );
    }
    // ...and a send after it all is refused too; what was stored is gapless.
    let mut late = msg(&conv, &member, "late", "let me back in");
    late.member_only = true;
    assert!(matches!(s.append(late).await, Err(Error::Forbidden)));
    let ids: Vec<u64> = s
        .messages_after(&conv, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids, (1..=stored.len() as u64).collect::<Vec<_>>());
}

/// Group receipts' bookkeeping: each member's newest message (written by
/// the append itself) and read watermark, the version a member-list cache
/// checks, and a removed member's marks gone.
pub async fn a_group_keeps_each_members_newest_message_and_read_watermark(s: Arc<dyn Store>) {
    let gid = unique("g");
    let conv = ConversationId::group(&gid).to_string();
    let (a, b, c) = (unique("a"), unique("b"), unique("c"));
    let joined = |u: &str, seq| GroupMember::founding(u, 1, seq);
    assert_eq!(s.group_version(&gid).await.unwrap(), None);
    s.create_group(&Group {
        group_id: gid.clone(),
        name: "readers".into(),
        created_by: a.clone(),
        created_at_ms: 1,
        admins: vec![a.clone()],
        members: vec![joined(&a, 0), joined(&b, 1), joined(&c, 2)],
        version: 1,
        next_seq: 3,
    })
    .await
    .unwrap();
    assert_eq!(s.group_version(&gid).await.unwrap(), Some(1));
    let marks = |x: &str, last_sent, read_up_to| MemberMarks {
        user_id: x.to_string(),
        last_sent,
        read_up_to,
    };
    let sorted = |mut v: Vec<MemberMarks>| {
        v.sort_by(|x, y| x.user_id.cmp(&y.user_id));
        v
    };
    let want = sorted;
    assert_eq!(
        sorted(s.member_marks(&gid).await.unwrap()),
        want(vec![marks(&a, 0, 0), marks(&b, 0, 0), marks(&c, 0, 0)])
    );
    let send = |from: &str, id: &str| {
        let mut m = msg(&conv, from, id, "hi");
        m.member_only = true;
        m
    };
    s.append(send(&a, "a1")).await.unwrap(); // 1
    s.append(send(&b, "b1")).await.unwrap(); // 2
    s.append(send(&a, "a2")).await.unwrap(); // 3
                                             // A resend changes nothing.
    s.append(send(&b, "b1")).await.unwrap();
    // c reads up to 3: the membership's watermark, then the marks'.
    s.advance_watermark(&c, &conv, 3).await.unwrap();
    s.note_read(&gid, &c, 3).await.unwrap();
    s.note_read(&gid, &c, 2).await.unwrap(); // never back
                                             // A sender has read up to its own message.
    assert_eq!(
        sorted(s.member_marks(&gid).await.unwrap()),
        want(vec![marks(&a, 3, 3), marks(&b, 2, 2), marks(&c, 0, 3)])
    );
    s.append(send(&a, "a3")).await.unwrap(); // 4
                                             // Removing b bumps the version and forgets b's marks.
    s.update_group(&GroupChange {
        group_id: gid.clone(),
        expected_version: 1,
        admins: vec![a.clone()],
        add: vec![],
        remove: vec![b.clone()],
    })
    .await
    .unwrap();
    assert_eq!(s.group_version(&gid).await.unwrap(), Some(2));
    assert_eq!(
        sorted(s.member_marks(&gid).await.unwrap()),
        want(vec![marks(&a, 4, 4), marks(&c, 0, 3)])
    );
    // A member added now has read up to where it joined (the newest id).
    let d = unique("d");
    s.update_group(&GroupChange {
        group_id: gid.clone(),
        expected_version: 2,
        admins: vec![a.clone()],
        add: vec![GroupMember {
            joined_at_id: 4,
            ..joined(&d, 3)
        }],
        remove: vec![],
    })
    .await
    .unwrap();
    assert_eq!(
        sorted(s.member_marks(&gid).await.unwrap()),
        want(vec![marks(&a, 4, 4), marks(&c, 0, 3), marks(&d, 0, 4)])
    );
}
