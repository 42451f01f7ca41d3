//! The on-disk format version of `chat.redb` (docs/operations.md,
//! "Upgrading"): written when the file is created, checked at every open.
//!
//! - The same version: opened as is.
//! - A newer version (a file written by a later build): refused before
//!   anything is written, with [`Error::NewerFormat`], so an older build
//!   never misreads a table it does not know.
//! - An older version: upgraded in place, one step per version, in one
//!   transaction. There is none yet: version 1 is the first.
//! - No version (a file from before versions were kept): its tables are
//!   those of version 1, which is recorded.

use crate::error::Error;
use redb::{Database, ReadableDatabase, TableDefinition, TableError};
use std::path::Path;

/// The format this build writes and reads. Bump it (and add the upgrade
/// step from the one before) when a table or a record body changes in a
/// way an older build would misread.
pub const FORMAT_VERSION: u64 = 1;

/// meta: key -> value. `format` is the version; a backup adds `backup.*`.
pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
pub(crate) const FORMAT_KEY: &str = "format";

/// The version recorded in an open database; `None` if none is.
pub(crate) fn read(db: &impl ReadableDatabase) -> Result<Option<u64>, Error> {
    let txn = db.begin_read().map_err(Error::db)?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(Error::db(e)),
    };
    let Some(v) = meta.get(FORMAT_KEY).map_err(Error::db)? else {
        return Ok(None);
    };
    let text = v.value().to_string();
    text.parse()
        .map(Some)
        .map_err(|_| Error::Corrupt(format!("the format version {text:?} is not a number")))
}

/// Refuses a newer file untouched; records this build's version in a new
/// or unversioned file.
pub(crate) fn check_and_record(db: &Database, path: &Path) -> Result<(), Error> {
    match read(db)? {
        Some(found) if found > FORMAT_VERSION => Err(Error::NewerFormat {
            path: path.to_path_buf(),
            found,
        }),
        Some(FORMAT_VERSION) => Ok(()),
        // An older version would be upgraded here, step by step.
        _ => {
            let txn = db.begin_write().map_err(Error::db)?;
            {
                let mut meta = txn.open_table(META).map_err(Error::db)?;
                let v = FORMAT_VERSION.to_string();
                meta.insert(FORMAT_KEY, v.as_str()).map_err(Error::db)?;
            }
            txn.commit().map_err(Error::db)
        }
    }
}
