//! A device, as real clients behave (docs/protocol.md): it connects
//! through the load balancer ([`crate::lb`]), syncs
//! first, sends with a fresh `client_msg_id` and resends what is not acked
//! (after an `internal` error, a reconnect, or 10 s of silence) with the
//! same id, reports what it holds with `received`, acks, reconnects with
//! back-off, and, once the faults are over, syncs on a fresh connection.
//! The group's admin also removes a member and adds them back.
//!
//! Everything it sees is kept for [`crate::check`]: what each connection
//! received, in order, and what each send was acked as.

use crate::lb::LB;
use crate::node::CLIENT_PORT;
use crate::rng::Rng;
use crate::world::{DeviceReport, World};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::time::Instant;
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The member the admin removes and adds back (it never sends to the group).
pub const MOVED: &str = "u3";

/// The group: its admin `u0` and the next users, up to this many members
/// (a message to it goes to every member's devices, so its cost grows
/// with its size; the users past it chat one to one).
pub const GROUP_SIZE: usize = 12;

/// A user's host name: its devices run side by side on it.
pub fn host_of(u: usize) -> String {
    format!("user-u{u}")
}

struct Conn {
    lines: Lines<BufReader<OwnedReadHalf>>,
    /// The node id serving it (its first line).
    node: String,
    write: OwnedWriteHalf,
    /// Per conversation, the last message id this connection got.
    last: BTreeMap<String, u64>,
    last_heard: Instant,
}

/// One device's life in the simulation.
pub struct Device {
    user: String,
    device: String,
    users: usize,
    rng: Rng,
    world: Arc<World>,
    conn: Option<Conn>,
    fails: u32,
    n: u64,
    /// Sends not acked yet: client_msg_id -> (frame, when last written).
    pending: BTreeMap<String, (Value, Instant)>,
    held: BTreeMap<String, BTreeSet<u64>>,
    told: BTreeMap<String, (u64, u64)>,
    report: DeviceReport,
}

impl Device {
    pub fn new(u: usize, d: usize, users: usize, seed: u64, world: Arc<World>) -> Self {
        Device {
            user: format!("u{u}"),
            device: format!("d{d}"),
            users,
            rng: Rng::fork(seed, 1000 + (u * 16 + d) as u64),
            world,
            conn: None,
            fails: 0,
            n: 0,
            pending: BTreeMap::new(),
            held: BTreeMap::new(),
            told: BTreeMap::new(),
            report: DeviceReport {
                user: format!("u{u}"),
                device: format!("d{d}"),
                ..Default::default()
            },
        }
    }

    /// This user's number (`u<n>`).
    fn index(&self) -> usize {
        self.user[1..].parse().unwrap_or(0)
    }

    fn admin(&self) -> bool {
        self.user == "u0" && self.device == "d0"
    }

    /// Sends until `load`, then (faults over) syncs afresh at `resync` and
    /// keeps resending what is not acked until `end`.
    pub async fn run(mut self, load: Duration, resync: Duration, end: Duration) -> DeviceReport {
        let start = Instant::now();
        let mut next_send = start + self.rng.ms(500, 1500);
        let mut next_tell = start + Duration::from_secs(1);
        let mut resynced = false;
        while start.elapsed() < end {
            if !resynced && start.elapsed() >= resync {
                // A fresh connection once the faults are over: its sync
                // brings whatever this device still misses.
                self.drop_conn(None);
                if self.connect().await {
                    resynced = true;
                    self.report.final_sync = true;
                }
                continue;
            }
            if self.conn.is_none() {
                self.connect().await;
                continue;
            }
            let now = Instant::now();
            if start.elapsed() < load && now >= next_send {
                self.send_one().await;
                next_send = now + self.rng.ms(300, 1200);
            }
            if self.admin() {
                self.move_member(start.elapsed(), load).await;
            }
            if now >= next_tell {
                self.tell().await;
                next_tell = now + Duration::from_secs(1);
            }
            self.resend_stale().await;
            let wait = next_send.saturating_duration_since(Instant::now());
            self.pump(wait.clamp(Duration::from_millis(10), Duration::from_millis(200)))
                .await;
        }
        self.report.pending = self.pending.keys().cloned().collect();
        self.report
    }

