//! The chat server (embedded mode by default): `cargo run -p conn-tier`;
//! `conn-tier admin …` backs up, checks and restores its data.

/// jemalloc, not glibc's malloc: glibc's malloc and free were 14% of the
/// server's CPU samples in the store's writer thread alone. Measured side
/// by side: 1.2–1.4× the messages per CPU-second, and no more memory per
/// idle connection (docs/benchmarks.md, "The allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conn_tier::http::main().await
}
