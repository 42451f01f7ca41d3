//! The accept loop both listeners (clients, `@connections`) run: it admits
//! a connection only under the caps (in total, per IP, new ones per second
//! per IP), sets `TCP_NODELAY` (unless told not to), serves HTTP/1.1 with a header-read timeout
//! (a half-sent request is closed after it, not kept forever), and keeps
//! accepting when the process runs out of file descriptors (it backs off
//! and goes on). Each admitted connection carries an [`Admitted`] ticket in
//! its requests' extensions; a WebSocket keeps it for its whole life.
//!
//! The IP is the client's: on the client listener, from a configured load balancer
//! ([`Limits::trusted_proxies`]) it is read from the PROXY protocol header
//! the balancer sends first ([`crate::proxy_protocol`]), so one flooding
//! client behind it does not spend everyone's budget. A connection's first
//! request spends a token of the per-IP rate, unless it is a health or
//! readiness probe (`/healthz`, `/readyz`, `/metrics`): a balancer's own
//! checks never count against anyone's budget.

use crate::proxy_protocol::{self, Cidr};
use crate::rate::RateLimit;
use axum::extract::ConnectInfo;
use axum::Router;
use chat_core::hash::HashMap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// Caps on the connections one listener admits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at once, all IPs together.
    pub max_connections: usize,
    /// Open connections at once from one IP.
    pub max_per_ip: usize,
    /// New connections per second from one IP (a token bucket)...
    pub new_per_ip_per_sec: u32,
    /// ...allowing a burst of this many.
    pub new_per_ip_burst: u32,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// `TCP_NODELAY` on every accepted socket (on by default): a small
    /// frame leaves at once instead of waiting for the ACK of the one
    /// before (Nagle's algorithm meeting the peer's delayed ACK costs up
    /// to 40 ms a frame). Off only to measure that (docs/benchmarks.md).
    pub tcp_nodelay: bool,
    /// Load balancers whose connections start with a PROXY protocol header
    /// naming the client (required from them; never believed from anyone
    /// else).
    pub trusted_proxies: Arc<Vec<Cidr>>,
}

impl Limits {
    /// Whether `ip` is a configured load balancer.
    pub fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// The same caps for a listener no balancer stands in front of (the
    /// `@connections` API, `/metrics`): other nodes and scrapers connect
    /// directly and send no PROXY header, even from an address inside a
    /// range that also holds the balancer.
    pub fn direct(&self) -> Self {
        Limits {
            trusted_proxies: Arc::new(Vec::new()),
            ..self.clone()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 50_000,
            max_per_ip: 500,
            new_per_ip_per_sec: 50,
            new_per_ip_burst: 100,
            header_timeout: Duration::from_secs(10),
            tcp_nodelay: true,
            trusted_proxies: Arc::new(Vec::new()),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Full,
    /// `max_per_ip` are open from this IP.
    TooManyFromIp,
}

#[derive(Debug)]
struct PerIp {
    open: usize,
    /// Its rate of new connections.
    rate: RateLimit,
}

impl PerIp {
    fn new(l: &Limits) -> Self {
        PerIp {
            open: 0,
            rate: RateLimit::new(l.new_per_ip_burst, l.new_per_ip_per_sec),
        }
    }
}

/// Counts admitted connections; shared by a listener's connections.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    state: Mutex<(usize, HashMap<IpAddr, PerIp>)>,
}

/// An admitted connection: while it lives, it counts against the caps.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
    /// Whether it spent its token of the per-IP rate (its first request
    /// that was not a probe).
    charged: std::sync::atomic::AtomicBool,
}

