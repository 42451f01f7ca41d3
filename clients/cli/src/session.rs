//! `chat connect`: the interactive session.
//!
//! It reads typed lines and the socket at once. Every connection starts
//! with `sync`, then writes again what is not answered yet (sends keep their
//! `client_msg_id`) and what was typed while disconnected. When the
//! connection is lost it says so, and reconnects with backoff (1 s doubling
//! to 30 s, jittered; at once after close code 1012). What comes in is
//! handled by [`Incoming`] (de-duplicated, printed, acked once per
//! conversation per batch); this loop prints and writes what it returns.

use crate::backoff::{Backoff, ClockJitter, STABLE_AFTER};
use crate::commands::{self, Command, Context, HELP};
use crate::incoming::{Incoming, Listing};
use crate::net::{self, Lost};
use crate::outbox::Outbox;
use crate::outgoing::{self, MsgIds, Outgoing};
use crate::show::{note, say};
use anyhow::anyhow;
use chat_cli::client::{Ws, WsError, WsMessage};
use chat_core::auth::Authenticator;
use chat_core::ids::UserId;
use chat_core::protocol::ClientFrame;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
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
    Frame(Outgoing),
}

struct Session {
    url: String,
    auth: Authenticator,
    me: UserId,
    ids: MsgIds,
    outbox: Outbox,
    /// The frame handlers and what they share with typed commands.
    incoming: Incoming,
    backoff: Backoff<ClockJitter>,
    stdin_open: bool,
}

/// Runs the session until `/quit` or the end of input. Fails only when the
/// first connection cannot be made.
pub async fn run(url: String, auth: Authenticator, me: UserId) -> anyhow::Result<()> {
    let mut s = Session {
        url,
        auth,
        incoming: Incoming::new(me.clone()),
        me,
        ids: MsgIds::from_clock(),
        outbox: Outbox::default(),
        backoff: Backoff::new(ClockJitter::from_clock()),
        stdin_open: true,
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
        if self.incoming.listing.take().is_some() {
            note("the /convs listing was cut short: type /convs again");
        }
        self.incoming.quiet_pongs = 0;
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
        self.incoming.acks.on_connect();
        self.incoming.cursors.on_connect();
        self.incoming.quiet_pongs = 0;
        let queued = self.outbox.replay();
        if !queued.is_empty() {
            note(&format!("sending {} queued frame(s) again", queued.len()));
        }
        let mut first = vec![Outgoing::from(ClientFrame::Sync {})];
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
                    out.extend(self.incoming.acks.take_frames().into_iter().map(Outgoing::from));
                    out.extend(self.incoming.cursors.take_frame().map(Outgoing::from));
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
                    self.incoming.quiet_pongs += 1;
                    if let Err(e) = net::write(&mut tx, &ClientFrame::Ping {}.into()).await {
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
        out: &mut Vec<Outgoing>,
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
    async fn write_typed(&mut self, tx: &mut Tx, frame: Outgoing) -> Result<(), WsError> {
        let is_send = frame.send_id().is_some();
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
    fn frame_for(&mut self, cmd: &Command) -> Result<Outgoing, String> {
        let id = self.ids.fresh();
        let state = &mut self.incoming;
        let ctx = Context {
            client_msg_id: &id,
            current: state.current.as_deref(),
            older: state.older.as_ref(),
        };
        let frame = commands::to_frame(cmd, &ctx)?.ok_or("nothing to send")?;
        outgoing::check_size(&frame)?;
        match cmd {
            Command::Send { to, .. } => {
                if let Some(conversation) = commands::conversation_for_recipient(&self.me, to) {
                    state.current = Some(conversation);
                }
            }
            Command::History { limit, .. } => state.history_limit = *limit,
            Command::Older => state.history_limit = state.older.as_ref().and_then(|o| o.limit),
            Command::Conversations => state.listing = Some(Listing::default()),
            _ => {}
        }
        Ok(frame)
    }

    /// One socket event. `Some`: the connection is gone.
    fn on_socket(
        &mut self,
        msg: Option<Result<WsMessage, WsError>>,
        out: &mut Vec<Outgoing>,
    ) -> Option<Lost> {
        match msg {
            None => Some(Lost::plain("the connection ended")),
            Some(Err(e)) => Some(Lost::error(&e)),
            Some(Ok(WsMessage::Close(frame))) => Some(Lost::closed(frame.as_ref())),
            Some(Ok(WsMessage::Text(text))) => {
                let handled =
                    self.incoming
                        .on_text(text.as_str(), &mut self.outbox, Instant::now());
                for line in &handled.lines {
                    say(line);
                }
                out.extend(handled.frames.into_iter().map(Outgoing::from));
                None
            }
            Some(Ok(WsMessage::Binary(_))) => {
                say("! the server sent a binary frame; ignored");
                None
            }
            Some(Ok(_)) => None,
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