    /// Connects to a node picked at random, syncs, resends what is
    /// pending; on failure, waits a back-off. True once synced.
    async fn connect(&mut self) -> bool {
        let ok = tokio::time::timeout(Duration::from_secs(3), async {
            turmoil::net::TcpStream::connect((LB, CLIENT_PORT)).await
        })
        .await;
        if let Ok(Ok(stream)) = ok {
            let (read, write) = stream.into_split();
            self.conn = Some(Conn {
                lines: BufReader::new(read).lines(),
                node: String::new(),
                write,
                last: BTreeMap::new(),
                last_heard: Instant::now(),
            });
            self.report.connections += 1;
            let hello = format!("hello {} {}", self.user, self.device);
            if self.write_line(&hello).await
                && self.write(&json!({"action":"sync"})).await
                && self.until_synced().await
            {
                self.fails = 0;
                let frames: Vec<Value> = self.pending.values().map(|(f, _)| f.clone()).collect();
                for f in frames {
                    self.write(&f).await;
                }
                self.told.clear();
                self.tell().await;
                if self.admin() && self.world.group().is_none() && !self.report.asked_group {
                    self.report.asked_group = true;
                    let members: Vec<String> = (1..self.users.min(GROUP_SIZE))
                        .map(|u| format!("u{u}"))
                        .collect();
                    self.write(&json!({"action":"createGroup","name":"team","members":members}))
                        .await;
                }
                return self.conn.is_some();
            }
            self.drop_conn(None);
        }
        self.fails += 1;
        let cap = 200u64 << self.fails.min(4);
        tokio::time::sleep(self.rng.ms(cap / 2, cap)).await;
        false
    }

    async fn until_synced(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && self.conn.is_some() {
            match self.next(Duration::from_millis(500)).await {
                Some(f) if f["type"] == "synced" => return true,
                Some(f) if f["type"] == "error" && f["action"] == "sync" => return false,
                _ => {}
            }
        }
        false
    }

    async fn send_one(&mut self) {
        let group = self
            .world
            .group()
            .filter(|_| self.user != MOVED && self.index() < GROUP_SIZE && self.rng.chance(5));
        let to = match group {
            Some(g) => format!("group:{g}"),
            None => {
                let me = self.index();
                let other = (me + 1 + self.rng.below(self.users as u64 - 1) as usize) % self.users;
                format!("user:u{other}")
            }
        };
        self.n += 1;
        let cmid = format!("{}-{}-{}", self.user, self.device, self.n);
        let text = format!("{}/{} #{}", self.user, self.device, self.n);
        let f = json!({"action":"send","to":to,"client_msg_id":cmid,"text":text});
        self.report.texts.insert(cmid.clone(), text);
        self.pending.insert(cmid, (f.clone(), Instant::now()));
        self.write(&f).await;
    }

