//! `conn-tier admin export` and `import`: the portable stream
//! (`chat_core::export`) written from a store and loaded into one, either
//! the embedded store or (a build with `--features dynamodb`) the DynamoDB
//! tables (docs/operations.md, "Export and import").

use super::Meter;
use chat_embedded::backup::Progress;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Which store a command reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    Embedded,
    Dynamodb,
}

/// `export`: the counts written.
pub async fn export(
    store: Store,
    from: &Path,
    prefix: &str,
    to: &Path,
    meter: &mut Meter,
) -> Result<serde_json::Value, String> {
    let partial = PathBuf::from(format!("{}.partial", to.display()));
    if to.exists() {
        return Err(format!(
            "{} exists: an export never overwrites a file",
            to.display()
        ));
    }
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?,
    );
    let counts = match store {
        Store::Embedded => {
            // A data directory (either engine's), a file (a backup), or
            // a fjall directory itself.
            let file = if !from.is_dir() || from.join("version").is_file() {
                from.to_path_buf()
            } else {
                match chat_embedded::EngineKind::found_in(from)? {
                    Some(kind) => from.join(kind.data_name()),
                    None => {
                        return Err(format!(
                            "no data in {} (neither chat.redb nor chat.fjall)",
                            from.display()
                        ))
                    }
                }
            };
            let counts =
                chat_embedded::export::export_file(&file, &mut out, &mut |p| meter.show(p))
                    .map_err(|e| e.to_string())?;
            serde_json::to_value(counts).unwrap_or_default()
        }
        Store::Dynamodb => dynamodb_export(prefix, &mut out, meter).await?,
    };
    let file = out
        .into_inner()
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    file.sync_all()
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, to).map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(serde_json::json!({"path": to, "counts": counts}))
}

/// `import`: what was loaded.
pub async fn import(
    store: Store,
    input: &Path,
    data_dir: &Path,
    engine: chat_embedded::EngineKind,
    prefix: &str,
    meter: &mut Meter,
) -> Result<serde_json::Value, String> {
    match store {
        Store::Embedded => {
            let file =
                std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
            let report = chat_embedded::import::import(
                std::io::BufReader::new(file),
                data_dir,
                engine,
                &mut |p| meter.show(p),
            )
            .map_err(|e| e.to_string())?;
            // The whole store checked, as `verify` does: ids gapless, marks
            // at or below them, memberships matching groups.
            let file = data_dir.join(engine.data_name());
            let v = chat_embedded::verify::verify(&file, &mut |p| meter.show(p))
                .map_err(|e| e.to_string())?;
            if !v.ok() {
                return Err(format!(
                    "imported, but {} does not verify ({} problems; the first: {}): the stream was not one a server wrote",
                    file.display(),
                    v.problem_count,
                    v.problems.first().map(String::as_str).unwrap_or("?")
                ));
            }
            let mut out = serde_json::to_value(report).unwrap_or_default();
            out["verified"] = serde_json::json!(true);
            Ok(out)
        }
        Store::Dynamodb => dynamodb_import(prefix, input, meter).await,
    }
}

fn records(meter: &mut Meter) -> impl FnMut(u64, u64) + '_ {
    move |done, of| {
        meter.show(Progress {
            table: "records",
            done,
            of,
        });
    }
}

#[cfg(feature = "dynamodb")]
async fn dynamodb_export(
    prefix: &str,
    out: &mut dyn Write,
    meter: &mut Meter,
) -> Result<serde_json::Value, String> {
    let tables = chat_dynamo::connect(prefix)
        .await
        .map_err(|e| e.to_string())?;
    let counts = chat_dynamo::transfer::export(&tables, out, &mut records(meter))
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(counts).unwrap_or_default())
}

#[cfg(feature = "dynamodb")]
async fn dynamodb_import(
    prefix: &str,
    input: &Path,
    meter: &mut Meter,
) -> Result<serde_json::Value, String> {
    let tables = chat_dynamo::connect(prefix)
        .await
        .map_err(|e| e.to_string())?;
    let report = chat_dynamo::transfer::import(&tables, input, &mut records(meter))
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

#[cfg(not(feature = "dynamodb"))]
const NO_DYNAMODB: &str = "--store dynamodb needs a build with the `dynamodb` feature: cargo build -p conn-tier --features dynamodb";

#[cfg(not(feature = "dynamodb"))]
async fn dynamodb_export(
    _: &str,
    _: &mut dyn Write,
    m: &mut Meter,
) -> Result<serde_json::Value, String> {
    let _ = records(m);
    Err(NO_DYNAMODB.into())
}

#[cfg(not(feature = "dynamodb"))]
async fn dynamodb_import(_: &str, _: &Path, _: &mut Meter) -> Result<serde_json::Value, String> {
    Err(NO_DYNAMODB.into())
}
