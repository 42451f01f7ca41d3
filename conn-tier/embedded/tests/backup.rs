//! Backup, verify and restore of the embedded store, on real files
//! (docs/operations.md, "Backup and restore"), and the file's format
//! version.

use chat_core::ports::*;
use chat_embedded::backup::{backup_offline, BackupReport};
use chat_embedded::restore::restore;
use chat_embedded::verify::verify;
use chat_embedded::{EmbeddedStore, EngineKind, Error, FORMAT_VERSION};
use redb::{ReadableDatabase, TableDefinition};
use std::path::Path;
use std::sync::Arc;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const USERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("users");

fn message(conv: &str, sender: &str, n: u64, to: &str) -> NewMessage {
    NewMessage {
        conversation_id: conv.into(),
        sender: sender.into(),
        client_msg_id: format!("{sender}-{n}"),
        text: format!("text number {n} from {sender}"),
        sent_at_ms: n,
        enroll: vec![to.into()],
        origin: None,
        member_only: false,
    }
}

/// A store with direct messages, a group and its messages, a watermark
/// and a device.
async fn filled(dir: &Path, n: u64) -> EmbeddedStore {
    let s = EmbeddedStore::open(dir).unwrap();
    // Concurrently: they share group commits.
    let appends = (1..=n).map(|i| s.append(message("dm#a#b", "a", i, "b")));
    for r in futures_util::future::join_all(appends).await {
        r.unwrap();
    }
    let member = |u: &str, seq| GroupMember::founding(u, 1, seq);
    s.create_group(&Group {
        group_id: "g1".into(),
        name: "g".into(),
        created_by: "a".into(),
        created_at_ms: 1,
        admins: vec!["a".into()],
        members: vec![member("a", 0), member("b", 1), member("c", 2)],
        version: 1,
        next_seq: 3,
    })
    .await
    .unwrap();
    for i in 1..=3 {
        let mut m = message("grp#g1", "c", i, "c");
        m.enroll.clear();
        m.member_only = true;
        s.append(m).await.unwrap();
    }
    s.advance_watermark("b", "dm#a#b", n / 2).await.unwrap();
    s.use_device("b", "phone", 5).await.unwrap();
    s
}

