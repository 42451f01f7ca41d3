//! `conn-tier admin …`: backup, verify and restore of the embedded store
//! (docs/operations.md, "Backup and restore").
//!
//! A subcommand of the server's own binary, not a binary of its own: the
//! one file a self-hoster installs can back itself up, and the admin code
//! is always the same build as the server whose file it reads (the format
//! version must match).
//!
//! # Layout
//! - this file: the commands' flags and what each prints;
//! - [`socket`]: the server's side, `DATA_DIR/admin.sock`, through which a
//!   running server takes an online backup.
//! - [`transfer`]: `export` and `import`, embedded or DynamoDB.

pub mod socket;
pub mod transfer;

use chat_embedded::backup::{self, BackupReport, Progress};
use clap::{Parser, Subcommand};
use socket::{Answer, Request};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// conn-tier admin: back up, check and restore the embedded store's data.
#[derive(Debug, Parser)]
#[command(name = "conn-tier admin")]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A consistent backup of a data directory, while its server runs
    /// (through its admin socket) or when it is stopped.
    Backup {
        /// The server's data directory.
        #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The backup file to write (never overwritten).
        #[arg(long)]
        to: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Checks a backup (or a stopped server's chat.redb, or its chat.fjall
    /// directory): its format version, its content hash, every table's
    /// invariants.
    Verify {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Puts a verified backup in place as DATA_DIR/chat.redb (a backup of
    /// either engine is redb data). The server must be stopped.
    Restore {
        file: PathBuf,
        #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Replace a data file already there (kept as chat.redb.replaced-<ms>).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Writes a store as a portable JSON Lines stream (records of messages,
    /// groups, members, memberships, resend records, devices, cursors).
    Export {
        /// Which store to read.
        #[arg(long, value_enum, default_value = "embedded")]
        store: transfer::Store,
        /// Embedded: a stopped server's data directory (either engine's),
        /// or a backup file.
        #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
        from: PathBuf,
        /// DynamoDB: the tables' name prefix.
        #[arg(long, env = "CHAT_TABLE_PREFIX", default_value = chat_core::ports::DEFAULT_TABLE_PREFIX)]
        table_prefix: String,
        /// The file to write (never overwritten).
        #[arg(long)]
        to: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Loads a stream written by `export` into an empty store (embedded: a
    /// stopped server's data directory; DynamoDB: the tables). Re-run it
    /// after a crash: it resumes, and each record lands once.
    Import {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "embedded")]
        store: transfer::Store,
        #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Embedded: the engine to load into (so an export and an import
        /// move a store from one engine to the other).
        #[arg(long, env = "CHAT_ENGINE", default_value = "redb")]
        engine: chat_embedded::EngineKind,
        #[arg(long, env = "CHAT_TABLE_PREFIX", default_value = chat_core::ports::DEFAULT_TABLE_PREFIX)]
        table_prefix: String,
        #[arg(long)]
        json: bool,
    },
}

/// Whether the command line is `conn-tier admin …`.
pub fn asked() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == "admin")
}

/// Runs `conn-tier admin …` (the arguments after the binary's name).
pub async fn main() -> ExitCode {
    let args = AdminArgs::parse_from(std::env::args_os().skip(1));

    match run(args.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("conn-tier admin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, String> {
    let mut progress = Meter::default();
    match command {
        Command::Backup { data_dir, to, json } => {
            let to = absolute(&to)?;
            let report = match online(&data_dir, &to, &mut progress)? {
                Some(report) => report,
                None => {
                    eprintln!(
                        "no server answers on {}: backing up the stopped server's file",
                        data_dir.join(socket::SOCKET).display()
                    );
                    backup::backup_offline(&data_dir, &to, &mut |p| progress.show(p))
                        .map_err(|e| e.to_string())?
                }
            };
            print(json, &report, || {
                format!(
                    "backup {}: {} messages in {} conversations, {} memberships, {} groups; {:.1} MB in {:.1} s\nsha256 (content) {}",
                    report.path.display(),
                    report.counts.messages,
                    report.counts.conversations,
                    report.counts.memberships,
                    report.counts.groups,
                    report.bytes as f64 / 1e6,
                    report.seconds,
                    report.hash
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { file, json } => {
            quiet_redb_panics();
            let report = chat_embedded::verify::verify(&file, &mut |p| progress.show(p))
                .map_err(|e| e.to_string())?;
            print(json, &report, || {
                let mut s = format!(
                    "{}: format {}, {} messages, {} conversations, {} memberships, {} groups\nsha256 (content) {}{}",
                    file.display(),
                    report.format,
                    report.counts.messages,
                    report.counts.conversations,
                    report.counts.memberships,
                    report.counts.groups,
                    report.hash,
                    match &report.recorded_hash {
                        Some(h) if *h == report.hash => " (as recorded by the backup)".to_string(),
                        Some(_) => " (NOT the one the backup recorded)".to_string(),
                        None => " (no hash recorded: a data file, not a backup)".to_string(),
                    }
                );
                for p in &report.problems {
                    s.push_str(&format!("\nproblem: {p}"));
                }
                if report.problem_count > report.problems.len() as u64 {
                    s.push_str(&format!("\n… {} problems in all", report.problem_count));
                }
                s.push_str(if report.ok() { "\nok" } else { "\nFAILED" });
                s
            });
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Restore {
            file,
            data_dir,
            force,
            json,
        } => {
            quiet_redb_panics();
            let report =
                chat_embedded::restore::restore(&file, &data_dir, force, &mut |p| progress.show(p))
                    .map_err(|e| e.to_string())?;
            print(json, &report, || {
                format!(
                    "restored {} ({} messages, sha256 {}) to {}{}",
                    file.display(),
                    report.verified.counts.messages,
                    report.verified.hash,
                    report.path.display(),
                    report
                        .replaced
                        .as_ref()
                        .map(|p| format!("; the file it replaced is kept as {}", p.display()))
                        .unwrap_or_default()
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            store,
            from,
            table_prefix,
            to,
            json,
        } => {
            let to = absolute(&to)?;
            let report = transfer::export(store, &from, &table_prefix, &to, &mut progress).await?;
            print(json, &report, || {
                format!("exported to {}: {}", to.display(), report["counts"])
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            file,
            store,
            data_dir,
            engine,
            table_prefix,
            json,
        } => {
            let report = transfer::import(
                store,
                &file,
                &data_dir,
                engine,
                &table_prefix,
                &mut progress,
            )
            .await?;
            print(json, &report, || {
                format!("imported {}: {report}", file.display())
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// redb panics on some damaged pages (11 of 200 files with one byte
/// changed at random, in the verify test); `verify` catches that and says
/// the file is damaged, so those print nothing. Any other panic is a bug
/// of ours and says so.
fn quiet_redb_panics() {
    std::panic::set_hook(Box::new(|info| {
        let in_redb = info.location().is_some_and(|l| l.file().contains("/redb-"));
        if !in_redb {
            eprintln!("conn-tier admin: internal error (a bug; please report it): {info}");
        }
    }));
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn print<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string(value).unwrap_or_default());
    } else {
        println!("{}", human());
    }
}

/// A backup through the running server's admin socket; `None` when no
/// server answers there.
fn online(
    data_dir: &Path,
    to: &Path,
    progress: &mut Meter,
) -> Result<Option<BackupReport>, String> {
    let path = data_dir.join(socket::SOCKET);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut line = serde_json::to_vec(&Request::Backup {
        to: to.to_path_buf(),
    })
    .unwrap_or_default();
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        match serde_json::from_str::<Answer>(&line) {
            Ok(Answer::Progress { table, done, of }) => progress.show(Progress {
                table: &table,
                done,
                of,
            }),
            Ok(Answer::Done(v)) => return report_from(v).map(Some),
            Ok(Answer::Error(e)) => return Err(format!("the server: {e}")),
            Err(e) => return Err(format!("the server's answer {line:?}: {e}")),
        }
    }
    Err("the server closed the admin socket before the backup was done".into())
}

fn report_from(v: serde_json::Value) -> Result<BackupReport, String> {
    let field = |k: &str| v.get(k).cloned().unwrap_or_default();
    Ok(BackupReport {
        path: serde_json::from_value(field("path")).map_err(|e| e.to_string())?,
        bytes: field("bytes").as_u64().unwrap_or(0),
        hash: field("hash").as_str().unwrap_or("").to_string(),
        format: field("format").as_u64().unwrap_or(0),
        counts: serde_json::from_value(field("counts")).map_err(|e| e.to_string())?,
        taken_at_ms: field("taken_at_ms").as_u64().unwrap_or(0),
        seconds: field("seconds").as_f64().unwrap_or(0.0),
    })
}

/// Prints progress on standard error, at most about once a second and at
/// the end of each table.
#[derive(Default)]
pub struct Meter {
    last: Option<Instant>,
}

impl Meter {
    pub fn show(&mut self, p: Progress<'_>) {
        if p.done == 0 && p.of == 0 {
            return;
        }
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due || p.done == p.of {
            if p.of > 0 {
                eprintln!(
                    "{}: {}/{} ({}%)",
                    p.table,
                    p.done,
                    p.of,
                    p.done * 100 / p.of
                );
            } else {
                eprintln!("{}: {}", p.table, p.done);
            }
            self.last = Some(Instant::now());
        }
    }
}
