//! `conn-tier admin verify FILE`: whether a backup (or a stopped server's
//! data: its `chat.redb`, or its `chat.fjall` directory) can be trusted (docs/operations.md, "Backup and restore").
//!
//! It opens the file read-only (never repairs or writes it) and checks:
//! - the format version: one this build reads;
//! - the content hash recorded by the backup, computed again;
//! - every table's invariants: each conversation's ids gapless from 1 to
//!   its counter; resend records pointing at the very message they name
//!   (same sender, same `client_msg_id`);
//!   watermarks, join points, newest-sent marks and device cursors at or
//!   below their conversation's newest id; every group member with a
//!   membership row and a group, and every group membership row with a
//!   member; every record body readable.

use crate::backup::{
    self, each, read_failed, Copier, Counts, Progress, COUNTS_KEY, HASH_KEY, TAKEN_KEY,
};
use crate::error::Error;
use crate::format;
use crate::kv::{Get, Snap};
use crate::tables::*;
use redb::{ReadOnlyDatabase, ReadableDatabase};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Problems listed one by one; past this many they are only counted.
const LISTED: usize = 50;

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub format: u64,
    pub counts: Counts,
    /// The content hash computed now.
    pub hash: String,
    /// The hash the backup recorded (`None`: a data file, not a backup).
    pub recorded_hash: Option<String>,
    pub taken_at_ms: Option<u64>,
    /// What is wrong, the first [`LISTED`].
    pub problems: Vec<String>,
    /// How many problems in all.
    pub problem_count: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < LISTED {
            self.problems.push(p);
        }
    }
}

/// Checks `file`. `Err` when it cannot be read as a chat data file at all
/// (truncated, not redb, a newer format); otherwise the report, whose
/// `problems` say what is wrong.
pub fn verify(file: &Path, progress: &mut dyn FnMut(Progress<'_>)) -> Result<VerifyReport, Error> {
    // A damaged file must give an answer, never a crash: whatever the
    // reader does on bytes it does not expect is caught.
    let path = file.to_path_buf();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        verify_inner(&path, progress)
    }));
    match caught {
        Ok(r) => r,
        Err(_) => Err(Error::Admin(format!(
            "{} is damaged: reading it failed part-way",
            file.display()
        ))),
    }
}

