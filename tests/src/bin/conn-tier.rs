//! The conn-tier server (and `conn-tier admin`), built inside this crate
//! so the crash, backup and migration tests can run (and kill) a real
//! server process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conn_tier::http::main().await
}
