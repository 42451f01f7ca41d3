//! `chat connect`: the interactive session.
//!
//! It reads typed lines and the socket at once. Every connection starts
//! with `sync`, then writes again what is not answered yet (sends keep their
//! `client_msg_id`) and what was typed while disconnected. When the
//! connection is lost it says so, and reconnects with backoff (1 s doubling
//! to 30 s, jittered; at once after close code 1012). What comes in is
//! de-duplicated, printed, and acked once per conversation per batch.

use crate::backoff::{Backoff, ClockJitter, STABLE_AFTER};
use crate::commands::{self, Command, Context, MsgIds, Older, HELP};
use crate::inbox::{Acks, Seen};
use crate::net::{self, Lost};
use crate::outbox::{self, Outbox, Outcome};
use crate::show::{self, note, say};
use anyhow::anyhow;
use chat_cli::client::{Ws, WsError, WsMessage};
use chat_core::auth::Authenticator;
use chat_core::ids::UserId;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Value};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

/// Lifetime of the token minted for each connection.
const TOKEN_TTL_SECS: i64 = 86_400;
/// Silence after which a `ping` goes out; as long again without an answer
/// and the connection counts as lost.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Frames already received that are handled (and acked) as one batch.
const BATCH: usize = 512;
/// After the end of input, with nothing left to deliver: how long answers
/// may still come before the session ends.
const LINGER: Duration = Duration::from_secs(1);
/// Most `conversations` pages fetched for one `/convs`.
const MAX_PAGES: u32 = 100;

type Input = Lines<BufReader<Stdin>>;
type Tx = SplitSink<Ws, WsMessage>;
type Rx = SplitStream<Ws>;

/// How a connection ended.
enum End {
    Quit,
    Lost(Lost),
}

/// What a typed line asks the loop to do.
enum Typed {
    Nothing,
    Quit,
    Frame(Value),
}

/// A `/convs` listing being collected page by page.
#[derive(Default)]
struct Listing {
    items: Vec<Value>,
    cursor: Option<String>,
    pages: u32,
}

struct Session {
    url: String,
    auth: Authenticator,
    me: UserId,
    ids: MsgIds,
    outbox: Outbox,
    seen: Seen,
    acks: Acks,
    backoff: Backoff<ClockJitter>,
    /// The conversation last sent to or received from (a bare `/history`).
    current: Option<String>,
    /// Where `/older` continues.
    older: Option<Older>,
    /// The page size of the last `/history` (so `/older` pages alike).
    history_limit: Option<u32>,
    listing: Option<Listing>,
    stdin_open: bool,
    /// Keepalive pings whose `pong` is not printed.
    quiet_pongs: u32,
}

/// Runs the session until `/quit` or the end of input. Fails only when the
/// first connection cannot be made.
pub async fn run(url: String, auth: Authenticator, me: UserId) -> anyhow::Result<()> {
    let mut s = Session {
        url,
        auth,
        me,
        ids: MsgIds::from_clock(),
        outbox: Outbox::default(),
        seen: Seen::default(),
        acks: Acks::default(),
        backoff: Backoff::new(ClockJitter::from_clock()),
        current: None,
        older: None,
        history_limit: None,
        listing: None,
        stdin_open: true,
        quiet_pongs: 0,
    };
    let token = s.token()?;
    let first = net::open(&s.url, &token)
        .await
        .map_err(|why| anyhow!("could not connect to {}: {why}", s.url))?;
    note(&format!(
        "connected to {} as {}; /help lists the commands",
        s.url, s.me
    ));
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let mut next = Some(first);
    let mut close_code = None;
    loop {
        let ws = match next.take() {
            Some(ws) => ws,
            None => match s.reconnect(&mut input, close_code).await {
                Some(ws) => ws,
                None => break,
            },
        };
        let opened = Instant::now();
        match s.online(ws, &mut input).await {
            End::Quit => break,
            End::Lost(lost) => {
                if opened.elapsed() >= STABLE_AFTER {
                    s.backoff.reset();
                }
                s.on_lost(&lost);
                close_code = lost.code;
            }
        }
    }
    let unacked = s.outbox.unacked();
    if unacked > 0 {
        note(&format!(
            "warning: {unacked} message(s) were not acknowledged by the server and may not be stored"
        ));
    }
    Ok(())
}

