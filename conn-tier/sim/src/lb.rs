//! A simple load balancer, as a turmoil host: each client connection goes
//! to the next node in turn that accepts a TCP connection within 1 s (a
//! crashed node, or one the balancer cannot reach, is skipped), and bytes
//! are copied both ways until either side ends. That is what the shipped
//! HAProxy configuration learns from its `/healthz` checks (whether the
//! process answers); like it, the balancer does not ask `/readyz`, so a
//! node cut off from the store still gets clients, which it closes or
//! fails.

use crate::node::{host, CLIENT_PORT};
use crate::world::NODES;
use std::time::Duration;

/// The balancer's host name; clients connect to it on [`CLIENT_PORT`].
pub const LB: &str = "lb";

pub async fn run_lb() -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", CLIENT_PORT)).await?;
    let mut next = 0;
    // Owned: dropped (aborted) with the balancer.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (mut client, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            Some(_) = conns.join_next() => continue,
        };
        let first = next;
        next = (next + 1) % NODES;
        conns.spawn(async move {
            for k in 0..NODES {
                let node = host((first + k) % NODES);
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
