//! Test support (feature `testing`): a fresh set of tables on the emulator
//! for every test, made from `infra/template.yaml` through
//! `localstack/create-tables.py` (the one table-creation path).

use std::path::PathBuf;

/// The repository's root (this crate is `functions/dynamo`).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Creates the tables under a random prefix (`$CHAT_TABLE_PREFIX` + `t` +
/// random) on the emulator at `AWS_ENDPOINT_URL`; returns the prefix.
pub async fn fresh_tables() -> Result<String, String> {
    let base = std::env::var("CHAT_TABLE_PREFIX")
        .unwrap_or_else(|_| chat_core::ports::DEFAULT_TABLE_PREFIX.into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("{base}t{}-", &random[..10]);
    let root = root();
    let out = tokio::process::Command::new(root.join("localstack/.venv/bin/python"))
        .arg(root.join("localstack/create-tables.py"))
        .args(["--prefix", &prefix])
        .output()
        .await
        .map_err(|e| {
            format!("running localstack/create-tables.py (start the emulator: localstack/start.sh): {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "create-tables.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(prefix)
}

/// Fresh tables, connected and checked.
pub async fn fresh() -> crate::Tables {
    let prefix = fresh_tables().await.expect("fresh tables on the emulator");
    crate::connect(&prefix)
        .await
        .expect("the fresh tables match the schema")
}