impl Session {
    fn token(&self) -> anyhow::Result<String> {
        Ok(self.auth.mint(self.me.as_str(), TOKEN_TTL_SECS)?)
    }

    /// Nothing left to do once input ended.
    fn done(&self) -> bool {
        !self.stdin_open && self.outbox.pending() == 0
    }

    fn on_lost(&mut self, lost: &Lost) {
        note(&format!("disconnected ({}), reconnecting…", lost.why));
        if self.listing.take().is_some() {
            note("the /convs listing was cut short: type /convs again");
        }
        self.quiet_pongs = 0;
    }

    /// Waits (backoff) and connects again, queuing what is typed meanwhile.
    /// `None`: the user quit.
    async fn reconnect(&mut self, input: &mut Input, close_code: Option<u16>) -> Option<Ws> {
        let mut code = close_code;
        loop {
            if self.done() {
                return None;
            }
            let wait = self.backoff.after(code.take());
            self.offline(tokio::time::sleep(wait), input).await?;
            let url = self.url.clone();
            let attempt = match self.token() {
                Ok(token) => self.offline(net::open(&url, &token), input).await?,
                Err(e) => Err(format!("{e:#}")),
            };
            match attempt {
                Ok(ws) => {
                    note(&format!("reconnected to {url}"));
                    return Some(ws);
                }
                Err(why) => note(&format!("could not reconnect ({why}); trying again…")),
            }
        }
    }