    /// A send not acked for 10 s on a live connection goes again (same id).
    async fn resend_stale(&mut self) {
        let stale: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| at.elapsed() > Duration::from_secs(10))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some((f, at)) = self.pending.get_mut(&k) {
                *at = Instant::now();
                let f = f.clone();
                self.report.resends += 1;
                self.write(&f).await;
            }
        }
    }

    /// The admin removes [`MOVED`] a third into the load and adds them
    /// back at two thirds, asking again every 3 s until a `group` frame
    /// shows it done; the store's position at each is noted for the check.
    async fn move_member(&mut self, elapsed: Duration, load: Duration) {
        let Some(gid) = self.world.group() else {
            return;
        };
        let want_member = !(load / 3..load * 2 / 3).contains(&elapsed);
        let moves = self.world.moves();
        let (is_member, asked) = (moves.is_member, moves.asked_at);
        if want_member == is_member || asked.is_some_and(|a| a.elapsed() < Duration::from_secs(3)) {
            return;
        }
        self.world.note_asked(want_member).await;
        let action = if want_member {
            "addMember"
        } else {
            "removeMember"
        };
        self.write(&json!({"action":action,"group_id":gid,"user_id":MOVED}))
            .await;
    }

    /// `received` for the runs that grew, and now and then an `ack`.
    async fn tell(&mut self) {
        let mut items = Vec::new();
        for (conv, ids) in &self.held {
            let Some(&from) = ids.first() else { continue };
            let mut to = from;
            while ids.contains(&(to + 1)) {
                to += 1;
            }
            if self.told.get(conv) != Some(&(from, to)) {
                items.push(json!({"conversation_id":conv,"from":from,"up_to":to}));
            }
        }
        for i in &items {
            let c = i["conversation_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let run = (
                i["from"].as_u64().unwrap_or(0),
                i["up_to"].as_u64().unwrap_or(0),
            );
            self.told.insert(c, run);
        }
        if !items.is_empty() {
            self.write(&json!({"action":"received","items":items}))
                .await;
        }
        if self.rng.chance(3) {
            if let Some((conv, (_, to))) = self.told.iter().next().map(|(c, r)| (c.clone(), *r)) {
                self.write(&json!({"action":"ack","conversation_id":conv,"up_to":to}))
                    .await;
            }
        }
    }

    /// Reads frames for `wait`.
    async fn pump(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.conn.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.next(left).await.is_none() {
                return;
            }
        }
    }

    /// The next frame within `wait`, handled; `None` if none came or the
    /// connection ended.
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        let conn = self.conn.as_mut()?;
        if conn.last_heard.elapsed() > Duration::from_secs(15) {
            // Not even a ping for 3 intervals: the node is gone.
            self.drop_conn(Some(1006));
            return None;
        }
        let line = match tokio::time::timeout(wait, conn.lines.next_line()).await {
            Err(_) => return None,
            Ok(Ok(Some(l))) => l,
            Ok(_) => {
                self.drop_conn(Some(1006));
                return None;
            }
        };
        conn.last_heard = Instant::now();
        if let Some(node) = line.strip_prefix("#node ") {
            conn.node = node.to_string();
            return Some(json!({"type":"_node"}));
        }
        if line == "#ping" {
            self.write_line("#pong").await;
            return Some(json!({"type":"_ping"}));
        }
        if let Some(rest) = line.strip_prefix("#close ") {
            let code = rest
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(1005);
            self.drop_conn(Some(code));
            return None;
        }
        let Ok(f) = serde_json::from_str::<Value>(&line) else {
            self.report
                .violations
                .push(format!("{}/{}: not JSON: {line}", self.user, self.device));
            return None;
        };
        self.take(&f).await;
        Some(f)
    }

    async fn take(&mut self, f: &Value) {
        let conv = f["conversation_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let id = f["message_id"].as_u64().unwrap_or(0);
        match f["type"].as_str() {
            Some("ack") => {
                let cmid = f["client_msg_id"].as_str().unwrap_or_default().to_string();
                self.pending.remove(&cmid);
                self.held.entry(conv.clone()).or_default().insert(id);
                self.report.acked.insert(cmid, (conv, id));
            }
            Some("message") => {
                if let Some(c) = &self.conn {
                    let at = turmoil::sim_elapsed().unwrap_or_default();
                    self.report.served.push((c.node.clone(), at));
                }
                self.report.seen.push((conv.clone(), id));
                self.note_order(&conv, id);
                self.held.entry(conv.clone()).or_default().insert(id);
                let text = f["text"].as_str().unwrap_or_default().to_string();
                match self.report.got.get(&(conv.clone(), id)) {
                    Some(t) if *t != text => self.report.violations.push(format!(
                        "{}/{}: {conv} #{id} came as {t:?} and as {text:?}",
                        self.user, self.device
                    )),
                    Some(_) => {}
                    None => {
                        self.report.got.insert((conv, id), text);
                    }
                }
            }
            Some("gap") => {
                let (after, before) = (
                    f["after"].as_u64().unwrap_or(0),
                    f["before"].as_u64().unwrap_or(0),
                );
                self.report.gap_frames.push((conv, after, before));
            }
            Some("group") => {
                let gid = f["group_id"].as_str().unwrap_or_default();
                let members: Vec<&str> = f["members"]
                    .as_array()
                    .map(|m| m.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                self.world.saw_group(gid, members.contains(&MOVED)).await;
            }
            Some("error") if f["action"] == "removeMember" || f["action"] == "addMember" => {
                // Refused, as when a retry finds it done: the store says.
                if let Some(gid) = self.world.group() {
                    self.world.saw_group_in_store(&gid).await;
                }
            }
            Some("error") if f["action"] == "send" => {
                let cmid = f["client_msg_id"].as_str().unwrap_or_default().to_string();
                match f["code"].as_str() {
                    Some("internal" | "rate_limited") => {
                        if let Some((frame, at)) = self.pending.get_mut(&cmid) {
                            *at = Instant::now();
                            let frame = frame.clone();
                            self.report.resends += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            self.write(&frame).await;
                        }
                    }
                    _ => {
                        self.pending.remove(&cmid);
                        self.report.refused.push(f.to_string());
                    }
                }
            }
            _ => {}
        }
    }

    /// On one connection, a conversation's ids only go up; an id skipped
    /// is a gap unless it is this device's own send (checked at the end).
    fn note_order(&mut self, conv: &str, id: u64) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Some(&prev) = conn.last.get(conv) {
            if id <= prev {
                self.report.violations.push(format!(
                    "{}/{}: {conv} #{id} after #{prev} on one connection",
                    self.user, self.device
                ));
            }
            for skipped in prev + 1..id {
                self.report.skipped.push((conv.to_string(), skipped, id));
            }
        }
        let last = conn.last.entry(conv.to_string()).or_insert(id);
        *last = (*last).max(id);
    }

    async fn write(&mut self, f: &Value) -> bool {
        self.write_line(&f.to_string()).await
    }

    async fn write_line(&mut self, line: &str) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        if conn.write.write_all(&bytes).await.is_err() {
            self.drop_conn(Some(1006));
            return false;
        }
        true
    }

    fn drop_conn(&mut self, code: Option<u16>) {
        if self.conn.take().is_some() {
            if let Some(c) = code {
                self.report.closes.push(c);
            }
        }
    }
}
