//! The chat server (embedded mode by default): `cargo run -p conn-tier`.
use clap::Parser;
use conn_tier::config::{init_tracing, ServerArgs};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = ServerArgs::parse();
    init_tracing(args.log_json);
    conn_tier::exit_code(conn_tier::http::run(args).await)
}
