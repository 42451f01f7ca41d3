//! The chat server (embedded mode by default): `cargo run -p conn-tier`.
use clap::Parser;
use conn_tier::config::{init_tracing, ServerArgs};

/// jemalloc, not glibc's malloc: glibc's malloc and free were 14% of the
/// server's CPU samples in the store's writer thread alone. Measured side
/// by side: 1.2–1.4× the messages per CPU-second, and no more memory per
/// idle connection (docs/benchmarks.md, "The allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = ServerArgs::parse();
    init_tracing(args.log_json);
    conn_tier::exit_code(conn_tier::http::run(args).await)
}
