use super::*;
use axum::extract::ws::Utf8Bytes;

fn text(n: usize) -> Outbound {
    Outbound::Text(Utf8Bytes::from("x".repeat(n)))
}

#[tokio::test]
async fn a_live_frame_past_the_byte_limit_overflows_and_nothing_more_is_queued() {
    let (out, mut inbox) = outbox(100);
    out.push(text(60)).unwrap();
    out.push(text(40)).unwrap();
    assert_eq!(out.queued(), 100);
    assert_eq!(out.push(text(1)), Err(Full::Overflow));
    // The overflow is the writer's cue to close.
    tokio::time::timeout(Duration::from_secs(1), out.kicked())
        .await
        .expect("kicked");
    // The writer still drains what was queued; nothing more is taken.
    inbox.recv().await.unwrap();
    assert_eq!(out.queued(), 40);
    assert_eq!(out.push(text(60)), Err(Full::Overflow));
}

#[tokio::test]
async fn room_freed_by_the_writer_takes_a_live_frame() {
    let (out, mut inbox) = outbox(100);
    out.push(text(100)).unwrap();
    inbox.recv().await.unwrap();
    out.push(text(100)).unwrap();
    assert_eq!(out.queued(), 100);
}

#[tokio::test(start_paused = true)]
async fn an_answer_waits_for_room_and_overflows_only_after_its_patience() {
    let (out, mut inbox) = outbox(100);
    out.push(text(100)).unwrap();
    let waiting = {
        let out = out.clone();
        tokio::spawn(async move { out.push_when_room(text(50), Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    inbox.recv().await.unwrap();
    assert_eq!(waiting.await.unwrap(), Ok(()));
    assert_eq!(out.queued(), 50);
    // Nobody reads: after its patience, the answer gives up and kicks.
    out.push(text(50)).unwrap();
    let r = out.push_when_room(text(10), Duration::from_secs(10)).await;
    assert_eq!(r, Err(Full::Overflow));
    // Once too slow, nothing more is queued, even what would fit.
    inbox.recv().await.unwrap();
    assert_eq!(out.push(text(1)), Err(Full::Overflow));
    let r = out.push_when_room(text(1), Duration::from_secs(10)).await;
    assert_eq!(r, Err(Full::Overflow));
}

#[tokio::test]
async fn an_idle_queue_holds_no_buffer_before_the_first_frame_or_after_a_burst() {
    let (out, mut inbox) = outbox(1 << 20);
    assert_eq!(out.shared.queue().frames.capacity(), 0);
    for _ in 0..100 {
        out.push(text(10)).unwrap();
    }
    for _ in 0..100 {
        inbox.recv().await.unwrap();
    }
    assert_eq!(out.shared.queue().frames.capacity(), 0);
    assert_eq!(inbox.taken.capacity(), 0);
    assert_eq!(out.queued(), 0);
}

#[tokio::test]
async fn the_writer_gets_what_was_queued_then_the_end_once_every_sender_is_gone() {
    let (out, mut inbox) = outbox(100);
    let other = out.clone();
    out.push(text(1)).unwrap();
    other.push(text(2)).unwrap();
    drop(out);
    let waiting = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(o) = inbox.recv().await {
            got.push(o.bytes());
        }
        got
    });
    tokio::task::yield_now().await;
    other.push(text(3)).unwrap();
    drop(other);
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("recv ends")
        .unwrap();
    assert_eq!(got, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_frame_for_a_writer_that_is_gone_is_refused_and_not_counted() {
    let (out, inbox) = outbox(100);
    out.push(text(10)).unwrap();
    drop(inbox);
    assert_eq!(out.queued(), 0, "what was left is uncounted");
    assert_eq!(out.push(text(1)), Err(Full::Closed));
    assert_eq!(
        out.push_when_room(text(1), Duration::from_secs(1)).await,
        Err(Full::Closed)
    );
    assert_eq!(out.queued(), 0);
}
