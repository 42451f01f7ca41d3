//! Start-up errors: a user's mistake (a taken port, a locked data file, a
//! missing secret, an unset variable, functions that are not running) ends
//! the server with one or two lines that say what to do, and a non-zero
//! exit code;
//! never a backtrace, even with `RUST_BACKTRACE=1`.

use std::process::Stdio;
use std::time::Duration;

/// Runs the server binary with `args` and `env`, expecting it to refuse to
/// start; returns its stderr.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conn-tier"));
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("CHAT_JWT_SECRET")
        .env_remove("CHAT_DEV");
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the server should exit by itself")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // 1 for what the server refuses, 2 for what the flag parser refuses.
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "exit code {:?}; stderr: {stderr}",
        out.status.code()
    );
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "a user error prints no backtrace: {stderr}"
    );
    stderr
}

async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_taken_port_names_its_flag() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    // The switches parse from 1 and yes: the refusal is about the port.
    let err = refused(
        &[
            "--listen",
            &addr,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("CHAT_DEV", "yes"), ("CHAT_LOG_JSON", "1")],
    )
    .await;
    assert!(
        err.contains(&format!("cannot listen on {addr} (--listen)")),
        "{err}"
    );
}

#[tokio::test]
async fn a_data_file_in_use_names_the_file_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let _held = chat_embedded::EmbeddedStore::open(dir.path()).unwrap();
    let err = refused(
        &[
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let file = dir.path().join("chat.redb");
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("--data-dir"), "names the flag: {err}");
}

#[tokio::test]
async fn a_data_file_from_a_newer_build_is_refused_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(chat_embedded::EmbeddedStore::open(dir.path()).unwrap());
    let file = dir.path().join("chat.redb");
    {
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format", "7").unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    let err = refused(
        &[
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(err.contains("format version 7"), "{err}");
    assert!(err.contains("newer build"), "{err}");
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), before, "left untouched");
}

#[tokio::test]
async fn no_secret_says_how_to_make_one_or_to_use_dev() {
    let err = refused(&["--listen", "127.0.0.1:0"], &[]).await;
    assert!(err.contains("CHAT_JWT_SECRET"), "{err}");
    assert!(err.contains("--dev"), "{err}");
}

#[tokio::test]
async fn a_wrong_switch_value_names_the_flag_and_its_variable() {
    let err = refused(
        &["--dev", "--listen", "127.0.0.1:0"],
        &[("CHAT_STREAM_POLL", "maybe")],
    )
    .await;
    assert!(err.contains("--stream-poll / CHAT_STREAM_POLL"), "{err}");
    assert!(err.contains("yes/no"), "lists what is accepted: {err}");
}

#[tokio::test]
async fn lambda_mode_without_the_functions_running_says_what_to_start() {
    let port = closed_port().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let err = refused(
        &[
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--functions",
            "lambda",
            "--management-listen",
            "127.0.0.1:0",
            "--lambda-endpoint",
            &endpoint,
        ],
        // The @connections API's credential (on loopback, the AWS pair).
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    )
    .await;
    assert!(
        err.contains(&format!("cannot reach the Lambda functions at {endpoint}")),
        "{err}"
    );
    assert!(err.contains("scripts/local-cloud up"), "{err}");
}

#[tokio::test]
async fn dynamodb_mode_without_the_emulator_variables_says_to_source_env_sh() {
    let err = refused(
        &["--dev", "--listen", "127.0.0.1:0", "--store", "dynamodb"],
        &[
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ],
    )
    .await;
    assert!(err.contains("source localstack/env.sh"), "{err}");
    assert!(
        err.contains("AWS_ENDPOINT_URL"),
        "names the variable: {err}"
    );
}

#[tokio::test]
async fn an_empty_or_short_management_secret_is_refused_on_every_interface() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for secret in ["", "x", "thirty-one-bytes-is-not-enough!"] {
        let err = refused(
            &[
                "--dev",
                "--data-dir",
                data,
                "--listen",
                "127.0.0.1:0",
                "--management-listen",
                "0.0.0.0:0",
                "--management-key-id",
                "k",
            ],
            &[("CHAT_MANAGEMENT_SECRET", secret)],
        )
        .await;
        assert!(err.contains("at least 32 bytes"), "{secret:?}: {err}");
    }
}

#[tokio::test]
async fn dev_mode_listens_on_loopback_only_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let err = refused(&["--dev", "--data-dir", data, "--listen", "0.0.0.0:0"], &[]).await;
    assert!(err.contains("--dev-on-network"), "{err}");
}

#[tokio::test]
async fn a_data_directory_of_the_other_engine_is_refused_naming_both_and_the_way_to_move() {
    let dir = tempfile::tempdir().unwrap();
    drop(chat_embedded::EmbeddedStore::open(dir.path()).unwrap());
    let before = std::fs::read(dir.path().join("chat.redb")).unwrap();
    let err = refused(
        &[
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--engine",
            "fjall",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(err.contains("holds redb data"), "{err}");
    assert!(err.contains("--engine redb"), "{err}");
    assert!(err.contains("export"), "{err}");
    // Nothing written beside it, nothing changed in it.
    assert!(!dir.path().join("chat.fjall").exists());
    assert_eq!(std::fs::read(dir.path().join("chat.redb")).unwrap(), before);
}
