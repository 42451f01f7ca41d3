//! `conn-tier admin restore FILE --data-dir DIR`: a verified backup put in
//! place as `DIR/chat.redb` (docs/operations.md, "Backup and restore").
//!
//! - The backup is verified first; one with any problem is refused.
//! - A data directory whose file a running server holds is refused (the
//!   file's lock says so); so is one that holds data, unless `force`, and
//!   then the old file is kept beside it as `chat.redb.replaced-<ms>`.
//! - While it swaps, it holds the old file's lock, so a server starting
//!   meanwhile is refused rather than opening a file that is replaced
//!   under it.
//! - The copy is written as `chat.redb.restoring`, made durable, then
//!   renamed over `chat.redb` in one step (the old file is first linked
//!   aside): a crash mid-way leaves the old file, never half a new one or
//!   none.
//!   The backup's hash is removed from the copy (the server will write to
//!   it), and where it came from is recorded (`restored.from`).

use crate::backup::{sync_dir, Progress, COUNTS_KEY, HASH_KEY, TAKEN_KEY};
use crate::error::Error;
use crate::format::META;
use crate::verify::{verify, VerifyReport};
use crate::EngineKind;
use redb::Database;
use std::path::{Path, PathBuf};

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub path: PathBuf,
    /// Where the file it replaced was kept (`force`).
    pub replaced: Option<PathBuf>,
    pub verified: VerifyReport,
}

pub fn restore(
    file: &Path,
    data_dir: &Path,
    force: bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<RestoreReport, Error> {
    let io = |context: String| move |source| Error::Io { context, source };
    let verified = verify(file, progress)?;
    if !verified.ok() {
        return Err(Error::Admin(format!(
            "{} did not verify ({} problems; the first: {}): not restored",
            file.display(),
            verified.problem_count,
            verified.problems.first().map(String::as_str).unwrap_or("?")
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(io(format!("creating {}", data_dir.display())))?;
    if data_dir.join(EngineKind::Fjall.data_name()).exists() {
        // A backup is a redb file: it never lands beside fjall data.
        return Err(Error::Admin(format!(
            "{} holds fjall data (chat.fjall): a backup restores as redb data, so restore into an empty directory (then run it with --engine redb, or move it to fjall with conn-tier admin export and import)",
            data_dir.display()
        )));
    }
    let target = data_dir.join("chat.redb");
    // Held until the swap is done: a server cannot open the old file meanwhile.
    let mut held = None;
    let mut replaced = None;
    if target.exists() {
        match Database::open(&target) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::Admin(format!(
                    "{} is in use by a running chat server: stop it before restoring into {}",
                    target.display(),
                    data_dir.display()
                )))
            }
            // A file that does not even open holds nothing to keep: it
            // is set aside below all the same.
            other => held = other.ok(),
        }
        if !force {
            return Err(Error::Admin(format!(
                "{} already holds a data file: restore into an empty directory, or pass --force to replace it (it is kept as chat.redb.replaced-<time>)",
                data_dir.display()
            )));
        }
    }
    let restoring = data_dir.join("chat.redb.restoring");
    let _ = std::fs::remove_file(&restoring);
    std::fs::copy(file, &restoring).map_err(io(format!(
        "copying {} to {}",
        file.display(),
        restoring.display()
    )))?;
    {
        let db = Database::open(&restoring).map_err(Error::db)?;
        let txn = db.begin_write().map_err(Error::db)?;
        {
            let mut meta = txn.open_table(META).map_err(Error::db)?;
            for k in [HASH_KEY, TAKEN_KEY, COUNTS_KEY] {
                meta.remove(k).map_err(Error::db)?;
            }
            let from = format!("{} (hash {})", file.display(), verified.hash);
            meta.insert("restored.from", from.as_str())
                .map_err(Error::db)?;
        }
        txn.commit().map_err(Error::db)?;
    }
    // The old file is kept by a second name, then the new one replaces it
    // in one rename: at every moment `chat.redb` is one whole file.
    if target.exists() {
        let aside = data_dir.join(format!("chat.redb.replaced-{}", chat_core::time::now_ms()));
        if std::fs::hard_link(&target, &aside).is_err() {
            // No links on this file system: two renames (a crash between
            // them leaves the old file beside, under its new name).
            std::fs::rename(&target, &aside)
                .map_err(io(format!("moving {} aside", target.display())))?;
        }
        replaced = Some(aside);
    }
    std::fs::rename(&restoring, &target)
        .map_err(io(format!("renaming {}", restoring.display())))?;
    sync_dir(&target)?;
    drop(held);
    Ok(RestoreReport {
        path: target,
        replaced,
        verified,
    })
}