fn verify_inner(
    file: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<VerifyReport, Error> {
    let unreadable = |e: String| {
        Error::Admin(format!(
            "{} is not a readable chat data file ({e}): truncated, damaged, or not a backup",
            file.display()
        ))
    };
    if file.is_dir() {
        // A fjall data directory: opened as a server start would (its
        // journal recovered).
        return backup::with_snapshot(file, |snap| check(snap, file, progress, &unreadable));
    }
    if !file.is_file() {
        return Err(Error::Admin(format!("no file at {}", file.display())));
    }
    let db = match ReadOnlyDatabase::open(file) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(backup::in_use(file)),
        // Read-only, verify never repairs.
        Err(redb::DatabaseError::RepairAborted) => {
            return Err(Error::Admin(format!(
                "{} needs recovering: it was not closed cleanly (its server crashed or was killed), or it is damaged (truncated). verify never repairs a file: a data file, back it up (conn-tier admin backup recovers it, as a server start would) and verify the backup; a backup, it cannot be used",
                file.display()
            )))
        }
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let txn = db.begin_read().map_err(|e| unreadable(e.to_string()))?;
    let mut snap = Snap::Redb(crate::kv::redb::Snap::new(txn));
    check(&mut snap, file, progress, &unreadable)
}

/// The checks, on one snapshot.
fn check(
    snap: &mut Snap,
    file: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
    unreadable: &dyn Fn(String) -> Error,
) -> Result<VerifyReport, Error> {
    let mut report = VerifyReport::default();
    let (found, recorded, taken, counts_recorded) =
        meta(snap).map_err(|e| unreadable(e.to_string()))?;
    match found {
        None => report.problem("no format version recorded: not a file of this chat server, or one from before versions were kept".into()),
        Some(v) if v > format::FORMAT_VERSION => {
            return Err(Error::NewerFormat { path: file.to_path_buf(), found: v })
        }
        Some(v) if v < 1 => report.problem(format!("format version {v} is not one this server ever wrote")),
        Some(v) => report.format = v,
    }
    let mut copier = Copier {
        src: snap,
        to: None,
        hash: Sha256::new(),
        progress,
        stop: &|| false,
    };
    report.counts = backup::each_table(&mut copier).map_err(|e| unreadable(e.to_string()))?;
    report.hash = hex::encode(copier.hash.finalize());
    report.recorded_hash = recorded;
    report.taken_at_ms = taken;
    if let Some(h) = &report.recorded_hash {
        if *h != report.hash {
            report.problem(format!(
                "the content hash is {}, but the backup recorded {h}: the file changed after it was written",
                report.hash
            ));
        }
    }
    if let Some(c) = counts_recorded {
        if c != report.counts {
            report.problem(format!(
                "the rows counted ({:?}) differ from those the backup recorded ({c:?})",
                report.counts
            ));
        }
    }
    invariants(snap, &mut report).map_err(|e| unreadable(e.to_string()))?;
    Ok(report)
}

type Meta = (Option<u64>, Option<String>, Option<u64>, Option<Counts>);

fn meta(snap: &mut Snap) -> Result<Meta, Error> {
    let format = snap
        .meta(format::FORMAT_KEY)?
        .map(|v| {
            v.parse()
                .map_err(|_| Error::Corrupt(format!("format version {v:?}")))
        })
        .transpose()?;
    let taken = snap.meta(TAKEN_KEY)?.and_then(|v| v.parse().ok());
    let counts = snap
        .meta(COUNTS_KEY)?
        .and_then(|v| serde_json::from_str(&v).ok());
    Ok((format, snap.meta(HASH_KEY)?, taken, counts))
}

fn invariants(snap: &mut Snap, r: &mut VerifyReport) -> Result<(), Error> {
    // Each conversation's counter.
    let mut last: HashMap<String, u64> = HashMap::new();
    each::<LastId>(snap, |_, conv, n| {
        last.insert(conv, n);
        Ok(())
    })?;
    let newest = |conv: &str| last.get(conv).copied().unwrap_or(0);
    // Messages: gapless from 1 to the counter, bodies readable.
    let mut seen: HashSet<String> = HashSet::new();
    let mut current: Option<(String, u64)> = None;
    let finish = |r: &mut VerifyReport, conv: &str, top: u64| {
        if top != newest(conv) {
            r.problem(format!(
                "conversation {conv}: its newest message is {top}, but its id counter is {}",
                newest(conv)
            ));
        }
    };
    each::<Messages>(snap, |_, (conv, id), v| {
        if serde_json::from_slice::<MessageBody>(&v).is_err() {
            r.problem(format!("message {conv}/{id}: its record cannot be read"));
        }
        let expected = match &current {
            Some((c, top)) if *c == conv => top + 1,
            Some((c, top)) => {
                finish(r, c, *top);
                1
            }
            None => 1,
        };
        if id != expected {
            r.problem(format!(
                "conversation {conv}: message {id} where {expected} was expected (ids must be gapless from 1)"
            ));
        }
        if current.as_ref().map(|(c, _)| c.as_str()) != Some(conv.as_str()) {
            seen.insert(conv.clone());
        }
        current = Some((conv, id));
        Ok(())
    })?;
    if let Some((c, top)) = current {
        finish(r, &c, top);
    }
    for (conv, n) in &last {
        if *n > 0 && !seen.contains(conv) {
            r.problem(format!(
                "conversation {conv}: its id counter is {n}, but it has no messages"
            ));
        }
    }
    each::<Idempotency>(snap, |snap, (sender, cmid), (conv, id)| {
        let named = snap
            .get::<Messages>(&(conv.clone(), id))
            .map_err(read_failed)?
            .map(|b| match serde_json::from_slice::<MessageBody>(&b) {
                Ok(b) => b.sender == sender && b.client_msg_id == cmid,
                // Reported as unreadable already.
                Err(_) => true,
            });
        match named {
            None => r.problem(format!(
                "the resend record of {sender}'s {cmid:?} points at {conv}/{id}, which is not stored"
            )),
            Some(false) => r.problem(format!(
                "the resend record of {sender}'s {cmid:?} points at {conv}/{id}, another sender's or another send's message"
            )),
            Some(true) => {}
        }
        Ok(())
    })?;
    // Memberships: marks at or below the newest id; group rows both ways.
    let mut group_rows: HashSet<(String, String)> = HashSet::new();
    each::<Users>(snap, |_, (user, conv), v| {
        let Ok(m) = serde_json::from_slice::<MembershipBody>(&v) else {
            r.problem(format!(
                "membership {user} in {conv}: its record cannot be read"
            ));
            return Ok(());
        };
        let top = newest(&conv);
        for (what, n) in [
            ("watermark", m.acked_up_to),
            ("join point", m.joined_at_id),
            ("newest sent", m.last_sent),
        ] {
            if n > top {
                r.problem(format!(
                    "membership {user} in {conv}: its {what} {n} is past the newest message {top}"
                ));
            }
        }
        if let Some(g) = conv.strip_prefix("grp#") {
            group_rows.insert((g.to_string(), user));
        }
        Ok(())
    })?;
    let mut groups: HashSet<String> = HashSet::new();
    each::<Groups>(snap, |_, g, v| {
        if serde_json::from_slice::<GroupBody>(&v).is_err() {
            r.problem(format!("group {g}: its record cannot be read"));
        }
        groups.insert(g);
        Ok(())
    })?;
    each::<GroupMembers>(snap, |_, (g, user), _| {
        if !groups.contains(&g) {
            r.problem(format!("member {user} of group {g}: no such group"));
        }
        if !group_rows.remove(&(g.clone(), user.clone())) {
            r.problem(format!(
                "member {user} of group {g}: no membership row for grp#{g}"
            ));
        }
        Ok(())
    })?;
    for (g, user) in group_rows {
        r.problem(format!(
            "membership {user} in grp#{g}: not a member of the group"
        ));
    }
    each::<Cursors>(snap, |_, (user, device, conv), (cursor, _)| {
        if cursor > newest(&conv) {
            r.problem(format!(
                "device {device} of {user}: its cursor {cursor} in {conv} is past the newest message {}",
                newest(&conv)
            ));
        }
        Ok(())
    })?;
    Ok(())
}