fn backup(s: &EmbeddedStore, to: &Path) -> BackupReport {
    let mut calls = 0;
    let r = s.backup(to, &mut |_| calls += 1).unwrap();
    assert!(calls > 0, "progress is reported");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writes_go_on_verifies_and_restores_to_a_store_that_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(filled(&dir.path().join("data"), 200).await);
    // Writes keep coming before, while and after the backup is taken.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, done) = (s.clone(), done.clone());
        tokio::spawn(async move {
            let mut i = 201;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || i < 260 {
                s.append(message("dm#a#b", "a", i, "b")).await.unwrap();
                i += 1;
            }
            i - 1
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let to = dir.path().join("backup.redb");
    let report = {
        let (s, to) = (s.clone(), to.clone());
        tokio::task::spawn_blocking(move || backup(&s, &to))
            .await
            .unwrap()
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert_eq!(report.format, FORMAT_VERSION);
    // The backup holds a prefix of the writes: some came after it.
    assert!(report.counts.messages - 3 < written, "{report:?} {written}");
    assert_eq!(report.counts.groups, 1);
    assert_eq!(report.counts.group_members, 3);
    assert_eq!(report.counts.devices, 1);
    assert!(report.counts.messages > 203, "{report:?}");
    assert_eq!(std::fs::metadata(&to).unwrap().len(), report.bytes);
    // A second backup to the same file is refused: nothing is overwritten.
    let again = s.backup(&to, &mut |_| {}).unwrap_err().to_string();
    assert!(again.contains("exists"), "{again}");

    let v = verify(&to, &mut |_| {}).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!(v.hash, report.hash);
    assert_eq!(v.recorded_hash.as_deref(), Some(report.hash.as_str()));
    assert_eq!(v.counts, report.counts);

    let restored_dir = dir.path().join("restored");
    let r = restore(&to, &restored_dir, false, &mut |_| {}).unwrap();
    assert_eq!(r.replaced, None);
    let t = EmbeddedStore::open(&restored_dir).unwrap();
    // One consistent snapshot: the direct chat's ids are gapless, and its
    // counter is the newest of them (no half of a commit).
    let direct_msgs = report.counts.messages - 3;
    let got = t.messages_after("dm#a#b", 0, 1000).await.unwrap();
    let ids: Vec<u64> = got.iter().map(|m| m.message_id).collect();
    assert_eq!(ids, (1..=direct_msgs).collect::<Vec<_>>());
    assert_eq!(t.last_message_id("dm#a#b").await.unwrap(), direct_msgs);
    assert!(got.iter().any(|m| m.text == "text number 1 from a"));
    let g = t.group("g1").await.unwrap().unwrap();
    assert_eq!(g.members.len(), 3);
    assert_eq!(
        t.membership("b", "dm#a#b")
            .await
            .unwrap()
            .unwrap()
            .acked_up_to,
        100
    );
    // Numbering carries on, and a resend of a message in the backup is
    // recognised as one.
    let next = t.append(message("dm#a#b", "a", 9999, "b")).await.unwrap();
    assert_eq!(next.message.message_id, direct_msgs + 1);
    let resent = t.append(message("dm#a#b", "a", 1, "b")).await.unwrap();
    assert!(resent.duplicate);
    assert_eq!(resent.message.message_id, 1);
    drop(t);
    // The restored file is a data file now: no backup hash, still valid.
    let v = verify(&restored_dir.join("chat.redb"), &mut |_| {}).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!(v.recorded_hash, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_live_data_dir_and_replaces_a_stopped_one_only_when_forced() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let s = filled(&live, 10).await;
    let to = dir.path().join("b.redb");
    backup(&s, &to);
    let err = restore(&to, &live, true, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by a running chat server"), "{err}");
    drop(s);
    // Stopped, but holding data: only with force, and the old file is kept.
    let other = dir.path().join("other");
    drop(filled(&other, 3).await);
    let err = restore(&to, &other, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("--force"), "{err}");
    let r = restore(&to, &other, true, &mut |_| {}).unwrap();
    let aside = r.replaced.expect("the replaced file is kept");
    assert!(aside.exists());
    let t = EmbeddedStore::open(&other).unwrap();
    assert_eq!(t.last_message_id("dm#a#b").await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_backup_of_a_stopped_server_equals_the_online_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = filled(&data, 50).await;
    let online = backup(&s, &dir.path().join("online.redb"));
    // Refused while the store is open: it names the way through the server.
    let err = backup_offline(&data, &dir.path().join("x.redb"), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("admin socket"), "{err}");
    drop(s);
    let offline = backup_offline(&data, &dir.path().join("offline.redb"), &mut |_| {}).unwrap();
    assert_eq!(offline.hash, online.hash);
    assert_eq!(offline.counts, online.counts);
}

/// A backup of a small store, for the damage tests.
async fn small_backup(dir: &Path) -> std::path::PathBuf {
    let s = filled(&dir.join("data"), 20).await;
    let to = dir.join("b.redb");
    backup(&s, &to);
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_truncated_file_a_flipped_byte_and_another_format_version() {
    let dir = tempfile::tempdir().unwrap();
    let good = small_backup(dir.path()).await;
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.redb");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = verify(&truncated, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("damaged (truncated)"), "{err}");

    // One byte of a message's text, changed in place.
    let needle = b"text number 7 from a";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the text is in the file");
    let mut flipped = bytes.clone();
    flipped[at + 5] ^= 0x01;
    let flipped_path = dir.path().join("flipped.redb");
    std::fs::write(&flipped_path, &flipped).unwrap();
    let report = verify(&flipped_path, &mut |_| {}).unwrap();
    assert!(!report.ok());
    assert!(
        report.problems.iter().any(|p| p.contains("content hash")),
        "{:?}",
        report.problems
    );

    let newer = dir.path().join("newer.redb");
    std::fs::write(&newer, &bytes).unwrap();
    set_meta(&newer, "format", &(FORMAT_VERSION + 1).to_string());
    let err = verify(&newer, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::NewerFormat { .. }), "{err}");
    assert!(err
        .to_string()
        .contains(&format!("format version {}", FORMAT_VERSION + 1)));

    // Whatever byte is damaged, an answer, never a panic; and a file that
    // verifies has the content the backup recorded.
    let recorded = verify(&good, &mut |_| {}).unwrap().hash;
    let (mut refused, mut problems, mut clean) = (0, 0, 0);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..200 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut damaged = bytes.clone();
        let i = (rng as usize) % damaged.len();
        damaged[i] = damaged[i].wrapping_add(1 + ((rng >> 32) as u8) % 255);
        let p = dir.path().join("damaged.redb");
        std::fs::write(&p, &damaged).unwrap();
        match verify(&p, &mut |_| {}) {
            Err(_) => refused += 1,
            Ok(r) if !r.ok() => problems += 1,
            Ok(r) => {
                // The byte was in space no row uses.
                assert_eq!(r.hash, recorded);
                clean += 1;
            }
        }
    }
    eprintln!("200 damaged files: {refused} unreadable, {problems} with problems, {clean} clean");
    assert!(refused + problems > 0);
}

fn set_meta(file: &Path, key: &str, value: &str) {
    let db = redb::Database::open(file).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META).unwrap().insert(key, value).unwrap();
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_gap_a_watermark_past_the_newest_id_and_a_member_without_a_membership() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(filled(&data, 20).await);
    let file = data.join("chat.redb");
    assert!(verify(&file, &mut |_| {}).unwrap().ok());
    {
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(MESSAGES)
                .unwrap()
                .remove(("dm#a#b", 7))
                .unwrap();
            let mut users = txn.open_table(USERS).unwrap();
            users
                .insert(
                    ("b", "dm#a#b"),
                    br#"{"acked_up_to":99,"joined_at_ms":1}"#.as_slice(),
                )
                .unwrap();
            users.remove(("c", "grp#g1")).unwrap();
        }
        txn.commit().unwrap();
    }
    let r = verify(&file, &mut |_| {}).unwrap();
    assert_eq!(r.recorded_hash, None, "a data file has no backup hash");
    let all = r.problems.join("\n");
    assert!(all.contains("message 8 where 7 was expected"), "{all}");
    assert!(
        all.contains("watermark 99 is past the newest message 20"),
        "{all}"
    );
    assert!(
        all.contains("member c of group g1: no membership row"),
        "{all}"
    );
    // The resend record of the removed message points at nothing.
    assert!(
        all.contains("a's \"a-7\" points at dm#a#b/7, which is not stored"),
        "{all}"
    );
    assert_eq!(r.problem_count, 4, "{all}");
    // And restore refuses it.
    let err = restore(&file, &dir.path().join("r"), false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not verify"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_records_its_format_and_one_from_a_newer_build_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path()).unwrap());
    let file = dir.path().join("chat.redb");
    {
        let db = redb::ReadOnlyDatabase::open(&file).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(
            meta.get("format").unwrap().unwrap().value(),
            FORMAT_VERSION.to_string()
        );
    }
    set_meta(&file, "format", "99");
    let before = std::fs::read(&file).unwrap();
    let err = EmbeddedStore::open(dir.path()).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("format version 99"), "{text}");
    assert!(text.contains("newer build"), "{text}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the file is untouched"
    );
    // A file from before versions were kept is taken as version 1.
    let old = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(old.path()).unwrap());
    {
        let db = redb::Database::open(old.path().join("chat.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(META).unwrap();
        txn.commit().unwrap();
    }
    drop(EmbeddedStore::open(old.path()).unwrap());
    let v = verify(&old.path().join("chat.redb"), &mut |_| {}).unwrap();
    assert_eq!(v.format, 1);
}

/// The records of a stream, header left out, sorted (stores list them in
/// different orders).
fn records(stream: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = std::str::from_utf8(stream)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn export(file: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    chat_embedded::export::export_file(file, &mut out, &mut |_| {}).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imported_into_an_empty_store_exports_the_same_records_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(filled(&data, 30).await);
    let first = export(&data.join("chat.redb"));
    let header: serde_json::Value =
        serde_json::from_str(std::str::from_utf8(&first).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(header["kind"], "header");
    assert_eq!(header["counts"]["message"], 33);
    assert_eq!(header["counts"]["member"], 3);
    let moved = dir.path().join("moved");
    let report =
        chat_embedded::import::import(first.as_slice(), &moved, EngineKind::Redb, &mut |_| {})
            .unwrap();
    assert_eq!(report.loaded["message"], 33);
    let v = verify(&moved.join("chat.redb"), &mut |_| {}).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!(records(&export(&moved.join("chat.redb"))), records(&first));
    // The store on the imported file carries each conversation on.
    let s = EmbeddedStore::open(&moved).unwrap();
    let next = s.append(message("dm#a#b", "a", 500, "b")).await.unwrap();
    assert_eq!(next.message.message_id, 31);
    let marks = s.member_marks("g1").await.unwrap();
    assert_eq!(
        marks.iter().find(|m| m.user_id == "c").unwrap().last_sent,
        3
    );
    // Into a directory holding data: refused, nothing changed.
    drop(s);
    let err = chat_embedded::import::import(first.as_slice(), &data, EngineKind::Redb, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds other data"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_short_then_run_again_lands_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // More records than one import batch holds.
    drop(filled(&data, chat_embedded::import::BATCH + 2_000).await);
    let full = export(&data.join("chat.redb"));
    let moved = dir.path().join("moved");
    // A crash part-way: the stream ends after 70% of it.
    let cut = &full[..full.len() * 7 / 10];
    let cut = &cut[..=cut.iter().rposition(|b| *b == b'\n').unwrap()];
    let err = chat_embedded::import::import(cut, &moved, EngineKind::Redb, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("ends early"), "{err}");
    let again =
        chat_embedded::import::import(full.as_slice(), &moved, EngineKind::Redb, &mut |_| {})
            .unwrap();
    assert!(again.resumed_after_line > 0, "{again:?}");
    let loaded_twice: u64 = again.loaded.values().sum();
    assert!(loaded_twice < records(&full).len() as u64);
    assert_eq!(records(&export(&moved.join("chat.redb"))), records(&full));
    assert!(verify(&moved.join("chat.redb"), &mut |_| {}).unwrap().ok());
    // A third run finds it done and changes nothing.
    let third =
        chat_embedded::import::import(full.as_slice(), &moved, EngineKind::Redb, &mut |_| {})
            .unwrap();
    assert!(third.loaded.is_empty(), "{third:?}");
}

fn fjall_options() -> chat_embedded::Options {
    chat_embedded::Options {
        engine: EngineKind::Fjall,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_from_redb_to_fjall_and_back_by_export_and_import_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = filled(&data, chat_embedded::import::BATCH + 300).await;
    let redb_backup = backup(&s, &dir.path().join("redb.backup"));
    drop(s);
    let stream = export(&data.join("chat.redb"));
    let moved = dir.path().join("fjall");
    // Cut short first: the import into fjall resumes as into redb.
    let cut = &stream[..stream.len() * 6 / 10];
    let cut = &cut[..=cut.iter().rposition(|b| *b == b'\n').unwrap()];
    let err = chat_embedded::import::import(cut, &moved, EngineKind::Fjall, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("ends early"), "{err}");
    let report =
        chat_embedded::import::import(stream.as_slice(), &moved, EngineKind::Fjall, &mut |_| {})
            .unwrap();
    assert!(report.resumed_after_line > 0, "{report:?}");
    assert!(moved.join("chat.fjall").is_dir());
    assert!(!moved.join("chat.redb").exists());
    // The fjall directory verifies, and exports the very same records.
    let v = verify(&moved.join("chat.fjall"), &mut |_| {}).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!(v.counts, redb_backup.counts);
    assert_eq!(
        records(&export(&moved.join("chat.fjall"))),
        records(&stream)
    );
    // A backup of the fjall store is a redb file with the same content
    // hash as the redb store's backup: the same rows, in the same order.
    let f = EmbeddedStore::open_with(&moved, fjall_options()).unwrap();
    let fjall_backup = backup(&f, &dir.path().join("fjall.backup"));
    assert_eq!(fjall_backup.hash, redb_backup.hash);
    assert!(verify(&fjall_backup.path, &mut |_| {}).unwrap().ok());
    // The fjall store carries each conversation on.
    let next = f.append(message("dm#a#b", "a", 90_000, "b")).await.unwrap();
    assert_eq!(
        next.message.message_id,
        chat_embedded::import::BATCH + 300 + 1
    );
    drop(f);
    // And back to redb.
    let back = dir.path().join("back");
    let again = export(&moved.join("chat.fjall"));
    chat_embedded::import::import(again.as_slice(), &back, EngineKind::Redb, &mut |_| {}).unwrap();
    assert_eq!(records(&export(&back.join("chat.redb"))), records(&again));
    assert!(verify(&back.join("chat.redb"), &mut |_| {}).unwrap().ok());
    // An import never lands beside the other engine's data.
    let err =
        chat_embedded::import::import(again.as_slice(), &back, EngineKind::Fjall, &mut |_| {})
            .unwrap_err()
            .to_string();
    assert!(err.contains("--engine redb"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_fjall_store_backs_up_and_a_backup_never_restores_beside_fjall_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let s = EmbeddedStore::open_with(&data, fjall_options()).unwrap();
        for i in 1..=50 {
            s.append(message("dm#a#b", "a", i, "b")).await.unwrap();
        }
    }
    let to = dir.path().join("offline.backup");
    let report = backup_offline(&data, &to, &mut |_| {}).unwrap();
    assert_eq!(report.counts.messages, 50);
    assert!(verify(&to, &mut |_| {}).unwrap().ok());
    let err = restore(&to, &data, true, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds fjall data"), "{err}");
    assert!(!data.join("chat.redb").exists());
    // Into an empty directory it restores as redb data.
    let restored = dir.path().join("restored");
    restore(&to, &restored, false, &mut |_| {}).unwrap();
    let t = EmbeddedStore::open(&restored).unwrap();
    assert_eq!(t.last_message_id("dm#a#b").await.unwrap(), 50);
}

#[test]
fn verify_and_export_refuse_a_fjall_directory_this_server_did_not_write_and_add_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("chat.fjall");
    {
        let db = fjall::SingleWriterTxDatabase::builder(&foreign)
            .open()
            .unwrap();
        let ks = db
            .keyspace("other", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        ks.insert("k", "v").unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = verify(&foreign, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("not a chat server's fjall data directory"),
        "{err}"
    );
    let mut out = Vec::new();
    let err = chat_embedded::export::export_file(&foreign, &mut out, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no meta keyspace"), "{err}");
    assert!(out.is_empty());
    // Nothing of ours was added to it.
    let db = fjall::SingleWriterTxDatabase::builder(&foreign)
        .open()
        .unwrap();
    assert!(!db.keyspace_exists("meta"));
    assert!(!db.keyspace_exists("messages"));
}
