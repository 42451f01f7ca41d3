//! A simple load balancer, as a turmoil host, checking the nodes as the
//! shipped HAProxy configuration does (`infra/haproxy/haproxy.cfg`: a
//! check every 500 ms, down after 2 failures, up after 2 successes). Its
//! check asks a node what `/healthz` answers (`App::healthy`: 503 while it
//! drains or once it is not in the registry, declared dead for one), on a
//! connection of its own, within 1 s. Each client connection goes to the
//! next node in turn that is up and accepts TCP within 1 s; if none does,
//! the client's connection is closed and it tries again. Bytes are copied
//! both ways until either side ends. Like HAProxy here, it does not ask
//! `/readyz`, so a node cut off from the store but still in the registry
//! gets clients, which it closes or fails.

use crate::node::{host, CLIENT_PORT};
use crate::world::NODES;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The balancer's host name; clients connect to it on [`CLIENT_PORT`].
pub const LB: &str = "lb";

/// HAProxy's `inter 500ms fall 2 rise 2`.
const INTER: Duration = Duration::from_millis(500);
const FALL: u32 = 2;
const RISE: u32 = 2;

/// Per node: up or down, and how many checks in a row went the other way.
type Health = Arc<Mutex<Vec<(bool, u32)>>>;

pub async fn run_lb() -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", CLIENT_PORT)).await?;
    let health: Health = Arc::new(Mutex::new(vec![(true, 0); NODES]));
    let mut next = 0;
    // Owned: dropped (aborted) with the balancer.
    let mut conns = tokio::task::JoinSet::new();
    for node in 0..NODES {
        conns.spawn(check(node, health.clone()));
    }
    loop {
        let (mut client, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            Some(_) = conns.join_next() => continue,
        };
        let first = next;
        next = (next + 1) % NODES;
        let up: Vec<bool> = lock(&health).iter().map(|h| h.0).collect();
        conns.spawn(async move {
            for k in 0..NODES {
                let n = (first + k) % NODES;
                if !up[n] {
                    continue;
                }
                let node = host(n);
                let connect = turmoil::net::TcpStream::connect((node.as_str(), CLIENT_PORT));
                if let Ok(Ok(mut server)) =
                    tokio::time::timeout(Duration::from_secs(1), connect).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks `node` every [`INTER`], forever.
async fn check(node: usize, health: Health) {
    loop {
        tokio::time::sleep(INTER).await;
        let ok = tokio::time::timeout(Duration::from_secs(1), ask(node))
            .await
            .is_ok_and(|r| r.is_ok_and(|answer| answer == "ok"));
        let mut h = lock(&health);
        let (up, against) = &mut h[node];
        if ok == *up {
            *against = 0;
        } else {
            *against += 1;
            if *against >= if *up { FALL } else { RISE } {
                *up = ok;
                *against = 0;
            }
        }
    }
}

/// One check: `health`, answered `ok` or `down` (crate::node).
async fn ask(node: usize) -> std::io::Result<String> {
    let stream = turmoil::net::TcpStream::connect((host(node).as_str(), CLIENT_PORT)).await?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"health\n").await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    Ok(answer.trim().to_string())
}