    /// Runs `work` while typed lines are handled (and queued); `None`: the
    /// user quit.
    async fn offline<F: Future>(&mut self, work: F, input: &mut Input) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                line = input.next_line(), if self.stdin_open => {
                    match self.on_input(line) {
                        Typed::Quit => return None,
                        Typed::Nothing => {}
                        Typed::Frame(frame) => {
                            self.outbox.push(frame);
                            say("  (not connected: queued until the reconnect)");
                        }
                    }
                    if self.done() {
                        return None;
                    }
                }
            }
        }
    }

    /// One connection: sync, replay, then typed lines and frames until it
    /// is lost or the user quits.
    async fn online(&mut self, ws: Ws, input: &mut Input) -> End {
        let (mut tx, mut rx) = ws.split();
        self.acks.on_connect();
        self.quiet_pongs = 0;
        let queued = self.outbox.replay();
        if !queued.is_empty() {
            note(&format!("sending {} queued frame(s) again", queued.len()));
        }
        let mut first = vec![json!({"action": "sync"})];
        first.extend(queued);
        if let Err(e) = net::write_all(&mut tx, &first).await {
            return End::Lost(Lost::error(&e));
        }
        self.outbox.written();

        let mut quiet_since = Instant::now();
        let mut pinged = false;
        loop {
            let draining = self.done();
            let keepalive_at = quiet_since + if pinged { KEEPALIVE * 2 } else { KEEPALIVE };
            let retry_at = self.outbox.next_retry();
            tokio::select! {
                line = input.next_line(), if self.stdin_open => {
                    match self.on_input(line) {
                        Typed::Nothing => {}
                        // Connected: what was just typed gets its ack
                        // first, as at the end of input (a paste ending in
                        // /quit would otherwise lose its last send).
                        Typed::Quit if self.outbox.pending() > 0 => {
                            self.stdin_open = false;
                            note(&format!(
                                "quitting once the server has answered {} frame(s) (Ctrl-C to give up)",
                                self.outbox.pending()
                            ));
                        }
                        Typed::Quit => {
                            close(&mut tx).await;
                            return End::Quit;
                        }
                        Typed::Frame(frame) => {
                            if let Err(e) = self.write_typed(&mut tx, frame).await {
                                return End::Lost(Lost::error(&e));
                            }
                        }
                    }
                    if !self.stdin_open {
                        quiet_since = Instant::now();
                    }
                }
                msg = rx.next() => {
                    quiet_since = Instant::now();
                    pinged = false;
                    let mut out = Vec::new();
                    let lost = self.on_batch(msg, &mut rx, &mut out);
                    out.extend(self.acks.take_frames());
                    if let Some(lost) = lost {
                        return End::Lost(lost);
                    }
                    if let Err(e) = net::write_all(&mut tx, &out).await {
                        return End::Lost(Lost::error(&e));
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(keepalive_at)) => {
                    if pinged {
                        return End::Lost(Lost::plain("no answer from the server for a minute"));
                    }
                    pinged = true;
                    self.quiet_pongs += 1;
                    if let Err(e) = net::write(&mut tx, &json!({"action": "ping"})).await {
                        return End::Lost(Lost::error(&e));
                    }
                }
                _ = sleep_until(retry_at), if retry_at.is_some() => {
                    let due = self.outbox.due(Instant::now());
                    if let Err(e) = net::write_all(&mut tx, &due).await {
                        return End::Lost(Lost::error(&e));
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(quiet_since + LINGER)), if draining => {
                    close(&mut tx).await;
                    return End::Quit;
                }
            }
        }
    }

    /// Handles `first` and whatever else already arrived, as one batch.
    /// Frames to write go to `out`; `Some`: the connection is gone.
    fn on_batch(
        &mut self,
        first: Option<Result<WsMessage, WsError>>,
        rx: &mut Rx,
        out: &mut Vec<Value>,
    ) -> Option<Lost> {
        let mut lost = self.on_socket(first, out);
        let mut handled = 1;
        while lost.is_none() && handled < BATCH {
            match rx.next().now_or_never() {
                Some(msg) => {
                    lost = self.on_socket(msg, out);
                    handled += 1;
                }
                None => break,
            }
        }
        lost
    }

    /// Writes a typed frame; a send is kept until answered, anything else
    /// is queued for the next connection if the write fails.
    async fn write_typed(&mut self, tx: &mut Tx, frame: Value) -> Result<(), WsError> {
        let is_send = outbox::send_id(&frame).is_some();
        if is_send {
            self.outbox.push(frame.clone());
        }
        let written = net::write(tx, &frame).await;
        if written.is_err() && !is_send {
            self.outbox.push(frame);
        }
        written
    }

    /// A line of input, the end of input, or a read error.
    fn on_input(&mut self, line: std::io::Result<Option<String>>) -> Typed {
        match line {
            Ok(Some(line)) => self.on_line(&line),
            Ok(None) => {
                self.stdin_open = false;
                let unacked = self.outbox.pending();
                if unacked > 0 {
                    note(&format!(
                        "end of input: delivering {unacked} queued frame(s) first (Ctrl-C to give up)"
                    ));
                }
                Typed::Nothing
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                say("! that line is not UTF-8; ignored");
                Typed::Nothing
            }
            Err(e) => {
                note(&format!("reading standard input: {e}; no more input"));
                self.stdin_open = false;
                Typed::Nothing
            }
        }
    }

    fn on_line(&mut self, line: &str) -> Typed {
        let cmd = match commands::parse(line, &self.me) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return Typed::Nothing,
            Err(hint) => {
                say(&format!("! {hint}"));
                return Typed::Nothing;
            }
        };
        match cmd {
            Command::Help => {
                say(HELP);
                Typed::Nothing
            }
            Command::Quit => Typed::Quit,
            cmd => match self.frame_for(&cmd) {
                Ok(frame) => Typed::Frame(frame),
                Err(hint) => {
                    say(&format!("! {hint}"));
                    Typed::Nothing
                }
            },
        }
    }

    /// The frame a command becomes, noting what it changes here.
    fn frame_for(&mut self, cmd: &Command) -> Result<Value, String> {
        let id = self.ids.fresh();
        let ctx = Context {
            client_msg_id: &id,
            current: self.current.as_deref(),
            older: self.older.as_ref(),
        };
        let frame = commands::to_frame(cmd, &ctx)?.ok_or("nothing to send")?;
        commands::check_size(&frame)?;
        match cmd {
            Command::Send { to, .. } => {
                if let Some(conversation) = commands::conversation_for_recipient(&self.me, to) {
                    self.current = Some(conversation);
                }
            }
            Command::History { limit, .. } => self.history_limit = *limit,
            Command::Older => self.history_limit = self.older.as_ref().and_then(|o| o.limit),
            Command::Conversations => self.listing = Some(Listing::default()),
            _ => {}
        }
        Ok(frame)
    }

    /// One socket event. `Some`: the connection is gone.
    fn on_socket(
        &mut self,
        msg: Option<Result<WsMessage, WsError>>,
        out: &mut Vec<Value>,
    ) -> Option<Lost> {
        match msg {
            None => Some(Lost::plain("the connection ended")),
            Some(Err(e)) => Some(Lost::error(&e)),
            Some(Ok(WsMessage::Close(frame))) => Some(Lost::closed(frame.as_ref())),
            Some(Ok(WsMessage::Text(text))) => {
                self.on_text(text.as_str(), out);
                None
            }
            Some(Ok(WsMessage::Binary(_))) => {
                say("! the server sent a binary frame; ignored");
                None
            }
            Some(Ok(_)) => None,
        }
    }

    /// One frame from the server; never panics, whatever it holds.
    fn on_text(&mut self, text: &str, out: &mut Vec<Value>) {
        let f: Value = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                say(&format!(
                    "! the server sent a frame that is not JSON ({e}); ignored"
                ));
                return;
            }
        };
        match f["type"].as_str().unwrap_or_default() {
            "message" => self.on_message(&f),
            "ack" => {
                if let Some(id) = f["client_msg_id"].as_str() {
                    self.outbox.on_ack(id);
                }
                if let Some(conversation) = f["conversation_id"].as_str() {
                    self.current = Some(conversation.to_string());
                }
                say(&show::ack(&f));
            }
            "error" => self.on_error(&f),
            "history" => self.on_history(&f),
            "conversations" => self.on_conversations(&f, out),
            "receipt" => say(&show::receipt(&f)),
            "group" => say(&show::group(&f)),
            "synced" => say("-- up to date --"),
            "pong" => {
                if self.quiet_pongs > 0 {
                    self.quiet_pongs -= 1;
                } else {
                    say("pong");
                }
            }
            _ => say(&show::unknown(&f)),
        }
    }

    fn on_message(&mut self, f: &Value) {
        let (Some(conversation), Some(id)) =
            (f["conversation_id"].as_str(), f["message_id"].as_u64())
        else {
            say(&format!(
                "! the server sent a malformed message; ignored: {}",
                show::unknown(f)
            ));
            return;
        };
        if self.seen.first_time(conversation, id) {
            say(&show::message(f));
            self.current = Some(conversation.to_string());
        }
        // Shown now or before: acked (once per conversation per batch).
        self.acks.note(conversation, id);
    }

    fn on_error(&mut self, f: &Value) {
        if f["action"] == "ping" && self.quiet_pongs > 0 {
            // An older server without `ping`: it answered, which is enough.
            self.quiet_pongs -= 1;
            return;
        }
        let mut line = show::error(f);
        if let Some(id) = f["client_msg_id"].as_str() {
            let code = f["code"].as_str().unwrap_or_default();
            if let Outcome::Retry(wait) = self.outbox.on_error(id, code, Instant::now()) {
                line = format!("{line}; sending it again in {} s", wait.as_secs());
            }
        }
        say(&line);
    }

    fn on_history(&mut self, f: &Value) {
        for line in show::history(f) {
            say(&line);
        }
        let Some(conversation) = f["conversation_id"].as_str() else {
            return;
        };
        let span = show::history_span(f);
        let has_more = f["has_more"].as_bool().unwrap_or(false);
        self.older = Some(Older {
            conversation_id: conversation.to_string(),
            before: span.filter(|_| has_more).map(|(oldest, _)| oldest),
            limit: self.history_limit,
        });
        if let Some((_, newest)) = span {
            self.acks.note(conversation, newest);
        }
    }

    /// A `conversations` page: asks for the next one while there is a
    /// `next_cursor`, then prints the whole list.
    fn on_conversations(&mut self, f: &Value, out: &mut Vec<Value>) {
        let listing = self.listing.get_or_insert_default();
        if let Some(items) = f["items"].as_array() {
            listing.items.extend(items.iter().cloned());
        }
        listing.pages += 1;
        let next = f["next_cursor"].as_str().filter(|c| !c.is_empty());
        let mut cut_short = false;
        if let Some(cursor) = next {
            if listing.pages < MAX_PAGES && listing.cursor.as_deref() != Some(cursor) {
                listing.cursor = Some(cursor.to_string());
                out.push(json!({"action": "conversations", "cursor": cursor}));
                return;
            }
            cut_short = true;
        }
        let listing = self.listing.take().unwrap_or_default();
        for line in show::conversations(&listing.items, self.me.as_str()) {
            say(&line);
        }
        if cut_short {
            say("  (more not fetched)");
        }
    }
}

/// Ends the connection politely.
async fn close(tx: &mut Tx) {
    let _ = tx.send(WsMessage::Close(None)).await;
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
