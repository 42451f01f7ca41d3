//! Where the load generator and the server run: pinning (--pin) and the
//! in-process server (--in-process).

use crate::args::{Args, Scenario};
use crate::procstat;

/// Where the processes run (--pin), decided before the runtime starts so
/// that every thread of the load generator inherits the affinity.
pub struct Pinning {
    /// CPU for the servers the bench starts (taskset -c).
    pub server_cpu: Option<usize>,
    /// What was done, for the report.
    pub note: String,
}

pub fn pin(args: &Args) -> Pinning {
    let none = |note: String| Pinning {
        server_cpu: None,
        note,
    };
    if !args.pin {
        return none("none (no --pin)".to_string());
    }
    if args.scenario == Scenario::Targets {
        return none("each part pins its own: --pin goes to direct-vs-mosquitto".to_string());
    }
    if args.in_process && args.url.is_none() {
        return none(
            "none: --in-process runs the server in the load generator's process".to_string(),
        );
    }
    let cpus = procstat::allowed_cpus();
    if cpus.len() < 2 {
        return none(format!(
            "none: --pin needs 2 CPUs, this process may use {}",
            cpus.len()
        ));
    }
    let (server, bench) = (cpus[0], cpus[1]);
    if let Err(e) = procstat::pin_process(bench) {
        return none(format!(
            "none: sched_setaffinity to CPU {bench} failed: {e}"
        ));
    }
    if args.url.is_some() {
        return none(format!(
            "load generator on CPU {bench}; the --url server is not started here, not pinned"
        ));
    }
    Pinning {
        server_cpu: Some(server),
        note: format!(
            "server{} on CPU {server} (taskset -c {server}), load generator on CPU {bench} (sched_setaffinity)",
            if args.scenario == Scenario::DirectVsMosquitto {
                " and Mosquitto"
            } else {
                ""
            }
        ),
    }
}

/// The chat server in this process, on a free port; the temp dir lives as long as the result.
pub async fn in_process_server(
    secret: &str,
    engine: &str,
) -> anyhow::Result<(std::net::SocketAddr, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    // A load generator is no user, and opens many connections from one IP.
    let settings = conn_tier::config::Settings {
        users: conn_tier::hub::UserLimits {
            max_connections: 1_000_000,
            burst: 1_000_000,
            per_sec: 1_000_000,
        },
        limits: conn_tier::listener::Limits {
            max_connections: 1_000_000,
            max_per_ip: 1_000_000,
            new_per_ip_per_sec: 1_000_000,
            new_per_ip_burst: 1_000_000,
            ..Default::default()
        },
        embedded: chat_embedded::Options {
            engine: engine.parse().map_err(anyhow::Error::msg)?,
            ..Default::default()
        },
        ..Default::default()
    };
    let (app, _store) = conn_tier::App::embedded(
        dir.path(),
        chat_core::auth::Authenticator::new(secret.as_bytes())?,
        settings,
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(conn_tier::http::serve(
        listener,
        app,
        std::future::pending(),
    ));
    Ok((addr, dir))
}
