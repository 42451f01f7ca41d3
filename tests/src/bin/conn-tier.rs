//! The conn-tier server, built inside this crate so the crash test can run
//! (and kill) a real server process.
use clap::Parser;
use conn_tier::config::{init_tracing, ServerArgs};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = ServerArgs::parse();
    init_tracing(args.log_json);
    conn_tier::exit_code(conn_tier::http::run(args).await)
}
