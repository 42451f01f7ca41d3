//! `chat`: a command-line client for the demo and for scripts.
//!
//! `chat token alice` mints a dev token; `chat connect alice` opens an
//! interactive session (it reconnects by itself; `/help` lists the
//! commands); `chat send alice user:bob "hi"` sends one message.
//!
//! # Layout
//! - [`commands`]: typed lines → commands → frames.
//! - [`outgoing`]: what is written: built [`ClientFrame`]s, or raw JSON as
//!   typed; the size check; fresh `client_msg_id`s.
//! - [`session`]: the interactive loop (reconnects, resends, keepalive).
//! - [`incoming`]: server frames decoded as [`ServerFrame`] (raw when they
//!   are not one) and handled.
//! - [`show`]: frames → the lines a person reads.
//! - [`backoff`]: the reconnect schedule.
//! - [`outbox`]: the unanswered sends, and what waits for a connection.
//! - [`inbox`]: de-duplication and acks.
//! - [`net`]: connecting, writing, why a connection was lost.
//! - [`device`]: this machine's device id per user (the config dir).
//! - [`oneshot`]: the script commands (`send`, `group`).
//!
//! [`ClientFrame`]: chat_core::protocol::ClientFrame
//! [`ServerFrame`]: chat_core::protocol::ServerFrame

mod backoff;
mod commands;
mod device;
mod inbox;
mod incoming;
mod net;
mod oneshot;
mod outbox;
mod outgoing;
mod session;
mod show;

use anyhow::Context;
use chat_core::auth::{Authenticator, DEV_SECRET};
use chat_core::ids::UserId;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Tokens for `send` and `group` live this long (seconds).
const SCRIPT_TOKEN_TTL_SECS: i64 = 300;

#[derive(Parser)]
#[command(
    name = "chat",
    version,
    about = "Command-line client for the chat server"
)]
struct Cli {
    /// Server WebSocket URL.
    #[arg(
        long,
        env = "CHAT_URL",
        default_value = "ws://127.0.0.1:8080/ws",
        global = true
    )]
    url: String,
    /// Secret to mint tokens with (the server's --jwt-secret); the dev secret if unset.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true, global = true)]
    jwt_secret: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a token for USER.
    Token {
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
    },
    /// Connect as USER: sync, print messages as they come, send what you type
    /// (/help lists the commands); reconnects by itself.
    Connect {
        user: String,
        /// This install's device id (default: one kept per user in
        /// ~/.config/chat): sync replays what this device misses.
        #[arg(long, env = "CHAT_DEVICE")]
        device: Option<String>,
    },
    /// Send one message as USER to TO (user:<id> or group:<id>) and print the ack.
    Send {
        user: String,
        to: String,
        text: String,
    },
    /// Create a group as USER with MEMBERS; prints the group.
    Group {
        user: String,
        name: String,
        members: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chat: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // A read of stdin still in flight must not hold the exit up.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => code,
        Err(e) => {
            // The chain on one line; never a backtrace.
            eprintln!("chat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let secret = cli.jwt_secret.unwrap_or_else(|| DEV_SECRET.to_string());
    let auth = Authenticator::new(secret.as_bytes()).context("--jwt-secret / CHAT_JWT_SECRET")?;
    let url = cli.url;
    match cli.cmd {
        Cmd::Token { user, ttl } => {
            let user = UserId::parse(&user)?;
            show::say(&auth.mint(user.as_str(), ttl)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Connect { user, device } => {
            let user = UserId::parse(&user)?;
            let device = match device {
                Some(d) => chat_core::ids::DeviceId::parse(&d).context("--device")?,
                None => device::for_user(&user),
            };
            session::run(device::url_with(&url, &device), auth, user).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Send { user, to, text } => {
            let token = script_token(&auth, &user)?;
            oneshot::send(&url, &token, &to, &text).await
        }
        Cmd::Group {
            user,
            name,
            members,
        } => {
            let token = script_token(&auth, &user)?;
            oneshot::group(&url, &token, &name, &members).await
        }
    }
}

fn script_token(auth: &Authenticator, user: &str) -> anyhow::Result<String> {
    let user = UserId::parse(user)?;
    Ok(auth.mint(user.as_str(), SCRIPT_TOKEN_TTL_SECS)?)
}