impl Admitted {
    /// Spends the connection's token of its IP's rate, once; false if
    /// the IP opens connections too fast.
    fn charge(&self) -> bool {
        if self
            .charged
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return true;
        }
        self.admission.take_token(self.ip)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut g = self.admission.lock();
        g.0 = g.0.saturating_sub(1);
        let forget = match g.1.get_mut(&self.ip) {
            Some(p) => {
                p.open = p.open.saturating_sub(1);
                // A full bucket and nothing open: nothing to remember.
                p.open == 0 && p.rate.is_full()
            }
            None => false,
        };
        if forget {
            g.1.remove(&self.ip);
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            state: Mutex::new((0, HashMap::default())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<IpAddr, PerIp>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections now, all IPs together.
    pub fn open(&self) -> usize {
        self.lock().0
    }

    /// Admits a connection from `ip` under the caps on open connections,
    /// or says why not. (Its token of the IP's rate is spent by its first
    /// request that is not a probe: [`Admission::take_token`].)
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let l = &self.limits;
        let mut g = self.lock();
        if g.0 >= l.max_connections {
            return Err(Refused::Full);
        }
        let p = g.1.entry(ip).or_insert_with(|| PerIp::new(l));
        if p.open >= l.max_per_ip {
            return Err(Refused::TooManyFromIp);
        }
        p.open += 1;
        g.0 += 1;
        Ok(Admitted {
            admission: self.clone(),
            ip,
            charged: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Takes a token of `ip`'s rate of new connections; false when it
    /// opens them too fast.
    pub fn take_token(&self, ip: IpAddr) -> bool {
        let l = &self.limits;
        let mut g = self.lock();
        g.1.entry(ip).or_insert_with(|| PerIp::new(l)).rate.take()
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves;
/// then stops accepting, lets requests in progress finish (HTTP
/// keep-alive connections are closed after their current request) and
/// returns. Upgraded WebSockets are not waited for here: their owner
/// tracks them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admission = Admission::new(limits);
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let header_timeout = admission.limits.header_timeout;
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // Out of file descriptors (or another passing failure):
                    // wait a little and go on accepting.
                    tracing::warn!(error = %e, ?backoff, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(admission.limits.tcp_nodelay);
        let router = router.clone();
        let stop = stop.clone();
        if admission.limits.trusted(peer.ip()) {
            // A load balancer: the client's address comes first.
            let admission = admission.clone();
            connections.spawn(async move {
                let mut stream = stream;
                let read = proxy_protocol::read_header(&mut stream, peer);
                let client = match tokio::time::timeout(header_timeout, read).await {
                    Ok(Ok(client)) => client,
                    Ok(Err(why)) => {
                        tracing::warn!(%peer, %why, "dropped a connection from a trusted proxy");
                        return;
                    }
                    Err(_) => return,
                };
                match admission.admit(client.ip()) {
                    Ok(t) => {
                        serve_one(stream, client, router, Arc::new(t), header_timeout, stop).await
                    }
                    Err(why) => refuse(stream, why).await,
                }
            });
            continue;
        }
        let ticket = match admission.admit(peer.ip()) {
            Ok(t) => Arc::new(t),
            Err(why) => {
                // Answered and closed here, before the next accept: a
                // flood past the cap never holds more than this one
                // descriptor for its refusals (docs/operations.md, "File
                // limits").
                refuse_now(stream, why);
                continue;
            }
        };
        connections.spawn(async move {
            serve_one(stream, peer, router, ticket, header_timeout, stop).await;
        });
    }
    stop.cancel();
    connections.close();
    if tokio::time::timeout(Duration::from_secs(5), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP connections did not finish in time");
    }
    Ok(())
}

/// One HTTP/1.1 connection, with upgrades.
async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    ticket: Arc<Admitted>,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // The connection's first request that is not a probe spends its
        // token of the IP's rate.
        let probe = PROBES.contains(&req.uri().path());
        let too_fast = !probe && !ticket.charge();
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(ticket.clone());
        let router = router.clone();
        async move {
            if too_fast {
                chat_core::metrics::rejected("per_ip_rate");
                return Ok(too_fast_response());
            }
            router.clone().call(req).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Paths of health, readiness and metrics probes: they never spend a
/// token of the per-IP rate.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// HTTP 429 for a connection of an IP that opens them too fast.
fn too_fast_response() -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "1"), (header::CONNECTION, "close")],
        "too many new connections from your address\n",
    )
        .into_response()
}

/// The answer to a connection that was not admitted (counted).
fn refusal(why: Refused) -> String {
    chat_core::metrics::rejected(match why {
        Refused::Full => "total",
        Refused::TooManyFromIp => "per_ip",
    });
    let (status, reason) = match why {
        Refused::Full => (
            "503 Service Unavailable",
            "the server is at its connection limit",
        ),
        Refused::TooManyFromIp => (
            "429 Too Many Requests",
            "too many connections from your address",
        ),
    };
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 {status}\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Answers a connection that was not admitted, and closes it.
async fn refuse(mut stream: TcpStream, why: Refused) {
    let reply = refusal(why);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(reply.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// As [`refuse`], without waiting: the answer goes into the socket's empty
/// send buffer (it fits), and the socket is closed at once; the kernel
/// still delivers the answer.
fn refuse_now(stream: TcpStream, why: Refused) {
    use std::io::Write;
    let reply = refusal(why);
    // Out of the reactor and written directly (non-blocking): tokio's
    // `try_write` would wait for a readiness event a fresh socket has not
    // had yet.
    if let Ok(mut s) = stream.into_std() {
        let _ = s.write(reply.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize, burst: u32) -> Limits {
        Limits {
            max_connections: total,
            max_per_ip: per_ip,
            new_per_ip_per_sec: 0,
            new_per_ip_burst: burst,
            ..Limits::default()
        }
    }

    #[test]
    fn caps_per_ip_and_in_total_and_frees_a_place_when_a_connection_ends() {
        let a = Admission::new(limits(3, 2, 100));
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let x1 = a.admit(x).unwrap();
        let _x2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).unwrap_err(), Refused::TooManyFromIp);
        let _y1 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).unwrap_err(), Refused::Full);
        assert_eq!(a.open(), 3);
        drop(x1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(x).is_ok());
    }

    #[test]
    fn new_connections_per_ip_are_rate_limited_once_each() {
        let a = Admission::new(limits(100, 100, 3));
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        let kept: Vec<_> = (0..3).map(|_| a.admit(ip).unwrap()).collect();
        // Each connection's first request spends a token; later ones, none.
        assert!(kept.iter().all(|t| t.charge()));
        assert!(
            kept.iter().all(|t| t.charge()),
            "charged once per connection"
        );
        let fourth = a.admit(ip).unwrap();
        assert!(!fourth.charge());
        drop(kept);
        // Closing frees places, not new-connection tokens.
        assert!(!a.admit(ip).unwrap().charge());
        // Another address has its own.
        assert!(a.admit("10.0.0.4".parse().unwrap()).unwrap().charge());
    }
}
