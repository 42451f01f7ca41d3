//! `chat`: a command-line client for the demo and for scripts.
//!
//! `chat token alice` mints a dev token; `chat connect alice` opens an
//! interactive session; `chat send alice user:bob "hi"` sends one message.

use anyhow::{bail, Context};
use chat_cli::client::{connect, Ws, WsMessage};
use chat_core::auth::{Authenticator, DEV_SECRET};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

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
    /// Connect as USER, sync, print incoming messages, send what you type.
    Connect { user: String },
    /// Send one message as USER to TO (user:<id> or group:<id>) and wait for the ack.
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

const HELP: &str = "\
type:  @bob hello          send to user bob
       #<group_id> hi all  send to a group
       /group NAME a b c   create a group
       /add GROUP USER     /remove GROUP USER
       /history CONV [BEFORE]   /convs   /sync
       {\"action\":...}      send raw JSON
       /quit";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let secret = cli.jwt_secret.clone().unwrap_or_else(|| DEV_SECRET.into());
    let auth = Authenticator::new(secret.as_bytes())?;
    match cli.cmd {
        Cmd::Token { user, ttl } => println!("{}", auth.mint(&user, ttl)?),
        Cmd::Connect { user } => interactive(&cli.url, &auth.mint(&user, 86_400)?).await?,
        Cmd::Send { user, to, text } => {
            let mut ws = open(&cli.url, &auth.mint(&user, 300)?).await?;
            let id = format!("cli-{}", uuid_like());
            send(
                &mut ws,
                json!({"action":"send","to":to,"client_msg_id":id,"text":text}),
            )
            .await?;
            let answer = wait_for(&mut ws, |f| f["type"] == "ack" || f["type"] == "error").await?;
            println!("{answer}");
            if answer["type"] == "error" {
                std::process::exit(1);
            }
        }
        Cmd::Group {
            user,
            name,
            members,
        } => {
            let mut ws = open(&cli.url, &auth.mint(&user, 300)?).await?;
            send(
                &mut ws,
                json!({"action":"createGroup","name":name,"members":members}),
            )
            .await?;
            let answer =
                wait_for(&mut ws, |f| f["type"] == "group" || f["type"] == "error").await?;
            println!("{answer}");
        }
    }
    Ok(())
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

async fn open(url: &str, token: &str) -> anyhow::Result<Ws> {
    connect(url, token)
        .await
        .with_context(|| format!("connecting to {url}"))
}

async fn send(ws: &mut Ws, v: Value) -> anyhow::Result<()> {
    ws.send(WsMessage::text(v.to_string())).await?;
    Ok(())
}

async fn wait_for(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    while let Some(m) = ws.next().await {
        if let WsMessage::Text(t) = m? {
            let v: Value = serde_json::from_str(t.as_str())?;
            if pred(&v) {
                return Ok(v);
            }
        }
    }
    bail!("connection closed")
}

/// Turns a typed line into a frame.
fn command(line: &str, n: &mut u64) -> Option<Value> {
    let line = line.trim();
    *n += 1;
    let id = format!("cli-{}-{n}", uuid_like());
    if line.starts_with('{') {
        return serde_json::from_str(line)
            .map_err(|e| eprintln!("bad JSON: {e}"))
            .ok();
    }
    if let Some(rest) = line.strip_prefix('@') {
        let (to, text) = rest.split_once(' ')?;
        return Some(
            json!({"action":"send","to":format!("user:{to}"),"client_msg_id":id,"text":text}),
        );
    }
    if let Some(rest) = line.strip_prefix('#') {
        let (to, text) = rest.split_once(' ')?;
        return Some(
            json!({"action":"send","to":format!("group:{to}"),"client_msg_id":id,"text":text}),
        );
    }
    let mut words = line.split_whitespace();
    match words.next()? {
        "/group" => {
            let name = words.next()?;
            Some(json!({"action":"createGroup","name":name,"members":words.collect::<Vec<_>>()}))
        }
        "/add" => {
            Some(json!({"action":"addMember","group_id":words.next()?,"user_id":words.next()?}))
        }
        "/remove" => {
            Some(json!({"action":"removeMember","group_id":words.next()?,"user_id":words.next()?}))
        }
        "/history" => {
            let conv = words.next()?;
            let mut f = json!({"action":"history","conversation_id":conv});
            if let Some(b) = words.next().and_then(|b| b.parse::<u64>().ok()) {
                f["before"] = json!(b);
            }
            Some(f)
        }
        "/convs" => Some(json!({"action":"conversations"})),
        "/sync" => Some(json!({"action":"sync"})),
        _ => {
            eprintln!("{HELP}");
            None
        }
    }
}

fn show(f: &Value) {
    match f["type"].as_str().unwrap_or("") {
        "message" => println!(
            "[{} #{}] {}: {}",
            f["conversation_id"].as_str().unwrap_or(""),
            f["message_id"],
            f["from"].as_str().unwrap_or(""),
            f["text"].as_str().unwrap_or("")
        ),
        "ack" => println!(
            "  ✓ stored as #{} in {}",
            f["message_id"],
            f["conversation_id"].as_str().unwrap_or("")
        ),
        "receipt" => println!(
            "  ✓✓ {} read {} up to #{}",
            f["user_id"].as_str().unwrap_or(""),
            f["conversation_id"].as_str().unwrap_or(""),
            f["up_to"]
        ),
        "group" => println!(
            "group {} ({}) members {} admins {}",
            f["group_id"].as_str().unwrap_or(""),
            f["name"].as_str().unwrap_or(""),
            f["members"],
            f["admins"]
        ),
        "synced" => println!("-- up to date --"),
        "error" => println!(
            "! {}: {}",
            f["code"].as_str().unwrap_or(""),
            f["message"].as_str().unwrap_or("")
        ),
        _ => println!("{f}"),
    }
}

async fn interactive(url: &str, token: &str) -> anyhow::Result<()> {
    let ws = open(url, token).await?;
    eprintln!("connected to {url}\n{HELP}");
    let (mut sink, mut stream) = ws.split();
    sink.send(WsMessage::text(json!({"action":"sync"}).to_string()))
        .await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut n = 0u64;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                if line.trim() == "/quit" { break; }
                if line.trim().is_empty() { continue; }
                if let Some(frame) = command(&line, &mut n) {
                    sink.send(WsMessage::text(frame.to_string())).await?;
                }
            }
            msg = stream.next() => {
                let Some(msg) = msg else { eprintln!("server closed the connection"); break };
                match msg? {
                    WsMessage::Text(t) => {
                        let f: Value = serde_json::from_str(t.as_str())?;
                        show(&f);
                        if f["type"] == "message" {
                            // Shown, so acknowledged: the sender sees a receipt.
                            let ack = json!({"action":"ack","conversation_id":f["conversation_id"],"up_to":f["message_id"]});
                            sink.send(WsMessage::text(ack.to_string())).await?;
                        }
                    }
                    WsMessage::Close(c) => { eprintln!("closed: {c:?}"); break }
                    _ => {}
                }
            }
        }
    }
    let _ = sink.send(WsMessage::Close(None)).await;
    Ok(())
}
